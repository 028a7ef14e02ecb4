/**
 * The agent's --metrics-listen endpoint, scraped over real HTTP while the
 * agent follows a real etcd: sync timings, applied revision and lag, objects
 * by dataplane and kind, and sync errors.
 */
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { FakeRunner, startAgent, type RunningAgent } from '../../packages/agent/src/index.js';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { callOk, testCoordinator } from '../helpers/coordinator.js';
import { sharedEtcdUrl } from '../helpers/etcd.js';
import { eventually } from '../helpers/eventually.js';
import { sample, series } from '../helpers/metrics.js';

let c: Coordinator;
const agents: RunningAgent[] = [];
beforeAll(async () => {
  c = await testCoordinator('agent-metrics');
});
afterEach(async () => {
  await Promise.all(agents.splice(0).map((a) => a.stop()));
});
afterAll(() => c.close());

async function scrape(agent: RunningAgent): Promise<string> {
  const r = await fetch(agent.metricsUrl as string);
  expect(r.status).toBe(200);
  expect(r.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return r.text();
}

it('serves sync timings, the applied revision, the lag and the objects it keeps', async () => {
  const agent = await startAgent({
    hostId: 'mh1',
    etcd: [sharedEtcdUrl()],
    prefix: c.ctx.keys.prefix,
    dataplane: 'dry-run',
    logLevel: 'silent',
    leaseTtlSeconds: 2,
    metricsListen: { host: '127.0.0.1', port: 0 },
  });
  agents.push(agent);
  expect(agent.metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);

  await callOk(c, 'POST', '/services', { host: '10.7.0.1', port: 80, servers: [{ host: '10.8.0.1', port: 80 }, { host: '10.8.0.2', port: 80 }] });
  const { revision: l4Write } = await callOk(c, 'POST', '/services', { host: '10.7.0.2', port: 80, servers: [{ host: '10.8.0.3', port: 80 }] });
  expect(l4Write).toBeGreaterThan(0);
  await callOk(c, 'PUT', '/cen/mcen');
  await callOk(c, 'PUT', '/host/mh1/mctr1/mcen');
  await callOk(c, 'POST', '/cen/make', ['mcen']);

  // Caught up: the L4 role has applied the last service write (the applied
  // revision is the L4 role's, as at GET /hosts) and the topology role holds
  // the container. A lag of 0 alone is not enough: a role's watch may not have
  // delivered the writes yet.
  const text = await eventually(async () => {
    const t = await scrape(agent);
    const caughtUp = (sample(t, 'switchyard_agent_applied_revision') ?? 0) >= l4Write && sample(t, 'switchyard_agent_objects', { dataplane: 'dry-run', kind: 'container' }) === 1;
    return caughtUp && sample(t, 'switchyard_agent_revision_lag') === 0 ? t : undefined;
  }, 15_000);
  // The same revision GET /hosts/<id> reports.
  const host = await callOk(c, 'GET', '/hosts/mh1');
  expect(sample(text, 'switchyard_agent_applied_revision')).toBe(host.body.appliedRevision);
  expect(host.body.appliedRevision).toBeGreaterThan(0);

  const objects = (dataplane: string, kind: string) => sample(text, 'switchyard_agent_objects', { dataplane, kind });
  expect(objects('dry-run', 'service')).toBe(2);
  expect(objects('dry-run', 'server')).toBe(3);
  expect(objects('dry-run', 'cen')).toBe(1);
  expect(objects('dry-run', 'cin')).toBe(0);
  expect(objects('dry-run', 'container')).toBe(1);

  for (const role of ['l4', 'topology']) {
    expect(sample(text, 'switchyard_agent_sync_duration_seconds_count', { role, full: 'true' }), role).toBeGreaterThanOrEqual(1);
    expect(sample(text, 'switchyard_agent_sync_duration_seconds_bucket', { role, full: 'true', le: '+Inf' }), role).toBeGreaterThanOrEqual(1);
  }
  expect(series(text, 'switchyard_agent_sync_errors_total')).toEqual([]);
  expect(sample(text, 'process_resident_memory_bytes')).toBeGreaterThan(0);

  // Only GET /metrics is served.
  expect((await fetch(new URL('/other', agent.metricsUrl))).status).toBe(404);
  expect((await fetch(agent.metricsUrl as string, { method: 'POST' })).status).toBe(404);
});

it('counts failed syncs and shows the lag they leave', async () => {
  // Every nft command fails: the L4 role can neither read nor write its table.
  const runner = new FakeRunner().on('nft', [], { exitCode: 1, stderr: 'Error: Could not process rule: Operation not permitted\n' });
  const agent = await startAgent(
    { hostId: 'mh2', etcd: [sharedEtcdUrl()], prefix: c.ctx.keys.prefix, dataplane: 'nftables', logLevel: 'silent', leaseTtlSeconds: 2, metricsListen: { host: '127.0.0.1', port: 0 } },
    { runner },
  );
  agents.push(agent);
  await callOk(c, 'POST', '/services', { host: '10.7.0.3', port: 80 });
  const text = await eventually(async () => {
    const t = await scrape(agent);
    return (sample(t, 'switchyard_agent_sync_errors_total', { role: 'l4' }) ?? 0) >= 1 && (sample(t, 'switchyard_agent_revision_lag') ?? 0) > 0 ? t : undefined;
  }, 15_000);
  expect(sample(text, 'switchyard_agent_applied_revision')).toBe(0);
});

it('fails to start when the metrics port is taken, and leaves nothing running', async () => {
  const first = await startAgent({ hostId: 'mh3', etcd: [sharedEtcdUrl()], prefix: c.ctx.keys.prefix, dataplane: 'dry-run', logLevel: 'silent', metricsListen: { host: '127.0.0.1', port: 0 } });
  agents.push(first);
  const port = Number(new URL(first.metricsUrl as string).port);
  await expect(
    startAgent({ hostId: 'mh4', etcd: [sharedEtcdUrl()], prefix: c.ctx.keys.prefix, dataplane: 'dry-run', logLevel: 'silent', metricsListen: { host: '127.0.0.1', port } }),
  ).rejects.toThrow(/EADDRINUSE/);
  const hosts = await callOk(c, 'GET', '/hosts');
  expect((hosts.body as { id: string }[]).map((h) => h.id)).not.toContain('mh4');
});
