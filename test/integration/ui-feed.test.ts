/**
 * The dashboard's feed (/ui/feed) with a real `ws` client over a real socket:
 * a snapshot on connect, then patches for writes made through ANOTHER
 * coordinator (the feed follows etcd, not this process's requests); the
 * token rules of every websocket; the page's files are open, everything else
 * is not.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import type { FeedMessage, MoreServices, Patch, Snapshot } from '../../packages/coordinator/src/ui/protocol.js';
import { AssetStore } from '../../packages/coordinator/src/ui/assets.js';
import { testCoordinator } from '../helpers/coordinator.js';
import { uniquePrefix } from '../helpers/etcd.js';

const sockets: WebSocket[] = [];

/** A client that queues every message so a test can wait for one that matches. */
async function feed(base: string, query = '') {
  const ws = new WebSocket(`${base.replace(/^http/, 'ws')}/ui/feed${query}`);
  sockets.push(ws);
  const inbox: FeedMessage[] = [];
  let wake: (() => void) | undefined;
  ws.on('message', (d) => {
    inbox.push(JSON.parse(d.toString()) as FeedMessage);
    wake?.();
  });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  return {
    ws,
    /** Resolves with the first message (from the start) that satisfies `pred`. */
    async until<T extends FeedMessage>(pred: (m: FeedMessage) => m is T, timeoutMs = 3000): Promise<T> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const i = inbox.findIndex(pred);
        if (i >= 0) return inbox.splice(0, i + 1)[i] as T;
        const left = deadline - Date.now();
        if (left <= 0) throw new Error('no matching feed message');
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, left);
        });
      }
    },
  };
}

const isSnapshot = (m: FeedMessage): m is Snapshot => m.t === 'snapshot';

describe('the feed', () => {
  let a: Coordinator;
  let b: Coordinator;
  let base: string;

  beforeAll(async () => {
    const prefix = uniquePrefix('ui-feed');
    const dnsRoot = `uifeed${process.pid}.test`;
    a = await testCoordinator('ui-feed', { prefix, dnsRoot });
    b = await testCoordinator('ui-feed', { prefix, dnsRoot });
    base = await a.listen();
    const r = await b.app.inject({ method: 'POST', url: '/services', payload: { host: '10.9.0.1', port: 80, servers: [{ host: '10.9.1.1', port: 8080, weight: 3 }] } });
    expect(r.statusCode).toBe(200);
    // The snapshot is what a's watch has seen: let it see b's write first.
    await a.l4.mirror.waitFor(Number(r.headers['x-switchyard-revision']));
  });

  afterAll(async () => {
    for (const s of sockets) s.terminate();
    await a?.close();
    await b?.close();
  });

  it('sends a snapshot, then what another coordinator writes as patches', async () => {
    const f = await feed(base);
    const snap = await f.until(isSnapshot);
    expect(snap.services.map((x) => x.s.id)).toEqual(['tcp-10_9_0_1-80']);
    expect(snap.totalServices).toBe(1);
    expect(snap.services[0].s.servers[0]).toMatchObject({ host: '10.9.1.1', weight: 3 });
    expect(snap.services[0].rev).toBeGreaterThan(0);
    expect(snap.l4Revision).toBe(snap.services[0].rev);

    // An L4 service, a Portmaster service with an instance, a CEN, an agent and a provider record: one patch each kind.
    const created = await b.app.inject({ method: 'POST', url: '/services', payload: { host: '10.9.0.2', port: 443 } });
    expect(created.statusCode).toBe(200);
    const rev = Number(created.headers['x-switchyard-revision']);
    const added = await f.until((m): m is Patch => m.t === 'patch' && !!m.services?.put.some((x) => x.s.id === 'tcp-10_9_0_2-443'));
    expect(added.services?.put.find((x) => x.s.id === 'tcp-10_9_0_2-443')?.rev).toBe(rev);
    expect(added.l4Revision).toBeGreaterThanOrEqual(rev);

    expect((await b.app.inject({ method: 'POST', url: '/v1/services', payload: { name: 'web', start: 20000, end: 20099 } })).statusCode).toBe(201);
    const offer = await b.app.inject({ method: 'POST', url: '/v1/services/web/offers', payload: { name: 'web-1' } });
    expect(offer.statusCode).toBe(201);
    const offered = await f.until((m): m is Patch => m.t === 'patch' && !!m.pm?.put.some((p) => p.name === 'web' && p.offers.length === 1));
    const pm = offered.pm?.put.find((p) => p.name === 'web');
    expect(pm).toMatchObject({ start: 20000, end: 20099, offers: [{ port: 20000, name: 'web-1' }], instances: [] });
    // Offer secrets are what accepting takes: the feed never carries them.
    expect(JSON.stringify(offered)).not.toContain(JSON.parse(offer.body).secret);
    expect((await b.app.inject({ method: 'POST', url: `/v1/services/web/offers/${JSON.parse(offer.body).secret}/accept` })).statusCode).toBe(201);
    await f.until((m): m is Patch => m.t === 'patch' && !!m.pm?.put.some((p) => p.name === 'web' && p.instances.length === 1 && p.offers.length === 0));

    expect((await b.app.inject({ method: 'PUT', url: '/cen/cen1' })).statusCode).toBe(200);
    const cen = await f.until((m): m is Patch => m.t === 'patch' && !!m.lev?.cens.some((c) => c.cenID === 'cen1'));
    expect(cen.lev?.cens.find((c) => c.cenID === 'cen1')?.status).toBe('pending');

    const keys = b.ctx.keys.hosts;
    await b.ctx.etcd.put(keys.agent('h1')).value(JSON.stringify({ id: 'h1', dataplane: 'ipvs', version: '0.1.0', startedAt: new Date().toISOString() }));
    await b.ctx.etcd.put(keys.status('h1')).value(JSON.stringify({ id: 'h1', dataplane: 'ipvs', appliedRevision: rev, lastSync: new Date().toISOString(), services: 2 }));
    const host = await f.until((m): m is Patch => m.t === 'patch' && !!m.hosts?.put.some((h) => h.id === 'h1' && h.alive && h.appliedRevision === rev));
    expect(host.hosts?.put[0]).toMatchObject({ id: 'h1', dataplane: 'ipvs', services: 2 });

    const deleted = await b.app.inject({ method: 'DELETE', url: '/services/tcp-10_9_0_2-443' });
    expect(deleted.statusCode).toBe(200);
    const gone = await f.until((m): m is Patch => m.t === 'patch' && !!m.services?.del.includes('tcp-10_9_0_2-443'));
    // A delete is a change too: hosts that have not applied it lag.
    expect(gone.l4Revision).toBeGreaterThanOrEqual(Number(deleted.headers['x-switchyard-revision']));
  });

  it('lists providers from the SkyDNS records, live when on a lease', async () => {
    const f = await feed(base);
    await f.until(isSnapshot);
    const lease = b.ctx.etcd.lease(30, { autoKeepAlive: false });
    const key = `/skydns/test/uifeed${process.pid}/services/api/x1`;
    await lease.put(key).value(JSON.stringify({ host: '10.9.2.1', port: 9000, priority: 1, weight: 100 }));
    const p = await f.until((m): m is Patch => m.t === 'patch' && !!m.providers?.put.some((x) => x.key === key));
    expect(p.providers?.put.find((x) => x.key === key)).toEqual({ key, name: `x1.api.services.uifeed${process.pid}.test`, host: '10.9.2.1', port: 9000, live: true });
    await lease.revoke();
    await f.until((m): m is Patch => m.t === 'patch' && !!m.providers?.del.includes(key));
  });
});

describe('a big snapshot', () => {
  let c: Coordinator;
  let base: string;

  beforeAll(async () => {
    c = await testCoordinator('ui-feed-big', { dnsRoot: `uifeedbig${process.pid}.test` });
    base = await c.listen();
    const services = Array.from({ length: 2300 }, (_, i) => ({ host: `10.8.${i >> 8}.${i & 255}`, port: 80 }));
    const r = await c.app.inject({ method: 'PUT', url: '/services', payload: services });
    expect(r.statusCode).toBe(200);
    // The snapshot is what the watch has seen, which may trail the write's acknowledgement.
    await c.l4.mirror.waitFor(Number(r.headers['x-switchyard-revision']));
  });

  afterAll(async () => {
    await c?.close();
  });

  it('comes as a first screen, then the rest in order, then patches', async () => {
    const f = await feed(base);
    const snap = await f.until(isSnapshot);
    expect(snap.totalServices).toBe(2300);
    expect(snap.services).toHaveLength(200);
    const ids = snap.services.map((x) => x.s.id);
    expect(ids).toEqual([...ids].sort());
    const more = (m: FeedMessage): m is MoreServices => m.t === 'services';
    const second = await f.until(more);
    expect(second).toMatchObject({ last: false });
    expect(second.services).toHaveLength(2000);
    const third = await f.until(more);
    expect(third.last).toBe(true);
    const all = [...ids, ...second.services.map((x) => x.s.id), ...third.services.map((x) => x.s.id)];
    expect(new Set(all).size).toBe(2300);
    expect(all).toEqual([...all].sort());
    expect((await c.app.inject({ method: 'DELETE', url: `/services/${ids[0]}` })).statusCode).toBe(200);
    await f.until((m): m is Patch => m.t === 'patch' && !!m.services?.del.includes(ids[0]));
  });
});

describe('the token', () => {
  let c: Coordinator;
  let base: string;

  beforeAll(async () => {
    c = await testCoordinator('ui-token', { token: 'sekret', dnsRoot: `uitoken${process.pid}.test` });
    base = await c.listen();
  });

  afterAll(async () => {
    await c?.close();
  });

  it('refuses the feed without the right token and serves it with one', async () => {
    for (const q of ['', '?X-AUTH-TOKEN=wrong']) {
      const ws = new WebSocket(`${base.replace(/^http/, 'ws')}/ui/feed${q}`);
      sockets.push(ws);
      const status = await new Promise<number | undefined>((resolve) => {
        ws.once('unexpected-response', (_req, res) => resolve(res.statusCode));
        ws.once('open', () => resolve(undefined));
        ws.once('error', () => resolve(-1));
      });
      expect(status, q).toBe(401);
    }
    const f = await feed(base, '?X-AUTH-TOKEN=sekret');
    expect((await f.until(isSnapshot)).services).toEqual([]);
  });

  it('serves the page without a token, and no data', async () => {
    for (const [path, type] of [
      ['/ui', 'text/html'],
      ['/ui/', 'text/html'],
      ['/ui/app.js', 'text/javascript'],
      ['/ui/app.css', 'text/css'],
    ]) {
      const r = await fetch(base + path);
      expect(r.status, path).toBe(200);
      expect(r.headers.get('content-type'), path).toContain(type);
      const again = await fetch(base + path, { headers: { 'if-none-match': r.headers.get('etag') ?? '' } });
      expect(again.status, path).toBe(304);
    }
    expect((await fetch(`${base}/ui`)).headers.get('content-security-policy')).toContain("connect-src 'self'");
    expect((await fetch(`${base}/hosts`)).status).toBe(401);
    expect((await fetch(`${base}/ui/other`)).status).toBe(401);
  });
});

it('an unbuilt dashboard is a clear error, not a crash', () => {
  expect(new AssetStore('/nonexistent/').get('app.js')).toBeUndefined();
  expect(new AssetStore().get('index.html')?.body.toString()).toContain('/ui/app.js');
});
