/**
 * django-portmaster's own test cases (django_portmaster/tests.py), re-expressed
 * against Switchyard's coordinator on a real etcd.
 *
 * Portmaster's fixtures: services "Django" (5000–10000, "Django service") and
 * a second one sorting after it; instance "Web-01" on 5000; an open offer
 * "Web-02" on 5001. Here the fixture is built through the API itself (the
 * offer secret is therefore random, not Portmaster's fixed UUID), and every
 * test gets a fresh key prefix, as Django's test cases get a fresh database.
 *
 * Where Portmaster only asserts "400", these tests also pin the message and
 * that nothing at all was written to etcd.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { testCoordinator } from '../helpers/coordinator.js';

let c: Coordinator;
let web02Secret: string;

type Json = Record<string, unknown>;

async function call(method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', url: string, payload?: unknown) {
  const r = await c.app.inject({ method, url, ...(payload === undefined ? {} : { payload: payload as Json }) });
  return { status: r.statusCode, body: r.body ? (JSON.parse(r.body) as unknown) : undefined };
}

/** Every key under the Portmaster prefix with its mod revision: equal before and after = nothing written. */
async function etcdState(): Promise<string[]> {
  const res = await c.ctx.etcd.getAll().prefix(c.ctx.keys.pm.all).exec();
  return res.kvs.map((kv) => `${kv.key.toString()}@${kv.mod_revision}`);
}

async function expectRefused(method: 'POST' | 'PUT', url: string, payload: unknown, status: number, error: string) {
  const before = await etcdState();
  const r = await call(method, url, payload);
  expect(r.status).toBe(status);
  expect((r.body as Json).error).toBe(error);
  expect(await etcdState()).toEqual(before);
  return r;
}

async function serviceCount(): Promise<number> {
  return ((await call('GET', '/v1/services')).body as unknown[]).length;
}

beforeEach(async () => {
  c = await testCoordinator('pm-conformance');
  expect((await call('POST', '/v1/services', { name: 'Django', description: 'Django service', start: 5000, end: 10000 })).status).toBe(201);
  expect((await call('POST', '/v1/services', { name: 'Flask', description: 'Flask service', start: 10001, end: 15000 })).status).toBe(201);
  const web01 = (await call('POST', '/v1/services/Django/offers', { name: 'Web-01' })).body as Json;
  expect(web01.port).toBe(5000);
  expect((await call('PUT', `/v1/services/Django/offers/${String(web01.secret)}`)).status).toBe(201);
  const web02 = (await call('POST', '/v1/services/Django/offers', { name: 'Web-02' })).body as Json;
  expect(web02.port).toBe(5001);
  web02Secret = String(web02.secret);
});

afterEach(() => c.close());

describe('ServiceApiTests', () => {
  it('test_service_list: services sorted by name, with their fields', async () => {
    const r = await call('GET', '/v1/services');
    expect(r.status).toBe(200);
    expect(r.body).toHaveLength(2);
    expect((r.body as Json[])[0]).toEqual({ name: 'Django', description: 'Django service', start: 5000, end: 10000 });
  });

  it('test_service_create: 201 and the service is stored', async () => {
    const r = await call('POST', '/v1/services', { name: 'CherryPy', description: 'CherryPy service', start: 15001, end: 20000 });
    expect(r.status).toBe(201);
    expect(await serviceCount()).toBe(3);
    expect((await call('GET', '/v1/services/CherryPy')).body).toEqual({ name: 'CherryPy', description: 'CherryPy service', start: 15001, end: 20000 });
  });

  it('test_service_create_privilege_ports: 1000–2000 is refused', async () => {
    await expectRefused('POST', '/v1/services', { name: 'CherryPy', description: 'CherryPy service', start: 1000, end: 2000 }, 400, 'Port range is in reserved range.');
    expect(await serviceCount()).toBe(2);
  });

  it('test_service_create_iana_ephemeral_ports: 40000–50000 is refused', async () => {
    await expectRefused('POST', '/v1/services', { name: 'CherryPy', description: 'CherryPy service', start: 40000, end: 50000 }, 400, 'Port range is in reserved range.');
    expect(await serviceCount()).toBe(2);
  });

  it('test_service_create_start_overlap: 12000–20000 starts inside Flask', async () => {
    await expectRefused('POST', '/v1/services', { name: 'CherryPy', start: 12000, end: 20000 }, 400, 'Port range overlaps with existing services.');
    expect(await serviceCount()).toBe(2);
  });

  it('test_service_create_end_overlap: 2000–8000 ends inside Django', async () => {
    await expectRefused('POST', '/v1/services', { name: 'CherryPy', start: 2000, end: 8000 }, 400, 'Port range overlaps with existing services.');
    expect(await serviceCount()).toBe(2);
  });

  it('test_service_create_total_overlap: 2000–20000 covers both', async () => {
    await expectRefused('POST', '/v1/services', { name: 'CherryPy', start: 2000, end: 20000 }, 400, 'Port range overlaps with existing services.');
    expect(await serviceCount()).toBe(2);
  });

  it('test_service_create_start_end_mismatch: start above end', async () => {
    await expectRefused('POST', '/v1/services', { name: 'CherryPy', start: 3000, end: 2000 }, 400, 'Start of the range should be a lower number.');
    expect(await serviceCount()).toBe(2);
  });

  it('test_service_create_duplicated_name', async () => {
    await expectRefused('POST', '/v1/services', { name: 'Django', description: 'Django service', start: 15001, end: 20000 }, 400, 'Service with this name already exists.');
    expect(await serviceCount()).toBe(2);
  });

  it('test_service_update: description and range change', async () => {
    const r = await call('PUT', '/v1/services/Django', { name: 'Django', description: 'Django service test', start: 4000, end: 9000 });
    expect(r.status).toBe(200);
    expect((await call('GET', '/v1/services/Django')).body).toEqual({ name: 'Django', description: 'Django service test', start: 4000, end: 9000 });
  });

  it('test_service_update_out_of_range: Web-01 on 5000 would fall outside 6000–10000', async () => {
    await expectRefused('PUT', '/v1/services/Django', { name: 'Django', description: 'Django service', start: 6000, end: 10000 }, 400, 'Defined service instances fall outside of the range.');
    expect(((await call('GET', '/v1/services/Django')).body as Json).start).toBe(5000);
  });

  it('test_service_available_ports / test_service_next_port: the lowest free port, and a freed port comes first again', async () => {
    expect(((await call('POST', '/v1/services/Django/offers', { name: 'Web-03' })).body as Json).port).toBe(5002);
    expect((await call('DELETE', '/v1/services/Django/ports/Web-01')).status).toBe(204);
    expect(((await call('POST', '/v1/services/Django/offers', { name: 'Web-04' })).body as Json).port).toBe(5000);
  });
});

describe('OfferApiTests', () => {
  it('test_offer_list: the open offer with its secret', async () => {
    const r = await call('GET', '/v1/services/Django/offers');
    expect(r.status).toBe(200);
    expect(r.body).toHaveLength(1);
    expect((r.body as Json[])[0]).toMatchObject({ service: 'Django', name: 'Web-02', port: 5001, secret: web02Secret });
  });

  it('test_offer_create: 201 on the next free port', async () => {
    const r = await call('POST', '/v1/services/Django/offers', { name: 'Web-03' });
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({ service: 'Django', name: 'Web-03', port: 5002 });
    expect((r.body as Json).secret).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(new Date(String((r.body as Json).created)).getTime()).toBeGreaterThan(Date.now() - 60_000);
    expect((await call('GET', '/v1/services/Django/offers')).body).toHaveLength(2);
  });

  it('test_offer_create_duplicated_name: a name already offered is refused', async () => {
    await expectRefused('POST', '/v1/services/Django/offers', { name: 'Web-02' }, 400, 'Service instance with this name already exists.');
    expect((await call('GET', '/v1/services/Django/offers')).body).toHaveLength(1);
  });

  it('test_offer_create_out_of_ports: range shrunk to the two held ports', async () => {
    const r = await call('PUT', '/v1/services/Django', { name: 'Django', description: 'Django service test', start: 5000, end: 5001 });
    expect(r.status).toBe(200);
    // Portmaster reports the full range before the taken name (field checks first).
    await expectRefused('POST', '/v1/services/Django/offers', { name: 'Web-02' }, 400, 'Port range has been completely utilized.');
    expect((await call('GET', '/v1/services/Django/offers')).body).toHaveLength(1);
  });

  it('test_offer_update_patch: 405', async () => {
    const r = await call('PATCH', `/v1/services/Django/offers/${web02Secret}`, { name: 'Web-03' });
    expect(r.status).toBe(405);
    expect((r.body as Json).error).toBe("Method 'PATCH' not allowed.");
  });

  it('test_offer_accept: PUT turns the offer into an instance', async () => {
    const r = await call('PUT', `/v1/services/Django/offers/${web02Secret}`, {});
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({ service: 'Django', name: 'Web-02', port: 5001 });
    expect((await call('GET', '/v1/services/Django/offers')).body).toEqual([]);
    expect((await call('GET', '/v1/services/Django/ports/Web-02')).body).toMatchObject({ service: 'Django', name: 'Web-02', port: 5001 });
  });

  it('test_offer_accept (POST …/accept, as the README documents it)', async () => {
    const r = await call('POST', `/v1/services/Django/offers/${web02Secret}/accept`);
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({ name: 'Web-02', port: 5001 });
    // Accepted once: the offer no longer exists.
    expect((await call('POST', `/v1/services/Django/offers/${web02Secret}/accept`)).status).toBe(404);
  });

  it('test_offer_accept_duplicate_name: the state cannot arise, the name is refused when offered', async () => {
    // Portmaster could hold an offer and an instance under one name and refused
    // at accept time; here the name is taken at offer time, in the same
    // transaction as the port, with the same message.
    await expectRefused('POST', '/v1/services/Django/offers', { name: 'Web-01' }, 400, 'Service instance with this name already exists.');
    expect((await call('GET', '/v1/services/Django/offers')).body).toHaveLength(1);
  });

  it('test_offer_reject: DELETE → 204, no offer, no instance', async () => {
    const r = await call('DELETE', `/v1/services/Django/offers/${web02Secret}`, {});
    expect(r.status).toBe(204);
    expect((await call('GET', '/v1/services/Django/offers')).body).toEqual([]);
    expect((await call('GET', '/v1/services/Django/ports/5001')).status).toBe(404);
    expect((await call('GET', '/v1/services/Django/ports')).body).toHaveLength(1);
  });

  it('test_offer_reject (POST …/reject): the port is offered again', async () => {
    expect((await call('POST', `/v1/services/Django/offers/${web02Secret}/reject`)).status).toBe(204);
    expect(((await call('POST', '/v1/services/Django/offers', { name: 'Web-02' })).body as Json).port).toBe(5001);
  });
});

describe('InstanceApiTests', () => {
  it('test_instance_list', async () => {
    const r = await call('GET', '/v1/services/Django/ports');
    expect(r.status).toBe(200);
    expect(r.body).toHaveLength(1);
    expect((r.body as Json[])[0]).toMatchObject({ service: 'Django', name: 'Web-01', port: 5000 });
  });

  it('test_instance_detail_by_port', async () => {
    const r = await call('GET', '/v1/services/Django/ports/5000');
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ service: 'Django', name: 'Web-01', port: 5000 });
  });

  it('test_instance_detail_by_name', async () => {
    const r = await call('GET', '/v1/services/Django/ports/Web-01');
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ service: 'Django', name: 'Web-01', port: 5000 });
  });

  it('test_instance_create: POST → 405', async () => {
    expect((await call('POST', '/v1/services/Django/ports', {})).status).toBe(405);
  });

  it('test_instance_update_put: PUT → 405', async () => {
    expect((await call('PUT', '/v1/services/Django/ports/Web-01', { name: 'Web-03' })).status).toBe(405);
  });

  it('test_instance_update_patch: PATCH → 405', async () => {
    expect((await call('PATCH', '/v1/services/Django/ports/Web-01', { name: 'Web-03' })).status).toBe(405);
  });
});
