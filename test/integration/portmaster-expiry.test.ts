/**
 * Offers expire on their own: with a 2 s offer TTL, an unaccepted offer's
 * keys vanish from etcd (no request involved), accepting it afterwards is a
 * 404, and its port and name are offered again. Accepted ports stay.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { testCoordinator } from '../helpers/coordinator.js';

const TTL_MS = 2000;
let c: Coordinator;

type Json = Record<string, unknown>;

async function call(method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, payload?: Json) {
  const r = await c.app.inject({ method, url, ...(payload ? { payload } : {}) });
  return { status: r.statusCode, body: r.body ? (JSON.parse(r.body) as Json) : {} };
}

async function portKeyExists(service: string, port: number): Promise<boolean> {
  return (await c.ctx.etcd.get(c.ctx.keys.pm.port(service, port)).string()) !== null;
}

beforeAll(async () => {
  c = await testCoordinator('pm-expiry', { offerTtlMs: TTL_MS });
});
afterAll(() => c.close());

it('an unaccepted offer expires after the TTL (never before), and its port and name come back', async () => {
  expect((await call('POST', '/v1/services', { name: 'exp', start: 25000, end: 25001 })).status).toBe(201);
  const a = await call('POST', '/v1/services/exp/offers', { name: 'a' });
  const createdAt = Date.now();
  const b = await call('POST', '/v1/services/exp/offers', { name: 'b' });
  expect([a.body.port, b.body.port]).toEqual([25000, 25001]);
  expect((await call('POST', '/v1/services/exp/offers', { name: 'c' })).body).toEqual({ port: ['Port range has been completely utilized.'] });

  // b is accepted at once: an instance never expires.
  expect((await call('POST', `/v1/services/exp/offers/${String(b.body.secret)}/accept`)).status).toBe(201);

  // Not early: just before the TTL the offer still holds its port.
  await new Promise((r) => setTimeout(r, TTL_MS - 300 - (Date.now() - createdAt)));
  expect(await portKeyExists('exp', 25000)).toBe(true);

  // Gone from etcd by itself (we only read etcd directly, no API request), within TTL + ~2 s.
  await expect.poll(() => portKeyExists('exp', 25000), { timeout: 6000, interval: 100 }).toBe(false);
  expect(Date.now() - createdAt).toBeGreaterThanOrEqual(TTL_MS);
  expect(await c.ctx.etcd.get(c.ctx.keys.pm.offerName('exp', 'a')).string()).toBeNull();
  expect(await c.ctx.etcd.get(c.ctx.keys.pm.offer('exp', String(a.body.secret))).string()).toBeNull();

  // Accept or reject after expiry → 404, and nothing is written.
  const rev = Number((await c.ctx.etcd.get('x').exec()).header.revision);
  expect((await call('POST', `/v1/services/exp/offers/${String(a.body.secret)}/accept`)).status).toBe(404);
  expect((await call('PUT', `/v1/services/exp/offers/${String(a.body.secret)}`)).status).toBe(404);
  expect((await call('POST', `/v1/services/exp/offers/${String(a.body.secret)}/reject`)).status).toBe(404);
  expect(Number((await c.ctx.etcd.get('x').exec()).header.revision)).toBe(rev);

  // The list no longer shows it; the accepted port is still there.
  expect((await call('GET', '/v1/services/exp/offers')).body).toEqual([]);
  expect((await call('GET', '/v1/services/exp/ports/25001')).body).toMatchObject({ name: 'b', port: 25001 });

  // The expired port and name are offered again.
  const again = await call('POST', '/v1/services/exp/offers', { name: 'a' });
  expect(again.status).toBe(201);
  expect(again.body.port).toBe(25000);
});

it('a rejected offer frees its port at once', async () => {
  expect((await call('POST', '/v1/services', { name: 'rej', start: 26000, end: 26001 })).status).toBe(201);
  const x = await call('POST', '/v1/services/rej/offers', { name: 'x' });
  await call('POST', '/v1/services/rej/offers', { name: 'y' });
  expect((await call('DELETE', `/v1/services/rej/offers/${String(x.body.secret)}`)).status).toBe(204);
  const z = await call('POST', '/v1/services/rej/offers', { name: 'z' });
  expect(z.status).toBe(201);
  expect(z.body.port).toBe(x.body.port);
});
