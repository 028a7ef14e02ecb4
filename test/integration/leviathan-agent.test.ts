/**
 * The agent's topology role against a real etcd, with a FakeRunner for the
 * kernel: a failing apply is retried with backoff (not hot-looped), the
 * dry-run dataplane runs no command for container networks yet reports them
 * applied, and the underlay key comes back when its lease is revoked.
 */
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { pino } from 'pino';
import { LevHostStatus } from '@switchyard/shared';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { FakeRunner, startAgent, type RunningAgent } from '../../packages/agent/src/index.js';
import { startTopology, type RunningTopology } from '../../packages/agent/src/leviathan/index.js';
import { callOk, testCoordinator } from '../helpers/coordinator.js';
import { sharedEtcdUrl } from '../helpers/etcd.js';

const log = pino({ level: 'silent' });
let c: Coordinator;
const running: (RunningTopology | RunningAgent)[] = [];

beforeAll(async () => {
  c = await testCoordinator('leviathan-agent');
});
afterEach(async () => {
  await Promise.all(running.splice(0).map((r) => r.stop()));
});
afterAll(async () => {
  await c.close();
});

const call = (method: 'GET' | 'POST' | 'PUT', url: string, payload?: unknown) => callOk(c, method, url, payload);

async function until<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function hostStatus(hostId: string): Promise<LevHostStatus | undefined> {
  const text = await c.ctx.etcd.get(c.ctx.keys.lev.status(hostId)).string();
  return text ? LevHostStatus.parse(JSON.parse(text)) : undefined;
}

it('backs off on a failing apply instead of retrying every few milliseconds', async () => {
  // Every `ip -batch -` (the namespace creation) fails; reads succeed and show an empty machine.
  const runner = new FakeRunner()
    .on('ip', ['-batch', '-'], { exitCode: 1, stderr: 'mount --make-shared /run/netns failed: Operation not permitted\n' })
    .on('nft', ['list'], { exitCode: 1, stderr: 'Error: No such file or directory\n' });
  const placed = await call('PUT', '/host/bh1/bctr1');
  const topo = await startTopology({ etcd: c.ctx.etcd, keys: c.ctx.keys, hostId: 'bh1', log, runner, underlay: '192.0.2.10', resyncMs: 600_000 });
  running.push(topo);
  const applies = () => runner.calls.filter((x) => x.cmd === 'ip' && x.args.join(' ') === '-batch -').length;
  await until('a first failed apply', () => (applies() > 0 ? true : undefined));
  const first = applies();
  await sleep(3000);
  const attempts = applies() - first;
  // SyncLoop's backoff (500 ms, doubling): retries at +0.5 s, +1.5 s, +3.5 s. The old loop made ~118.
  expect(attempts).toBeGreaterThanOrEqual(1);
  expect(attempts).toBeLessThanOrEqual(4);
  // Each retry is a full sync (kernel read again: the netns helper lists the namespaces), and the failure is reported.
  expect(runner.calls.filter((x) => x.input?.startsWith('{"list":true')).length).toBe(applies());
  const s = await hostStatus('bh1');
  expect(s?.containers).toEqual({ bctr1: 'error' });
  expect(s?.errors[0]?.message).toMatch(/Operation not permitted/);
  // Which revision the failing pass tried: a client waiting for it knows the error is about its write.
  expect(s?.failedRevision).toBeGreaterThanOrEqual(placed.revision);
  expect(s?.appliedRevision).toBeLessThan(placed.revision);
});

it('dry-run plans container networks but runs no command, and reports them applied', async () => {
  const runner = new FakeRunner();
  const agent = await startAgent({ hostId: 'dh1', etcd: [sharedEtcdUrl()], prefix: c.ctx.keys.prefix, dataplane: 'dry-run', logLevel: 'silent', leaseTtlSeconds: 2 }, { runner });
  running.push(agent);
  await call('PUT', '/cen/dcen');
  await call('PUT', '/host/dh1/dctr1/dcen');
  await call('PUT', '/host/dh1/dctr2/dcen');
  await call('POST', '/cen/make', ['dcen']);
  await call('POST', '/cin/import', { dcin: ['dcen'] });
  const made = await call('POST', '/cin/make', ['dcin']);
  const cin = await until('the CIN reported ready', async () => {
    const s = await hostStatus('dh1');
    return s && s.appliedRevision >= made.revision ? (await call('GET', '/cin/dcin')).body : undefined;
  });
  expect(cin).toMatchObject({ status: 'ready', hosts: { dh1: 'ready' } });
  expect((await call('GET', '/cen/dcen')).body).toMatchObject({ status: 'ready' });
  // Nothing ran: no namespace, link, address or nft command, and no read either.
  expect(runner.lines()).toEqual([]);
  expect(await c.ctx.etcd.getAll().prefix(c.ctx.keys.lev.createdAll('dh1')).keys()).toEqual([]);
});

it('writes the underlay key again after its lease is revoked behind its back', async () => {
  const key = c.ctx.keys.lev.underlay('uh1');
  const topo = await startTopology({ etcd: c.ctx.etcd, keys: c.ctx.keys, hostId: 'uh1', log, runner: new FakeRunner(), underlay: '192.0.2.20', leaseTtlSeconds: 2, resyncMs: 600_000 });
  running.push(topo);
  const [kv] = (await c.ctx.etcd.get(key).exec()).kvs;
  expect(JSON.parse(kv.value.toString())).toEqual({ hostId: 'uh1', address: '192.0.2.20' });
  expect(kv.lease).not.toBe('0');

  await c.ctx.etcd.leaseClient.leaseRevoke({ ID: kv.lease });
  expect(await c.ctx.etcd.get(key).string()).toBeNull();

  const back = await until('the underlay key back', async () => (await c.ctx.etcd.get(key).exec()).kvs[0], 10_000);
  expect(JSON.parse(back.value.toString())).toEqual({ hostId: 'uh1', address: '192.0.2.20' });
  expect(back.lease).not.toBe(kv.lease);
  // And it is removed when the role stops.
  await topo.stop();
  running.splice(running.indexOf(topo), 1);
  expect(await c.ctx.etcd.get(key).string()).toBeNull();
});
