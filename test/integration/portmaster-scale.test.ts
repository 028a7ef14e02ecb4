/**
 * The largest range Portmaster's rules allow (1024–49151, 48,128 ports),
 * completely allocated: a coordinator started on it lists it (over gRPC's
 * default 4 MiB message limit), refuses one more offer, and hands out the
 * one port that is released — the highest one, found without a scan — and
 * deletes the service with all its instances, on an etcd with default limits.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { atomically, chunkPuts } from '@switchyard/shared';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { testCoordinator } from '../helpers/coordinator.js';

const START = 1024;
const END = 49151;
let c: Coordinator;

beforeAll(async () => {
  c = await testCoordinator('pm-scale');
  expect((await c.app.inject({ method: 'POST', url: '/v1/services', payload: { name: 'all', start: START, end: END } })).statusCode).toBe(201);
  // Fill the range straight into etcd, as a long-lived cluster would have it.
  const keys = c.ctx.keys.pm;
  const created = new Date().toISOString();
  const records: [string, string][] = [];
  for (let p = START; p <= END; p++) {
    records.push([keys.port('all', p), JSON.stringify({ name: `instance-number-${p}`, created })]);
    records.push([keys.name('all', `instance-number-${p}`), JSON.stringify({ port: p })]);
  }
  // In transactions etcd's default limits take (128 operations), 4 in flight.
  const chunks = chunkPuts(records);
  let next = 0;
  await Promise.all(Array.from({ length: 4 }, async () => {
    while (next < chunks.length) await atomically(c.ctx.etcd, chunks[next++]);
  }));
  await c.close();
  // A fresh coordinator has to list all of it.
  c = await testCoordinator('pm-scale', { prefix: c.ctx.keys.prefix });
}, 120_000);

afterAll(() => c?.close());

it('a fully allocated 48,128-port range: listed, full, and the released highest port is offered next', async () => {
  const list = await c.app.inject({ method: 'GET', url: '/v1/services/all/ports' });
  expect(list.statusCode, list.body).toBe(200);
  expect((JSON.parse(list.body) as unknown[]).length).toBe(END - START + 1);

  const full = await c.app.inject({ method: 'POST', url: '/v1/services/all/offers', payload: { name: 'late' } });
  expect(JSON.parse(full.body)).toEqual({ port: ['Port range has been completely utilized.'] });

  expect((await c.app.inject({ method: 'DELETE', url: `/v1/services/all/ports/${END}` })).statusCode).toBe(204);
  const t0 = performance.now();
  const offer = await c.app.inject({ method: 'POST', url: '/v1/services/all/offers', payload: { name: 'late' } });
  const ms = performance.now() - t0;
  expect(offer.statusCode).toBe(201);
  expect(JSON.parse(offer.body)).toMatchObject({ port: END, name: 'late' });
  // One transaction, no scan: far below what walking 48k ports through etcd would take.
  expect(ms).toBeLessThan(1000);
});

it('deletes the service with its 48,128 instances on a stock etcd: one small transaction of range deletes', async () => {
  const del = await c.app.inject({ method: 'DELETE', url: '/v1/services/all' });
  expect(del.statusCode, del.body).toBeLessThan(300);
  expect((await c.app.inject({ method: 'GET', url: '/v1/services/all' })).statusCode).toBe(404);
  expect(await c.ctx.etcd.getAll().prefix(c.ctx.keys.pm.ports('all')).count()).toBe(0);
  expect(await c.ctx.etcd.getAll().prefix(c.ctx.keys.pm.names('all')).count()).toBe(0);
}, 60_000);
