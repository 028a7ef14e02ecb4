/**
 * Honest answers and invisible member failures, on a real 3-member etcd
 * cluster (test/helpers/etcd-cluster.ts) that the tests freeze (SIGSTOP) and
 * kill. Each scenario is a few seconds of real traffic.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { createEtcdClient, PrefixMirror, type EtcdClient } from '@switchyard/shared';
import { startAgent } from '../../packages/agent/src/index.js';
import { buildCoordinator, type Coordinator } from '../../packages/coordinator/src/index.js';
import { startEtcdCluster, type EtcdCluster } from '../helpers/etcd-cluster.js';
import { provide, terminateProviders } from '../helpers/providers.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Answer {
  status: number;
  code?: string;
  ms: number;
  at: number;
  id: string;
}

async function coordinatorOn(cluster: EtcdCluster, name: string, extra: Record<string, unknown> = {}): Promise<Coordinator> {
  return buildCoordinator({
    etcd: cluster.urls,
    prefix: `/sy-faults/${name}-${randomBytes(4).toString('hex')}`,
    listen: { host: '127.0.0.1', port: 0 },
    logLevel: 'silent',
    ...extra,
  });
}

/** POST one server to service `svc` and read the service back (read-your-writes), timing both. */
async function writeAndRead(c: Coordinator, svc: string, i: number): Promise<Answer[]> {
  const id = `10.9.${Math.floor(i / 250)}.${(i % 250) + 1}`;
  const t0 = performance.now();
  const w = await c.app.inject({ method: 'POST', url: `/services/${svc}/servers`, payload: { host: id, port: 80 } });
  const t1 = performance.now();
  const r = await c.app.inject({ method: 'GET', url: `/services/${svc}` });
  const t2 = performance.now();
  return [
    { status: w.statusCode, code: w.json<{ code?: string }>().code, ms: t1 - t0, at: t1, id },
    { status: r.statusCode, code: r.json<{ code?: string }>().code, ms: t2 - t1, at: t2, id: 'read' },
  ];
}

let cluster: EtcdCluster;

/** Brings killed members back, so the next scenario starts with three. */
async function restartDead(): Promise<void> {
  for (const m of cluster.members) if (m.process && (m.process.exitCode !== null || m.process.signalCode !== null)) await cluster.restart(m);
  await cluster.waitForLeader();
}
let direct: EtcdClient;

beforeAll(async () => {
  cluster = await startEtcdCluster(3);
  direct = createEtcdClient({ hosts: cluster.urls });
});
afterAll(async () => {
  terminateProviders();
  direct?.close();
  await cluster?.stop();
});

describe('one frozen follower', () => {
  it('answers every request, none slower than 1 s, while a follower is frozen', async () => {
    const c = await coordinatorOn(cluster, 'frozen-follower');
    try {
      const svc = (await c.app.inject({ method: 'POST', url: '/services', payload: { host: '10.8.0.1', port: 80, type: 'tcp' } })).json<{ id: string }>().id;
      const follower = await cluster.follower();
      const answers: Answer[] = [];
      const end = performance.now() + 4500;
      let i = 0;
      const writer = (async () => {
        while (performance.now() < end) answers.push(...(await writeAndRead(c, svc, i++)));
      })();
      await sleep(800);
      cluster.freeze(follower);
      await sleep(3000);
      cluster.thaw(follower);
      await writer;
      const bad = answers.filter((a) => a.status !== 200);
      expect(bad, JSON.stringify(bad.slice(0, 5))).toEqual([]);
      expect(Math.max(...answers.map((a) => a.ms))).toBeLessThan(1000);
      expect(answers.length).toBeGreaterThan(20);
    } finally {
      await c.close();
    }
  });

  it('moves a watch off a frozen member within 1 s (coordinator and agent mirrors alike)', async () => {
    // A client given only the two followers: its watch is on one of them.
    // Freezing each in turn freezes the one carrying the watch once.
    const leader = await cluster.leader();
    const followers = cluster.members.filter((m) => m !== leader);
    const client = createEtcdClient({ hosts: followers.map((m) => m.url) });
    const prefix = `/sy-faults/watch-${randomBytes(4).toString('hex')}/`;
    const mirror = new PrefixMirror<string>(client, { prefix, parse: (_k, v) => v.toString() });
    try {
      await mirror.start();
      let n = 0;
      for (const f of followers) {
        cluster.freeze(f);
        try {
          const lags: number[] = [];
          for (let k = 0; k < 6; k++) {
            await sleep(250);
            const res = await direct.put(`${prefix}k${n++}`).value('v');
            const t0 = performance.now();
            await mirror.waitFor(Number(res.header.revision), 5000);
            lags.push(performance.now() - t0);
          }
          expect(Math.max(...lags), `lags while ${f.name} frozen: ${lags.map(Math.round).join(', ')}`).toBeLessThan(1000);
        } finally {
          cluster.thaw(f);
        }
        await sleep(500);
      }
      expect(mirror.entries.size).toBe(n);
    } finally {
      await mirror.stop();
      client.close();
    }
  });
});

describe('every member frozen', () => {
  it('answers 504 for writes it sent, 503 at once once a probe failed; a 503 write never appears; offers of unknown outcome release their port', async () => {
    const c = await coordinatorOn(cluster, 'all-frozen', { etcdTimeoutMs: 2000 });
    try {
      expect((await c.app.inject({ method: 'POST', url: '/v1/services', payload: { name: 'pm', start: 7000, end: 7009 } })).statusCode).toBe(201);
      const post = async (i: number) => {
        const t0 = performance.now();
        const r = await c.app.inject({ method: 'POST', url: '/services', payload: { host: `10.7.0.${i}`, port: 80, type: 'tcp' } });
        return { i, status: r.statusCode, body: r.json<{ code?: string; error?: string }>(), ms: performance.now() - t0 };
      };
      for (const m of cluster.members) cluster.freeze(m);
      // Sent before any probe noticed: no answer → 504, may have been applied.
      const [early, offer] = await Promise.all([
        Promise.all([1, 2, 3].map(post)),
        c.app.inject({ method: 'POST', url: '/v1/services/pm/offers', payload: { name: 'web' } }),
      ]);
      // By now the probes have failed: refused at once, unsent.
      await sleep(500);
      const late = await Promise.all([11, 12, 13].map(post));
      for (const m of cluster.members) cluster.thaw(m);

      for (const a of early) {
        expect([503, 504], JSON.stringify(a)).toContain(a.status);
        if (a.status === 504) {
          expect(a.body.code).toBe('OUTCOME_UNKNOWN');
          expect(a.body.error).toMatch(/may have been applied.*safe/);
        }
      }
      expect(offer.statusCode, offer.body).toBe(504);
      for (const a of late) {
        expect(a.status, JSON.stringify(a)).toBe(503);
        expect(a.body.code).toBe('ETCD_UNAVAILABLE');
        expect(a.ms).toBeLessThan(300);
      }

      await cluster.waitForLeader();
      await sleep(1500);
      // A 503 was not applied, not even later.
      for (const a of late) {
        const r = await c.app.inject({ method: 'GET', url: `/services/tcp-10.7.0.${a.i}-80` });
        const all = (await c.app.inject({ method: 'GET', url: '/services' })).json<{ host: string }[]>();
        expect(all.some((s) => s.host === `10.7.0.${a.i}`), `503'd service ${a.i} appeared (${r.statusCode})`).toBe(false);
      }
      // Repeating a 504 is safe: exactly one service each.
      for (const a of early) expect((await post(a.i)).status).toBe(200);
      const all = (await c.app.inject({ method: 'GET', url: '/services' })).json<{ host: string }[]>();
      for (const a of early) expect(all.filter((s) => s.host === `10.7.0.${a.i}`)).toHaveLength(1);
      // The offer nobody got the secret of holds no port (withdrawn if it was applied).
      const offers = await c.app.inject({ method: 'GET', url: '/v1/services/pm/offers' });
      expect(offers.json()).toEqual([]);
      const again = await c.app.inject({ method: 'POST', url: '/v1/services/pm/offers', payload: { name: 'web' } });
      expect(again.statusCode, again.body).toBe(201);
      expect(again.json<{ port: number }>().port).toBe(7000);
    } finally {
      await c.close();
    }
  });

  it('tells providers and Leviathan monitors of the outage with an error frame, and that etcd is back', async () => {
    const c = await coordinatorOn(cluster, 'ws-outage');
    const base = await c.listen();
    try {
      const ws: WebSocket = await provide(base, 'service=outage&port=9999&host=127.0.0.1');
      const frames: { error?: string; code?: string; event?: string }[] = [];
      ws.on('message', (d) => frames.push(JSON.parse(d.toString())));
      const monitor = new WebSocket(`${base.replace(/^http/, 'ws')}/leviathan/monitor`);
      await new Promise((resolve, reject) => monitor.once('open', resolve).once('error', reject));
      const monitorFrames: { type?: string; code?: string; response?: { message?: string } }[] = [];
      monitor.on('message', (d) => monitorFrames.push(JSON.parse(d.toString())));
      for (const m of cluster.members) cluster.freeze(m);
      await sleep(1200);
      for (const m of cluster.members) cluster.thaw(m);
      await cluster.waitForLeader();
      await sleep(500);
      expect(frames[0]).toMatchObject({ code: 'ETCD_UNAVAILABLE' });
      expect(frames[0].error).toMatch(/etcd is unavailable/);
      expect(frames.at(-1)).toEqual({ event: 'etcd-available' });
      expect(ws.readyState).toBe(ws.OPEN);
      expect(monitorFrames[0]).toMatchObject({ type: 'error', sequence: null, code: 'ETCD_UNAVAILABLE' });
      expect(monitorFrames[0].response?.message).toMatch(/etcd is unavailable/);
      expect(monitorFrames.at(-1)).toMatchObject({ type: 'status', code: 'ETCD_AVAILABLE' });
      ws.close();
      monitor.close();
    } finally {
      await c.close();
    }
  });
});

describe('leader killed', () => {
  it('never answers 503 once a leader is elected, blocks writes at most the election + 0.3 s, loses nothing, keeps provider records', async () => {
    const c = await coordinatorOn(cluster, 'leader-kill', { dnsRoot: 'lk.test.local', providerTtlMs: 3000 });
    const base = await c.listen();
    try {
      const svc = (await c.app.inject({ method: 'POST', url: '/services', payload: { host: '10.6.0.1', port: 80, type: 'tcp' } })).json<{ id: string }>().id;
      const ws = await provide(base, 'service=lk&port=9999&host=127.0.0.1');
      const recordDir = '/skydns/local/test/lk/services/lk/';
      await expect.poll(async () => (await direct.getAll().prefix(recordDir).keys()).length, { timeout: 5000 }).toBe(1);

      const leader = await cluster.leader();
      const answers: Answer[] = [];
      let killedAt = 0;
      let electedAt = 0;
      const end = performance.now() + 5000;
      let i = 0;
      const writer = (async () => {
        while (performance.now() < end) answers.push((await writeAndRead(c, svc, i++))[0]);
      })();
      await sleep(1000);
      killedAt = performance.now();
      await cluster.kill(leader);
      const electionWatch = (async () => {
        for (;;) {
          try {
            const l = await cluster.leader();
            if (l !== leader) return (electedAt = performance.now());
          } catch {
            // election under way
          }
          await sleep(20);
        }
      })();
      await writer;
      await electionWatch;

      const after = answers.filter((a) => a.at > electedAt);
      expect(after.filter((a) => a.status === 503), 'a 503 after the new leader was elected').toEqual([]);
      const errors = answers.filter((a) => a.status !== 200);
      for (const e of errors) expect([503, 504]).toContain(e.status);
      expect(answers.filter((a) => a.status === 503)).toEqual([]);
      // The longest stretch without a successful write, around the kill.
      const ok = answers.filter((a) => a.status === 200).map((a) => a.at);
      const firstAfter = ok.find((t) => t > killedAt) ?? Infinity;
      const window = firstAfter - killedAt;
      const election = electedAt - killedAt;
      expect(window, `window ${Math.round(window)} ms, election ${Math.round(election)} ms`).toBeLessThan(election + 300);

      // Nothing acknowledged is lost.
      const acked = answers.filter((a) => a.status === 200).map((a) => a.id);
      const stored = (await c.app.inject({ method: 'GET', url: `/services/${svc}` })).json<{ servers: { host: string }[] }>();
      const hosts = new Set(stored.servers.map((s) => s.host));
      for (const h of acked) expect(hosts.has(h), `acknowledged ${h} lost`).toBe(true);
      // The provider's record survived (its lease was kept alive through the election).
      await sleep(3500);
      expect((await direct.getAll().prefix(recordDir).keys()).length).toBe(1);
      ws.close();
    } finally {
      await c.close();
      await restartDead();
    }
  });

  it('keeps Portmaster offers unique and an agent applying across a leader kill', async () => {
    const c = await coordinatorOn(cluster, 'leader-kill-pm');
    const agent = await startAgent({ hostId: 'fa', etcd: cluster.urls, prefix: c.ctx.keys.prefix, dataplane: 'dry-run', logLevel: 'silent', leaseTtlSeconds: 3 });
    try {
      expect((await c.app.inject({ method: 'POST', url: '/v1/services', payload: { name: 'lkpm', start: 10000, end: 29999 } })).statusCode).toBe(201);
      await expect.poll(async () => (await c.app.inject({ method: 'GET', url: '/hosts/fa' })).json<{ alive?: boolean }>().alive, { timeout: 5000 }).toBe(true);

      // A range no run can use up in 4 s (a fast machine offered ~1,000 in 4 s: a full
      // range is a 400, which this test would count as a failure of the election).
      const leader = await cluster.leader();
      const offered: number[] = [];
      const statuses: number[] = [];
      let n = 0;
      const end = performance.now() + 4000;
      const offers = Promise.all(
        [0, 1, 2, 3].map(async () => {
          while (performance.now() < end) {
            const r = await c.app.inject({ method: 'POST', url: '/v1/services/lkpm/offers', payload: { name: `i${n++}` } });
            statuses.push(r.statusCode);
            if (r.statusCode === 201) offered.push(r.json<{ port: number }>().port);
          }
        }),
      );
      await sleep(500);
      await cluster.kill(leader);
      await offers;
      await cluster.waitForLeader();

      expect(new Set(offered).size, 'duplicate ports').toBe(offered.length);
      expect(statuses.filter((s) => s !== 201 && s !== 504), `statuses ${JSON.stringify(statuses)}`).toEqual([]);
      const listed = (await c.app.inject({ method: 'GET', url: '/v1/services/lkpm/offers' })).json<{ port: number }[]>().map((o) => o.port);
      for (const p of offered) expect(listed).toContain(p);

      // The agent follows a write made after the election.
      const post = await c.app.inject({ method: 'POST', url: '/services', payload: { host: '10.5.0.1', port: 80, type: 'tcp' } });
      expect(post.statusCode).toBe(200);
      const rev = Number(post.headers['x-switchyard-revision']);
      await expect
        .poll(async () => (await c.app.inject({ method: 'GET', url: '/hosts/fa' })).json<{ appliedRevision: number }>().appliedRevision, { timeout: 3000 })
        .toBeGreaterThanOrEqual(rev);
    } finally {
      await agent.stop();
      await c.close();
      await restartDead();
    }
  });
});
