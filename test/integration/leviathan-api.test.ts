/**
 * Leviathan's REST API against a real etcd: import, make, destroy, CINs and
 * their addresses, containers on hosts, CPools; bad input is a 4xx that
 * writes nothing; every change lands in one transaction.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { testCoordinator } from '../helpers/coordinator.js';
import { SEED_CEN_FILE } from '../fixtures/leviathan/seed.js';


let c: Coordinator;
beforeAll(async () => {
  c = await testCoordinator('leviathan-api');
});
afterAll(() => c.close());

async function call(method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, payload?: unknown) {
  const r = await c.app.inject({ method, url, ...(payload === undefined ? {} : { payload: JSON.stringify(payload), headers: { 'content-type': 'application/x-www-form-urlencoded' } }) });
  return { status: r.statusCode, body: r.body ? JSON.parse(r.body) : undefined, revision: Number(r.headers['x-switchyard-revision'] ?? 0) };
}

/** Every key under the test's Leviathan prefixes, with values. */
async function dump(): Promise<Record<string, string>> {
  const all = await c.ctx.etcd.getAll().prefix(`${c.ctx.keys.prefix}/lev`).strings();
  return all;
}

describe('CENs', () => {
  it('imports the seed CEN file (17 memberships, 15 distinct containers, all on the default host), idempotently', async () => {
    const r = await call('POST', '/cen/import', SEED_CEN_FILE);
    expect(r.status).toBe(200);
    expect(r.body.map((x: { cenID: string }) => x.cenID)).toEqual(['cen1', 'cen2', 'cen3', 'cen4', 'cen5']);
    const before = await dump();
    const containers = Object.keys(before).filter((k) => k.includes('/lev/containers/'));
    expect(containers).toHaveLength(15);
    for (const k of containers) expect(JSON.parse(before[k]).host).toBe('host1');

    const again = await call('POST', '/cen/import', SEED_CEN_FILE);
    expect(again.status).toBe(200);
    expect(await dump()).toEqual(before);

    const g = await call('GET', '/cen/cen1');
    expect(g.status).toBe(200);
    expect(g.body).toMatchObject({ cenID: 'cen1', contIDs: ['c1', 'c2', 'c13', 'c14'], wiring_type: 'bridge', status: 'pending' });
  });

  it('make marks CENs made; the state is preparing until an agent reports; destroy goes back', async () => {
    const r = await call('POST', '/cen/make', ['cen1', 'cen2']);
    expect(r.status).toBe(200);
    expect(r.body.map((x: { status: string }) => x.status)).toEqual(['preparing', 'preparing']);
    const d = await call('POST', '/cen/destroy', ['cen2']);
    expect(d.body[0].status).toBe('pending');
  });

  it('refuses an unknown CEN in a make list with 404 and makes none of the others', async () => {
    const before = await dump();
    const r = await call('POST', '/cen/make', ['cen3', 'nope']);
    expect(r.status).toBe(404);
    expect(r.body).toEqual({ error: 'CEN nope not found', code: 'CEN_NOT_FOUND' });
    expect(await dump()).toEqual(before);
  });

  it('refuses ids that cannot become kernel names with 400 BAD_NAME, writing nothing', async () => {
    const before = await dump();
    for (const bad of [
      { cenList: [{ cenID: 'a-cen-id-that-is-too-long', containerIDs: ['x1'] }] },
      { cenList: [{ cenID: 'ok', containerIDs: ['x;rm -rf /'] }] },
      { cenList: [{ cenID: 'lo', containerIDs: [] }] },
      { cenList: [{ cenID: '-n', containerIDs: [] }] },
      { cenList: [{ cenID: 'ok', containerIDs: ['../etc'] }] },
    ]) {
      const r = await call('POST', '/cen/import', bad);
      expect(r.status, JSON.stringify(bad)).toBe(400);
      expect(r.body.code).toBe('BAD_NAME');
    }
    const bodyShape = await call('POST', '/cen/import', { cenList: 'no' });
    expect(bodyShape.status).toBe(400);
    expect(bodyShape.body.code).toBe('INVALID');
    const notJson = await c.app.inject({ method: 'POST', url: '/cen/import', payload: '{"cenList": [', headers: { 'content-type': 'application/json' } });
    expect(notJson.statusCode).toBe(400);
    expect(JSON.parse(notJson.body).code).toBe('BAD_JSON');
    expect(await dump()).toEqual(before);
  });

  it('a "wire" CEN joins exactly two containers', async () => {
    expect((await call('PUT', '/cen/w1', { wiring_type: 'wire' })).status).toBe(200);
    expect((await call('PUT', '/host/host1/wa/w1')).status).toBe(200);
    const one = await call('POST', '/cen/make', ['w1']);
    expect(one.status).toBe(400);
    expect(one.body.code).toBe('CEN_WIRING');
    expect((await call('PUT', '/host/host1/wb/w1')).status).toBe(200);
    const two = await call('POST', '/cen/make', ['w1']);
    expect(two.status).toBe(200);
    expect(two.body[0].wiring_type).toBe('wire');
    const three = await call('PUT', '/host/host1/wc/w1');
    expect(three.status).toBe(400);
    expect(three.body.code).toBe('CEN_WIRING');
  });
});

describe('CINs', () => {
  it('allocates a /16 per CIN (bridge .0.1, containers from .0.10), unique, in one transaction', async () => {
    const imp = await call('POST', '/cin/import', { cin1: ['cen1'], cin2: ['cen2'] });
    expect(imp.status).toBe(200);
    const made = await call('POST', '/cin/make', ['cin1', 'cin2']);
    expect(made.status).toBe(200);
    const [a, b] = made.body;
    expect(a).toMatchObject({ cinID: 'cin1', subnet: '10.10.0.0/16', gateway: '10.10.0.1' });
    expect(b).toMatchObject({ cinID: 'cin2', subnet: '10.11.0.0/16', gateway: '10.11.0.1' });
    expect(a.addresses.map((x: { ipaddress: string }) => x.ipaddress)).toEqual(['10.10.0.10', '10.10.0.11', '10.10.0.12', '10.10.0.13']);
    // One transaction: every key it wrote carries the same revision.
    const kvs = await c.ctx.etcd.getAll().prefix(`${c.ctx.keys.prefix}/lev/`).exec();
    const revs = new Set(kvs.kvs.filter((kv) => /\/(cins|subnets)\//.test(kv.key.toString())).map((kv) => kv.mod_revision));
    expect(revs.size).toBe(1);
    expect([...revs][0]).toBe(String(made.revision));
  });

  it('a container joining a made CIN gets the next address; leaving frees it', async () => {
    const add = await call('PUT', '/host/host1/c99/cen1');
    expect(add.status).toBe(200);
    expect(add.body.addresses).toEqual([{ cinID: 'cin1', cenID: 'cen1', ipaddress: '10.10.0.14' }]);
    const rm = await call('DELETE', '/host/host1/c99/cen1');
    expect(rm.status).toBe(200);
    expect(rm.body.addresses).toEqual([]);
    expect((await call('GET', '/cin/cin1')).body.addresses).toHaveLength(4);
    expect((await call('DELETE', '/host/host1/c99')).status).toBe(200);
    expect((await call('GET', '/host/host1/c99')).status).toBe(404);
  });

  it('refuses a container on another host with 409 and an unknown CEN in a CIN with 404', async () => {
    const r = await call('PUT', '/host/host2/c1/cen2');
    expect(r.status).toBe(409);
    expect(r.body.code).toBe('CONTAINER_ELSEWHERE');
    const u = await call('POST', '/cin/import', { cin3: ['nope'] });
    expect(u.status).toBe(404);
    expect((await call('GET', '/cin/cin3')).status).toBe(404);
  });

  it('destroy releases the subnet, which the next CIN made reuses', async () => {
    expect((await call('POST', '/cin/destroy', ['cin1'])).body[0]).toMatchObject({ subnet: null, addresses: [], status: 'pending' });
    expect((await call('POST', '/cin/import', { cin9: ['cen5'] })).status).toBe(200);
    const m = await call('POST', '/cin/make', ['cin9']);
    expect(m.body[0].subnet).toBe('10.10.0.0/16');
    const keys = Object.keys(await dump()).filter((k) => k.includes('/lev/subnets/'));
    expect(keys.map((k) => k.split('/').pop()).sort()).toEqual(['10', '11']);
    await call('POST', '/cin/destroy', ['cin9']);
  });

  it('runs out of subnets with 409 POOL_EXHAUSTED and a configurable pool', async () => {
    const inUse = await call('PUT', '/leviathan/pool', { network: '10.200.0.0/16', subnetPrefix: 24, firstSubnet: 0 });
    expect(inUse.status).toBe(409);
    await call('POST', '/cin/destroy', ['cin2']);
    const set = await call('PUT', '/leviathan/pool', { network: '192.168.0.0/23', subnetPrefix: 24, firstSubnet: 1 });
    expect(set.status).toBe(200);
    const one = await call('POST', '/cin/make', ['cin2']);
    expect(one.body[0]).toMatchObject({ subnet: '192.168.1.0/24', gateway: '192.168.1.1' });
    const full = await call('POST', '/cin/make', ['cin9']);
    expect(full.status).toBe(409);
    expect(full.body.code).toBe('POOL_EXHAUSTED');
    await call('POST', '/cin/destroy', ['cin2']);
    expect((await call('PUT', '/leviathan/pool', {})).status).toBe(200);
  });
});

describe('containers and CPools', () => {
  it('GET /host/:host/:container shows the structure; wrong host is 404', async () => {
    const g = await call('GET', '/host/host1/c2');
    expect(g.status).toBe(200);
    expect(g.body).toMatchObject({ contID: 'c2', hostID: 'host1', cenIDs: ['cen1', 'cen5'] });
    expect((await call('GET', '/host/host2/c2')).status).toBe(404);
    expect((await call('PUT', '/host/host2/solo', { tag: 'web' })).body).toMatchObject({ contID: 'solo', hostID: 'host2', tag: 'web' });
  });

  it('a CPool starts N containers, joins them to its CENs and makes those; re-import shrinks it', async () => {
    const file = { cpoolList: [{ cpoolID: 'pool1', type: 'ubuntu:14.04', start_with: 3, cins: [{ cinID: 'pcen', default_route: 'true' }] }] };
    const r = await call('POST', '/cpool', file);
    expect(r.status).toBe(200);
    expect(r.body[0]).toMatchObject({ cenID: 'pcen', contIDs: ['pool1-1', 'pool1-2', 'pool1-3'], status: 'preparing' });
    const again = await call('POST', '/cpool', file);
    expect(again.body).toEqual(r.body);
    file.cpoolList[0].start_with = 1;
    const shrunk = await call('POST', '/cpool', file);
    expect(shrunk.body[0].contIDs).toEqual(['pool1-1']);
    expect((await call('GET', '/host/host1/pool1-3')).status).toBe(404);
    expect((await call('GET', '/host/host1/pool1-1')).body).toMatchObject({ tag: 'pool1', cpoolID: 'pool1' });
  });

  it('DELETE /cen/:cen removes it from its CINs', async () => {
    expect((await call('DELETE', '/cen/cen5')).status).toBe(200);
    expect((await call('GET', '/cen/cen5')).status).toBe(404);
    expect((await call('GET', '/cin/cin9')).body.cenIDs).toEqual([]);
    expect((await call('DELETE', '/cen/cen5')).status).toBe(404);
  });
});

describe('large CEN files on an etcd with default limits (128 operations per transaction)', () => {
  it('imports, makes and destroys 100 CENs × 10 containers (1,000 containers) in chunks chained on the epoch', async () => {
    const cenList = Array.from({ length: 100 }, (_, i) => ({ cenID: `big${i}`, containerIDs: Array.from({ length: 10 }, (_, j) => `bc${i}-${j}`) }));
    const imported = await call('POST', '/cen/import', { cenList });
    expect(imported.status, JSON.stringify(imported.body)).toBe(200);
    const keys = Object.keys(await dump());
    expect(keys.filter((k) => k.includes('/lev/containers/bc'))).toHaveLength(1000);
    expect(keys.filter((k) => k.includes('/lev/cens/big'))).toHaveLength(100);
    // Idempotent: the same file again writes nothing.
    const before = await dump();
    expect((await call('POST', '/cen/import', { cenList })).status).toBe(200);
    expect(await dump()).toEqual(before);

    const ids = cenList.map((x) => x.cenID);
    expect((await call('POST', '/cen/make', ids)).status).toBe(200);
    const made = await dump();
    for (const id of ids) expect(JSON.parse(made[`${c.ctx.keys.lev.cen(id)}`]).made).toBe(true);
    expect((await call('POST', '/cen/destroy', ids)).status).toBe(200);
    const destroyed = await dump();
    for (const id of ids) expect(JSON.parse(destroyed[`${c.ctx.keys.lev.cen(id)}`]).made).toBe(false);
  });
});
