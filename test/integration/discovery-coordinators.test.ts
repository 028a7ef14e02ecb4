/**
 * Two coordinators on one etcd, each with its own lease, and one provider
 * identity seen through both: they never share a record key, and no close
 * removes a record the other coordinator holds. Nothing is shared between
 * the coordinators but etcd, whose guarded writes decide (record-claim.ts).
 * Below that, two RecordWriters on two leases show the same rules hold for
 * bursts, in few transactions.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Etcd3 } from 'etcd3';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WebSocket } from 'ws';
import { CoordinatorLease } from '../../packages/coordinator/src/discovery/lease.js';
import { RecordWriter, type RecordClaim } from '../../packages/coordinator/src/discovery/record-writer.js';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { startCli } from '../helpers/cli.js';
import { testCoordinator } from '../helpers/coordinator.js';
import { freePort, sharedEtcdUrl, uniquePrefix } from '../helpers/etcd.js';
import { eventually } from '../helpers/eventually.js';
import { sample } from '../helpers/metrics.js';
import { provide, terminateProviders } from '../helpers/providers.js';

interface Kv {
  key: string;
  lease: string;
  createRevision: number;
  modRevision: number;
}

/** A DNS root no other test uses, and its key directory. */
function uniqueRoot(): { root: string; dir: string } {
  const label = `t${randomBytes(5).toString('hex')}`;
  return { root: `${label}.test.local`, dir: `/skydns/local/test/${label}/` };
}

async function records(etcd: Etcd3, dir: string): Promise<Kv[]> {
  const res = await etcd.getAll().prefix(dir).exec();
  return res.kvs
    .map((kv) => ({ key: kv.key.toString(), lease: String(kv.lease), createRevision: Number(kv.create_revision), modRevision: Number(kv.mod_revision) }))
    .sort((a, b) => a.key.localeCompare(b.key));
}

/** Resolves with the records under `dir` once there are exactly `n`. */
function count(etcd: Etcd3, dir: string, n: number, timeoutMs = 5000): Promise<Kv[]> {
  return eventually(async () => {
    const r = await records(etcd, dir);
    return r.length === n ? r : undefined;
  }, timeoutMs);
}

function closed(ws: WebSocket): Promise<void> {
  return new Promise((resolve) => (ws.readyState === ws.CLOSED ? resolve() : ws.once('close', () => resolve())));
}

async function providersConnected(c: Coordinator): Promise<number | undefined> {
  const r = await c.app.inject({ method: 'GET', url: '/metrics' });
  return sample(r.body, 'switchyard_providers_connected');
}

/**
 * Waits until everything coordinator `c` set off before now has reached
 * etcd: a provider connected after it (the record writer applies changes in
 * order) has come and gone.
 */
async function drained(c: Coordinator, base: string, etcd: Etcd3, dir: string): Promise<void> {
  const ws = await provide(base, 'service=barrier&port=1');
  await count(etcd, `${dir}services/barrier/`, 1);
  ws.close();
  await count(etcd, `${dir}services/barrier/`, 0);
  await eventually(async () => ((await providersConnected(c)) === 0 ? true : undefined));
}

const etcd = new Etcd3({ hosts: sharedEtcdUrl() });
afterAll(() => {
  terminateProviders();
  etcd.close();
});

const QUERY = 'service=dup&port=7000&host=10.0.0.9';
/** skyapi's id for QUERY: sha1 of service, category, host and port. */
const ID = createHash('sha1').update('dupservices10.0.0.97000').digest('hex');

describe('one identity through two coordinators', () => {
  let a: Coordinator;
  let b: Coordinator;
  let baseA: string;
  let baseB: string;
  const { root, dir } = uniqueRoot();
  const dupDir = `${dir}services/dup/`;

  beforeAll(async () => {
    // A TTL long enough that no keep-alive tells a coordinator of a revoked
    // lease before the test does.
    a = await testCoordinator('disco-a', { dnsRoot: root, providerTtlMs: 30_000 });
    b = await testCoordinator('disco-b', { dnsRoot: root, providerTtlMs: 30_000 });
    baseA = await a.listen();
    baseB = await b.listen();
  });
  afterAll(async () => {
    await a.close();
    await b.close();
  });

  it('the first keeps its id, the second gets -2, each on its own lease; each close removes only its own record', async () => {
    const pa = await provide(baseA, QUERY);
    const [ra] = await count(etcd, dupDir, 1);
    expect(ra.key).toBe(`${dupDir}${ID}`);
    const pb = await provide(baseB, QUERY);
    const both = await count(etcd, dupDir, 2);
    expect(both.map((kv) => kv.key)).toEqual([`${dupDir}${ID}`, `${dupDir}${ID}-2`]);
    // A's record untouched by B's claim; B's on another lease.
    expect(both[0]).toEqual(ra);
    expect(both[1].lease).not.toBe(ra.lease);

    pa.close();
    const [left] = await count(etcd, dupDir, 1);
    expect(left).toEqual(both[1]);
    await drained(a, baseA, etcd, dir);
    expect(await records(etcd, dupDir)).toEqual([both[1]]);

    pb.close();
    await count(etcd, dupDir, 0);
  });

  it('the second closing first leaves the first\'s record as it was', async () => {
    const pa = await provide(baseA, QUERY);
    const [ra] = await count(etcd, dupDir, 1);
    const pb = await provide(baseB, QUERY);
    await count(etcd, dupDir, 2);
    pb.close();
    expect(await count(etcd, dupDir, 1)).toEqual([ra]);
    await drained(b, baseB, etcd, dir);
    expect(await records(etcd, dupDir)).toEqual([ra]);
    pa.close();
    await count(etcd, dupDir, 0);
  });

  it('a close through A after B claimed the id (A\'s record vanished behind A\'s back) never deletes B\'s record', async () => {
    const pa = await provide(baseA, QUERY);
    const [ra] = await count(etcd, dupDir, 1);
    // As if A's record had expired: A does not know it is gone.
    await etcd.delete().key(ra.key).exec();
    const pb = await provide(baseB, QUERY);
    const [rb] = await count(etcd, dupDir, 1);
    expect(rb.key).toBe(`${dupDir}${ID}`);
    expect(rb.lease).not.toBe(ra.lease);

    pa.close();
    await closed(pa);
    await eventually(async () => ((await providersConnected(a)) === 0 ? true : undefined));
    // A's delete has been tried (guarded on A's lease, so it did nothing).
    await drained(a, baseA, etcd, dir);
    expect(await records(etcd, dupDir)).toEqual([rb]);
    pb.close();
    await count(etcd, dupDir, 0);
  });

  it('after a lease loss, a live record whose id another coordinator took meanwhile moves to the next suffix', async () => {
    const pa = await provide(baseA, QUERY);
    const [ra] = await count(etcd, dupDir, 1);
    // B takes the id while A still believes it holds it, then A loses its lease.
    await etcd.delete().key(ra.key).exec();
    const pb = await provide(baseB, QUERY);
    const [rb] = await count(etcd, dupDir, 1);
    await etcd.leaseClient.leaseRevoke({ ID: ra.lease });
    // A learns of the loss at its next write (or keep-alive): another provider's put.
    const trigger = await provide(baseA, 'service=trigger&port=1');
    const [moved, kept] = await eventually(async () => {
      const r = await records(etcd, dupDir);
      return r.length === 2 ? r.sort((x, y) => y.key.length - x.key.length) : undefined;
    }, 10_000);
    expect(kept).toEqual(rb);
    expect(moved.key).toBe(`${dupDir}${ID}-2`);
    const [t] = await count(etcd, `${dir}services/trigger/`, 1);
    expect(moved.lease).toBe(t.lease);
    expect(moved.lease).not.toBe(ra.lease);

    pa.close();
    expect(await count(etcd, dupDir, 1)).toEqual([rb]);
    trigger.close();
    pb.close();
    await count(etcd, dir, 0);
  });

  it('a graceful stop revokes the lease: the id is free at once for a reconnect through the other coordinator', async () => {
    const pa = await provide(baseA, QUERY);
    await count(etcd, dupDir, 1);
    await a.close();
    await closed(pa);
    await count(etcd, dupDir, 0, 2000);
    const pb = await provide(baseB, QUERY);
    const [rb] = await count(etcd, dupDir, 1);
    expect(rb.key).toBe(`${dupDir}${ID}`);
    pb.close();
    await count(etcd, dupDir, 0);
  });
});

describe('a coordinator killed with SIGKILL', () => {
  it('keeps its ids until its lease expires: a process reconnecting elsewhere gets -2 until then, its own id after', async () => {
    const { root, dir } = uniqueRoot();
    const dupDir = `${dir}services/dup/`;
    const port = await freePort();
    const cli = startCli(
      ['coordinator', '--etcd', sharedEtcdUrl(), '--prefix', uniquePrefix('disco-killed'), '--listen', `127.0.0.1:${port}`, '--dns-root', root, '--provider-ttl', '2s', '--log-level', 'info'],
      /listening/i,
    );
    const b = await testCoordinator('disco-survivor', { dnsRoot: root, providerTtlMs: 2000 });
    try {
      const baseB = await b.listen();
      await cli.ready;
      const doomed = await provide(`http://127.0.0.1:${port}`, QUERY);
      const [dead] = await count(etcd, dupDir, 1);
      cli.child.kill('SIGKILL');
      await closed(doomed);
      // The process reconnects at once, through B: its id is still held.
      const again = await provide(baseB, QUERY);
      const both = await count(etcd, dupDir, 2);
      expect(both.map((kv) => kv.key)).toEqual([dead.key, `${dead.key}-2`]);
      // The killed coordinator's lease runs out (TTL 2 s); B's record stays.
      const [mine] = await count(etcd, dupDir, 1, 8000);
      expect(mine.key).toBe(`${dead.key}-2`);
      // Reconnecting after that, it gets its own id back.
      again.close();
      await count(etcd, dupDir, 0);
      const back = await provide(baseB, QUERY);
      const [r] = await count(etcd, dupDir, 1);
      expect(r.key).toBe(dead.key);
      back.close();
      await count(etcd, dupDir, 0);
    } finally {
      cli.child.kill('SIGKILL');
      await b.close();
    }
  }, 30_000);
});

describe('two record writers on two leases', () => {
  const log = pino({ level: 'silent' });
  const value = '{"host":"10.0.0.1","port":1,"priority":1,"weight":100}';
  let leaseA: CoordinatorLease;
  let leaseB: CoordinatorLease;
  let writerA: RecordWriter;
  let writerB: RecordWriter;

  beforeAll(() => {
    leaseA = new CoordinatorLease(etcd, 30, log);
    leaseB = new CoordinatorLease(etcd, 30, log);
    writerA = new RecordWriter(etcd, leaseA, log);
    writerB = new RecordWriter(etcd, leaseB, log);
  });
  afterAll(async () => {
    writerA.stop();
    writerB.stop();
    await leaseA.stop();
    await leaseB.stop();
  });

  it('a burst of claims of taken ids moves each to -2 in a few transactions; releases remove only each writer\'s own', async () => {
    const { dir } = uniqueRoot();
    const claimsA = Array.from({ length: 300 }, (_, i) => writerA.claim(`${dir}r${i}`, value));
    await writerA.settled();
    const stats0 = { ...writerB.stats };
    const claimsB = Array.from({ length: 600 }, (_, i) => writerB.claim(`${dir}r${i}`, value));
    await writerB.settled();
    expect(claimsB.every((c) => c.held)).toBe(true);
    expect(claimsB.map((c) => c.key)).toEqual(Array.from({ length: 600 }, (_, i) => (i < 300 ? `${dir}r${i}-2` : `${dir}r${i}`)));
    const la = await leaseA.id();
    const lb = await leaseB.id();
    const stored = new Map((await records(etcd, dir)).map((kv) => [kv.key, kv.lease]));
    expect(stored.size).toBe(900);
    for (const c of claimsA) expect(stored.get(c.key)).toBe(la);
    for (const c of claimsB) expect(stored.get(c.key)).toBe(lb);
    // The shared etcd has the default limits (128 ops): 600 records are 5
    // transactions (after one refusal of the first, all-in-one attempt),
    // the 300 that moved 3 more. Not one per record.
    expect(writerB.stats.conflicts - stats0.conflicts).toBe(300);
    expect(writerB.stats.txns - stats0.txns).toBeLessThanOrEqual(8);

    // A's records vanish behind its back for 50 ids, which B then claims.
    for (const c of claimsA.slice(0, 50)) await etcd.delete().key(c.key).exec();
    const takenB = claimsA.slice(0, 50).map((c) => writerB.claim(c.base, value));
    await writerB.settled();
    expect(takenB.map((c) => c.key)).toEqual(claimsA.slice(0, 50).map((c) => c.key));
    // A mass close on A: one burst, 50 of whose deletes find the key B's.
    const statsA = { ...writerA.stats };
    claimsA.forEach((c) => writerA.release(c));
    await writerA.settled();
    expect(writerA.stats.deletes - statsA.deletes).toBe(250);
    expect(writerA.stats.conflicts - statsA.conflicts).toBe(50);
    expect(writerA.stats.txns - statsA.txns).toBeLessThanOrEqual(3);
    const after = await records(etcd, dir);
    expect(after.length).toBe(650);
    expect(after.every((kv) => kv.lease === lb)).toBe(true);

    [...claimsB, ...takenB].forEach((c) => writerB.release(c));
    await writerB.settled();
    expect(await records(etcd, dir)).toEqual([]);
  }, 20_000);

  it('a release and a claim of the same id before the flush keep the key: no delete reaches etcd', async () => {
    const { dir } = uniqueRoot();
    const first = writerA.claim(`${dir}same`, value);
    await writerA.settled();
    const [before] = await records(etcd, dir);
    const stats0 = { ...writerA.stats };
    writerA.release(first);
    const second: RecordClaim = writerA.claim(`${dir}same`, value);
    expect(second.key).toBe(first.key);
    await writerA.settled();
    expect(second.held).toBe(true);
    const [after] = await records(etcd, dir);
    // Same key, never deleted in between (a delete and a put would give it a new create revision).
    expect(after.createRevision).toBe(before.createRevision);
    expect(writerA.stats.deletes).toBe(stats0.deletes);
    writerA.release(second);
    await writerA.settled();
    expect(await records(etcd, dir)).toEqual([]);
  });

  it('a second claim of one id on the same writer gets -2 without asking etcd for the first key', async () => {
    const { dir } = uniqueRoot();
    const one = writerA.claim(`${dir}x`, value);
    const two = writerA.claim(`${dir}x`, value);
    await writerA.settled();
    expect([one.key, two.key]).toEqual([`${dir}x`, `${dir}x-2`]);
    expect(one.held && two.held).toBe(true);
    writerA.release(one);
    writerA.release(two);
    await writerA.settled();
    expect(await records(etcd, dir)).toEqual([]);
  });
});
