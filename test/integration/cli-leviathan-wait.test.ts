/**
 * `switchyard cen|cin … --wait`, run as the real CLI against a real
 * coordinator and a real agent (dry-run dataplane: its topology role plans
 * and reports, runs nothing) over the shared etcd. Also a topology role in
 * this process whose every apply fails (a FakeRunner), for the error path,
 * and hosts with no agent at all, for the timeout.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEtcdClient, keyspace } from '@switchyard/shared';
import type { Etcd3 } from 'etcd3';
import { FakeRunner } from '../../packages/agent/src/index.js';
import { startTopology, type RunningTopology } from '../../packages/agent/src/leviathan/index.js';
import { freePort, sharedEtcdUrl, uniquePrefix } from '../helpers/etcd.js';
import { runCli, startCli } from '../helpers/cli.js';

const prefix = uniquePrefix('cli-lev');
const env = { SWITCHYARD_ETCD: sharedEtcdUrl(), SWITCHYARD_PREFIX: prefix };
const dir = mkdtempSync(join(tmpdir(), 'sy-cli-lev-'));
let api: string;
let coordinator: ChildProcess;
let agent: ChildProcess | undefined;
let etcd: Etcd3;
let failing: RunningTopology | undefined;

async function startAgent(): Promise<void> {
  const a = startCli(['agent', '--host-id', 'lw-a1', '--dataplane', 'dry-run', '--log-level', 'warn'], /agent "lw-a1" running/, env, 90_000);
  agent = a.child;
  await a.ready;
}

async function stopAgent(): Promise<void> {
  const child = agent;
  agent = undefined;
  if (!child || child.exitCode !== null) return;
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
}

beforeAll(async () => {
  const port = await freePort();
  // Containers a CEN file places nowhere go to lw-a1, the host with an agent.
  const c = startCli(['coordinator', '--listen', `127.0.0.1:${port}`, '--default-host', 'lw-a1', '--etcd-timeout', '20s'], /coordinator listening at/, env, 90_000);
  coordinator = c.child;
  await c.ready;
  api = `http://127.0.0.1:${port}`;
  await startAgent();
  etcd = createEtcdClient({ hosts: [sharedEtcdUrl()] });
}, 200_000);

afterAll(async () => {
  await failing?.stop();
  await stopAgent();
  coordinator.kill('SIGTERM');
  await new Promise((r) => coordinator.once('exit', r));
  etcd.close();
  rmSync(dir, { recursive: true, force: true });
});

// Each CLI run starts a node process from the TypeScript sources: seconds on a busy machine.
const T = 240_000;
const sy = (...args: string[]) => runCli([...args, '--api', api], {}, 120_000);

async function call(method: string, path: string, body?: unknown): Promise<unknown> {
  const res = await fetch(`${api}${path}`, { method, ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }) });
  expect(res.ok, `${method} ${path}: ${res.status}`).toBe(true);
  return res.json();
}

describe('cen/cin --wait', { timeout: T }, () => {
  it('import, make and destroy wait for the agent of the objects, with its progress on stderr', async () => {
    const file = join(dir, 'cens.json');
    writeFileSync(file, JSON.stringify({ cenList: [{ cenID: 'lwcen1', containerIDs: ['lwc1', 'lwc2'] }] }));
    const imp = await sy('cen', 'import', file, '--wait', '--wait-timeout', '30s');
    expect(imp.code, imp.stderr).toBe(0);
    // The containers' namespaces are the agent's work, made CEN or not.
    expect(imp.stderr).toMatch(/waiting for every host of CEN lwcen1 to apply revision \d+/);
    expect(imp.stderr).toMatch(/ {2}lw-a1: applied/);

    const make = await sy('cen', 'make', 'lwcen1', '--wait', '--wait-timeout', '30s');
    expect(make.code, make.stderr).toBe(0);
    expect(JSON.parse(make.stdout)[0]).toMatchObject({ cenID: 'lwcen1' });
    const rev = Number(/apply revision (\d+)/.exec(make.stderr)?.[1]);
    expect(make.stderr).toMatch(/ {2}lw-a1: applied/);
    expect(make.stderr).toMatch(new RegExp(`revision ${rev} applied on every host of CEN lwcen1 \\(1\\)`));
    // Waited for means done: the object's own status says so at once.
    expect(await call('GET', '/cen/lwcen1')).toMatchObject({ status: 'ready', hosts: { 'lw-a1': 'ready' } });
    const reports = (await call('GET', '/leviathan/hosts')) as { hostId: string; appliedRevision: number; cens: number }[];
    expect(reports.find((r) => r.hostId === 'lw-a1')).toMatchObject({ cens: 1, containers: 2 });
    expect(reports.find((r) => r.hostId === 'lw-a1')?.appliedRevision).toBeGreaterThanOrEqual(rev);

    // A CIN's hosts vanish with its addresses on destroy: the wait reads them before the write.
    await call('POST', '/cin/import', { lwcin1: ['lwcen1'] });
    const cmake = await sy('cin', 'make', 'lwcin1', '--wait', '--wait-timeout', '30s');
    expect(cmake.code, cmake.stderr).toBe(0);
    expect(cmake.stderr).toMatch(/revision \d+ applied on every host of CIN lwcin1 \(1\)/);
    expect(await call('GET', '/cin/lwcin1')).toMatchObject({ status: 'ready' });
    const cdestroy = await sy('cin', 'destroy', 'lwcin1', '--wait', '--wait-timeout', '30s');
    expect(cdestroy.code, cdestroy.stderr).toBe(0);
    expect(cdestroy.stderr).toMatch(/ {2}lw-a1: applied/);
    expect(cdestroy.stderr).not.toMatch(/nothing to wait for/);
    expect(((await call('GET', '/cin')) as { cinID: string; status: string }[]).find((c) => c.cinID === 'lwcin1')).toMatchObject({ status: 'pending' });

    const destroy = await sy('cen', 'destroy', 'lwcen1', '--wait', '--wait-timeout', '30s');
    expect(destroy.code, destroy.stderr).toBe(0);
    expect(destroy.stderr).toMatch(/revision \d+ applied on every host of CEN lwcen1 \(1\)/);
    expect(await call('GET', '/cen/lwcen1')).toMatchObject({ status: 'pending' });
    // Destroyed everywhere: nothing holds it, nothing to wait for.
    const again = await sy('cen', 'destroy', 'lwcen1', '--wait', '--wait-timeout', '30s');
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/no host holds CEN lwcen1: nothing to wait for/);
  });

  it('times out naming the hosts that lag and their objects: a host without an agent', async () => {
    await call('PUT', '/cen/lwcen2');
    await call('PUT', '/host/lw-ghost/lwg1/lwcen2');
    await call('PUT', '/host/lw-a1/lwc3/lwcen2');
    const r = await sy('cen', 'make', 'lwcen2', '--wait', '--wait-timeout', '1s');
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout)[0]).toMatchObject({ cenID: 'lwcen2' }); // the write itself happened
    expect(r.stderr).toMatch(/ {2}lw-a1: applied/);
    expect(r.stderr).toMatch(/ {2}lw-ghost: no report from its agent yet/);
    expect(r.stderr).toMatch(/timed out after 1s waiting for revision \d+ on: lw-ghost \(no report from its agent yet; no agent running; CEN lwcen2\)/);
    expect(r.stderr).not.toMatch(/on: .*lw-a1/);
    await call('DELETE', '/cen/lwcen2');
  });

  it('times out naming a host whose agent stopped; remove waits once it is back', async () => {
    await call('PUT', '/cen/lwcen3');
    await call('PUT', '/host/lw-a1/lwc4/lwcen3');
    const make = await sy('cen', 'make', 'lwcen3', '--wait', '--wait-timeout', '30s');
    expect(make.code, make.stderr).toBe(0);

    await stopAgent();
    const destroy = await sy('cen', 'destroy', 'lwcen3', '--wait', '--wait-timeout', '1s');
    expect(destroy.code).toBe(1);
    expect(destroy.stderr).toMatch(/timed out after 1s waiting for revision \d+ on: lw-a1 \(at \d+, \d+ behind; no agent running; CEN lwcen3\)/);

    await startAgent();
    await call('POST', '/cen/make', ['lwcen3']);
    // The CEN itself is gone at once; the wait is for the host that held it.
    const rm = await sy('cen', 'remove', 'lwcen3', '--wait', '--wait-timeout', '30s');
    expect(rm.code, rm.stderr).toBe(0);
    expect(JSON.parse(rm.stdout)).toEqual({ msg: 'Success' });
    expect(rm.stderr).toMatch(/waiting for every host of CEN lwcen3/);
    expect(rm.stderr).toMatch(/revision \d+ applied on every host of CEN lwcen3 \(1\)/);
    const report = ((await call('GET', '/leviathan/hosts')) as { hostId: string; cens: number }[]).find((h) => h.hostId === 'lw-a1');
    expect(report?.cens).toBe(0);
  });

  it('ends at once when the agent reports the write failed, with its error', async () => {
    // Every `ip -batch -` (the namespace creation) fails; reads show an empty machine.
    const runner = new FakeRunner()
      .on('ip', ['-batch', '-'], { exitCode: 1, stderr: 'mount --make-shared /run/netns failed: Operation not permitted\n' })
      .on('nft', ['list'], { exitCode: 1, stderr: 'Error: No such file or directory\n' });
    failing = await startTopology({
      etcd,
      keys: keyspace(prefix),
      hostId: 'lw-bad',
      log: pino({ level: 'silent' }),
      runner,
      underlay: '192.0.2.40',
      resyncMs: 600_000,
      backoffInitialMs: 100,
      backoffMaxMs: 200,
    });
    await call('PUT', '/cen/lwcenb');
    await call('PUT', '/host/lw-bad/lwb1/lwcenb');
    const started = Date.now();
    const r = await sy('cen', 'make', 'lwcenb', '--wait', '--wait-timeout', '100s');
    expect(r.code).toBe(1);
    // One line of progress; the whole error (with the command's input) in the failure.
    expect(r.stderr).toMatch(/\n {2}lw-bad: error: ip -batch - failed \(exit 1\): mount --make-shared \/run\/netns failed: Operation not permitted\n(?! )/);
    expect(r.stderr).toMatch(/switchyard cen: CEN lwcenb failed on lw-bad: ip -batch - failed \(exit 1\): mount --make-shared \/run\/netns failed: Operation not permitted\s+\(input: netns add lwb1/);
    expect(r.stderr).not.toMatch(/timed out/);
    // Well before the 100 s timeout (most of this is starting node).
    expect(Date.now() - started).toBeLessThan(60_000);
    const bad = ((await call('GET', '/leviathan/hosts')) as { hostId: string; failedRevision: number | null; appliedRevision: number }[]).find((h) => h.hostId === 'lw-bad');
    expect(bad?.failedRevision).toBeGreaterThan(bad?.appliedRevision ?? Infinity);
  });
});
