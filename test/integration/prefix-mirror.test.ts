/**
 * The watch-fed mirror every coordinator feature and the agent stand on,
 * against a real etcd: list at R and watch from R+1; a watch that comes back
 * after its revision was compacted away lists again and converges; a large
 * prefix is listed in pages at one revision.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { PrefixMirror, type MirrorChange } from '@switchyard/shared';
import type { Etcd3 } from 'etcd3';
import { etcdBehindProxy, startPrivateEtcd, uniquePrefix } from '../helpers/etcd.js';
import type { TcpProxy } from '../helpers/tcp-proxy.js';

let direct: Etcd3;
let proxy: TcpProxy;
let viaProxy: Etcd3;
// A private etcd: this file compacts its history, which would disturb the
// watches of other test files on the shared one.
let etcd: Awaited<ReturnType<typeof startPrivateEtcd>>;

let clients: Awaited<ReturnType<typeof etcdBehindProxy>>;

beforeAll(async () => {
  etcd = await startPrivateEtcd();
  clients = await etcdBehindProxy(etcd.url);
  ({ direct, proxy, viaProxy } = clients);
});

afterAll(async () => {
  await clients?.close();
  await etcd.cleanup();
});

const parse = (_key: string, v: Buffer) => v.toString();

it('follows puts and deletes from the revision it listed at', async () => {
  const prefix = `${uniquePrefix('mirror')}/`;
  await direct.put(`${prefix}a`).value('1');
  const mirror = new PrefixMirror(direct, { prefix, parse });
  const changes: MirrorChange<string>[] = [];
  mirror.on('change', (c: MirrorChange<string>) => changes.push(c));
  await mirror.start();
  expect(mirror.values()).toEqual(['1']);
  await direct.put(`${prefix}b`).value('2');
  const del = await direct.delete().key(`${prefix}a`).exec();
  await mirror.waitFor(Number(del.header.revision), 5000);
  expect([...mirror.entries.keys()]).toEqual([`${prefix}b`]);
  expect(changes.map((c) => `${c.type} ${c.key.slice(prefix.length)}`)).toEqual(['put a', 'put b', 'delete a']);
  await mirror.stop();
});

it('lists again after a partition during which its revision was compacted, and converges', async () => {
  const prefix = `${uniquePrefix('mirror-compact')}/`;
  await direct.put(`${prefix}keep`).value('k');
  await direct.put(`${prefix}gone`).value('g');
  const mirror = new PrefixMirror(viaProxy, { prefix, parse, retryMs: 100 });
  const changes: MirrorChange<string>[] = [];
  mirror.on('change', (c: MirrorChange<string>) => changes.push(c));
  await mirror.start();
  expect(mirror.entries.size).toBe(2);

  proxy.partition();
  await expect.poll(() => mirror.healthy, { timeout: 10_000 }).toBe(false);
  // While it cannot hear: changes, then a compaction past everything it saw.
  await direct.delete().key(`${prefix}gone`).exec();
  await direct.put(`${prefix}new`).value('n');
  const last = await direct.put(`${prefix}keep`).value('k2');
  await direct.kv.compact({ revision: last.header.revision, physical: true });
  proxy.heal();

  await expect.poll(() => mirror.healthy, { timeout: 20_000, interval: 100 }).toBe(true);
  await mirror.waitFor(Number(last.header.revision), 5000);
  expect(Object.fromEntries([...mirror.entries].map(([k, e]) => [k.slice(prefix.length), e.value]))).toEqual({ keep: 'k2', new: 'n' });
  expect(changes.map((c) => `${c.type} ${c.key.slice(prefix.length)}`)).toEqual(expect.arrayContaining(['delete gone', 'put new', 'put keep']));

  // And it keeps following afterwards.
  const after = await direct.put(`${prefix}after`).value('a');
  await mirror.waitFor(Number(after.header.revision), 5000);
  expect(mirror.get(`${prefix}after`)?.value).toBe('a');
  await mirror.stop();
}, 60_000);

// Several mirrors share one client's watch stream (the agent runs one per
// prefix it follows). After a compaction, each resumed watch is cancelled by
// etcd while the mirror cancels it too; etcd3 1.1.2 then gets a response for
// a watch it no longer has and throws inside the stream's data handler, which
// stops the shared stream for good (every mirror on the client stuck).
it('several mirrors on one client all converge after a compaction during a partition, and keep following', async () => {
  const prefixes = [0, 1, 2, 3, 4].map((i) => `${uniquePrefix(`mirror-shared-${i}`)}/`);
  for (const p of prefixes) await direct.put(`${p}a`).value('1');
  const mirrors = prefixes.map((prefix) => new PrefixMirror(viaProxy, { prefix, parse, retryMs: 100 }));
  await Promise.all(mirrors.map((m) => m.start()));

  proxy.partition();
  await expect.poll(() => mirrors.every((m) => !m.healthy), { timeout: 10_000 }).toBe(true);
  let last = 0;
  for (const p of prefixes) last = Number((await direct.put(`${p}b`).value('2')).header.revision);
  await direct.kv.compact({ revision: String(last), physical: true });
  proxy.heal();

  for (const m of mirrors) await m.waitFor(last, 10_000);
  for (let round = 0; round < 3; round++) {
    // Each mirror's revision moves with its own prefix's events.
    const revs: number[] = [];
    for (const p of prefixes) revs.push(Number((await direct.put(`${p}c${round}`).value('3')).header.revision));
    await Promise.all(mirrors.map((m, i) => m.waitFor(revs[i], 5000)));
  }
  for (const m of mirrors) expect(m.entries.size).toBe(5);
  await Promise.all(mirrors.map((m) => m.stop()));
}, 60_000);

it('lists a prefix larger than one page at a single revision', async () => {
  const prefix = `${uniquePrefix('mirror-pages')}/`;
  const ops = Array.from({ length: 2500 }, (_, i) => direct.put(`${prefix}${String(i).padStart(5, '0')}`).value(String(i)));
  // In batches small enough to finish within a call deadline on a busy machine (writes are not retried blindly).
  for (let i = 0; i < ops.length; i += 100) await Promise.all(ops.slice(i, i + 100).map((o) => o.exec()));
  const mirror = new PrefixMirror(direct, { prefix, parse, pageSize: 300 });
  await mirror.start();
  expect(mirror.entries.size).toBe(2500);
  expect(mirror.get(`${prefix}02499`)?.value).toBe('2499');
  await mirror.stop();
}, 60_000);
