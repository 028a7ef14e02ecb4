/**
 * The Portmaster API beyond Portmaster's own cases: 404s, input validation
 * (clear 4xx, nothing written), range boundaries, deleting a service with
 * its holdings in one transaction, releasing ports, OpenAPI.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { testCoordinator } from '../helpers/coordinator.js';

let c: Coordinator;
type Json = Record<string, unknown>;

async function call(method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', url: string, payload?: unknown, headers?: Record<string, string>) {
  const r = await c.app.inject({ method, url, headers, ...(payload === undefined ? {} : { payload: typeof payload === 'string' ? payload : (payload as Json) }) });
  return { status: r.statusCode, body: r.body ? (JSON.parse(r.body) as Json) : {}, headers: r.headers };
}

async function etcdRevision(): Promise<number> {
  return Number((await c.ctx.etcd.get(`${c.ctx.keys.prefix}/none`).exec()).header.revision);
}

/** Sends a request that must be refused, with exactly this body (Django REST framework's), without any write to etcd. */
async function refused(method: 'POST' | 'PUT' | 'PATCH', url: string, payload: unknown, status: number, body: unknown) {
  const before = await etcdRevision();
  const r = await call(method, url, payload, typeof payload === 'string' ? { 'content-type': 'application/json' } : undefined);
  expect({ status: r.status, body: r.body }).toEqual({ status, body });
  expect(await etcdRevision()).toBe(before);
}

const NOT_FOUND = { detail: 'Not found.' };
const RESERVED = 'Port range is in reserved range.';
const OVERLAP = { non_field_errors: ['Port range overlaps with existing services.'] };
const OUTSIDE = { non_field_errors: ['Defined service instances fall outside of the range.'] };
const BAD_NAME = 'Use 1–64 characters of A–Z, a–z, 0–9, "_", "." or "-", starting with a letter or digit.';

beforeAll(async () => {
  c = await testCoordinator('pm-api');
});
afterAll(() => c.close());

describe('unknown things: 404 {"detail": "Not found."}, lists are []', () => {
  it('service, offer and port', async () => {
    expect(await call('GET', '/v1/services/nope')).toMatchObject({ status: 404, body: NOT_FOUND });
    expect(await call('PUT', '/v1/services/nope', { name: 'nope', start: 2000, end: 2001 })).toMatchObject({ status: 404, body: NOT_FOUND });
    expect(await call('PATCH', '/v1/services/nope', { start: 2000 })).toMatchObject({ status: 404, body: NOT_FOUND });
    expect(await call('DELETE', '/v1/services/nope')).toMatchObject({ status: 404, body: NOT_FOUND });
    expect(await call('POST', '/v1/services/nope/offers', { name: 'a' })).toMatchObject({ status: 404, body: NOT_FOUND });
    // Portmaster's offer list filters by service without looking it up: an unknown service has none.
    expect(await call('GET', '/v1/services/nope/offers')).toMatchObject({ status: 200, body: [] });
    expect(await call('GET', '/v1/services/nope/ports')).toMatchObject({ status: 200, body: [] });

    expect((await call('POST', '/v1/services', { name: 'known', start: 2000, end: 2010 })).status).toBe(201);
    const secret = '6f8ffc86-d98a-49ba-848a-a7cbaaea9360';
    expect(await call('POST', `/v1/services/known/offers/${secret}/accept`)).toMatchObject({ status: 404, body: NOT_FOUND });
    expect(await call('PUT', `/v1/services/known/offers/${secret}`)).toMatchObject({ status: 404, body: NOT_FOUND });
    expect(await call('POST', `/v1/services/known/offers/${secret}/reject`)).toMatchObject({ status: 404, body: NOT_FOUND });
    expect(await call('DELETE', `/v1/services/known/offers/${secret}`)).toMatchObject({ status: 404, body: NOT_FOUND });
    expect(await call('GET', `/v1/services/known/offers/${secret}`)).toMatchObject({ status: 404, body: NOT_FOUND });
    expect(await call('GET', '/v1/services/known/ports/2000')).toMatchObject({ status: 404, body: NOT_FOUND });
    expect(await call('GET', '/v1/services/known/ports/web')).toMatchObject({ status: 404, body: NOT_FOUND });
    expect(await call('DELETE', '/v1/services/known/ports/2000')).toMatchObject({ status: 404, body: NOT_FOUND });

    // An open offer is not an instance: /ports does not show it (as in Portmaster).
    const o = await call('POST', '/v1/services/known/offers', { name: 'web' });
    expect((await call('GET', '/v1/services/known/ports/2000')).status).toBe(404);
    expect((await call('GET', '/v1/services/known/ports/web')).status).toBe(404);
    expect((await call('GET', `/v1/services/known/offers/${String(o.body.secret)}`)).body).toMatchObject({ name: 'web', port: 2000 });
    // The secret of one service's offer does not work under another service.
    expect((await call('POST', '/v1/services', { name: 'other', start: 2011, end: 2020 })).status).toBe(201);
    expect((await call('POST', `/v1/services/other/offers/${String(o.body.secret)}/accept`)).status).toBe(404);
  });
});

describe('bad input: 400 in Django REST framework\'s shape and words, nothing written', () => {
  it('service bodies: every field error at once, in field order', async () => {
    await refused('POST', '/v1/services', { name: 'x', start: 'abc', end: 5001 }, 400, { start: ['A valid integer is required.'] });
    await refused('POST', '/v1/services', { name: 'x', start: 5000.5, end: true }, 400, { start: ['A valid integer is required.'], end: ['A valid integer is required.'] });
    await refused('POST', '/v1/services', { name: 'x', start: '9'.repeat(1001), end: 5001 }, 400, { start: ['String value too large.'] });
    await refused('POST', '/v1/services', { start: 5000 }, 400, { name: ['This field is required.'], end: ['This field is required.'] });
    await refused('POST', '/v1/services', {}, 400, { name: ['This field is required.'], start: ['This field is required.'], end: ['This field is required.'] });
    await refused('POST', '/v1/services', { name: null, start: null, end: 5001 }, 400, { name: ['This field may not be null.'], start: ['This field may not be null.'] });
    await refused('POST', '/v1/services', { name: '  ', start: 5000, end: 5001 }, 400, { name: ['This field may not be blank.'] });
    await refused('POST', '/v1/services', { name: 'x'.repeat(65), start: 5000, end: 5001 }, 400, { name: ['Ensure this field has no more than 64 characters.'] });
    await refused('POST', '/v1/services', { name: ['x'], start: 5000, end: 5001 }, 400, { name: ['Not a valid string.'] });
    await refused('POST', '/v1/services', { name: 'x', description: { a: 1 }, start: 5000, end: 5001 }, 400, { description: ['Not a valid string.'] });
    // Switchyard's own restriction (names are etcd key segments), reported as a field error.
    await refused('POST', '/v1/services', { name: 'a/b', start: 5000, end: 5001 }, 400, { name: [BAD_NAME] });
    // Field checks come before the serializer's: a reserved bound hides the order problem.
    await refused('POST', '/v1/services', { name: 'x', start: 50000, end: 40000 }, 400, { start: [RESERVED] });
  });

  it('bodies that are not a dictionary, or not JSON', async () => {
    await refused('POST', '/v1/services', [1], 400, { non_field_errors: ['Invalid data. Expected a dictionary, but got list.'] });
    await refused('POST', '/v1/services', '"x"', 400, { non_field_errors: ['Invalid data. Expected a dictionary, but got str.'] });
    await refused('POST', '/v1/services', '5', 400, { non_field_errors: ['Invalid data. Expected a dictionary, but got int.'] });
    await refused('POST', '/v1/services', 'null', 400, { non_field_errors: ['No data provided'] });
    // Python's json module's words, as DRF's JSONParser reports them.
    await refused('POST', '/v1/services', '{"name": "x", "start": 5000,', 400, { detail: 'JSON parse error - Expecting property name enclosed in double quotes: line 1 column 29 (char 28)' });
    await refused('POST', '/v1/services', 'nope', 400, { detail: 'JSON parse error - Expecting value: line 1 column 1 (char 0)' });
    await refused('POST', '/v1/services', '{"a" 1}', 400, { detail: "JSON parse error - Expecting ':' delimiter: line 1 column 6 (char 5)" });
    await refused('POST', '/v1/services', '{"a": 1 "b": 2}', 400, { detail: "JSON parse error - Expecting ',' delimiter: line 1 column 9 (char 8)" });
    await refused('POST', '/v1/services', '{}\n{}', 400, { detail: 'JSON parse error - Extra data: line 2 column 1 (char 3)' });
    await refused('POST', '/v1/services', '{"a": "b', 400, { detail: 'JSON parse error - Unterminated string starting at: line 1 column 7 (char 6)' });
    await refused('POST', '/v1/services', '{"a": NaN}', 400, { detail: "JSON parse error - Out of range float values are not JSON compliant: 'NaN'" });
    // DRF parses lazily: a route that never reads the body does not mind it.
    expect((await call('GET', '/v1/services', 'nope', { 'content-type': 'application/json' })).status).toBe(200);
  });

  it('numeric strings are ports, as Portmaster (DRF IntegerField) takes them', async () => {
    const r = await call('POST', '/v1/services', { name: 'strings', start: ' 6000 ', end: '6010.0' });
    expect(r.status).toBe(201);
    expect(r.body).toEqual({ name: 'strings', description: null, start: 6000, end: 6010 });
  });

  it('offer bodies', async () => {
    expect((await call('POST', '/v1/services', { name: 'offers', start: 7000, end: 7010 })).status).toBe(201);
    await refused('POST', '/v1/services/offers/offers', {}, 400, { name: ['This field is required.'] });
    await refused('POST', '/v1/services/offers/offers', { name: '' }, 400, { name: ['This field may not be blank.'] });
    await refused('POST', '/v1/services/offers/offers', { name: 'a b' }, 400, { name: [BAD_NAME] });
    await refused('POST', '/v1/services/offers/offers', { name: '../x' }, 400, { name: [BAD_NAME] });
    await refused('POST', '/v1/services/offers/offers', { name: true }, 400, { name: ['Not a valid string.'] });
    await refused('POST', '/v1/services/offers/offers', [], 400, { non_field_errors: ['Invalid data. Expected a dictionary, but got list.'] });
    // A number is a string to DRF's CharField.
    expect(await call('POST', '/v1/services/offers/offers', { name: 5 })).toMatchObject({ status: 201, body: { name: '5', port: 7000 } });
  });

  it('renaming through PUT or PATCH is refused; the name of another service is taken', async () => {
    await refused('PUT', '/v1/services/offers', { name: 'renamed', start: 7000, end: 7010 }, 400, { name: ['A service cannot be renamed; create the new name and delete the old one.'] });
    await refused('PATCH', '/v1/services/offers', { name: 'strings' }, 400, { name: ['service with this name already exists.'] });
    // PUT is a full update: the name is required, as DRF's non-partial serializer has it.
    await refused('PUT', '/v1/services/offers', { start: 7000, end: 7010 }, 400, { name: ['This field is required.'] });
  });
});

describe('range boundaries: 1024–49151 inclusive, ends inclusive for overlap', () => {
  it('accepts the extreme ranges and refuses one port beyond', async () => {
    await refused('POST', '/v1/services', { name: 'low', start: 1023, end: 1100 }, 400, { start: [RESERVED] });
    await refused('POST', '/v1/services', { name: 'high', start: 49000, end: 49152 }, 400, { end: [RESERVED] });
    await refused('POST', '/v1/services', { name: 'zero', start: 0, end: 1 }, 400, { start: [RESERVED], end: [RESERVED] });
    await refused('POST', '/v1/services', { name: 'huge', start: 5000, end: 70000 }, 400, { end: [RESERVED] });
    await refused('POST', '/v1/services', { name: 'single', start: 8000, end: 8000 }, 400, { non_field_errors: ['Start of the range should be a lower number.'] });
    expect((await call('POST', '/v1/services', { name: 'low', start: 1024, end: 1025 })).status).toBe(201);
    expect((await call('POST', '/v1/services', { name: 'high', start: 49150, end: 49151 })).status).toBe(201);
  });

  it('a shared end port is an overlap; the next port is not', async () => {
    expect((await call('POST', '/v1/services', { name: 'left', start: 8000, end: 8100 })).status).toBe(201);
    await refused('POST', '/v1/services', { name: 'right', start: 8100, end: 8200 }, 400, OVERLAP);
    await refused('POST', '/v1/services', { name: 'right', start: 7990, end: 8000 }, 400, OVERLAP);
    expect((await call('POST', '/v1/services', { name: 'right', start: 8101, end: 8200 })).status).toBe(201);
    // An update may not grow into a neighbour either.
    await refused('PUT', '/v1/services/left', { name: 'left', start: 8000, end: 8101 }, 400, OVERLAP);
    await refused('PATCH', '/v1/services/left', { end: 8101 }, 400, OVERLAP);
  });
});

describe('range updates', () => {
  it('refuse to strand an open offer, allow shrinking around what is held', async () => {
    expect((await call('POST', '/v1/services', { name: 'shrink', start: 9000, end: 9100, description: 'd' })).status).toBe(201);
    for (const n of ['a', 'b', 'c']) expect((await call('POST', '/v1/services/shrink/offers', { name: n })).status).toBe(201);
    await refused('PUT', '/v1/services/shrink', { name: 'shrink', start: 9001, end: 9100 }, 400, OUTSIDE);
    await refused('PATCH', '/v1/services/shrink', { end: 9001 }, 400, OUTSIDE);
    const r = await call('PUT', '/v1/services/shrink', { name: 'shrink', start: 9000, end: 9002 });
    expect(r.status).toBe(200);
    // description omitted: kept (DRF's update sets only the fields it read).
    expect(r.body).toEqual({ name: 'shrink', description: 'd', start: 9000, end: 9002 });
    expect(await call('POST', '/v1/services/shrink/offers', { name: 'd' })).toMatchObject({ status: 400, body: { port: ['Port range has been completely utilized.'] } });
    // A full range and a bad name: both field errors, in the serializer's field order.
    await refused('POST', '/v1/services/shrink/offers', { name: '' }, 400, { name: ['This field may not be blank.'], port: ['Port range has been completely utilized.'] });
    // Growing gives new ports at once.
    expect((await call('PUT', '/v1/services/shrink', { name: 'shrink', start: 9000, end: 9010, description: null })).body.description).toBeNull();
    expect((await call('POST', '/v1/services/shrink/offers', { name: 'd' })).body.port).toBe(9003);
  });
});

describe('deleting a service', () => {
  it('frees its offers and ports in one transaction', async () => {
    expect((await call('POST', '/v1/services', { name: 'doomed', start: 10000, end: 10010 })).status).toBe(201);
    const a = await call('POST', '/v1/services/doomed/offers', { name: 'a' });
    await call('POST', `/v1/services/doomed/offers/${String(a.body.secret)}/accept`);
    const b = await call('POST', '/v1/services/doomed/offers', { name: 'b' });
    const before = await etcdRevision();
    const d = await call('DELETE', '/v1/services/doomed');
    expect(d.status).toBe(204);
    // One revision: service, range guard, ports, names and offers changed together.
    expect(Number(d.headers['x-switchyard-revision'])).toBe(before + 1);
    for (const prefix of [c.ctx.keys.pm.ports('doomed'), c.ctx.keys.pm.names('doomed'), c.ctx.keys.pm.offerNames('doomed'), c.ctx.keys.pm.offers('doomed')]) {
      expect(await c.ctx.etcd.getAll().prefix(prefix).keys()).toEqual([]);
    }
    expect((await call('GET', '/v1/services/doomed')).status).toBe(404);
    expect((await call('POST', `/v1/services/doomed/offers/${String(b.body.secret)}/accept`)).status).toBe(404);
    // The range is free for a new service, which starts from an empty range.
    expect((await call('POST', '/v1/services', { name: 'doomed', start: 10000, end: 10010 })).status).toBe(201);
    expect((await call('POST', '/v1/services/doomed/offers', { name: 'a' })).body.port).toBe(10000);
  });
});

describe('releasing ports', () => {
  it('by number and by name; the port and the name are free again', async () => {
    expect((await call('POST', '/v1/services', { name: 'rel', start: 11000, end: 11010 })).status).toBe(201);
    for (const n of ['web-1', 'web-2']) {
      const o = await call('POST', '/v1/services/rel/offers', { name: n });
      expect((await call('POST', `/v1/services/rel/offers/${String(o.body.secret)}/accept`)).status).toBe(201);
    }
    expect((await call('GET', '/v1/services/rel/ports')).body).toMatchObject([{ name: 'web-1', port: 11000 }, { name: 'web-2', port: 11001 }]);
    expect((await call('DELETE', '/v1/services/rel/ports/11000')).status).toBe(204);
    expect((await call('DELETE', '/v1/services/rel/ports/web-2')).status).toBe(204);
    expect((await call('GET', '/v1/services/rel/ports')).body).toEqual([]);
    expect((await call('DELETE', '/v1/services/rel/ports/web-2')).status).toBe(404);
    const again = await call('POST', '/v1/services/rel/offers', { name: 'web-2' });
    expect(again.body).toMatchObject({ name: 'web-2', port: 11000 });
  });
});

describe('reads see this coordinator\'s writes at once', () => {
  it('list right after offer/accept/reject', async () => {
    expect((await call('POST', '/v1/services', { name: 'ryw', start: 12000, end: 12100 })).status).toBe(201);
    for (let i = 0; i < 20; i++) {
      const o = await call('POST', '/v1/services/ryw/offers', { name: `i${i}` });
      expect(o.headers['x-switchyard-revision']).toBeDefined();
      expect((await call('GET', '/v1/services/ryw/offers')).body).toHaveLength(1);
      expect((await call('POST', `/v1/services/ryw/offers/${String(o.body.secret)}/${i % 2 ? 'accept' : 'reject'}`)).status).toBe(i % 2 ? 201 : 204);
      expect((await call('GET', '/v1/services/ryw/offers')).body).toHaveLength(0);
      // Odd rounds accept: after round i, (i + 1) / 2 instances, rounded down.
      expect((await call('GET', '/v1/services/ryw/ports')).body).toHaveLength(Math.floor((i + 1) / 2));
    }
  });
});

it('the OpenAPI document lists the Portmaster routes', async () => {
  const doc = (await call('GET', '/docs/json')).body as { paths: Record<string, unknown> };
  for (const p of ['/v1/services', '/v1/services/{name}', '/v1/services/{name}/offers', '/v1/services/{name}/offers/{secret}/accept', '/v1/services/{name}/ports/{portOrName}']) {
    expect(Object.keys(doc.paths)).toContain(p);
  }
});
