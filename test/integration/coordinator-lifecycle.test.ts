/**
 * The coordinator's life around etcd: state survives a coordinator restart
 * (it is all in etcd), an etcd outage answers 503 quickly instead of hanging,
 * and the coordinator recovers by itself when etcd returns. Also the token
 * check and HTTPS, on real sockets.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { buildCoordinator, type Coordinator } from '../../packages/coordinator/src/index.js';
import { startEtcd } from '../../packages/cli/src/embedded-etcd.js';
import { startPrivateEtcd, uniquePrefix } from '../helpers/etcd.js';
import { testCoordinator } from '../helpers/coordinator.js';

async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const t0 = performance.now();
  const value = await fn();
  return { value, ms: performance.now() - t0 };
}

describe('state lives in etcd', () => {
  it('a new coordinator on the same prefix serves what the old one wrote', async () => {
    const a = await testCoordinator('restart');
    const prefix = a.ctx.config.prefix;
    await a.app.inject({ method: 'POST', url: '/services', payload: { host: '10.0.0.1', port: 80, servers: [{ host: '10.0.1.1', port: 8080 }] } });
    await a.close();
    const b = await testCoordinator('restart', { prefix });
    const r = await b.app.inject({ method: 'GET', url: '/services/tcp-10_0_0_1-80' });
    expect(r.statusCode).toBe(200);
    expect(r.json().servers[0].id).toBe('10_0_1_1-8080');
    await b.close();
  });

  it('two coordinators on one etcd see each other\'s writes', async () => {
    const a = await testCoordinator('two');
    const b = await testCoordinator('two', { prefix: a.ctx.config.prefix });
    const w = await a.app.inject({ method: 'POST', url: '/services', payload: { host: '10.0.0.2', port: 80 } });
    const rev = Number(w.headers['x-switchyard-revision']);
    await b.l4.mirror.waitFor(rev);
    expect((await b.app.inject({ method: 'GET', url: '/services/tcp-10_0_0_2-80' })).statusCode).toBe(200);
    await a.close();
    await b.close();
  });
});

describe('etcd outage', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it('answers 503 within ~3 s while etcd is down, and recovers by itself', async () => {
    const etcd = await startPrivateEtcd();
    cleanups.push(() => etcd.cleanup());
    const c: Coordinator = await buildCoordinator({ etcd: [etcd.url], prefix: uniquePrefix('outage'), logLevel: 'silent', listen: { host: '127.0.0.1', port: 0 } });
    cleanups.push(() => c.close());
    expect((await c.app.inject({ method: 'POST', url: '/services', payload: { host: '10.0.0.3', port: 80 } })).statusCode).toBe(200);
    expect((await c.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);

    await etcd.kill();

    const health = await timed(() => c.app.inject({ method: 'GET', url: '/healthz' }));
    expect(health.value.statusCode).toBe(503);
    expect(health.value.json().error).toMatch(/etcd/);
    expect(health.ms).toBeLessThan(3500);

    const write = await timed(() => c.app.inject({ method: 'POST', url: '/services', payload: { host: '10.0.0.4', port: 80 } }));
    expect(write.value.statusCode).toBe(503);
    expect(write.value.json().error).toMatch(/etcd/);
    expect(write.ms).toBeLessThan(4000);

    // Reads must not serve a possibly stale mirror once the watch is down.
    await expect.poll(async () => (await c.app.inject({ method: 'GET', url: '/services' })).statusCode, { timeout: 10_000 }).toBe(503);

    // etcd comes back on the same port with the same data.
    const back = await startEtcd({ dataDir: etcd.dataDir, clientPort: etcd.clientPort });
    cleanups.push(() => back.stop());
    await expect.poll(async () => (await c.app.inject({ method: 'GET', url: '/healthz' })).statusCode, { timeout: 15_000, interval: 200 }).toBe(200);
    await expect.poll(async () => (await c.app.inject({ method: 'GET', url: '/services' })).statusCode, { timeout: 15_000, interval: 200 }).toBe(200);
    const after = await c.app.inject({ method: 'POST', url: '/services', payload: { host: '10.0.0.4', port: 80 } });
    expect(after.statusCode).toBe(200);
    const list = (await c.app.inject({ method: 'GET', url: '/services' })).json();
    expect(list.map((s: { id: string }) => s.id)).toEqual(['tcp-10_0_0_3-80', 'tcp-10_0_0_4-80']);
  });
});

describe('token', () => {
  it('requires X-AUTH-TOKEN (header or query) on every route but /healthz', async () => {
    const c = await testCoordinator('token', { token: 's3cret' });
    try {
      expect((await c.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
      const no = await c.app.inject({ method: 'GET', url: '/services' });
      expect(no.statusCode).toBe(401);
      expect(no.json().error).toMatch(/X-AUTH-TOKEN/);
      expect((await c.app.inject({ method: 'GET', url: '/services', headers: { 'x-auth-token': 'wrong' } })).statusCode).toBe(401);
      expect((await c.app.inject({ method: 'GET', url: '/docs/json' })).statusCode).toBe(401);
      const before = await c.ctx.etcd.getAll().prefix(c.ctx.keys.prefix).count();
      expect((await c.app.inject({ method: 'POST', url: '/services', payload: { host: '10.0.0.5', port: 80 } })).statusCode).toBe(401);
      expect(await c.ctx.etcd.getAll().prefix(c.ctx.keys.prefix).count()).toBe(before);
      expect((await c.app.inject({ method: 'GET', url: '/services', headers: { 'x-auth-token': 's3cret' } })).statusCode).toBe(200);
      expect((await c.app.inject({ method: 'GET', url: '/services?X-AUTH-TOKEN=s3cret' })).statusCode).toBe(200);
      for (const [method, url] of [
        ['GET', '/hosts'],
        ['GET', '/v1/services'],
        ['POST', '/v1/services'],
        ['GET', '/cen/cen1'],
        ['POST', '/cen/import'],
        ['POST', '/cpool'],
      ] as const) {
        expect((await c.app.inject({ method, url, payload: method === 'POST' ? {} : undefined })).statusCode, `${method} ${url}`).toBe(401);
      }
    } finally {
      await c.close();
    }
  });

  it('refuses websocket upgrades without the token, and accepts them with it', async () => {
    const c = await testCoordinator('token-ws', { token: 's3cret' });
    try {
      const base = (await c.listen()).replace(/^http/, 'ws');
      const status = (url: string, headers: Record<string, string> = {}) =>
        new Promise<number>((resolve, reject) => {
          const ws = new WebSocket(url, { headers });
          ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
          ws.on('open', () => {
            ws.close();
            resolve(101);
          });
          ws.on('error', reject);
        });
      expect(await status(`${base}/provide?service=foo&port=1`)).toBe(401);
      expect(await status(`${base}/leviathan/monitor`)).toBe(401);
      expect(await status(`${base}/leviathan/monitor`, { 'X-AUTH-TOKEN': 's3cret' })).toBe(101);
      expect(await status(`${base}/leviathan/monitor?X-AUTH-TOKEN=s3cret`)).toBe(101);
    } finally {
      await c.close();
    }
  });
});

describe('https', () => {
  it('serves HTTPS with --tls-cert/--tls-key', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sy-tls-'));
    try {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '1', '-subj', '/CN=127.0.0.1'], { stdio: 'ignore' });
      const c = await testCoordinator('tls', { tlsCert: join(dir, 'cert.pem'), tlsKey: join(dir, 'key.pem') });
      try {
        const url = await c.listen();
        expect(url).toMatch(/^https:\/\//);
        const body = await new Promise<string>((resolve, reject) => {
          httpsRequest(`${url}/healthz`, { rejectUnauthorized: false }, (res) => {
            let b = '';
            res.on('data', (d) => (b += d));
            res.on('end', () => resolve(b));
          })
            .on('error', reject)
            .end();
        });
        expect(JSON.parse(body).status).toBe('ok');
      } finally {
        await c.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
