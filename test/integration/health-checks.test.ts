/**
 * Health checks through the whole control plane, without a kernel: a real
 * etcd, a coordinator, an agent (dry-run dataplane) probing real sockets on
 * loopback. What the host reports, what GET /services/:id summarises, that a
 * check never writes a weight, and that servers held by `/provide?lb=`
 * providers are never probed (healthy while connected). And the checker's
 * own thread: probes go on while the main thread is blocked, and a dead
 * thread is started again.
 */
import { createServer, type Server as HttpServer } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import type { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Host } from '@switchyard/shared';
import { startAgent, type RunningAgent } from '../../packages/agent/src/index.js';
import { ThreadedHealthChecker } from '../../packages/agent/src/l4/health/index.js';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { testCoordinator } from '../helpers/coordinator.js';
import { freePort, sharedEtcdUrl } from '../helpers/etcd.js';
import { eventually } from '../helpers/eventually.js';
import { sample } from '../helpers/metrics.js';
import { provide, terminateProviders } from '../helpers/providers.js';

describe('health checks (real etcd, dry-run agent, real probes on loopback)', () => {
  let c: Coordinator;
  let base: string;
  let agent: RunningAgent;
  let ok: HttpServer;
  let okPort: number;
  let deadPort: number;
  const sid = 'tcp-10_70_0_1-80';
  const host = 'hc-int-1';

  const hostView = async () => (await c.app.inject({ method: 'GET', url: `/hosts/${host}` })).json() as Host;

  beforeAll(async () => {
    c = await testCoordinator('health');
    base = await c.listen();
    ok = createServer((req, res) => {
      res.statusCode = req.url === '/healthz' ? 200 : 404;
      res.end();
    });
    await new Promise<void>((r) => ok.listen(0, '127.0.0.1', r));
    okPort = (ok.address() as AddressInfo).port;
    deadPort = await freePort();
    agent = await startAgent({ hostId: host, etcd: [sharedEtcdUrl()], prefix: c.ctx.keys.prefix, dataplane: 'dry-run', logLevel: 'silent', metricsListen: { host: '127.0.0.1', port: 0 } });
  });
  afterAll(async () => {
    terminateProviders();
    await agent?.stop();
    await c?.close();
    ok?.close();
  });

  it('reports each server as this host sees it, summarises across hosts and never writes a weight', async () => {
    const res = await c.app.inject({
      method: 'POST',
      url: '/services',
      payload: {
        host: '10.70.0.1',
        port: 80,
        servers: [
          { host: '127.0.0.1', port: okPort },
          { host: '127.0.0.2', port: deadPort, weight: 5 },
        ],
        health: { type: 'http', interval: '200ms', timeout: '100ms', rise: 1, fall: 2 },
      },
    });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json().health).toEqual({ type: 'http', path: '/healthz', expect: 200, interval: '200ms', timeout: '100ms', rise: 1, fall: 2 });
    const h = await eventually(async () => {
      const v = await hostView();
      return v.health?.healthy === 1 && v.health.unhealthy === 1 ? v : undefined;
    });
    expect(h.health?.servers).toEqual([
      { serviceId: sid, serverId: `127_0_0_2-${deadPort}`, state: 'unhealthy', since: expect.any(String), lastError: expect.stringContaining('ECONNREFUSED') },
    ]);
    const view = (await c.app.inject({ method: 'GET', url: `/services/${sid}` })).json();
    expect(view.servers).toEqual([
      expect.objectContaining({ id: `127_0_0_1-${okPort}`, weight: 1, health: { up: 1, down: 0, unknown: 0, hosts: 1, summary: '1/1 host see it up' } }),
      expect.objectContaining({ id: `127_0_0_2-${deadPort}`, weight: 5, health: { up: 0, down: 1, unknown: 0, hosts: 1, summary: '0/1 host see it up' } }),
    ]);
    // The agent's metrics count the probes and the unhealthy server.
    const text = await (await fetch(agent.metricsUrl as string)).text();
    expect(sample(text, 'switchyard_agent_health_checks_total', { result: 'ok' })).toBeGreaterThan(0);
    expect(sample(text, 'switchyard_agent_health_checks_total', { result: 'failed' })).toBeGreaterThanOrEqual(2);
    expect(sample(text, 'switchyard_agent_servers_unhealthy')).toBe(1);
    expect(sample(text, 'switchyard_agent_health_probes')).toBe(2);
    // Two servers every 100 ms keep up easily: no check starts late by more than a tick.
    expect(sample(text, 'switchyard_agent_health_check_delay_seconds')).toBeLessThan(0.1);
    // The list and the server routes are Portal's shapes: no health summary there.
    const servers = (await c.app.inject({ method: 'GET', url: `/services/${sid}/servers` })).json();
    expect(servers.map((s: { weight: number }) => s.weight)).toEqual([1, 5]);
    expect(servers[0]).not.toHaveProperty('health');
  });

  it('a reset by a Portal client (no health field) keeps the checks', async () => {
    const res = await c.app.inject({ method: 'PUT', url: `/services/${sid}`, payload: { host: '10.70.0.1', port: 80, scheduler: 'rr' } });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json().health).toMatchObject({ type: 'http', interval: '200ms' });
  });

  it('refuses bad health input with a 400 and writes nothing', async () => {
    const before = (await c.app.inject({ method: 'GET', url: `/services/${sid}` })).body;
    const res = await c.app.inject({ method: 'PUT', url: `/services/${sid}`, payload: { host: '10.70.0.1', port: 80, health: { type: 'http', path: '/x\r\nHost: evil' } } });
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ code: expect.any(String), error: expect.stringContaining('path') });
    expect((await c.app.inject({ method: 'GET', url: `/services/${sid}` })).body).toBe(before);
  });

  it('never probes a server that /provide?lb= providers hold: healthy while connected', async () => {
    const ws = await provide(base, `service=web&port=${deadPort + 1}&host=127.0.0.3&lb=${sid}`);
    const providerServer = `127_0_0_3-${deadPort + 1}`;
    await eventually(async () => {
      const s = (await c.app.inject({ method: 'GET', url: `/services/${sid}/servers` })).json() as { id: string }[];
      return s.some((x) => x.id === providerServer) ? true : undefined;
    });
    // Give the checker several intervals: the provider's port is closed, yet it is never listed.
    await new Promise((r) => setTimeout(r, 1000));
    const h = await hostView();
    expect(h.health).toMatchObject({ healthy: 1, unhealthy: 1, unknown: 0 });
    expect(h.health?.servers.map((s) => s.serverId)).not.toContain(providerServer);
    ws.close();
  });
});

describe('the checker thread (real probes on loopback)', () => {
  const rule = { rise: 1, fall: 1, intervalMs: 50 };
  const log = { warn: () => undefined, error: () => undefined };

  it('keeps probing while the main thread is busy, reports states, and starts again after the thread dies', async () => {
    const listener = createNetServer((s) => s.destroy());
    await new Promise<void>((r) => listener.listen(0, '127.0.0.1', r));
    const port = (listener.address() as AddressInfo).port;
    const changes: [string, boolean][] = [];
    const checker = new ThreadedHealthChecker({ concurrency: 4, onChange: (id, pick) => changes.push([id, pick]), log });
    try {
      checker.setService('svc', [
        { serverId: 'up', spec: { type: 'tcp', host: '127.0.0.1', port, timeoutMs: 500 }, rule },
        { serverId: 'down', spec: { type: 'tcp', host: '127.0.0.1', port: await freePort(), timeoutMs: 500 }, rule },
      ]);
      expect(checker.size).toBe(2);
      await eventually(() => sameCounts(checker, 1, 1));
      expect(checker.state('svc', 'down')).toBe('unhealthy');
      expect(changes).toContainEqual(['svc', true]);

      // 600 ms of a blocked event loop here: the probes go on in their thread.
      const before = await statsAfterTick(checker);
      const until = Date.now() + 600;
      while (Date.now() < until) {
        /* busy */
      }
      const after = await statsAfterTick(checker);
      expect(after - before).toBeGreaterThanOrEqual(10);

      // The thread dies: it is started again with every target, which it reports anew.
      const worker = (checker as unknown as { worker: Worker }).worker;
      await worker.terminate();
      await eventually(() => (checker as unknown as { worker?: Worker }).worker !== undefined, 4000);
      await eventually(() => sameCounts(checker, 1, 1));

      checker.setService('svc', []);
      expect(checker.size).toBe(0);
      await eventually(() => sameCounts(checker, 0, 0));
    } finally {
      await checker.stop();
      listener.close();
    }
  });
});

/** Probes counted so far, once the next counters message after now has arrived. */
async function statsAfterTick(checker: ThreadedHealthChecker): Promise<number> {
  const n = () => checker.stats.ok + checker.stats.failed;
  const start = n();
  await eventually(() => n() > start, 3000);
  return n();
}

const sameCounts = (checker: ThreadedHealthChecker, healthy: number, unhealthy: number) => {
  const c = checker.summary().counts;
  return c.healthy === healthy && c.unhealthy === unhealthy && c.unknown === 0;
};
