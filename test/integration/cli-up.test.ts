/**
 * `switchyard up`, the embedded default: it starts a local etcd child, a
 * coordinator and an agent; the API works and the agent reports in; Ctrl-C
 * (SIGINT) stops all of them, etcd included.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { createServer } from 'node:net';
import { runCli, startCli } from '../helpers/cli.js';
import { freePort, freePortPair } from '../helpers/etcd.js';

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
