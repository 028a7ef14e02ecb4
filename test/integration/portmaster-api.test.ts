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

async function call(method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, payload?: unknown, headers?: Record<string, string>) {
  const r = await c.app.inject({ method, url, headers, ...(payload === undefined ? {} : { payload: typeof payload === 'string' ? payload : (payload as Json) }) });
  return { status: r.statusCode, body: r.body ? (JSON.parse(r.body) as Json) : {}, headers: r.headers };
}

async function etcdRevision(): Promise<number> {
  return Number((await c.ctx.etcd.get(`${c.ctx.keys.prefix}/none`).exec()).header.revision);
}

/** Sends a request that must be refused without any write to etcd. */
async function refused(method: 'POST' | 'PUT', url: string, payload: unknown, status: number, error: string | RegExp, code?: string) {
  const before = await etcdRevision();
  const r = await call(method, url, payload, typeof payload === 'string' ? { 'content-type': 'application/json' } : undefined);
  expect(r.status).toBe(status);
  if (typeof error === 'string') expect(r.body.error).toBe(error);
  else expect(String(r.body.error)).toMatch(error);
  if (code) expect(r.body.code).toBe(code);
  expect(await etcdRevision()).toBe(before);
}

beforeAll(async () => {
  c = await testCoordinator('pm-api');
});
afterAll(() => c.close());

describe('unknown things are 404', () => {
  it('service, offer and port', async () => {
    expect((await call('GET', '/v1/services/nope')).body).toEqual({ error: 'Service not found.', code: 'PM_SERVICE_NOT_FOUND' });
    expect((await call('PUT', '/v1/services/nope', { start: 2000, end: 2001 })).status).toBe(404);
    expect((await call('DELETE', '/v1/services/nope')).status).toBe(404);
    expect((await call('POST', '/v1/services/nope/offers', { name: 'a' })).status).toBe(404);
    expect((await call('GET', '/v1/services/nope/offers')).status).toBe(404);
    expect((await call('GET', '/v1/services/nope/ports')).status).toBe(404);

    expect((await call('POST', '/v1/services', { name: 'known', start: 2000, end: 2010 })).status).toBe(201);
    const secret = '6f8ffc86-d98a-49ba-848a-a7cbaaea9360';
    expect((await call('POST', `/v1/services/known/offers/${secret}/accept`)).body).toEqual({ error: 'Offer not found.', code: 'PM_OFFER_NOT_FOUND' });
    expect((await call('POST', `/v1/services/known/offers/${secret}/reject`)).status).toBe(404);
    expect((await call('GET', `/v1/services/known/offers/${secret}`)).status).toBe(404);
    expect((await call('GET', '/v1/services/known/ports/2000')).body).toEqual({ error: 'Port not found.', code: 'PM_PORT_NOT_FOUND' });
    expect((await call('GET', '/v1/services/known/ports/web')).status).toBe(404);
    expect((await call('DELETE', '/v1/services/known/ports/2000')).status).toBe(404);

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

describe('bad input: 400 and nothing written', () => {
  it('service bodies', async () => {
    await refused('POST', '/v1/services', '{"name": "x", "start": 5000,', 400, /^Body is not valid JSON/, 'BAD_JSON');
    await refused('POST', '/v1/services', { name: 'x', start: 'abc', end: 5001 }, 400, /start/, 'INVALID');
    await refused('POST', '/v1/services', { name: 'x', start: 5000.5, end: 5001 }, 400, /start/, 'INVALID');
    await refused('POST', '/v1/services', { name: 'x', start: 5000 }, 400, /end/, 'INVALID');
    await refused('POST', '/v1/services', { name: 'a/b', start: 5000, end: 5001 }, 400, /name/, 'INVALID');
    await refused('POST', '/v1/services', { name: '', start: 5000, end: 5001 }, 400, /name/, 'INVALID');
    await refused('POST', '/v1/services', { name: 'x'.repeat(65), start: 5000, end: 5001 }, 400, /name/, 'INVALID');
    await refused('POST', '/v1/services', { name: 'x', description: 7, start: 5000, end: 5001 }, 400, /description/, 'INVALID');
    await refused('POST', '/v1/services', [1], 400, /body/, 'INVALID');
  });

  it('numeric strings are ports, as Portmaster (DRF IntegerField) takes them', async () => {
    const r = await call('POST', '/v1/services', { name: 'strings', start: '6000', end: '6010' });
    expect(r.status).toBe(201);
    expect(r.body).toEqual({ name: 'strings', description: null, start: 6000, end: 6010 });
  });

  it('offer bodies', async () => {
    expect((await call('POST', '/v1/services', { name: 'offers', start: 7000, end: 7010 })).status).toBe(201);
    await refused('POST', '/v1/services/offers/offers', {}, 400, /name/, 'INVALID');
    await refused('POST', '/v1/services/offers/offers', { name: 'a b' }, 400, /name/, 'INVALID');
    await refused('POST', '/v1/services/offers/offers', { name: '../x' }, 400, /name/, 'INVALID');
    await refused('POST', '/v1/services/offers/offers', { name: 5 }, 400, /name/, 'INVALID');
  });

  it('renaming through PUT is refused', async () => {
    await refused('PUT', '/v1/services/offers', { name: 'renamed', start: 7000, end: 7010 }, 400, /renaming/, 'INVALID');
  });
});

describe('range boundaries: 1024–49151 inclusive, ends inclusive for overlap', () => {
  it('accepts the extreme ranges and refuses one port beyond', async () => {
    await refused('POST', '/v1/services', { name: 'low', start: 1023, end: 1100 }, 400, 'Port range is in reserved range.', 'PM_RESERVED_RANGE');
    await refused('POST', '/v1/services', { name: 'high', start: 49000, end: 49152 }, 400, 'Port range is in reserved range.');
    await refused('POST', '/v1/services', { name: 'zero', start: 0, end: 1 }, 400, 'Port range is in reserved range.');
    await refused('POST', '/v1/services', { name: 'huge', start: 5000, end: 70000 }, 400, /end/, 'INVALID');
    await refused('POST', '/v1/services', { name: 'single', start: 8000, end: 8000 }, 400, 'Start of the range should be a lower number.', 'PM_START_LOWER');
    expect((await call('POST', '/v1/services', { name: 'low', start: 1024, end: 1025 })).status).toBe(201);
    expect((await call('POST', '/v1/services', { name: 'high', start: 49150, end: 49151 })).status).toBe(201);
  });

  it('a shared end port is an overlap; the next port is not', async () => {
    expect((await call('POST', '/v1/services', { name: 'left', start: 8000, end: 8100 })).status).toBe(201);
    await refused('POST', '/v1/services', { name: 'right', start: 8100, end: 8200 }, 400, 'Port range overlaps with existing services.', 'PM_OVERLAP');
    await refused('POST', '/v1/services', { name: 'right', start: 7990, end: 8000 }, 400, 'Port range overlaps with existing services.');
    expect((await call('POST', '/v1/services', { name: 'right', start: 8101, end: 8200 })).status).toBe(201);
    // An update may not grow into a neighbour either.
    await refused('PUT', '/v1/services/left', { start: 8000, end: 8101 }, 400, 'Port range overlaps with existing services.');
  });
});

describe('range updates', () => {
  it('refuse to strand an open offer, allow shrinking around what is held', async () => {
    expect((await call('POST', '/v1/services', { name: 'shrink', start: 9000, end: 9100, description: 'd' })).status).toBe(201);
    for (const n of ['a', 'b', 'c']) expect((await call('POST', '/v1/services/shrink/offers', { name: n })).status).toBe(201);
    await refused('PUT', '/v1/services/shrink', { start: 9001, end: 9100 }, 400, 'Defined service instances fall outside of the range.', 'PM_RANGE_IN_USE');
    await refused('PUT', '/v1/services/shrink', { start: 9000, end: 9001 }, 400, 'Defined service instances fall outside of the range.');
    const r = await call('PUT', '/v1/services/shrink', { start: 9000, end: 9002 });
    expect(r.status).toBe(200);
    // description omitted: kept.
    expect(r.body).toEqual({ name: 'shrink', description: 'd', start: 9000, end: 9002 });
    expect((await call('POST', '/v1/services/shrink/offers', { name: 'd' })).body.error).toBe('Port range has been completely utilized.');
    // Growing gives new ports at once.
    expect((await call('PUT', '/v1/services/shrink', { start: 9000, end: 9010, description: null })).body.description).toBeNull();
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
    for (const prefix of [c.ctx.keys.pm.ports('doomed'), c.ctx.keys.pm.names('doomed'), c.ctx.keys.pm.offers('doomed')]) {
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
