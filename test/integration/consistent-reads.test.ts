/**
 * ConsistentReads against a real etcd, with the mirror's watch behind a proxy
 * that can hold it back (a lagging coordinator):
 *  - catching up with a revision that writes to ANOTHER prefix produced does
 *    not wait for an event that will never come;
 *  - a "not found" is confirmed against etcd's latest state: what another
 *    writer made while this mirror lagged is found.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Etcd3 } from 'etcd3';
import { fail, PrefixMirror, SwitchyardError } from '@switchyard/shared';
import { ConsistentReads } from '../../packages/coordinator/src/store/consistent-reads.js';
import { makeCall, type CoordinatorContext } from '../../packages/coordinator/src/context.js';
import { CoordinatorConfig } from '../../packages/coordinator/src/config.js';
import { etcdBehindProxy, sharedEtcdUrl, uniquePrefix } from '../helpers/etcd.js';
import type { TcpProxy } from '../helpers/tcp-proxy.js';

let direct: Etcd3;
let proxy: TcpProxy;
let viaProxy: Etcd3;
let clients: Awaited<ReturnType<typeof etcdBehindProxy>>;

beforeAll(async () => {
  clients = await etcdBehindProxy(sharedEtcdUrl());
  ({ direct, proxy, viaProxy } = clients);
});

afterAll(() => clients?.close());

async function setup(name: string) {
  const prefix = `${uniquePrefix(name)}/`;
  const config = CoordinatorConfig.parse({ etcd: [sharedEtcdUrl()], etcdTimeoutMs: 2000 });
  const ctx = { etcd: direct, config, call: makeCall(config, direct) } as unknown as CoordinatorContext;
  const mirror = new PrefixMirror(viaProxy, { prefix, parse: (_k, v) => v.toString() });
  await mirror.start();
  return { prefix, mirror, reads: new ConsistentReads(ctx, name, [mirror]) };
}

it('catches up with a revision produced under another prefix without waiting for an event that never comes', async () => {
  const { prefix, mirror, reads } = await setup('reads-elsewhere');
  const own = await direct.put(`${prefix}a`).value('1');
  const elsewhere = await direct.put(`${uniquePrefix('reads-other')}/x`).value('2');
  const rev = Number(elsewhere.header.revision);
  // The premise: the watch alone never reaches the other prefix's revision.
  await expect(mirror.waitFor(rev, 500)).rejects.toThrow(/did not reach/);
  const t0 = performance.now();
  await reads.caughtUp(rev);
  expect(performance.now() - t0).toBeLessThan(1000);
  expect(mirror.revision).toBeGreaterThanOrEqual(Number(own.header.revision));
  expect(mirror.get(`${prefix}a`)?.value).toBe('1');
  await mirror.stop();
});

it('confirms a "not found" against the latest state while the mirror lags', async () => {
  const { prefix, mirror, reads } = await setup('reads-confirm');
  proxy.hold();
  let calls = 0;
  const lookup = async () => {
    calls++;
    const e = mirror.get(`${prefix}made-elsewhere`);
    if (!e) throw fail('NOT_FOUND');
    return e.value;
  };
  try {
    await direct.put(`${prefix}made-elsewhere`).value('hello');
    // The mirror is held back: without confirmation this is a 404.
    await expect(lookup()).rejects.toBeInstanceOf(SwitchyardError);
    calls = 0;
    setTimeout(() => proxy.release(), 300);
    expect(await reads.confirm(lookup)).toBe('hello');
    expect(calls).toBe(2);
  } finally {
    proxy.release();
    await mirror.stop();
  }
});

it('passes other errors through at once, and a 404 that stays one', async () => {
  const { mirror, reads } = await setup('reads-passthrough');
  let calls = 0;
  await expect(
    reads.confirm(async () => {
      calls++;
      throw fail('CONFLICT');
    }),
  ).rejects.toMatchObject({ code: 'CONFLICT' });
  expect(calls).toBe(1);
  await expect(
    reads.confirm(async () => {
      calls++;
      throw fail('NOT_FOUND');
    }),
  ).rejects.toMatchObject({ code: 'NOT_FOUND' });
  expect(calls).toBe(3);
  await mirror.stop();
});
