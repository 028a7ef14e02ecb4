/**
 * The largest range Portmaster's rules allow (1024–49151, 48,128 ports),
 * completely allocated: a coordinator started on it lists it (over gRPC's
 * default 4 MiB message limit), refuses one more offer, and hands out the
 * one port that is released — the highest one, found without a scan.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { op } from '@switchyard/shared';
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
  for (let from = START; from <= END; from += 2000) {
    const ops = [];
    for (let p = from; p < Math.min(END + 1, from + 2000); p++) {
      ops.push(op.put(keys.port('all', p), JSON.stringify({ name: `instance-number-${p}`, created })));
      ops.push(op.put(keys.name('all', `instance-number-${p}`), JSON.stringify({ port: p })));
    }
    await c.ctx.etcd.kv.txn({ compare: [], success: ops, failure: [] });
  }
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
