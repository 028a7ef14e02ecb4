/**
 * Portal's REST API against a real etcd, through inject(): every route's happy
 * path and every validation rule. Bad input must answer 4xx and write nothing.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { testCoordinator } from '../helpers/coordinator.js';

let c: Coordinator;
beforeAll(async () => {
  c = await testCoordinator('l4-api');
});
afterAll(() => c.close());

async function req(method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, payload?: unknown, headers: Record<string, string> = {}) {
  const r = await c.app.inject({
    method,
    url,
    payload: typeof payload === 'string' ? payload : payload === undefined ? undefined : JSON.stringify(payload),
    headers: payload === undefined ? headers : { 'content-type': 'application/json', ...headers },
  });
  return { status: r.statusCode, body: r.body ? JSON.parse(r.body) : undefined, headers: r.headers };
}

/** Every key under the coordinator's prefix, to prove bad input wrote nothing. */
async function snapshot(): Promise<Record<string, string>> {
  return c.ctx.etcd.getAll().prefix(c.ctx.keys.prefix).strings();
}

const web = { host: '192.168.0.15', port: 80 };
const webId = 'tcp-192_168_0_15-80';

beforeEach(async () => {
  await req('PUT', '/services', []);
});

describe('services', () => {
  it('GET /services of nothing is []', async () => {
    const r = await req('GET', '/services');
    expect(r.status).toBe(200);
    expect(r.body).toEqual([]);
  });

  it("POST applies Portal's defaults and id, and returns the revision it wrote", async () => {
    const r = await req('POST', '/services', web);
    expect(r.status).toBe(200);
    // No `servers` key: Portal's struct says `servers,omitempty`.
    expect(r.body).toEqual({ id: webId, host: '192.168.0.15', port: 80, type: 'tcp', scheduler: 'wlc', persistence: 0, netmask: '' });
    const rev = Number(r.headers['x-switchyard-revision']);
    expect(rev).toBeGreaterThan(0);
    const stored = await c.ctx.etcd.get(c.ctx.keys.l4.service(webId)).json();
    // Stored with its (empty) servers list; printed without it, as Portal prints it.
    expect(stored).toEqual({ ...r.body, servers: [] });
    const kv = await c.ctx.etcd.get(c.ctx.keys.l4.service(webId)).exec();
    expect(Number(kv.kvs[0].mod_revision)).toBe(rev);
  });

  it('POST of an existing id returns the existing service unchanged', async () => {
    await req('POST', '/services', { ...web, scheduler: 'rr' });
    const first = await req('POST', '/services', { host: '192.168.0.99', port: 1 });
    const again = await req('POST', '/services', { ...web, scheduler: 'sh' });
    expect(again.status).toBe(200);
    expect(again.body.scheduler).toBe('rr');
    // Nothing was written: the revision is the one that made the service, not a later one.
    const kv = await c.ctx.etcd.get(c.ctx.keys.l4.service(webId)).exec();
    expect(Number(again.headers['x-switchyard-revision'])).toBe(Number(kv.kvs[0].mod_revision));
    expect(Number(again.headers['x-switchyard-revision'])).toBeLessThan(Number(first.headers['x-switchyard-revision']));
    expect((await req('GET', '/services')).body).toHaveLength(2);
  });

  it("keeps a service's pinning (hosts) when a Portal client resets it without the field", async () => {
    await req('POST', '/services', { ...web, hosts: ['node-a'] });
    expect((await req('PUT', `/services/${webId}`, { ...web, scheduler: 'rr' })).body.hosts).toEqual(['node-a']);
    expect((await req('PUT', '/services', [{ ...web, scheduler: 'sh' }])).body[0].hosts).toEqual(['node-a']);
    expect((await req('GET', `/services/${webId}`)).body.hosts).toEqual(['node-a']);
    expect((await req('PUT', `/services/${webId}`, { ...web, hosts: ['node-b'] })).body.hosts).toEqual(['node-b']);
  });

  it('ignores a stored value that is not a valid service (it never reaches an agent)', async () => {
    await req('POST', '/services', web);
    const forged = { id: 'tcp-10_0_0_9-80', host: '10.0.0.9; flush ruleset', port: 80, type: 'tcp', scheduler: 'rr', persistence: 0, netmask: '', servers: [] };
    const put = await c.ctx.etcd.put(c.ctx.keys.l4.service(forged.id)).value(JSON.stringify(forged)).exec();
    await c.l4.mirror.waitFor(Number(put.header.revision));
    expect((await req('GET', '/services')).body.map((x: { id: string }) => x.id)).toEqual([webId]);
    expect((await req('GET', `/services/${forged.id}`)).status).toBe(404);
    // POST of that id does not overwrite what it cannot read: a clear 409, until it is deleted.
    const post = await req('POST', '/services', { host: '10.0.0.9', port: 80 });
    expect(post.status).toBe(409);
    expect(post.body.error).toMatch(/invalid value is stored under service id tcp-10_0_0_9-80/);
    expect(await c.ctx.etcd.get(c.ctx.keys.l4.service(forged.id)).json()).toEqual(forged);
    // PUT /services replaces everything under the prefix, invalid values included.
    expect((await req('PUT', '/services', [web])).status).toBe(200);
    expect(await c.ctx.etcd.getAll().prefix(c.ctx.keys.l4.services).keys()).toEqual([c.ctx.keys.l4.service(webId)]);
  });

  it('a read sees every write this coordinator acknowledged', async () => {
    for (let i = 1; i <= 20; i++) {
      const w = await req('POST', '/services', { host: '10.0.0.1', port: i });
      expect(w.status).toBe(200);
      const r = await req('GET', `/services/tcp-10_0_0_1-${i}`);
      expect(r.status).toBe(200);
    }
    expect((await req('GET', '/services')).body).toHaveLength(20);
  });

  it('GET /services/:id and 404 for an unknown one', async () => {
    await req('POST', '/services', web);
    const r = await req('GET', `/services/${webId}`);
    expect(r.status).toBe(200);
    expect(r.body.id).toBe(webId);
    const missing = await req('GET', '/services/tcp-10_9_9_9-1');
    expect(missing.status).toBe(404);
    expect(missing.body.error).toBe('No Service Found');
  });

  it('embedded servers get ids and defaults; UpperThreshold/LowerThreshold are accepted', async () => {
    const r = await req('POST', '/services', {
      host: '127.0.0.1',
      port: 8080,
      persistence: 300,
      servers: [
        { host: '172.28.128.4', port: 8081, forwarder: 'm', weight: 1, UpperThreshold: 5, LowerThreshold: 2 },
        { host: '172.28.128.5', port: 8081 },
      ],
    });
    expect(r.status).toBe(200);
    expect(r.body.servers).toEqual([
      { id: '172_28_128_4-8081', host: '172.28.128.4', port: 8081, forwarder: 'm', weight: 1, upper_threshold: 5, lower_threshold: 2 },
      { id: '172_28_128_5-8081', host: '172.28.128.5', port: 8081, forwarder: 'g', weight: 1, upper_threshold: 0, lower_threshold: 0 },
    ]);
  });

  it('IPv6 services get a reversible id from the canonical address', async () => {
    const r = await req('POST', '/services', { host: 'FD00:0::1', port: 443, type: 'udp' });
    expect(r.status).toBe(200);
    expect(r.body.id).toBe('udp-fd00__1-443');
    expect(r.body.host).toBe('fd00::1');
    expect((await req('GET', '/services/udp-fd00__1-443')).status).toBe(200);
  });

  it('PUT /services replaces the whole set atomically, in one revision', async () => {
    await req('POST', '/services', web);
    const list = Array.from({ length: 50 }, (_, i) => ({ host: '10.1.0.1', port: 1000 + i, servers: [{ host: '10.2.0.1', port: 80 }] }));
    const r = await req('PUT', '/services', list);
    expect(r.status).toBe(200);
    expect(r.body).toHaveLength(50);
    const all = await req('GET', '/services');
    expect(all.body.map((s: { id: string }) => s.id)).not.toContain(webId);
    expect(all.body).toHaveLength(50);
    const kvs = await c.ctx.etcd.getAll().prefix(c.ctx.keys.l4.services).exec();
    const revs = new Set(kvs.kvs.map((kv) => kv.mod_revision));
    expect(revs.size).toBe(1);
    expect(Number([...revs][0])).toBe(Number(r.headers['x-switchyard-revision']));
  });

  it('PUT /services deletes old services before, between and after the new ones, and ones written straight to etcd', async () => {
    await req('PUT', '/services', Array.from({ length: 9 }, (_, i) => ({ host: '10.5.0.1', port: i + 1 })));
    const keep = [2, 5, 8].map((port) => ({ host: '10.5.0.1', port }));
    expect((await req('PUT', '/services', keep)).status).toBe(200);
    const ids = ['tcp-10_5_0_1-2', 'tcp-10_5_0_1-5', 'tcp-10_5_0_1-8'];
    expect(await c.ctx.etcd.getAll().prefix(c.ctx.keys.l4.services).keys()).toEqual(ids.map((id) => c.ctx.keys.l4.service(id)));
    // Alone in the gap between -5 and -8, written by someone else: the listing
    // of what is stored must find it, or that gap is skipped.
    const other = { id: 'tcp-10_5_0_1-6', host: '10.5.0.1', port: 6, type: 'tcp', scheduler: 'rr', persistence: 0, netmask: '', servers: [] };
    await c.ctx.etcd.put(c.ctx.keys.l4.service(other.id)).value(JSON.stringify(other));
    expect((await req('PUT', '/services', keep)).status).toBe(200);
    expect(await c.ctx.etcd.getAll().prefix(c.ctx.keys.l4.services).keys()).toEqual(ids.map((id) => c.ctx.keys.l4.service(id)));
    expect((await req('GET', '/services')).body.map((x: { id: string }) => x.id)).toEqual(ids);
  });

  it('finds a service another writer made a moment ago, before its mirror has (a 404 is checked against etcd)', async () => {
    const other = { id: 'tcp-10_6_0_1-80', host: '10.6.0.1', port: 80, type: 'tcp', scheduler: 'rr', persistence: 0, netmask: '', servers: [] };
    await c.ctx.etcd.put(c.ctx.keys.l4.service(other.id)).value(JSON.stringify(other));
    // No wait for the watch: both answers must see it at once.
    const { servers: _none, ...printed } = other;
    expect((await req('GET', `/services/${other.id}`)).body).toEqual(printed);
    expect((await req('POST', `/services/${other.id}/servers`, { host: '10.6.0.2', port: 8080 })).status).toBe(200);
  });

  it('PUT /services takes 10,000 services in one request', async () => {
    const list = Array.from({ length: 10_000 }, (_, i) => ({ host: `10.${(i >> 8) & 255}.${i & 255}.1`, port: 80 }));
    const r = await req('PUT', '/services', list);
    expect(r.status).toBe(200);
    expect(r.body).toHaveLength(10_000);
    const count = await c.ctx.etcd.getAll().prefix(c.ctx.keys.l4.services).count();
    expect(count).toBe(10_000);
    expect((await req('GET', '/services')).body).toHaveLength(10_000);
  });

  it('PUT /services/:id changes fields, keeps servers when none are given, and can move the id', async () => {
    await req('POST', '/services', { ...web, servers: [{ host: '10.0.0.5', port: 8080 }] });
    const same = await req('PUT', `/services/${webId}`, { ...web, scheduler: 'rr' });
    expect(same.status).toBe(200);
    expect(same.body.scheduler).toBe('rr');
    expect(same.body.servers).toHaveLength(1);

    const moved = await req('PUT', `/services/${webId}`, { host: '192.168.0.16', port: 81, type: 'udp' });
    expect(moved.status).toBe(200);
    expect(moved.body.id).toBe('udp-192_168_0_16-81');
    expect(moved.body.servers).toHaveLength(1);
    expect((await req('GET', `/services/${webId}`)).status).toBe(404);
    expect((await req('GET', '/services/udp-192_168_0_16-81')).status).toBe(200);

    const replaced = await req('PUT', '/services/udp-192_168_0_16-81', { host: '192.168.0.16', port: 81, type: 'udp', servers: [] });
    expect(replaced.status).toBe(200);
    expect('servers' in replaced.body).toBe(false);
    expect((await c.ctx.etcd.get(c.ctx.keys.l4.service('udp-192_168_0_16-81')).json())).toMatchObject({ servers: [] });
  });

  it('PUT /services/:id onto another existing id is refused with 409 and changes nothing', async () => {
    await req('POST', '/services', web);
    await req('POST', '/services', { host: '192.168.0.16', port: 80 });
    const before = await snapshot();
    const r = await req('PUT', `/services/${webId}`, { host: '192.168.0.16', port: 80 });
    expect(r.status).toBe(409);
    expect(await snapshot()).toEqual(before);
  });

  it('PUT /services/:id of an unknown service is 404', async () => {
    const r = await req('PUT', '/services/tcp-10_9_9_9-1', { host: '10.9.9.9', port: 1 });
    expect(r.status).toBe(404);
  });

  it('DELETE /services/:id answers {"msg":"Success"}, again when it is already gone (idempotent, as Portal)', async () => {
    await req('POST', '/services', web);
    const d = await req('DELETE', `/services/${webId}`);
    expect(d.status).toBe(200);
    expect(d.body).toEqual({ msg: 'Success' });
    expect(Number(d.headers['x-switchyard-revision'])).toBeGreaterThan(0);
    const again = await req('DELETE', `/services/${webId}`);
    expect(again.status).toBe(200);
    expect(again.body).toEqual({ msg: 'Success' });
    expect((await req('DELETE', '/services/tcp-10_9_9_9-1')).body).toEqual({ msg: 'Success' });
    expect((await req('GET', '/services')).body).toEqual([]);
  });
});

describe('servers', () => {
  beforeEach(async () => {
    await req('POST', '/services', web);
  });

  it('add, list, show, replace and delete', async () => {
    const add = await req('POST', `/services/${webId}/servers`, { host: '127.0.0.11', port: 8080, weight: 3 });
    expect(add.status).toBe(200);
    expect(add.body).toEqual({ id: '127_0_0_11-8080', host: '127.0.0.11', port: 8080, forwarder: 'g', weight: 3, upper_threshold: 0, lower_threshold: 0 });
    expect(Number(add.headers['x-switchyard-revision'])).toBeGreaterThan(0);

    const again = await req('POST', `/services/${webId}/servers`, { host: '127.0.0.11', port: 8080, weight: 9 });
    expect(again.body.weight).toBe(3);

    expect((await req('GET', `/services/${webId}/servers`)).body).toHaveLength(1);
    expect((await req('GET', `/services/${webId}/servers/127_0_0_11-8080`)).body.weight).toBe(3);
    expect((await req('GET', `/services/${webId}`)).body.servers).toHaveLength(1);

    const put = await req('PUT', `/services/${webId}/servers`, [
      { host: '127.0.0.12', port: 8080 },
      { host: '127.0.0.13', port: 8080, upper_threshold: 10 },
    ]);
    expect(put.status).toBe(200);
    expect(put.body.map((s: { id: string }) => s.id)).toEqual(['127_0_0_12-8080', '127_0_0_13-8080']);

    const del = await req('DELETE', `/services/${webId}/servers/127_0_0_12-8080`);
    expect(del.body).toEqual({ msg: 'Success' });
    expect((await req('GET', `/services/${webId}/servers`)).body.map((s: { id: string }) => s.id)).toEqual(['127_0_0_13-8080']);
  });

  it('404 for unknown servers and for servers of unknown services; deleting an absent server succeeds', async () => {
    expect((await req('GET', `/services/${webId}/servers/1_2_3_4-5`)).status).toBe(404);
    expect((await req('GET', `/services/${webId}/servers/1_2_3_4-5`)).body.error).toBe('No Server Found');
    const before = await snapshot();
    const gone = await req('DELETE', `/services/${webId}/servers/1_2_3_4-5`);
    expect([gone.status, gone.body]).toEqual([200, { msg: 'Success' }]);
    expect(await snapshot()).toEqual(before);
    // Portal answered a 500 here; the service is unknown, so it stays a 404.
    expect((await req('DELETE', '/services/tcp-10_9_9_9-1/servers/1_2_3_4-5')).status).toBe(404);
    expect((await req('POST', '/services/tcp-10_9_9_9-1/servers', { host: '1.2.3.4', port: 5 })).status).toBe(404);
    expect((await req('PUT', '/services/tcp-10_9_9_9-1/servers', [])).status).toBe(404);
    expect((await req('GET', '/services/tcp-10_9_9_9-1/servers')).status).toBe(404);
    expect(await snapshot()).toEqual(before);
  });

  it('concurrent server adds to one service are all kept (compare-and-swap)', async () => {
    const adds = await Promise.all(Array.from({ length: 20 }, (_, i) => req('POST', `/services/${webId}/servers`, { host: '10.3.0.1', port: 2000 + i })));
    expect(adds.every((a) => a.status === 200)).toBe(true);
    expect((await req('GET', `/services/${webId}/servers`)).body).toHaveLength(20);
  });

  it('concurrent POSTs (group-committed) each get their own answer and revision, and a later GET sees them all', async () => {
    const hosts = Array.from({ length: 60 }, (_, i) => `10.4.0.${i + 1}`);
    // The same id three times among them, with different schedulers: the first to arrive creates it.
    const twice = { host: '192.168.7.7', port: 80 };
    const bodies = [...hosts.map((host) => ({ host, port: 80 })), { ...twice, scheduler: 'rr' }, { ...twice, scheduler: 'sh' }, { ...twice, scheduler: 'dh' }];
    const answers = await Promise.all(bodies.map((b) => req('POST', '/services', b)));
    expect(answers.every((a) => a.status === 200)).toBe(true);
    expect(answers.slice(0, 60).map((a) => a.body.host)).toEqual(hosts);
    expect(answers.slice(60).map((a) => a.body.scheduler)).toEqual(['rr', 'rr', 'rr']);
    for (const a of answers.slice(0, 60)) {
      const kv = (await c.ctx.etcd.get(c.ctx.keys.l4.service(a.body.id)).exec()).kvs[0];
      expect(Number(kv.mod_revision)).toBe(Number(a.headers['x-switchyard-revision']));
    }
    expect((await req('GET', '/services')).body).toHaveLength(62); // and the servers block's own service
  });
});

describe('bad input writes nothing and is a 4xx', () => {
  const bad: [string, 'POST' | 'PUT', string, unknown, number][] = [
    ['not JSON', 'POST', '/services', '{"host":', 400],
    ['an array where an object belongs', 'POST', '/services', [web], 400],
    ['an object where an array belongs', 'PUT', '/services', web, 400],
    ['an object where a server array belongs', 'PUT', `/services/${webId}/servers`, { host: '1.2.3.4', port: 1 }, 400],
    ['missing host', 'POST', '/services', { port: 80 }, 400],
    ['missing port', 'POST', '/services', { host: '10.0.0.1' }, 400],
    ['host not an IP literal', 'POST', '/services', { host: 'example.com', port: 80 }, 400],
    ['port as a string', 'POST', '/services', { host: '10.0.0.1', port: '80' }, 400],
    ['port 0', 'POST', '/services', { host: '10.0.0.1', port: 0 }, 400],
    ['port 65536', 'POST', '/services', { host: '10.0.0.1', port: 65536 }, 400],
    ['fractional port', 'POST', '/services', { host: '10.0.0.1', port: 80.5 }, 400],
    ['unknown type', 'POST', '/services', { ...web, type: 'sctp' }, 400],
    ['unknown scheduler', 'POST', '/services', { ...web, scheduler: 'fifo' }, 400],
    ['negative persistence', 'POST', '/services', { ...web, persistence: -1 }, 400],
    ['bad netmask', 'POST', '/services', { ...web, netmask: '255.0.255.0' }, 400],
    ['a prefix length as an IPv4 netmask', 'POST', '/services', { ...web, netmask: '24' }, 400],
    ['a dotted netmask for an IPv6 service', 'POST', '/services', { host: 'fd00::1', port: 80, netmask: '255.255.255.0' }, 400],
    ['unknown forwarder', 'POST', `/services/${webId}/servers`, { host: '10.0.0.2', port: 80, forwarder: 'x' }, 400],
    ['negative weight', 'POST', `/services/${webId}/servers`, { host: '10.0.0.2', port: 80, weight: -1 }, 400],
    ['negative threshold', 'POST', `/services/${webId}/servers`, { host: '10.0.0.2', port: 80, upper_threshold: -5 }, 400],
    ['server of another address family', 'POST', '/services', { ...web, servers: [{ host: 'fd00::2', port: 80 }] }, 400],
    ['duplicate servers', 'POST', '/services', { ...web, servers: [{ host: '10.0.0.2', port: 80 }, { host: '10.0.0.2', port: 80 }] }, 400],
    ['duplicate services in a PUT', 'PUT', '/services', [web, web], 400],
    ['a PUT list with one bad service', 'PUT', '/services', [web, { host: 'x', port: 1 }], 400],
    ['a body over 1 MiB', 'PUT', '/services', JSON.stringify([{ host: '10.0.0.1', port: 1, pad: 'x'.repeat(1024 * 1024) }]), 413],
  ];
  it.each(bad)('%s', async (_name, method, url, payload, status) => {
    await req('POST', '/services', web);
    const before = await snapshot();
    const r = await req(method, url, payload);
    expect(r.status).toBe(status);
    expect(typeof r.body.error).toBe('string');
    expect(r.body.error.length).toBeGreaterThan(0);
    expect(await snapshot()).toEqual(before);
  });

  it('bodies sent with curl -d (form content type) are parsed as JSON', async () => {
    const r = await req('POST', '/services', JSON.stringify({ host: '10.7.0.1', port: 7 }), { 'content-type': 'application/x-www-form-urlencoded' });
    expect(r.status).toBe(200);
    expect(r.body.id).toBe('tcp-10_7_0_1-7');
  });

  it('unknown routes are a JSON 404', async () => {
    const r = await req('GET', '/nope');
    expect(r.status).toBe(404);
    expect(typeof r.body.error).toBe('string');
  });
});

describe('documentation', () => {
  it('serves an OpenAPI document generated from the schemas, and the UI', async () => {
    const doc = await req('GET', '/docs/json');
    expect(doc.status).toBe(200);
    expect(doc.body.openapi).toMatch(/^3\./);
    const post = doc.body.paths['/services'].post;
    const schema = post.requestBody.content['application/json'].schema;
    expect(schema.properties.scheduler.enum).toContain('wlc');
    expect(schema.required).toEqual(expect.arrayContaining(['host', 'port']));
    const ui = await c.app.inject({ method: 'GET', url: '/docs/' });
    expect([200, 302]).toContain(ui.statusCode);
  });
});
