/**
 * The transaction helpers, against a real etcd running with etcd's *default*
 * limits (128 operations, 1.5 MiB per request), as a user's cluster would:
 *  - group commit: concurrent single-key transactions share outer
 *    transactions, each keeps its own compare and outcome, same-key
 *    submissions keep their order, and batches stay under the limits;
 *  - replacePrefix: a prefix becomes exactly a given set whatever (and however
 *    much) is stored under it now.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Etcd3 } from 'etcd3';
import { cmp, createEtcdClient, GroupCommit, op, replacePrefix } from '@switchyard/shared';
import { etcdBehindProxy, freePort, startPrivateEtcd, uniquePrefix } from '../helpers/etcd.js';

let etcd: Awaited<ReturnType<typeof startPrivateEtcd>>;
let client: Etcd3;

beforeAll(async () => {
  // etcd's default limits, as every test runs on.
  etcd = await startPrivateEtcd();
  client = createEtcdClient({ hosts: [etcd.url] });
});

afterAll(async () => {
  client?.close();
  await etcd?.cleanup();
});

const create = (key: string, value: string) => ({ compare: [cmp.absent(key)], success: [op.put(key, value)], failure: [op.get(key)] });

describe('GroupCommit', () => {
  it('commits concurrent submissions together, each with its own outcome', async () => {
    const p = uniquePrefix('gc');
    await client.put(`${p}/taken-3`).value('before');
    await client.put(`${p}/taken-7`).value('before');
    const gc = new GroupCommit(client);
    const keys = Array.from({ length: 40 }, (_, i) => (i === 3 || i === 7 ? `${p}/taken-${i}` : `${p}/k${i}`));
    const results = await Promise.all(keys.map((k) => gc.submit(create(k, 'new'))));

    results.forEach((r, i) => {
      expect(r.succeeded, keys[i]).toBe(i !== 3 && i !== 7);
      if (!r.succeeded) expect(r.responses[0].response_range.kvs[0].value.toString()).toBe('before');
    });
    const stored = await client.getAll().prefix(`${p}/`).strings();
    expect(Object.keys(stored)).toHaveLength(40);
    expect(stored[`${p}/taken-3`]).toBe('before');
    expect(stored[`${p}/k0`]).toBe('new');
    // Shared transactions: far fewer revisions than writes, and each write's
    // key was last modified at exactly the revision its submission reported.
    const revisions = new Set(results.filter((r) => r.succeeded).map((r) => r.revision));
    expect(revisions.size).toBeLessThan(10);
    for (const [i, r] of results.entries()) {
      if (!r.succeeded) continue;
      const kv = (await client.get(keys[i]).exec()).kvs[0];
      expect(Number(kv.mod_revision)).toBe(r.revision);
    }
  });

  it('keeps submissions on one key in arrival order (etcd refuses a key twice in one transaction)', async () => {
    const p = uniquePrefix('gc-same');
    const key = `${p}/one`;
    const gc = new GroupCommit(client);
    const first = await gc.submit(create(key, 'v0'));
    // Ten compare-and-swaps all expecting the first value, submitted at once:
    // exactly one can win, and it must be the first to arrive.
    const chain = Array.from({ length: 10 }, (_, i) => gc.submit({ compare: [cmp.modIs(key, first.revision)], success: [op.put(key, `v${i + 1}`)] }));
    const dupes = Array.from({ length: 5 }, () => gc.submit(create(`${p}/dup`, 'x')));
    const results = await Promise.all(chain);
    expect(results.filter((r) => r.succeeded)).toHaveLength(1);
    expect(results[0].succeeded).toBe(true); // the first to arrive
    expect(await client.get(key).string()).toBe('v1');
    const dupResults = await Promise.all(dupes);
    expect(dupResults.map((r) => r.succeeded)).toEqual([true, false, false, false, false]);
  });

  it('splits a burst into batches under the default limits of operations and bytes', async () => {
    const p = uniquePrefix('gc-limits');
    const gc = new GroupCommit(client);
    const small = Array.from({ length: 450 }, (_, i) => gc.submit(create(`${p}/s${i}`, 'x')));
    // Eight values of 400 KiB: about 3 MiB in total, over the 1.5 MiB a request may carry.
    const big = Array.from({ length: 8 }, (_, i) => gc.submit(create(`${p}/b${i}`, 'y'.repeat(400 * 1024))));
    const results = await Promise.all([...small, ...big]);
    expect(results.every((r) => r.succeeded)).toBe(true);
    const counts = new Map<number, number>();
    for (const r of results) counts.set(r.revision, (counts.get(r.revision) ?? 0) + 1);
    expect(Math.max(...counts.values())).toBeLessThanOrEqual(100);
    expect(await client.getAll().prefix(`${p}/`).keys()).toHaveLength(458);
  });

  it('sends a batch etcd refuses again one submission at a time: only the one at fault fails', async () => {
    const p = uniquePrefix('gc-refused');
    // Batches of 150 exceed this etcd's 128 operations: every batch is refused whole.
    const gc = new GroupCommit(client, { maxOps: 150 });
    const subs = Array.from({ length: 150 }, (_, i) => create(`${p}/k${i}`, 'x'));
    // One of them names a lease that does not exist: etcd refuses it on its own too.
    subs[70] = { compare: [cmp.absent(`${p}/k70`)], success: [op.put(`${p}/k70`, 'x', '123456789')], failure: [] };
    const outcomes = await Promise.allSettled(subs.map((s) => gc.submit(s)));
    expect(outcomes.filter((o) => o.status === 'rejected')).toHaveLength(1);
    expect(outcomes[70].status).toBe('rejected');
    expect(await client.getAll().prefix(`${p}/`).keys()).toHaveLength(149);
  });

  it('drops a submission that waited longer than its caller would, unsent', async () => {
    const p = uniquePrefix('gc-stale');
    const { proxy, viaProxy: slow, close } = await etcdBehindProxy(etcd.url, { callTimeoutMs: 800 });
    try {
      await slow.get('/warm-up').string(); // connected before the proxy holds etcd's answers
      const gc = new GroupCommit(slow, { maxInFlight: 1, queueTimeoutMs: 200 });
      proxy.hold();
      const first = gc.submit(create(`${p}/first`, 'x')); // on the wire; its answer is held back
      await new Promise((r) => setTimeout(r, 50));
      const second = gc.submit(create(`${p}/second`, 'x')); // queued behind it
      const [a, b] = await Promise.allSettled([first, second]);
      expect(a.status).toBe('rejected'); // its deadline passed while held
      expect(b.status).toBe('rejected');
      expect(String((b as PromiseRejectedResult).reason)).toMatch(/waited \d+ ms to be sent/);
      proxy.release();
      await new Promise((r) => setTimeout(r, 200));
      expect(await client.get(`${p}/second`).string()).toBeNull();
    } finally {
      proxy.release();
      await close();
    }
  });

  it('fails every submission of a batch when etcd cannot be reached, and does not hang', async () => {
    const dead = createEtcdClient({ hosts: [`http://127.0.0.1:${await freePort()}`], callTimeoutMs: 500 });
    try {
      const gc = new GroupCommit(dead);
      const outcomes = await Promise.allSettled(Array.from({ length: 5 }, (_, i) => gc.submit(create(`/gc-dead/${i}`, 'x'))));
      expect(outcomes.map((o) => o.status)).toEqual(Array(5).fill('rejected'));
    } finally {
      dead.close();
    }
  });
});

describe('replacePrefix', () => {
  it('leaves exactly the given keys under a prefix holding far more than a transaction may touch', async () => {
    const p = uniquePrefix('replace');
    const dir = `${p}/services/`;
    // 600 old keys (in transactions of 100), plus neighbours that share the
    // prefix's leading bytes but are not under it.
    for (let b = 0; b < 6; b++) {
      await client.kv.txn({ compare: [], success: Array.from({ length: 100 }, (_, i) => op.put(`${dir}old-${b * 100 + i}`, 'old')), failure: [] });
    }
    await client.put(`${p}/services`).value('neighbour'); // the prefix without its slash
    await client.put(`${p}/servicesX`).value('neighbour');
    await client.put(`${p}/other/a`).value('neighbour');

    const wanted: [string, string][] = [
      [`${dir}old-5`, 'kept and rewritten'],
      [`${dir}new-b`, 'new'],
      [`${dir}new-a`, 'new'],
      [`${dir}zzz`, 'last'],
    ];
    const ops = replacePrefix(dir, wanted);
    expect(ops.length).toBe(2 * wanted.length + 1);
    const res = await client.kv.txn({ compare: [], success: ops, failure: [] });
    expect(res.succeeded).toBe(true);

    expect(await client.getAll().prefix(dir).strings()).toEqual(Object.fromEntries(wanted));
    expect(await client.getAll().prefix(p).keys()).toHaveLength(wanted.length + 3);
    expect(replacePrefix(dir, [])).toHaveLength(1);
    await client.kv.txn({ compare: [], success: replacePrefix(dir, []), failure: [] });
    expect(await client.getAll().prefix(dir).keys()).toEqual([]);
    expect(await client.getAll().prefix(p).keys()).toHaveLength(3);
  });
});
