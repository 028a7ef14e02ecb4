/**
 * What Portmaster's clients send besides JSON, and how Django REST framework
 * answers them: form and multipart bodies (`curl -d name=web-01`, Python
 * `requests.post(url, data=…)`), PATCH as a partial update, 405s on every
 * path, and the `{error, code}` shape and JSON-only reading kept on the
 * routes of the other tools.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { testCoordinator } from '../helpers/coordinator.js';

let c: Coordinator;
let base: string;
type Json = Record<string, unknown>;

const FORM = { 'content-type': 'application/x-www-form-urlencoded' };

async function call(method: string, url: string, payload?: string, headers: Record<string, string> = {}) {
  const r = await c.app.inject({ method: method as 'GET', url, headers, ...(payload === undefined ? {} : { payload }) });
  return { status: r.statusCode, body: r.body ? (JSON.parse(r.body) as unknown) : undefined, headers: r.headers };
}

async function etcdRevision(): Promise<number> {
  return Number((await c.ctx.etcd.get(`${c.ctx.keys.prefix}/none`).exec()).header.revision);
}

beforeAll(async () => {
  c = await testCoordinator('pm-drf');
  base = await c.listen();
});
afterAll(() => c.close());

describe('form bodies, as DRF parses them', () => {
  it('curl -d: create, offer, accept, update, all with application/x-www-form-urlencoded', async () => {
    const created = await call('POST', '/v1/services', 'name=forms&description=Form+made&start=5000&end=5010', FORM);
    expect(created).toMatchObject({ status: 201, body: { name: 'forms', description: 'Form made', start: 5000, end: 5010 } });
    const offer = await call('POST', '/v1/services/forms/offers', 'name=web-01', FORM);
    expect(offer).toMatchObject({ status: 201, body: { service: 'forms', name: 'web-01', port: 5000 } });
    expect((await call('PUT', `/v1/services/forms/offers/${String((offer.body as Json).secret)}`, '', FORM)).status).toBe(201);
    // A repeated field: the last value wins (QueryDict); '' for a nullable text field stays ''.
    const put = await call('PUT', '/v1/services/forms', 'name=forms&description=&start=4000&start=5000&end=5020', FORM);
    expect(put).toMatchObject({ status: 200, body: { name: 'forms', description: '', start: 5000, end: 5020 } });
    // Field errors read the same as for JSON: every value of a form is a string.
    const bad = await call('POST', '/v1/services', 'name=&start=abc&end=', FORM);
    expect(bad).toEqual({ status: 400, body: { name: ['This field may not be blank.'], start: ['A valid integer is required.'], end: ['A valid integer is required.'] }, headers: expect.anything() });
  });

  it('Python requests data=… over a real socket, and multipart/form-data', async () => {
    const r = await fetch(`${base}/v1/services`, { method: 'POST', body: new URLSearchParams({ name: 'sock', start: '6000', end: '6010' }) });
    expect(r.status).toBe(201);
    expect(await r.json()).toEqual({ name: 'sock', description: null, start: 6000, end: 6010 });
    const form = new FormData();
    form.set('name', 'multi');
    const m = await fetch(`${base}/v1/services/sock/offers`, { method: 'POST', body: form });
    expect(m.status).toBe(201);
    expect(await m.json()).toMatchObject({ service: 'sock', name: 'multi', port: 6000 });
    const patch = new FormData();
    patch.set('description', 'multipart');
    const p = await fetch(`${base}/v1/services/sock`, { method: 'PATCH', body: patch });
    expect(await p.json()).toEqual({ name: 'sock', description: 'multipart', start: 6000, end: 6010 });
  });

  it('a form-typed body that is JSON stays JSON (curl -d \'{…}\')', async () => {
    const r = await call('POST', '/v1/services', JSON.stringify({ name: 'jsonform', start: 7000, end: 7010 }), FORM);
    expect(r).toMatchObject({ status: 201, body: { name: 'jsonform', start: 7000, end: 7010 } });
  });
});

describe('PATCH /v1/services/:name: a partial update', () => {
  it('changes only the fields given; the checks see the merged service', async () => {
    expect((await call('POST', '/v1/services', JSON.stringify({ name: 'patchme', description: 'd', start: 8000, end: 8010 }), { 'content-type': 'application/json' })).status).toBe(201);
    const j = { 'content-type': 'application/json' };
    expect(await call('PATCH', '/v1/services/patchme', JSON.stringify({ description: 'new' }), j)).toMatchObject({ status: 200, body: { name: 'patchme', description: 'new', start: 8000, end: 8010 } });
    expect(await call('PATCH', '/v1/services/patchme', JSON.stringify({ end: 8020 }), j)).toMatchObject({ status: 200, body: { description: 'new', start: 8000, end: 8020 } });
    expect(await call('PATCH', '/v1/services/patchme', JSON.stringify({ name: 'patchme', description: null }), j)).toMatchObject({ status: 200, body: { description: null } });
    // An empty PATCH changes nothing and answers the service.
    expect(await call('PATCH', '/v1/services/patchme', undefined)).toMatchObject({ status: 200, body: { name: 'patchme', start: 8000, end: 8020 } });
    const before = await etcdRevision();
    expect(await call('PATCH', '/v1/services/patchme', JSON.stringify({ start: 8021 }), j)).toMatchObject({ status: 400, body: { non_field_errors: ['Start of the range should be a lower number.'] } });
    expect(await call('PATCH', '/v1/services/patchme', JSON.stringify({ start: 'x' }), j)).toMatchObject({ status: 400, body: { start: ['A valid integer is required.'] } });
    expect(await call('PATCH', '/v1/services/patchme', JSON.stringify({ name: null }), j)).toMatchObject({ status: 400, body: { name: ['This field may not be null.'] } });
    expect(await etcdRevision()).toBe(before);
    expect((await call('GET', '/v1/services/patchme')).body).toEqual({ name: 'patchme', description: null, start: 8000, end: 8020 });
  });
});

describe('an offer may carry an instance\'s name; accepting it is refused', () => {
  it('offer 201, accept 400 with the offer kept, reject frees it', async () => {
    const j = { 'content-type': 'application/json' };
    expect((await call('POST', '/v1/services', JSON.stringify({ name: 'twins', start: 9000, end: 9010 }), j)).status).toBe(201);
    const first = (await call('POST', '/v1/services/twins/offers', 'name=web', FORM)).body as Json;
    expect((await call('POST', `/v1/services/twins/offers/${String(first.secret)}/accept`)).status).toBe(201);
    const second = await call('POST', '/v1/services/twins/offers', 'name=web', FORM);
    expect(second).toMatchObject({ status: 201, body: { name: 'web', port: 9001 } });
    const secret = String((second.body as Json).secret);
    const before = await etcdRevision();
    expect(await call('PUT', `/v1/services/twins/offers/${secret}`)).toMatchObject({ status: 400, body: ['Service instance with this name already exists.'] });
    expect(await call('POST', `/v1/services/twins/offers/${secret}/accept`)).toMatchObject({ status: 400, body: ['Service instance with this name already exists.'] });
    expect(await etcdRevision()).toBe(before);
    expect((await call('GET', '/v1/services/twins/offers')).body).toMatchObject([{ name: 'web', port: 9001, secret }]);
    expect((await call('GET', '/v1/services/twins/ports/web')).body).toMatchObject({ name: 'web', port: 9000 });
    // Once the instance is released, the same offer is accepted.
    expect((await call('DELETE', '/v1/services/twins/ports/web')).status).toBe(204);
    expect(await call('PUT', `/v1/services/twins/offers/${secret}`)).toMatchObject({ status: 201, body: { name: 'web', port: 9001 } });
  });
});

describe('405s', () => {
  it('DRF\'s for a method a view does not route, with its Allow header', async () => {
    const cases: [string, string, string][] = [
      ['PUT', '/v1/services', 'GET, POST, HEAD, OPTIONS'],
      ['PATCH', '/v1/services', 'GET, POST, HEAD, OPTIONS'],
      ['DELETE', '/v1/services', 'GET, POST, HEAD, OPTIONS'],
      ['POST', '/v1/services/any', 'GET, PUT, PATCH, DELETE, HEAD, OPTIONS'],
      ['DELETE', '/v1/services/any/offers', 'GET, POST, HEAD, OPTIONS'],
      ['PUT', '/v1/services/any/offers', 'GET, POST, HEAD, OPTIONS'],
      ['POST', '/v1/services/any/offers/abc', 'GET, PUT, PATCH, DELETE, HEAD, OPTIONS'],
      ['DELETE', '/v1/services/any/ports', 'GET, POST, HEAD, OPTIONS'],
      ['POST', '/v1/services/any/ports/5000', 'GET, PUT, PATCH, DELETE, HEAD, OPTIONS'],
    ];
    for (const [method, url, allow] of cases) {
      const r = await call(method, url, 'not json at all', { 'content-type': 'application/json' });
      expect({ method, url, status: r.status, body: r.body, allow: r.headers.allow }).toEqual({ method, url, status: 405, body: { detail: `Method "${method}" not allowed.` }, allow });
    }
  });

  it("Portmaster's own, in single quotes, before the object is looked up", async () => {
    for (const [method, url] of [
      ['PATCH', '/v1/services/nope/offers/abc'],
      ['POST', '/v1/services/nope/ports'],
      ['PUT', '/v1/services/nope/ports/1'],
      ['PATCH', '/v1/services/nope/ports/web'],
    ]) {
      const r = await call(method, url);
      expect({ status: r.status, body: r.body }).toEqual({ status: 405, body: { detail: `Method '${method}' not allowed.` } });
    }
  });
});

describe('the other tools\' routes keep their own reading and shape', () => {
  it('Portal: a form-typed body that is not JSON is still a JSON error in {error, code}', async () => {
    const r = await call('POST', '/services', 'host=10.0.0.1&port=80', FORM);
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ code: 'BAD_JSON' });
    expect(String((r.body as Json).error)).toMatch(/^Body is not valid JSON/);
    const unknown = await call('GET', '/services/nope');
    expect(unknown.body).toMatchObject({ code: 'SERVICE_NOT_FOUND' });
  });
});

describe('upgrading', () => {
  it('an offer made before offers had their own name guard (name key under pm/names/, on its lease) is accepted', async () => {
    const j = { 'content-type': 'application/json' };
    expect((await call('POST', '/v1/services', JSON.stringify({ name: 'legacy', start: 9100, end: 9110 }), j)).status).toBe(201);
    const keys = c.ctx.keys.pm;
    const secret = '0b6c1f5e-9b7a-4c1e-8f3d-2a4b6c8d0e1f';
    const created = new Date().toISOString();
    const lease = String((await c.ctx.etcd.leaseClient.leaseGrant({ TTL: 600 })).ID);
    const put = (key: string, value: unknown) => c.ctx.etcd.kv.put({ key: Buffer.from(key), value: Buffer.from(JSON.stringify(value)), lease });
    await put(keys.port('legacy', 9100), { name: 'old', created, secret });
    await put(keys.name('legacy', 'old'), { port: 9100 });
    await put(keys.offer('legacy', secret), { service: 'legacy', name: 'old', port: 9100, secret, created });
    await expect.poll(async () => (await call('GET', '/v1/services/legacy/offers')).body).toMatchObject([{ name: 'old', secret }]);
    expect(await call('PUT', `/v1/services/legacy/offers/${secret}`)).toMatchObject({ status: 201, body: { name: 'old', port: 9100 } });
    expect((await call('GET', '/v1/services/legacy/ports/old')).body).toMatchObject({ name: 'old', port: 9100 });
    // The name key left the lease with the accept: revoking it changes nothing.
    await c.ctx.etcd.leaseClient.leaseRevoke({ ID: lease });
    expect(await c.ctx.etcd.get(keys.name('legacy', 'old')).string()).toBe(JSON.stringify({ port: 9100 }));
  });
});
