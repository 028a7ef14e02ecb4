/**
 * The agent daemon against a real etcd, with the dry-run dataplane (no
 * kernel): registration on a lease, status with the applied revision,
 * `hosts` pinning, coalescing, and surviving an etcd outage.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Etcd3 } from 'etcd3';
import { AgentStatus, INITIAL_GENERATION, keyspace } from '@switchyard/shared';
import { startAgent, type RunningAgent } from '../../packages/agent/src/index.js';
import { testCoordinator } from '../helpers/coordinator.js';
import { freePort, sharedEtcdUrl, uniquePrefix } from '../helpers/etcd.js';
import { startEtcd } from '../../packages/cli/src/embedded-etcd.js';

const agents: RunningAgent[] = [];
afterEach(async () => {
  await Promise.all(agents.splice(0).map((a) => a.stop()));
});

async function until<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('agent daemon (dry-run, real etcd)', () => {
  const etcd = new Etcd3({ hosts: sharedEtcdUrl() });
  afterAll(() => etcd.close());

  it('registers on a lease, reports the applied revision and honours hosts pinning', async () => {
    const c = await testCoordinator('agent-daemon');
    const prefix = c.ctx.keys.prefix;
    try {
      const agent = await startAgent({ hostId: 'h1', etcd: [sharedEtcdUrl()], prefix, dataplane: 'dry-run', logLevel: 'silent', leaseTtlSeconds: 2 });
      agents.push(agent);
      expect(agent.dataplane).toBe('dry-run');
      const host = await until('registration', async () => {
        const res = await c.app.inject({ method: 'GET', url: '/hosts/h1' });
        return res.statusCode === 200 && res.json().alive ? res.json() : undefined;
      });
      expect(host).toMatchObject({ id: 'h1', alive: true, dataplane: 'dry-run' });

      const post = await c.app.inject({
        method: 'POST',
        url: '/services',
        payload: { host: '10.1.0.1', port: 80, scheduler: 'lc', servers: [{ host: '10.2.0.1', port: 80, forwarder: 'm' }] },
      });
      expect(post.statusCode).toBe(200);
      const rev = Number(post.headers['x-switchyard-revision']);
      const pinned = await c.app.inject({ method: 'POST', url: '/services', payload: { host: '10.1.0.2', port: 80, hosts: ['h2'] } });
      const rev2 = Number(pinned.headers['x-switchyard-revision']);
      expect(rev2).toBeGreaterThan(rev);
      const applied = await until('applied revision', async () => {
        const h = (await c.app.inject({ method: 'GET', url: '/hosts/h1' })).json();
        return h.appliedRevision >= rev2 ? h : undefined;
      });
      // The pinned service is for h2 only; lc falls back to weighted random with a warning.
      expect(applied.services).toBe(1);
      expect(applied.errors).toEqual([]);
      expect(applied.warnings).toEqual([
        { serviceId: 'tcp-10_1_0_1-80', level: 'warning', message: 'scheduler lc needs connection counts and the feedback is off; using the weights' },
      ]);

      // The status key is valid against the shared schema.
      const raw = await etcd.get(keyspace(prefix).hosts.status('h1')).string();
      expect(AgentStatus.parse(JSON.parse(raw ?? '{}')).appliedRevision).toBeGreaterThanOrEqual(rev2);

      // Stopping revokes the lease: the host is no longer alive, its status stays.
      await agents.pop()?.stop();
      const gone = await until('lease revoked', async () => {
        const h = (await c.app.inject({ method: 'GET', url: '/hosts/h1' })).json();
        return h.alive === false ? h : undefined;
      }, 3000);
      expect(gone.appliedRevision).toBeGreaterThanOrEqual(rev2);
    } finally {
      await c.close();
    }
  });

  it('coalesces a burst of writes into few passes and ends at the last revision', async () => {
    const prefix = uniquePrefix('agent-burst');
    const keys = keyspace(prefix);
    const agent = await startAgent({ hostId: 'burst', etcd: [sharedEtcdUrl()], prefix, dataplane: 'dry-run', logLevel: 'silent', minSyncIntervalMs: 50 });
    agents.push(agent);
    await until('first status', () => agent.status.written);
    let last = 0;
    for (let i = 0; i < 50; i++) {
      const svc = { id: `tcp-10_9_0_${i}-80`, host: `10.9.0.${i}`, port: 80, type: 'tcp', scheduler: 'rr', persistence: 0, netmask: '', servers: [] };
      last = Number((await etcd.put(keys.l4.service(INITIAL_GENERATION, svc.id)).value(JSON.stringify(svc)).exec()).header.revision);
    }
    const status = await until('burst applied', () => (agent.status.written && agent.status.written.appliedRevision >= last ? agent.status.written : undefined));
    expect(status.services).toBe(50);
  });

  it('keeps running while etcd is down and applies changes once it is back', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'sy-agent-outage-'));
    const [clientPort, peerPort] = [await freePort(), await freePort()];
    let server = await startEtcd({ dataDir, clientPort, peerPort });
    const prefix = uniquePrefix('agent-outage');
    const keys = keyspace(prefix);
    try {
      const agent = await startAgent({ hostId: 'o1', etcd: [server.url], prefix, dataplane: 'dry-run', logLevel: 'silent' });
      agents.push(agent);
      const first = await until('first status', () => agent.status.written);
      await server.stop();
      await new Promise((r) => setTimeout(r, 1500));
      server = await startEtcd({ dataDir, clientPort, peerPort });
      const client = new Etcd3({ hosts: server.url });
      try {
        const svc = { id: 'tcp-10_8_0_1-80', host: '10.8.0.1', port: 80, type: 'tcp', scheduler: 'rr', persistence: 0, netmask: '', servers: [] };
        const rev = Number((await client.put(keys.l4.service(INITIAL_GENERATION, svc.id)).value(JSON.stringify(svc)).exec()).header.revision);
        const after = await until('applied after the outage', () => (agent.status.written && agent.status.written.appliedRevision >= rev ? agent.status.written : undefined), 20_000);
        expect(after.appliedRevision).toBeGreaterThan(first.appliedRevision);
        expect(after.services).toBe(1);
      } finally {
        client.close();
      }
    } finally {
      await Promise.all(agents.splice(0).map((a) => a.stop()));
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
