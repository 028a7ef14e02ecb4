/**
 * Status in GET answers comes from the agents' reports as each request read
 * them: two concurrent GETs never see each other's read, and a GET reads the
 * report keys only (not the agents' underlay or `created/<ns>` records).
 * The report reads are held and released in a chosen order through the
 * coordinator's etcd call wrapper; etcd itself is real.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { LevHostStatus } from '@switchyard/shared';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { callOk, testCoordinator } from '../helpers/coordinator.js';

let c: Coordinator;
beforeAll(async () => {
  c = await testCoordinator('leviathan-status');
});
afterAll(async () => {
  await c.close();
});

const call = (method: 'GET' | 'POST' | 'PUT', url: string, payload?: unknown) => callOk(c, method, url, payload);

async function report(state: 'ready' | 'error', revision: number): Promise<void> {
  const s: LevHostStatus = { hostId: 'sh1', appliedRevision: revision, lastSync: new Date().toISOString(), cens: { scen: state }, cins: {}, containers: { sc1: state }, errors: [] };
  await c.ctx.etcd.put(c.ctx.keys.lev.status('sh1')).value(JSON.stringify(s));
}

it('answers each GET from its own read of the reports, and reads nothing but reports', async () => {
  await call('PUT', '/cen/scen');
  await call('PUT', '/host/sh1/sc1/scen');
  const made = await call('POST', '/cen/make', ['scen']);
  // The agent's other records: the underlay and a namespace it created.
  await c.ctx.etcd.put(c.ctx.keys.lev.underlay('sh1')).value(JSON.stringify({ hostId: 'sh1', address: '192.0.2.30' }));
  await c.ctx.etcd.put(c.ctx.keys.lev.created('sh1', 'sc1')).value(JSON.stringify({ containerID: 'sc1', createdAt: new Date().toISOString() }));

  // Hold every read of the reports until released, and look at what it read.
  const held: { release: () => void }[] = [];
  const readKeys: string[] = [];
  const call0 = c.ctx.call;
  c.ctx.call = async <T,>(fn: () => Promise<T>, what?: string): Promise<T> => {
    if (what !== 'reading agent reports') return call0(fn, what);
    const res = await call0(fn, what);
    const kvs = (res as { kvs?: { key: Buffer }[] }).kvs ?? [];
    readKeys.push(...kvs.map((kv) => kv.key.toString()));
    await new Promise<void>((release) => held.push({ release }));
    return res;
  };
  const heldCount = async (n: number) => {
    while (held.length < n) await new Promise((r) => setTimeout(r, 5));
  };
  try {
    await report('error', made.revision);
    const first = c.app.inject({ method: 'GET', url: '/cen/scen' });
    await heldCount(1);
    await report('ready', made.revision);
    const second = c.app.inject({ method: 'GET', url: '/cen/scen' });
    await heldCount(2);
    // The newer read finishes first, the older one right after it.
    held[1].release();
    held[0].release();
    const [a, b] = await Promise.all([first, second]);
    expect(a.json()).toMatchObject({ status: 'error', hosts: { sh1: 'error' } });
    expect(b.json()).toMatchObject({ status: 'ready', hosts: { sh1: 'ready' } });
  } finally {
    c.ctx.call = call0;
    for (const h of held) h.release();
  }
  expect(readKeys).toEqual([c.ctx.keys.lev.status('sh1'), c.ctx.keys.lev.status('sh1')]);
  // Without the hold, the latest report.
  expect((await call('GET', '/host/sh1/sc1')).body).toMatchObject({ status: 'ready' });
});
