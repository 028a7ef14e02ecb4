/**
 * The real `switchyard ports …` CLI against a real `switchyard coordinator`
 * (both child processes), including the coordinator's --offer-ttl flag.
 */
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { runCli, startCli } from '../helpers/cli.js';
import { freePort, sharedEtcdUrl, uniquePrefix } from '../helpers/etcd.js';

let api: string;
let coordinator: ChildProcess;

beforeAll(async () => {
  const port = await freePort();
  const started = startCli(
    ['coordinator', '--etcd', sharedEtcdUrl(), '--listen', `127.0.0.1:${port}`, '--prefix', uniquePrefix('pm-cli'), '--log-level', 'info', '--offer-ttl', '10s'],
    /Server listening at/,
  );
  coordinator = started.child;
  await started.ready;
  api = `http://127.0.0.1:${port}`;
}, 60_000);

afterAll(async () => {
  if (coordinator.exitCode !== null) return;
  coordinator.kill('SIGTERM');
  await new Promise((r) => coordinator.once('exit', r));
});

const sy = (...args: string[]) => runCli(['ports', ...args, '--api', api, '--json']);

async function ok(...args: string[]): Promise<unknown> {
  const r = await sy(...args);
  expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout.trim() ? (JSON.parse(r.stdout) as unknown) : undefined;
}

it('service add/list/show/set/remove, offer/accept/reject/list/find/release', async () => {
  expect(await ok('service', 'add', 'django', '--start', '5000', '--end', '5002', '--description', 'Django service')).toEqual({
    name: 'django',
    description: 'Django service',
    start: 5000,
    end: 5002,
  });
  expect(await ok('service', 'list')).toHaveLength(1);
  expect(await ok('service', 'set', 'django', '--end', '5010')).toMatchObject({ end: 5010, description: 'Django service' });
  expect(await ok('service', 'show', 'django')).toMatchObject({ start: 5000, end: 5010 });

  const offer = (await ok('offer', 'django', 'web-01')) as { port: number; secret: string };
  expect(offer.port).toBe(5000);
  expect(await ok('accept', 'django', offer.secret)).toMatchObject({ service: 'django', name: 'web-01', port: 5000 });
  expect(await ok('offer', 'django', 'web-02', '--accept')).toMatchObject({ name: 'web-02', port: 5001 });
  const open = (await ok('offer', 'django', 'web-03')) as { secret: string };
  expect(await ok('list', 'django', '--offers')).toMatchObject([{ name: 'web-03', port: 5002 }]);
  await ok('reject', 'django', open.secret);
  expect(await ok('list', 'django', '--offers')).toEqual([]);

  expect(await ok('list', 'django')).toMatchObject([{ port: 5000 }, { port: 5001 }]);
  expect(await ok('find', 'django', 'web-02')).toMatchObject({ port: 5001 });
  expect(await ok('find', 'django', '5000')).toMatchObject({ name: 'web-01' });
  await ok('release', 'django', '5000');
  const gone = await sy('find', 'django', 'web-01');
  expect(gone.code).toBe(1);
  expect(gone.stderr).toContain('404: Not found.');

  // Portmaster's messages reach the user as they are, fields named (Django REST framework's bodies).
  expect((await sy('offer', 'django', 'web-05')).code).toBe(0);
  const dup = await sy('offer', 'django', 'web-05');
  expect(dup.code).toBe(1);
  expect(dup.stderr).toContain('400: The fields service, name must make a unique set.');
  const reserved = await sy('service', 'add', 'low', '--start', '80', '--end', '2000');
  expect(reserved.stderr).toContain('400: start: Port range is in reserved range.');
  const overlap = await sy('service', 'add', 'low', '--start', '5005', '--end', '6000');
  expect(overlap.stderr).toContain('400: Port range overlaps with existing services.');

  await ok('service', 'remove', 'django');
  expect(await ok('service', 'list')).toEqual([]);
}, 120_000);

it('an offer not accepted within --offer-ttl expires', async () => {
  await ok('service', 'add', 'ttl', '--start', '6000', '--end', '6001');
  const offered = Date.now();
  const offer = (await ok('offer', 'ttl', 'short')) as { secret: string };
  await expect.poll(() => ok('list', 'ttl', '--offers'), { timeout: 30_000, interval: 1000 }).toEqual([]);
  // Never before the TTL (10 s).
  expect(Date.now() - offered).toBeGreaterThanOrEqual(10_000);
  const late = await sy('accept', 'ttl', offer.secret);
  expect(late.code).toBe(1);
  expect(late.stderr).toContain('404: Not found.');
}, 60_000);

it('usage errors exit 2', async () => {
  expect((await sy('offer', 'only-service')).code).toBe(2);
  expect((await sy('service', 'add', 'x')).code).toBe(2);
  expect((await sy('frobnicate')).code).toBe(2);
});
