import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { testCoordinator } from '../helpers/coordinator.js';

let c: Coordinator;
beforeAll(async () => {
  c = await testCoordinator('l4-smoke');
});
afterAll(() => c.close());

it('smoke', async () => {
  const r = await c.app.inject({ method: 'POST', url: '/services', payload: { host: '192.168.0.15', port: 80 } });
  console.log(r.statusCode, r.headers, r.body);
  const g = await c.app.inject({ method: 'GET', url: '/services/tcp-192_168_0_15-80' });
  console.log(g.statusCode, g.headers['content-type'], g.body);
  const l = await c.app.inject({ method: 'GET', url: '/services' });
  console.log(l.body);
  const bad = await c.app.inject({ method: 'POST', url: '/services', payload: '[1]', headers: { 'content-type': 'application/json' } });
  console.log(bad.statusCode, bad.body);
  const bad2 = await c.app.inject({ method: 'POST', url: '/services', payload: '{bad', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
  console.log(bad2.statusCode, bad2.body);
  const d = await c.app.inject({ method: 'GET', url: '/docs/json' });
  console.log(d.statusCode, d.body.slice(0, 300));
  const h = await c.app.inject({ method: 'GET', url: '/healthz' });
  console.log(h.statusCode, h.body);
  expect(r.statusCode).toBe(200);
});
