/**
 * `switchyard up`, the embedded default: it starts a local etcd child, a
 * coordinator and an agent; the API works and the agent reports in; Ctrl-C
 * (SIGINT) stops all of them, etcd included. `up --cluster`: the same with
 * three etcd members and two coordinators.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { createServer } from 'node:net';
import { runCli, startCli } from '../helpers/cli.js';
import { freePort, freePortPair, freePortRun } from '../helpers/etcd.js';

const dir = mkdtempSync(join(tmpdir(), 'sy-up-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

it('runs etcd + coordinator + agent, and Ctrl-C stops them all', async () => {
  const etcdPort = await freePortPair();
  const apiPort = await freePort();
  const metricsPort = await freePort();
  const up = startCli(
    [
      'up',
      '--data-dir',
      dir,
      '--etcd-port',
      String(etcdPort),
      '--listen',
      `127.0.0.1:${apiPort}`,
      '--metrics-listen',
      `127.0.0.1:${metricsPort}`,
      '--dataplane',
      'dry-run',
      '--host-id',
      'uptest',
      '--log-level',
      'warn',
    ],
    /switchyard: up\./,
    {},
    60_000,
  );
  await up.ready;
  const api = `http://127.0.0.1:${apiPort}`;
  expect(up.output()).toContain(`etcd at http://127.0.0.1:${etcdPort}`);
  // `up` turns the agent's metrics on and says where both daemons' metrics are.
  expect(up.output()).toContain(`coordinator metrics at ${api}/metrics`);
  expect(up.output()).toContain(`agent metrics at http://127.0.0.1:${metricsPort}/metrics`);
  const agentMetrics = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
  expect(agentMetrics.status).toBe(200);
  expect(await agentMetrics.text()).toMatch(/^switchyard_agent_applied_revision \d+$/m);

  const post = await fetch(`${api}/services`, { method: 'POST', body: JSON.stringify({ host: '10.9.0.1', port: 80 }), headers: { 'content-type': 'application/json' } });
  expect(post.status).toBe(200);
  const rev = Number(post.headers.get('x-switchyard-revision'));
  await expect
    .poll(async () => ((await (await fetch(`${api}/hosts/uptest`)).json()) as { appliedRevision?: number }).appliedRevision ?? 0, { timeout: 15_000 })
    .toBeGreaterThanOrEqual(rev);

  const etcdHealth = await fetch(`http://127.0.0.1:${etcdPort}/health`);
  expect(etcdHealth.ok).toBe(true);

  const exited = new Promise<number | null>((r) => up.child.once('exit', (code) => r(code)));
  up.child.kill('SIGINT');
  expect(await exited).toBe(0);
  await expect(fetch(`http://127.0.0.1:${etcdPort}/health`)).rejects.toThrow();
  expect(alive(up.child.pid as number)).toBe(false);
}, 90_000);

it('stops the etcd it started when the coordinator cannot start', async () => {
  const etcdPort = await freePortPair();
  const taken = createServer();
  await new Promise<void>((r) => taken.listen(0, '127.0.0.1', () => r()));
  const apiPort = (taken.address() as { port: number }).port;
  try {
    const r = await runCli(['up', '--data-dir', dir, '--etcd-port', String(etcdPort), '--listen', `127.0.0.1:${apiPort}`, '--dataplane', 'dry-run', '--log-level', 'silent'], {}, 60_000);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/EADDRINUSE/);
    await expect(fetch(`http://127.0.0.1:${etcdPort}/health`)).rejects.toThrow();
  } finally {
    taken.close();
  }
}, 90_000);

/** Pids of the processes whose parent is `pid` (from /proc). */
function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      // Fields after the command (which may hold spaces) start after the last ')': state, ppid, …
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

it('--cluster runs 3 etcd members, 2 coordinators and an agent, and Ctrl-C stops every process', async () => {
  const etcdPort = await freePortRun(6);
  const apiPort = await freePortRun(2);
  const metricsPort = await freePort();
  const up = startCli(
    [
      'up',
      '--cluster',
      '--data-dir',
      dir,
      '--etcd-port',
      String(etcdPort),
      '--listen',
      `127.0.0.1:${apiPort}`,
      '--metrics-listen',
      `127.0.0.1:${metricsPort}`,
      '--dataplane',
      'dry-run',
      '--host-id',
      'upcluster',
      '--log-level',
      'warn',
    ],
    /switchyard: up\./,
    {},
    40_000,
  );
  await up.ready;
  const etcdUrls = [0, 2, 4].map((i) => `http://127.0.0.1:${etcdPort + i}`);
  const apis = [0, 1].map((i) => `http://127.0.0.1:${apiPort + i}`);
  for (const u of etcdUrls) expect(up.output()).toContain(`etcd at ${u}`);
  expect(up.output()).toContain(`etcd endpoints ${etcdUrls.join(',')}`);
  for (const a of apis) {
    expect(up.output()).toContain(`coordinator at ${a}`);
    expect(up.output()).toContain(`coordinator metrics at ${a}/metrics`);
  }
  expect(up.output()).toContain(`agent metrics at http://127.0.0.1:${metricsPort}/metrics`);

  // One cluster of three, as every member sees it.
  for (const u of etcdUrls) {
    const list = (await (await fetch(`${u}/v3/cluster/member/list`, { method: 'POST', body: '{}' })).json()) as { members: { name: string; clientURLs: string[] }[] };
    expect(list.members.map((m) => m.clientURLs[0]).sort()).toEqual([...etcdUrls].sort());
  }
  // Three processes under `up`, each an etcd (the coordinators and the agent run inside it).
  const etcdPids = childPids(up.child.pid as number);
  expect(etcdPids).toHaveLength(3);
  for (const p of etcdPids) expect(readFileSync(`/proc/${p}/comm`, 'utf8').trim()).toBe('etcd');

  for (const a of apis) {
    expect((await fetch(`${a}/healthz`)).status).toBe(200);
    const status = await fetch(`${a}/status`);
    expect(status.status).toBe(200);
    const body = (await status.json()) as { etcd: { members: unknown[] } };
    expect(body.etcd.members).toHaveLength(3);
    // Each coordinator has its own metrics (two in one process, no clash).
    const metrics = await fetch(`${a}/metrics`);
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toMatch(/^switchyard_/m);
  }

  // Written through coordinator 1, read through coordinator 2.
  const post = await fetch(`${apis[0]}/services`, { method: 'POST', body: JSON.stringify({ host: '10.9.0.2', port: 80 }), headers: { 'content-type': 'application/json' } });
  expect(post.status).toBe(200);
  const { id } = (await post.json()) as { id: string };
  const seen = await fetch(`${apis[1]}/services/${encodeURIComponent(id)}`);
  expect(seen.status).toBe(200);
  expect(((await seen.json()) as { host: string }).host).toBe('10.9.0.2');
  // The agent registers, and applies the write.
  const rev = Number(post.headers.get('x-switchyard-revision'));
  await expect
    .poll(
      async () => {
        const hosts = (await (await fetch(`${apis[1]}/hosts`)).json()) as { id: string; alive: boolean; appliedRevision?: number }[];
        const h = hosts.find((x) => x.id === 'upcluster');
        return h?.alive ? (h.appliedRevision ?? 0) : -1;
      },
      { timeout: 15_000 },
    )
    .toBeGreaterThanOrEqual(rev);

  const started = Date.now();
  const exited = new Promise<number | null>((r) => up.child.once('exit', (code) => r(code)));
  up.child.kill('SIGINT');
  expect(await exited).toBe(0);
  expect(Date.now() - started).toBeLessThan(5_000);
  for (const p of [up.child.pid as number, ...etcdPids]) expect(alive(p), `pid ${p}`).toBe(false);
  for (const u of [...etcdUrls, ...apis]) await expect(fetch(`${u}/healthz`)).rejects.toThrow();
  // The stop was orderly: nothing complained that etcd went away first.
  expect(up.output()).not.toMatch(/etcd unavailable|did not answer its last probe|error while stopping/);
}, 60_000);

it('--cluster refuses a data dir whose cluster was made on other ports', async () => {
  const clusterDir = join(dir, 'moved');
  const taken = createServer();
  await new Promise<void>((r) => taken.listen(0, '127.0.0.1', () => r()));
  const takenPort = (taken.address() as { port: number }).port;
  const args = (port: number, api: number) => ['up', '--cluster', '--data-dir', clusterDir, '--etcd-port', String(port), '--listen', `127.0.0.1:${api}`, '--no-agent', '--log-level', 'silent'];
  try {
    // Made (its API port is taken, so it stops right after etcd started) …
    const first = await runCli(args(await freePortRun(6), takenPort), {}, 45_000);
    expect(first.stderr).toMatch(/etcd at/);
  } finally {
    taken.close();
  }
  // … then started on other ports: refused at once, not after an election that never ends.
  const started = Date.now();
  const second = await runCli(args(await freePortRun(6), await freePort()), {}, 45_000);
  expect(second.code).toBe(1);
  expect(second.stderr).toMatch(/was made as switchyard0=http:\/\/127\.0\.0\.1:\d+,.*start it on the same ports, or use another data dir/);
  expect(Date.now() - started).toBeLessThan(10_000);
}, 60_000);

it('--cluster: when the second coordinator cannot start, stops the first and every etcd member', async () => {
  const etcdPort = await freePortRun(6);
  const apiPort = await freePortRun(2);
  const taken = createServer();
  await new Promise<void>((r) => taken.listen(apiPort + 1, '127.0.0.1', () => r()));
  try {
    const r = await runCli(['up', '--cluster', '--data-dir', join(dir, 'second'), '--etcd-port', String(etcdPort), '--listen', `127.0.0.1:${apiPort}`, '--dataplane', 'dry-run', '--log-level', 'silent'], {}, 45_000);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`coordinator at http://127.0.0.1:${apiPort}`);
    expect(r.stderr).toMatch(/EADDRINUSE/);
    for (const i of [0, 2, 4]) await expect(fetch(`http://127.0.0.1:${etcdPort + i}/health`)).rejects.toThrow();
    await expect(fetch(`http://127.0.0.1:${apiPort}/healthz`)).rejects.toThrow();
  } finally {
    taken.close();
  }
}, 60_000);
