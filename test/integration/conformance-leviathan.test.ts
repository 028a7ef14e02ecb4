/**
 * Leviathan's clients, replayed: the upstream example files of leviathan_lib
 * (`cen.json`, `cpool.json`, kept here byte for byte as text) posted as its
 * README does (`curl -d @file`, which strips the newlines and says
 * form-urlencoded), and its routes with and without a trailing slash — its
 * cowboy router treats `/cpool/` (the path it declares) and `/cpool` as one.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { testCoordinator } from '../helpers/coordinator.js';

/** leviathan_lib's cen.json. */
const CEN_JSON = `{"cenList":
 [{
     "cenID" : "cen1",
     "containerIDs" : [ "c1","c2","c13","c14"]
  },
  {
      "cenID":"cen2",
      "containerIDs":["c4","c5","c6","c7"]
  },
  {
      "cenID":"cen3",
      "containerIDs":["c15","c16","c9","c10","c11"]
  },
  {
      "cenID":"cen4",
      "containerIDs":["c11","c12"]
  },
  {
      "cenID":"cen5",
      "containerIDs":["c2","c3"]
  }]
}
`;

/** leviathan_lib's cpool.json. */
const CPOOL_JSON = `{"cpoolList":
 [
     {"cpoolID":"pool1",
      "type":"ubuntu:14.04",
      "start_with": 3,
      "cins":[{"cinID":"cen1","default_route":"true"},
\t      {"cinID":"cen2"}]},
     {"cpoolID":"pool2",
      "type":"ubuntu:14.04",
      "start_with": 3,
      "cins":[{"cinID":"cen2"}]}
 ]
}
`;

let c: Coordinator;
beforeAll(async () => {
  c = await testCoordinator('conformance-leviathan');
});
afterAll(() => c.close());

/** `curl -d @file URL` (or `-d 'text'`): newlines stripped, form content type. */
async function curlD(url: string, text: string) {
  const r = await c.app.inject({ method: 'POST', url, payload: text.replace(/[\r\n]/g, ''), headers: { 'content-type': 'application/x-www-form-urlencoded' } });
  return { status: r.statusCode, body: JSON.parse(r.body) };
}

async function get(url: string) {
  const r = await c.app.inject({ method: 'GET', url });
  return { status: r.statusCode, body: JSON.parse(r.body) };
}

describe('leviathan_lib example files', () => {
  it('cen.json imports its five CENs, with their containers in file order', async () => {
    const r = await curlD('/cen/import', CEN_JSON);
    expect(r.status).toBe(200);
    expect(r.body.map((x: { cenID: string; contIDs: string[]; wiring_type: string }) => [x.cenID, x.contIDs, x.wiring_type])).toEqual([
      ['cen1', ['c1', 'c2', 'c13', 'c14'], 'bridge'],
      ['cen2', ['c4', 'c5', 'c6', 'c7'], 'bridge'],
      ['cen3', ['c15', 'c16', 'c9', 'c10', 'c11'], 'bridge'],
      ['cen4', ['c11', 'c12'], 'bridge'],
      ['cen5', ['c2', 'c3'], 'bridge'],
    ]);
  });

  it('the README\'s make list, to /cen/make and /cen/make/', async () => {
    const r = await curlD('/cen/make', '["cen1","cen2","cen3","cen4","cen5"]');
    expect(r.status).toBe(200);
    expect(r.body.map((x: { cenID: string; status: string }) => [x.cenID, x.status])).toEqual([
      ['cen1', 'preparing'],
      ['cen2', 'preparing'],
      ['cen3', 'preparing'],
      ['cen4', 'preparing'],
      ['cen5', 'preparing'],
    ]);
    const slash = await curlD('/cen/make/', '["cen1"]');
    expect([slash.status, slash.body[0].cenID]).toEqual([200, 'cen1']);
  });

  it('cpool.json to /cpool/ (the path Leviathan declares): each pool\'s containers join its CENs', async () => {
    const r = await curlD('/cpool/', CPOOL_JSON);
    expect(r.status).toBe(200);
    const byCen = Object.fromEntries(r.body.map((x: { cenID: string; contIDs: string[] }) => [x.cenID, x.contIDs]));
    expect(byCen.cen1).toEqual(expect.arrayContaining(['c1', 'c2', 'c13', 'c14', 'pool1-1', 'pool1-2', 'pool1-3']));
    expect(byCen.cen2).toEqual(expect.arrayContaining(['c4', 'c5', 'c6', 'c7', 'pool1-1', 'pool1-2', 'pool1-3', 'pool2-1', 'pool2-2', 'pool2-3']));
    // The same file to /cpool (no slash) is the same import: nothing changes.
    const again = await curlD('/cpool', CPOOL_JSON);
    expect(again).toEqual(r);
    const host = await get('/host/host1/pool2-2/');
    expect(host.status).toBe(200);
    expect(host.body).toMatchObject({ contID: 'pool2-2', cpoolID: 'pool2', cenIDs: ['cen2'] });
  });

  it('every route matches with a trailing slash, as cowboy routes do', async () => {
    const plain = await get('/cen/cen4');
    const slash = await get('/cen/cen4/');
    expect(slash).toEqual(plain);
    expect(plain.body).toMatchObject({ cenID: 'cen4', contIDs: ['c11', 'c12'] });
    expect((await get('/cen/')).body).toEqual((await get('/cen')).body);
    // An unknown route stays a 404 with or without the slash.
    expect((await get('/nope/')).status).toBe(404);
  });
});

describe('the monitor websocket', () => {
  it('answers at /leviathan/monitor/ as at /leviathan/monitor', async () => {
    const base = (await c.listen()).replace(/^http/, 'ws');
    for (const path of ['/leviathan/monitor', '/leviathan/monitor/']) {
      const ws = new WebSocket(base + path);
      const reply = await new Promise<{ type: string }>((resolve, reject) => {
        ws.once('open', () => ws.send('{not json'));
        ws.once('message', (d) => resolve(JSON.parse(d.toString())));
        ws.once('error', reject);
      });
      expect(reply, path).toMatchObject({ type: 'error', sequence: null });
      ws.terminate();
    }
  });
});
