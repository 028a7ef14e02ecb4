/**
 * The /leviathan/monitor websocket with a real `ws` client over a real
 * socket: Leviathan's start/response/error/event protocol, several monitors
 * per connection, delete and update events, and events caused by writes
 * through ANOTHER coordinator (the feed is the etcd watch); a monitorID
 * only ever replaces, so the per-connection limit holds; a peer that stops
 * answering pings is dropped.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { sharedEtcdUrl, uniquePrefix } from '../helpers/etcd.js';
import { buildCoordinator } from '../../packages/coordinator/src/index.js';

let a: Coordinator;
let b: Coordinator;
let url: string;
const sockets: WebSocket[] = [];

beforeAll(async () => {
  const prefix = uniquePrefix('leviathan-monitor');
  const cfg = { etcd: [sharedEtcdUrl()], prefix, listen: { host: '127.0.0.1', port: 0 }, logLevel: 'silent' as const, pingIntervalMs: 100 };
  a = await buildCoordinator(cfg);
  b = await buildCoordinator(cfg);
  url = (await a.listen()).replace(/^http/, 'ws') + '/leviathan/monitor';
});

afterAll(async () => {
  for (const s of sockets) s.terminate();
  await a.close();
  await b.close();
});

/** A client that queues every message so a test can await the next one. */
async function client(opts: WebSocket.ClientOptions = {}) {
  const ws = new WebSocket(url, opts);
  sockets.push(ws);
  const inbox: unknown[] = [];
  const waiters: ((m: unknown) => void)[] = [];
  ws.on('message', (d) => {
    const m = JSON.parse(d.toString());
    const w = waiters.shift();
    if (w) w(m);
    else inbox.push(m);
  });
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  return {
    ws,
    send: (m: unknown) => ws.send(typeof m === 'string' ? m : JSON.stringify(m)),
    next: (timeoutMs = 5000) =>
      inbox.length > 0
        ? Promise.resolve(inbox.shift())
        : new Promise<unknown>((resolve, reject) => {
            const t = setTimeout(() => reject(new Error('no message in time')), timeoutMs);
            waiters.push((m) => {
              clearTimeout(t);
              resolve(m);
            });
          }),
    pending: () => inbox.length,
  };
}

async function write(c: Coordinator, method: 'POST' | 'PUT' | 'DELETE', path: string, payload?: unknown) {
  const r = await c.app.inject({ method, url: path, ...(payload === undefined ? {} : { payload: payload as object }) });
  expect(r.statusCode, r.body).toBe(200);
}

it('speaks Leviathan: start → response with state, create events, errors for bad requests', async () => {
  // Set up through the coordinator the client talks to: its start then reads its own writes.
  await write(a, 'POST', '/cen/import', { cenList: [{ cenID: 'm1', containerIDs: ['k1', 'k2'] }, { cenID: 'm2', containerIDs: ['k3'] }] });
  await write(a, 'POST', '/cin/import', { mcin: ['m1'], other: ['m2'] });
  await write(a, 'POST', '/cin/make', ['mcin']);

  const c = await client();
  c.send({ type: 'start', sequence: 'S1', monitor: 'CIN', parameters: { cinID: 'mcin' } });
  const res = (await c.next()) as { type: string; sequence: string; response: { monitorID: string; state: unknown[] } };
  expect(res.type).toBe('response');
  expect(res.sequence).toBe('S1');
  expect(typeof res.response.monitorID).toBe('string');
  expect(res.response.state).toEqual([
    { containerID: 'k1', ipaddress: '10.10.0.10', tag: null },
    { containerID: 'k2', ipaddress: '10.10.0.11', tag: null },
  ]);

  // A container joins, written through the OTHER coordinator.
  await write(b, 'PUT', '/host/host1/k4/m1');
  expect(await c.next()).toEqual({ type: 'event', monitorID: res.response.monitorID, event: 'create', message: [{ containerID: 'k4', ipaddress: '10.10.0.12', tag: null }] });

  c.send('{not json');
  expect(await c.next()).toMatchObject({ type: 'error', sequence: null, response: { message: expect.stringContaining('not valid JSON') } });
  c.send({ type: 'start', sequence: 7, monitor: 'CEN', parameters: { cinID: 'mcin' } });
  expect(await c.next()).toMatchObject({ type: 'error', sequence: 7, response: { message: expect.stringContaining('monitor') } });
  c.send({ type: 'start', sequence: 'S2', monitor: 'CIN', parameters: { cinID: 'nope' } });
  expect(await c.next()).toEqual({ type: 'error', sequence: 'S2', response: { message: 'CIN nope not found' } });
});

it('holds several monitors per connection, filters by tag, replaces by monitorID, sends delete and update', async () => {
  const c = await client();
  c.send({ type: 'start', sequence: 1, monitor: 'CIN', parameters: { cinID: 'mcin' } });
  const all = (await c.next()) as { response: { monitorID: string; state: unknown[] } };
  expect(all.response.state).toHaveLength(3);
  c.send({ type: 'start', sequence: 2, monitor: 'CIN', parameters: { cinID: 'mcin', container_tag: 'web' } });
  const web = (await c.next()) as { response: { monitorID: string; state: unknown[] } };
  expect(web.response.state).toEqual([]);
  expect(web.response.monitorID).not.toBe(all.response.monitorID);

  // k1 gets the tag: an update for the untagged monitor, a create for the tagged one.
  await write(a, 'PUT', '/host/host1/k1', { tag: 'web' });
  const events = [await c.next(), await c.next()];
  expect(events).toContainEqual({ type: 'event', monitorID: all.response.monitorID, event: 'update', message: [{ containerID: 'k1', ipaddress: '10.10.0.10', tag: 'web' }] });
  expect(events).toContainEqual({ type: 'event', monitorID: web.response.monitorID, event: 'create', message: [{ containerID: 'k1', ipaddress: '10.10.0.10', tag: 'web' }] });

  // Replace the tagged monitor: it now watches the whole CIN under the same id.
  c.send({ type: 'start', sequence: 3, monitor: 'CIN', monitorID: web.response.monitorID, parameters: { cinID: 'mcin' } });
  const replaced = (await c.next()) as { sequence: number; response: { monitorID: string; state: unknown[] } };
  expect(replaced.sequence).toBe(3);
  expect(replaced.response.monitorID).toBe(web.response.monitorID);
  expect(replaced.response.state).toHaveLength(3);

  // A container leaves: both monitors report a delete.
  await write(b, 'DELETE', '/host/host1/k2/m1');
  const dels = [await c.next(), await c.next()];
  for (const id of [all.response.monitorID, web.response.monitorID]) {
    expect(dels).toContainEqual({ type: 'event', monitorID: id, event: 'delete', message: [{ containerID: 'k2', ipaddress: '10.10.0.11', tag: null }] });
  }

  // Changes to another CIN say nothing on this connection.
  await write(b, 'POST', '/cin/make', ['other']);
  c.send({ type: 'stop', sequence: 4, monitorID: all.response.monitorID });
  expect(await c.next()).toMatchObject({ type: 'response', sequence: 4 });
  expect(c.pending()).toBe(0);
});

it('a monitorID only replaces: an unknown one is an error, so the per-connection limit holds', async () => {
  const c = await client();
  const start = (sequence: number, monitorID?: string) => c.send({ type: 'start', sequence, monitor: 'CIN', ...(monitorID ? { monitorID } : {}), parameters: { cinID: 'mcin' } });
  c.send({ type: 'start', sequence: 0, monitor: 'CIN', monitorID: 'mine', parameters: { cinID: 'mcin' } });
  expect(await c.next()).toEqual({ type: 'error', sequence: 0, response: { message: 'No monitor mine to replace' } });

  const ids: string[] = [];
  for (let i = 1; i <= 64; i++) {
    start(i);
    const r = (await c.next()) as { type: string; response: { monitorID: string } };
    expect(r.type).toBe('response');
    ids.push(r.response.monitorID);
  }
  start(65);
  expect(await c.next()).toEqual({ type: 'error', sequence: 65, response: { message: 'At most 64 monitors per connection' } });
  // Fresh ids do not get around the limit…
  start(66, 'fresh-id-1');
  expect(await c.next()).toMatchObject({ type: 'error', sequence: 66 });
  // …while replacing one the connection holds still works at the limit.
  start(67, ids[10]);
  expect(await c.next()).toMatchObject({ type: 'response', sequence: 67, response: { monitorID: ids[10] } });
});

it('drops a peer that stops answering pings, keeps one that answers', async () => {
  const silent = await client({ autoPong: false });
  const live = await client();
  const closed = new Promise<number>((resolve) => silent.ws.once('close', (code) => resolve(code)));
  let pings = 0;
  silent.ws.on('ping', () => pings++);
  // pingIntervalMs is 100: the second sweep finds no pong and terminates the socket.
  expect(await Promise.race([closed, new Promise((r) => setTimeout(() => r('still open'), 2000))])).toBe(1006);
  expect(pings).toBeGreaterThanOrEqual(1);
  await new Promise((r) => setTimeout(r, 400));
  expect(live.ws.readyState).toBe(WebSocket.OPEN);
  live.send({ type: 'start', sequence: 'L', monitor: 'CIN', parameters: { cinID: 'mcin' } });
  expect(await live.next()).toMatchObject({ type: 'response', sequence: 'L' });
});
