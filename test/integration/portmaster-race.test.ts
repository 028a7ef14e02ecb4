/**
 * Hundreds of concurrent offers through TWO coordinator processes on one real
 * etcd: exactly as many succeed as the range has ports, all distinct, and
 * every other request gets a 4xx. Nothing is mocked: two `switchyard
 * coordinator` child processes, real sockets, fetch.
 */
import type { ChildProcess } from 'node:child_process';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { keyspace } from '@switchyard/shared';
import { startCli } from '../helpers/cli.js';
import { freePort, sharedEtcdUrl, uniquePrefix } from '../helpers/etcd.js';

const prefix = uniquePrefix('pm-race');
const children: ChildProcess[] = [];
let bases: string[] = [];
let etcd: Etcd3;

async function startCoordinator(): Promise<string> {
  const port = await freePort();
  const c = startCli(['coordinator', '--etcd', sharedEtcdUrl(), '--listen', `127.0.0.1:${port}`, '--prefix', prefix, '--log-level', 'info'], /Server listening at/);
  children.push(c.child);
  await c.ready;
  return `http://127.0.0.1:${port}`;
}

async function send(base: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await fetch(`${base}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

beforeAll(async () => {
  etcd = new Etcd3({ hosts: sharedEtcdUrl() });
  bases = await Promise.all([startCoordinator(), startCoordinator()]);
}, 60_000);

afterAll(async () => {
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null) return resolve();
          child.once('exit', () => resolve());
          child.kill('SIGTERM');
        }),
    ),
  );
  etcd.close();
});

it('300 concurrent offers for a 20-port range through two coordinators: 20 distinct ports, 280 refusals', async () => {
  const RANGE = { start: 20000, end: 20019 };
  const size = RANGE.end - RANGE.start + 1;
  expect((await send(bases[0], 'POST', '/v1/services', { name: 'race', ...RANGE })).status).toBe(201);
  // The service was created through coordinator 0; coordinator 1 sees it once its watch does.
  await expect.poll(async () => (await send(bases[1], 'GET', '/v1/services/race')).status).toBe(200);

  const results = await Promise.all(
    Array.from({ length: 300 }, (_, i) => send(bases[i % 2], 'POST', '/v1/services/race/offers', { name: `inst-${i}` })),
  );
  const won = results.filter((r) => r.status === 201);
  const lost = results.filter((r) => r.status !== 201);
  const ports = won.map((r) => r.body.port as number);

  expect(won).toHaveLength(size);
  expect(new Set(ports).size).toBe(size);
  expect([...ports].sort((a, b) => a - b)).toEqual(Array.from({ length: size }, (_, i) => RANGE.start + i));
  for (const r of lost) {
    expect(r.status).toBeGreaterThanOrEqual(400);
    expect(r.status).toBeLessThan(500);
    // Django REST framework's shapes: the full range as the "port" field error, a 409 as a detail.
    if (r.status === 400) expect(r.body).toEqual({ port: ['Port range has been completely utilized.'] });
    else expect(typeof r.body.detail).toBe('string');
  }
  expect(lost.some((r) => r.status === 400)).toBe(true);

  // etcd agrees: exactly one port key per winner, and no other.
  const keys = keyspace(prefix).pm;
  const held = await etcd.getAll().prefix(keys.ports('race')).keys();
  expect(held.sort()).toEqual([...ports].sort((a, b) => a - b).map((p) => keys.port('race', p)));
});

it('one instance name offered 40 times at once through two coordinators: one offer, 39 refusals', async () => {
  expect((await send(bases[1], 'POST', '/v1/services', { name: 'same-name', start: 21000, end: 21099 })).status).toBe(201);
  await expect.poll(async () => (await send(bases[0], 'GET', '/v1/services/same-name')).status).toBe(200);
  const results = await Promise.all(Array.from({ length: 40 }, (_, i) => send(bases[i % 2], 'POST', '/v1/services/same-name/offers', { name: 'web' })));
  expect(results.filter((r) => r.status === 201)).toHaveLength(1);
  const refused = results.filter((r) => r.status !== 201);
  expect(refused).toHaveLength(39);
  for (const r of refused) expect(r.body).toEqual({ non_field_errors: ['The fields service, name must make a unique set.'] });
  const offers = await send(bases[0], 'GET', '/v1/services/same-name/offers');
  expect(offers.body).toHaveLength(1);
});

it('an offer made through one coordinator is accepted or rejected at once through the other', async () => {
  expect((await send(bases[0], 'POST', '/v1/services', { name: 'handover', start: 22000, end: 22099 })).status).toBe(201);
  await expect.poll(async () => (await send(bases[1], 'GET', '/v1/services/handover')).status).toBe(200);
  for (let i = 0; i < 10; i++) {
    const offer = await send(bases[0], 'POST', '/v1/services/handover/offers', { name: `h${i}` });
    expect(offer.status).toBe(201);
    const verb = i % 2 ? 'accept' : 'reject';
    const r = await send(bases[1], 'POST', `/v1/services/handover/offers/${String(offer.body.secret)}/${verb}`);
    expect(r.status, JSON.stringify(r.body)).toBe(i % 2 ? 201 : 204);
  }
  const ports = await send(bases[1], 'GET', '/v1/services/handover/ports');
  expect((ports.body as unknown as { name: string }[]).map((p) => p.name).sort()).toEqual(['h1', 'h3', 'h5', 'h7', 'h9']);
});

it('two coordinators creating overlapping services at once: exactly one wins', async () => {
  const results = await Promise.all(
    Array.from({ length: 10 }, (_, i) => send(bases[i % 2], 'POST', '/v1/services', { name: `overlap-${i}`, start: 30000 + i, end: 30100 + i })),
  );
  expect(results.filter((r) => r.status === 201)).toHaveLength(1);
  for (const r of results.filter((r) => r.status !== 201)) {
    expect(r.status).toBe(400);
    expect(r.body).toEqual({ non_field_errors: ['Port range overlaps with existing services.'] });
  }
});
