/**
 * GET /metrics on a real coordinator over a real etcd: scraped after real
 * requests (inject) and real websocket clients, with the token rules,
 * --metrics-public and --no-metrics.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { callOk, testCoordinator } from '../helpers/coordinator.js';
import { freePort } from '../helpers/etcd.js';
import { eventually } from '../helpers/eventually.js';
import { sample, series } from '../helpers/metrics.js';
import { provide, terminateProviders } from '../helpers/providers.js';

const TOKEN = 'metrics-test-token';

async function scrape(c: Coordinator, headers: Record<string, string> = {}): Promise<string> {
  const r = await c.app.inject({ method: 'GET', url: '/metrics', headers });
  expect(r.statusCode, r.body).toBe(200);
  expect(r.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
  return r.body;
}

describe('coordinator metrics, token required', () => {
  let c: Coordinator;
  const auth = { 'x-auth-token': TOKEN };

  beforeAll(async () => {
    c = await testCoordinator('metrics', { token: TOKEN });
  });
  afterAll(() => c.close());

  it('GET /metrics follows the token rules', async () => {
    const r = await c.app.inject({ method: 'GET', url: '/metrics' });
    expect(r.statusCode).toBe(401);
    expect(JSON.parse(r.body).code).toBe('UNAUTHORIZED');
    expect((await c.app.inject({ method: 'GET', url: `/metrics?X-AUTH-TOKEN=${TOKEN}` })).statusCode).toBe(200);
  });

  it('counts requests by route pattern, method and status, and times them by route', async () => {
    const svc = await c.app.inject({ method: 'POST', url: '/services', headers: auth, payload: { host: '10.9.0.1', port: 80 } });
    expect(svc.statusCode).toBe(200);
    const id = JSON.parse(svc.body).id as string;
    for (let i = 0; i < 3; i++) expect((await c.app.inject({ method: 'GET', url: `/services/${id}`, headers: auth })).statusCode).toBe(200);
    expect((await c.app.inject({ method: 'GET', url: '/services/tcp-10_9_9_9-1', headers: auth })).statusCode).toBe(404);
    expect((await c.app.inject({ method: 'GET', url: '/no/such/path/42', headers: auth })).statusCode).toBe(404);
    expect((await c.app.inject({ method: 'GET', url: `/services/${id}` })).statusCode).toBe(401);

    const text = await scrape(c, auth);
    const requests = (labels: Record<string, string>) => sample(text, 'switchyard_http_requests_total', labels);
    expect(requests({ route: '/services', method: 'POST', status: '200' })).toBe(1);
    expect(requests({ route: '/services/:id', method: 'GET', status: '200' })).toBe(3);
    expect(requests({ route: '/services/:id', method: 'GET', status: '404' })).toBe(1);
    expect(requests({ route: '/services/:id', method: 'GET', status: '401' })).toBe(1);
    expect(requests({ route: 'unmatched', method: 'GET', status: '404' })).toBe(1);
    // Bounded cardinality: no raw path ever becomes a label value.
    const routes = series(text, 'switchyard_http_requests_total').map((s) => s.labels.route);
    expect(routes.filter((r) => r.includes(id) || r.includes('/no/such'))).toEqual([]);

    expect(sample(text, 'switchyard_http_request_duration_seconds_count', { route: '/services/:id' })).toBe(5);
    expect(sample(text, 'switchyard_http_request_duration_seconds_bucket', { route: '/services/:id', le: '+Inf' })).toBe(5);
    expect(sample(text, 'switchyard_http_request_duration_seconds_sum', { route: '/services/:id' })).toBeGreaterThan(0);
    // The default process metrics come along.
    expect(sample(text, 'process_resident_memory_bytes')).toBeGreaterThan(0);
    expect(series(text, 'nodejs_eventloop_lag_seconds')).toHaveLength(1);
  });

  it('counts port offers by result', async () => {
    const post = (url: string, payload: object) => c.app.inject({ method: 'POST', url, headers: auth, payload });
    expect((await post('/v1/services', { name: 'metrics-two', start: 2000, end: 2001 })).statusCode).toBe(201);
    expect((await post('/v1/services/metrics-two/offers', { name: 'a' })).statusCode).toBe(201);
    expect((await post('/v1/services/metrics-two/offers', { name: 'b' })).statusCode).toBe(201);
    expect((await post('/v1/services/metrics-two/offers', { name: 'c' })).statusCode).toBe(400);
    expect((await post('/v1/services/metrics-none/offers', { name: 'a' })).statusCode).toBe(404);
    const text = await scrape(c, auth);
    expect(sample(text, 'switchyard_port_offers_total', { result: 'offered' })).toBe(2);
    expect(sample(text, 'switchyard_port_offers_total', { result: 'exhausted' })).toBe(1);
    expect(sample(text, 'switchyard_port_offers_total', { result: 'service_not_found' })).toBe(1);
  });
});

describe('coordinator metrics, --metrics-public and --no-metrics', () => {
  const open: Coordinator[] = [];
  afterAll(async () => {
    for (const c of open) await c.close();
  });

  it('--metrics-public serves /metrics without the token, and only /metrics', async () => {
    const c = await testCoordinator('metrics-public', { token: TOKEN, metricsPublic: true });
    open.push(c);
    const text = await scrape(c);
    expect(sample(text, 'switchyard_providers_connected')).toBe(0);
    expect((await c.app.inject({ method: 'GET', url: '/services' })).statusCode).toBe(401);
  });

  it('--no-metrics: no /metrics route', async () => {
    const c = await testCoordinator('metrics-off', { metrics: false });
    open.push(c);
    expect((await c.app.inject({ method: 'GET', url: '/metrics' })).statusCode).toBe(404);
    await callOk(c, 'GET', '/services');
  });

  it('counts failed etcd operations by kind', async () => {
    // Nothing listens there: every etcd call behind a request fails.
    const c = await testCoordinator('metrics-etcd', { etcd: [`http://127.0.0.1:${await freePort()}`], etcdTimeoutMs: 500 });
    open.push(c);
    expect((await c.app.inject({ method: 'GET', url: '/services/tcp-10_0_0_1-80' })).statusCode).toBe(503);
    expect((await c.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(503);
    const text = await scrape(c);
    const failures = series(text, 'switchyard_etcd_errors_total');
    expect(failures.length).toBeGreaterThan(0);
    for (const f of failures) expect(['timeout', 'unavailable']).toContain(f.labels.kind);
    expect(failures.reduce((n, f) => n + f.value, 0)).toBeGreaterThanOrEqual(2);
  });
});

describe('websocket gauges', () => {
  let c: Coordinator;
  let base: string;
  const monitors: WebSocket[] = [];

  beforeAll(async () => {
    c = await testCoordinator('metrics-ws', { metricsPublic: true });
    base = await c.listen();
  });
  afterEach(() => {
    terminateProviders();
    for (const m of monitors.splice(0)) m.terminate();
  });
  afterAll(() => c.close());

  const gauge = async (name: string) => sample(await scrape(c), name);

  it('switchyard_providers_connected follows real /provide clients', async () => {
    const a = await provide(base, 'service=web&host=10.0.0.1&port=80');
    await provide(base, 'service=web&host=10.0.0.2&port=80');
    await eventually(async () => ((await gauge('switchyard_providers_connected')) === 2 ? true : undefined));
    a.close();
    await eventually(async () => ((await gauge('switchyard_providers_connected')) === 1 ? true : undefined));
    terminateProviders();
    await eventually(async () => ((await gauge('switchyard_providers_connected')) === 0 ? true : undefined));
  });

  it('switchyard_monitors_connected follows real /leviathan/monitor clients', async () => {
    expect(await gauge('switchyard_monitors_connected')).toBe(0);
    const url = base.replace(/^http/, 'ws') + '/leviathan/monitor';
    for (let i = 0; i < 2; i++) {
      const ws = new WebSocket(url);
      monitors.push(ws);
      await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    }
    await eventually(async () => ((await gauge('switchyard_monitors_connected')) === 2 ? true : undefined));
    monitors[0].close();
    await eventually(async () => ((await gauge('switchyard_monitors_connected')) === 1 ? true : undefined));
  });
});
