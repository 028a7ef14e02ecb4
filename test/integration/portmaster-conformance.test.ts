/**
 * django-portmaster's own test suite (django_portmaster/tests.py), replayed
 * request for request against Switchyard's coordinator on a real etcd: every
 * request its 29 test cases send (27 HTTP requests, 34 assertions on their
 * answers; its three model tests become the API calls that observe the same
 * thing), with its asserted status,
 * and the exact body Portmaster answers — read from its serializers, views and
 * Django REST framework — field by field, where tests.py only asserts a status.
 *
 * Portmaster's fixtures (fixtures/*.json) are loaded the way Django loads
 * them: straight into the store, before the coordinator starts. Every test
 * gets a fresh key prefix, as each Django test case gets a fresh database.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { keyspace, type PmOffer, type PmPortRecord, type PmService } from '@switchyard/shared';
import { testCoordinator } from '../helpers/coordinator.js';
import { uniquePrefix } from '../helpers/etcd.js';

type Json = Record<string, unknown>;
type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

const SECRET = 'aafae2f7-4bdb-493c-beea-48bebe51f125';
const DJANGO: PmService = { name: 'Django', description: 'Django service', start: 5000, end: 10000 };
const FLASK: PmService = { name: 'Flask', description: 'Flask service', start: 10001, end: 15000 };
/** instance_testdata.json; DRF prints the time with microseconds. */
const WEB01 = { service: 'Django', name: 'Web-01', port: 5000, created: '2017-09-07T16:31:18.365000Z' };

let c: Coordinator;

afterEach(() => c?.close());

interface Fixtures {
  /** offer_testdata.json: the Web-02 offer on 5001 (OfferApiTests load it, InstanceApiTests do not). */
  offer?: { name: string; created: Date; ttlSeconds?: number };
}

/** Loads Portmaster's fixtures into etcd under a fresh prefix, then starts a coordinator on it. */
async function withFixtures(name: string, fixtures: Fixtures = {}): Promise<void> {
  const prefix = uniquePrefix(name);
  const keys = keyspace(prefix).pm;
  const probe = await testCoordinator(`${name}-loader`, { prefix });
  const etcd = probe.ctx.etcd;
  const put = (key: string, value: unknown) => etcd.put(key).value(JSON.stringify(value)).exec();
  await put(keys.ranges, { Django: { start: DJANGO.start, end: DJANGO.end }, Flask: { start: FLASK.start, end: FLASK.end } });
  await put(keys.service('Django'), DJANGO);
  await put(keys.service('Flask'), FLASK);
  await put(keys.port('Django', 5000), { name: 'Web-01', created: '2017-09-07T16:31:18.365Z' } satisfies PmPortRecord);
  await put(keys.name('Django', 'Web-01'), { port: 5000 });
  if (fixtures.offer) {
    const { name: offerName, created } = fixtures.offer;
    // Offers live on a lease (the coordinator's expiry); never kept alive.
    const lease = String((await etcd.leaseClient.leaseGrant({ TTL: fixtures.offer.ttlSeconds ?? 1800 })).ID);
    const iso = created.toISOString();
    const onLease = (key: string, value: unknown) => etcd.kv.put({ key: Buffer.from(key), value: Buffer.from(JSON.stringify(value)), lease });
    await onLease(keys.port('Django', 5001), { name: offerName, created: iso, secret: SECRET } satisfies PmPortRecord);
    await onLease(keys.offerName('Django', offerName), { port: 5001 });
    await onLease(keys.offer('Django', SECRET), { service: 'Django', name: offerName, port: 5001, secret: SECRET, created: iso } satisfies PmOffer);
  }
  await probe.close();
  c = await testCoordinator(name, { prefix });
}

async function call(method: Method, url: string, payload?: unknown, headers: Record<string, string> = {}) {
  const r = await c.app.inject({
    method,
    url,
    headers: payload === undefined ? headers : { 'content-type': 'application/json', ...headers },
    ...(payload === undefined ? {} : { payload: typeof payload === 'string' ? payload : JSON.stringify(payload) }),
  });
  return { status: r.statusCode, body: r.body ? (JSON.parse(r.body) as unknown) : undefined, raw: r.body, headers: r.headers };
}

/** Every key under the Portmaster prefix with its mod revision: equal before and after = nothing written. */
async function etcdState(): Promise<string[]> {
  const res = await c.ctx.etcd.getAll().prefix(c.ctx.keys.pm.all).exec();
  return res.kvs.map((kv) => `${kv.key.toString()}@${kv.mod_revision}`);
}

/** A refused request: its status, its exact body, and nothing written. */
async function refused(method: Method, url: string, payload: unknown, status: number, body: unknown) {
  const before = await etcdState();
  const r = await call(method, url, payload);
  expect({ status: r.status, body: r.body }).toEqual({ status, body });
  expect(await etcdState()).toEqual(before);
}

const list = async (url: string) => (await call('GET', url)).body as Json[];
const cherry = (start: number, end: number) => ({ name: 'CherryPy', description: 'CherryPy service', start, end });
const OVERLAP = { non_field_errors: ['Port range overlaps with existing services.'] };
const fiveMinutesAgo = () => new Date(Date.now() - 5 * 60_000);

describe('ServiceApiTests', () => {
  it('test_service_list', async () => {
    await withFixtures('pmc-service-list', { offer: { name: 'Web-02', created: fiveMinutesAgo() } });
    const r = await call('GET', '/v1/services');
    expect(r.status).toBe(200);
    expect(r.body).toEqual([DJANGO, FLASK]);
  });

  it('test_service_create', async () => {
    await withFixtures('pmc-service-create');
    const r = await call('POST', '/v1/services', cherry(15001, 20000));
    expect({ status: r.status, body: r.body }).toEqual({ status: 201, body: cherry(15001, 20000) });
    expect(await list('/v1/services')).toHaveLength(3);
    expect((await call('GET', '/v1/services/CherryPy')).body).toEqual(cherry(15001, 20000));
  });

  it('test_service_create_privilege_ports: the start is the field in error', async () => {
    await withFixtures('pmc-privilege');
    await refused('POST', '/v1/services', cherry(1000, 2000), 400, { start: ['Port range is in reserved range.'] });
    expect(await list('/v1/services')).toHaveLength(2);
  });

  it('test_service_create_iana_ephemeral_ports: the end is the field in error', async () => {
    await withFixtures('pmc-iana');
    await refused('POST', '/v1/services', cherry(40000, 50000), 400, { end: ['Port range is in reserved range.'] });
    expect(await list('/v1/services')).toHaveLength(2);
  });

  it('test_service_create_start_overlap / end_overlap / total_overlap', async () => {
    await withFixtures('pmc-overlap');
    await refused('POST', '/v1/services', cherry(12000, 20000), 400, OVERLAP);
    await refused('POST', '/v1/services', cherry(2000, 8000), 400, OVERLAP);
    await refused('POST', '/v1/services', cherry(2000, 20000), 400, OVERLAP);
    expect(await list('/v1/services')).toHaveLength(2);
  });

  it('test_service_create_start_end_mismatch', async () => {
    await withFixtures('pmc-mismatch');
    await refused('POST', '/v1/services', cherry(3000, 2000), 400, { non_field_errors: ['Start of the range should be a lower number.'] });
    expect(await list('/v1/services')).toHaveLength(2);
  });

  it('test_service_create_duplicated_name: the UniqueValidator of the name field', async () => {
    await withFixtures('pmc-dup-service');
    await refused('POST', '/v1/services', { ...DJANGO, start: 15000, end: 20000 }, 400, { name: ['service with this name already exists.'] });
    expect(await list('/v1/services')).toHaveLength(2);
  });

  it('test_service_update', async () => {
    await withFixtures('pmc-update');
    const want = { name: 'Django', description: 'Django service test', start: 4000, end: 9000 };
    const r = await call('PUT', '/v1/services/Django', want);
    expect({ status: r.status, body: r.body }).toEqual({ status: 200, body: want });
    expect((await call('GET', '/v1/services/Django')).body).toEqual(want);
  });

  it('test_service_update_out_of_range: Web-01 on 5000 would fall outside 6000–10000', async () => {
    await withFixtures('pmc-update-out');
    await refused('PUT', '/v1/services/Django', { ...DJANGO, start: 6000, end: 10000 }, 400, { non_field_errors: ['Defined service instances fall outside of the range.'] });
    expect(((await call('GET', '/v1/services/Django')).body as Json).start).toBe(5000);
  });

  it('test_service_port_range / test_service_available_ports / test_service_next_port, through the API', async () => {
    await withFixtures('pmc-model', { offer: { name: 'Web-02', created: fiveMinutesAgo() } });
    const service = (await call('GET', '/v1/services/Django')).body as PmService;
    // range: 5000..10000, 5001 ports; available: the range less Web-01 (5000) and the Web-02 offer (5001).
    expect(service.end - service.start + 1).toBe(5001);
    const held = [...(await list('/v1/services/Django/ports')), ...(await list('/v1/services/Django/offers'))].map((h) => h.port);
    expect(held.sort()).toEqual([5000, 5001]);
    expect(5001 - held.length).toBe(4999);
    // next(): 5002; once the first instance is deleted, 5000 again.
    expect(((await call('POST', '/v1/services/Django/offers', { name: 'Web-03' })).body as Json).port).toBe(5002);
    expect((await call('DELETE', '/v1/services/Django/ports/5000')).status).toBe(204);
    expect(((await call('POST', '/v1/services/Django/offers', { name: 'Web-04' })).body as Json).port).toBe(5000);
    // The last available port is the range's end: shrink to what is held plus 10000's neighbourhood.
    expect((await call('PATCH', '/v1/services/Django', { start: 5000, end: 5003 })).status).toBe(200);
    expect(((await call('POST', '/v1/services/Django/offers', { name: 'Web-05' })).body as Json).port).toBe(5003);
  });
});

describe('OfferApiTests (fixture offer Web-02 on 5001, created five minutes ago)', () => {
  it('test_offer_list', async () => {
    const created = fiveMinutesAgo();
    await withFixtures('pmc-offer-list', { offer: { name: 'Web-02', created } });
    const r = await call('GET', '/v1/services/Django/offers');
    expect(r.status).toBe(200);
    const micro = `${created.toISOString().slice(0, 23)}000Z`;
    expect(r.body).toEqual([{ service: 'Django', name: 'Web-02', port: 5001, secret: SECRET, created: micro }]);
  });

  it('test_offer_create', async () => {
    await withFixtures('pmc-offer-create', { offer: { name: 'Web-02', created: fiveMinutesAgo() } });
    const r = await call('POST', '/v1/services/Django/offers', { name: 'Web-03' });
    expect(r.status).toBe(201);
    const body = r.body as Json;
    expect(Object.keys(body)).toEqual(['service', 'name', 'port', 'secret', 'created']);
    expect(body).toMatchObject({ service: 'Django', name: 'Web-03', port: 5002 });
    expect(body.secret).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(body.created).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$/);
    expect(Math.abs(new Date(String(body.created)).getTime() - Date.now())).toBeLessThan(60_000);
    expect(await list('/v1/services/Django/offers')).toHaveLength(2);
  });

  it('test_offer_create_duplicated_name: unique_together (service, name) among offers', async () => {
    await withFixtures('pmc-offer-dup', { offer: { name: 'Web-02', created: fiveMinutesAgo() } });
    await refused('POST', '/v1/services/Django/offers', { name: 'Web-02' }, 400, { non_field_errors: ['The fields service, name must make a unique set.'] });
    expect(await list('/v1/services/Django/offers')).toHaveLength(1);
  });

  it('test_offer_create_out_of_ports: a full range is the "port" field error, before the name is looked at', async () => {
    await withFixtures('pmc-offer-full', { offer: { name: 'Web-02', created: fiveMinutesAgo() } });
    const shrunk = { name: 'Django', description: 'Django service test', start: 5000, end: 5001 };
    const r = await call('PUT', '/v1/services/Django', shrunk);
    expect({ status: r.status, body: r.body }).toEqual({ status: 200, body: shrunk });
    await refused('POST', '/v1/services/Django/offers', { name: 'Web-02' }, 400, { port: ['Port range has been completely utilized.'] });
    expect(await list('/v1/services/Django/offers')).toHaveLength(1);
  });

  it('test_offer_update_patch: 405 in the view\'s own words', async () => {
    await withFixtures('pmc-offer-patch', { offer: { name: 'Web-02', created: fiveMinutesAgo() } });
    await refused('PATCH', `/v1/services/Django/offers/${SECRET}`, { name: 'Web-03' }, 405, { detail: "Method 'PATCH' not allowed." });
  });

  it('test_offer_clean_old_offers: an offer past its time is gone', async () => {
    // Portmaster's middleware deletes offers older than 30 minutes on the next
    // request; here an offer lives on an etcd lease of the offer TTL. The
    // fixture offer's lease has run out (1 s), as the 35-minute-old offer has.
    await withFixtures('pmc-offer-clean', { offer: { name: 'Web-02', created: new Date(Date.now() - 35 * 60_000), ttlSeconds: 1 } });
    await expect.poll(async () => (await call('GET', '/v1/services/Django/offers')).body, { timeout: 10_000, interval: 200 }).toEqual([]);
    expect((await call('GET', '/v1/services/Django/offers')).status).toBe(200);
  });

  it('test_offer_accept', async () => {
    await withFixtures('pmc-offer-accept', { offer: { name: 'Web-02', created: fiveMinutesAgo() } });
    const r = await call('PUT', `/v1/services/Django/offers/${SECRET}`, {});
    expect(r.status).toBe(201);
    const body = r.body as Json;
    expect(Object.keys(body)).toEqual(['service', 'name', 'port', 'created']);
    expect(body).toMatchObject({ service: 'Django', name: 'Web-02', port: 5001 });
    expect(await list('/v1/services/Django/offers')).toEqual([]);
    expect((await call('GET', `/v1/services/Django/offers/${SECRET}`)).body).toEqual({ detail: 'Not found.' });
    expect((await call('GET', '/v1/services/Django/ports/Web-02')).body).toEqual(body);
  });

  it('test_offer_accept_duplicate_name: an offer named like an instance is refused at accept, and kept', async () => {
    await withFixtures('pmc-offer-accept-dup', { offer: { name: 'Web-01', created: fiveMinutesAgo() } });
    // A ValidationError raised in the view: DRF answers the bare list.
    await refused('PUT', `/v1/services/Django/offers/${SECRET}`, {}, 400, ['Service instance with this name already exists.']);
    expect(await list('/v1/services/Django/offers')).toHaveLength(1);
    expect((await call('GET', '/v1/services/Django/ports/Web-01')).body).toEqual(WEB01);
  });

  it('test_offer_reject', async () => {
    await withFixtures('pmc-offer-reject', { offer: { name: 'Web-02', created: fiveMinutesAgo() } });
    const r = await call('DELETE', `/v1/services/Django/offers/${SECRET}`, {});
    expect(r.status).toBe(204);
    expect(r.raw).toBe('');
    expect(await list('/v1/services/Django/offers')).toEqual([]);
    expect((await call('GET', '/v1/services/Django/ports/Web-02')).status).toBe(404);
    expect(await list('/v1/services/Django/ports')).toEqual([WEB01]);
  });
});

describe('InstanceApiTests (no offer fixture)', () => {
  it('test_instance_list', async () => {
    await withFixtures('pmc-inst-list');
    const r = await call('GET', '/v1/services/Django/ports');
    expect({ status: r.status, body: r.body }).toEqual({ status: 200, body: [WEB01] });
  });

  it('test_instance_detail_by_port', async () => {
    await withFixtures('pmc-inst-port');
    const r = await call('GET', '/v1/services/Django/ports/5000');
    expect({ status: r.status, body: r.body }).toEqual({ status: 200, body: WEB01 });
  });

  it('test_instance_detail_by_name', async () => {
    await withFixtures('pmc-inst-name');
    const r = await call('GET', '/v1/services/Django/ports/Web-01');
    expect({ status: r.status, body: r.body }).toEqual({ status: 200, body: WEB01 });
  });

  it('test_instance_create / test_instance_update_put / test_instance_update_patch: 405 in the views\' own words', async () => {
    await withFixtures('pmc-inst-405');
    await refused('POST', '/v1/services/Django/ports', {}, 405, { detail: "Method 'POST' not allowed." });
    await refused('PUT', '/v1/services/Django/ports/Web-01', { name: 'Web-03' }, 405, { detail: "Method 'PUT' not allowed." });
    await refused('PATCH', '/v1/services/Django/ports/Web-01', { name: 'Web-03' }, 405, { detail: "Method 'PATCH' not allowed." });
  });
});
