/**
 * The operator's commands, run as the real CLI against a real coordinator and
 * a real agent (dry-run dataplane) over the shared etcd: `status`, `--wait`
 * with its per-host progress and its timeout, `service import` and `cen
 * import` with progress, and shell completion.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEtcdClient, keyspace } from '@switchyard/shared';
import type { Etcd3, Lease } from 'etcd3';
import { freePort, sharedEtcdUrl, uniquePrefix } from '../helpers/etcd.js';
import { runCli, startCli, CLI_MAIN, NODE_ARGS } from '../helpers/cli.js';

const prefix = uniquePrefix('cli-op');
const dir = mkdtempSync(join(tmpdir(), 'sy-cli-op-'));
let api: string;
let coordinator: ChildProcess;
let agent: ChildProcess;
let etcd: Etcd3;

beforeAll(async () => {
  const port = await freePort();
  const env = { SWITCHYARD_ETCD: sharedEtcdUrl(), SWITCHYARD_PREFIX: prefix };
  const c = startCli(['coordinator', '--listen', `127.0.0.1:${port}`, '--etcd-timeout', '20s'], /coordinator listening at/, env, 90_000);
  coordinator = c.child;
  await c.ready;
  api = `http://127.0.0.1:${port}`;
  const a = startCli(['agent', '--host-id', 'op-a1', '--dataplane', 'dry-run', '--log-level', 'warn'], /agent "op-a1" running/, env, 90_000);
  agent = a.child;
  await a.ready;
  etcd = createEtcdClient({ hosts: [sharedEtcdUrl()] });
}, 200_000);

afterAll(async () => {
  for (const child of [agent, coordinator]) {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
  etcd.close();
  rmSync(dir, { recursive: true, force: true });
});

// Each CLI run starts a node process from the TypeScript sources: seconds on a busy machine.
const T = 180_000;
const sy = (...args: string[]) => runCli([...args, '--api', api], {}, T - 30_000);

describe('switchyard --wait', { timeout: T }, () => {
  it('prints each host\'s progress on stderr and returns once every live host applied the write', async () => {
    const add = await sy('service', 'add', '--host', '10.77.0.1', '--port', '80', '--wait', '--wait-timeout', '20s');
    expect(add.code, add.stderr).toBe(0);
    expect(JSON.parse(add.stdout).id).toBe('tcp-10_77_0_1-80');
    const rev = Number(/apply revision (\d+)/.exec(add.stderr)?.[1]);
    expect(rev).toBeGreaterThan(0);
    expect(add.stderr).toMatch(/ {2}op-a1: applied/);
    expect(add.stderr).toMatch(new RegExp(`revision ${rev} applied on every live host \\(1\\)`));
    const host = (await (await fetch(`${api}/hosts/op-a1`)).json()) as { appliedRevision: number };
    expect(host.appliedRevision).toBeGreaterThanOrEqual(rev);
  });

  it('fails after its timeout, naming the hosts that lag', async () => {
    // A host that is alive (its registration is on a live lease) but never applies anything: a hung agent.
    const keys = keyspace(prefix);
    const lease: Lease = etcd.lease(30);
    await lease.put(keys.hosts.agent('op-stuck')).value(JSON.stringify({ id: 'op-stuck', dataplane: 'dry-run', version: '0', startedAt: new Date().toISOString() }));
    await etcd.put(keys.hosts.status('op-stuck')).value(JSON.stringify({ id: 'op-stuck', dataplane: 'dry-run', appliedRevision: 1, lastSync: new Date().toISOString() }));
    try {
      const r = await sy('server', 'add', 'tcp-10_77_0_1-80', '--host', '10.77.1.1', '--port', '8080', '--wait', '--wait-timeout', '1500ms');
      expect(r.code).toBe(1);
      expect(JSON.parse(r.stdout).id).toBe('10_77_1_1-8080'); // the write itself happened
      expect(r.stderr).toMatch(/ {2}op-stuck: at 1, \d+ behind/);
      expect(r.stderr).toMatch(/timed out after 1500ms waiting for revision \d+ on: op-stuck \(at 1, \d+ behind\)/);
      expect(r.stderr).not.toMatch(/on: .*op-a1/);
    } finally {
      await lease.revoke();
      await etcd.delete().key(keys.hosts.status('op-stuck'));
    }
  });
});

describe('switchyard service import / cen import', { timeout: T }, () => {
  it('replaces the services with a large file, showing progress, then waits for the agent', async () => {
    const services = Array.from({ length: 1500 }, (_, i) => ({
      host: `10.78.${i >> 8}.${i & 255}`,
      port: 80,
      scheduler: 'rr',
      servers: [{ host: `10.79.${i >> 8}.${i & 255}`, port: 8080 }],
    }));
    const file = join(dir, 'services.json');
    writeFileSync(file, JSON.stringify(services));
    const r = await sy('service', 'import', file, '--wait', '--wait-timeout', '60s');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/services\.json: 1500 services, \d+ KiB/);
    expect(r.stderr).toMatch(/sending: 100% \(\d+ KiB of \d+ KiB\)/);
    expect(r.stderr).toMatch(/imported 1500 services in [\d.]+ s at revision \d+/);
    expect(r.stderr).toMatch(/op-a1: applied/);
    expect(JSON.parse(r.stdout)).toMatchObject({ services: 1500 });
    const list = (await (await fetch(`${api}/services`)).json()) as unknown[];
    expect(list).toHaveLength(1500);
  });

  it('refuses a file of the wrong shape with a usage error, writing nothing', async () => {
    const file = join(dir, 'not-a-list.json');
    writeFileSync(file, JSON.stringify({ host: '10.0.0.1', port: 1 }));
    const r = await sy('service', 'import', file);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/not a JSON list of services/);
    expect(((await (await fetch(`${api}/services`)).json()) as unknown[]).length).toBe(1500);
  });

  it('imports a CEN file with progress and shows the result', async () => {
    const cenList = Array.from({ length: 400 }, (_, i) => ({ cenID: `opcen${i}`, containerIDs: [`opc${i}a`, `opc${i}b`] }));
    const file = join(dir, 'cens.json');
    writeFileSync(file, JSON.stringify({ cenList }));
    const r = await sy('cen', 'import', file);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/cens\.json: 400 CENs/);
    expect(r.stderr).toMatch(/sending: 100%/);
    expect(JSON.parse(r.stdout)).toMatchObject({ cens: 400 });
    const show = await sy('cen', 'show', 'opcen7');
    expect(JSON.parse(show.stdout)).toMatchObject({ cenID: 'opcen7', contIDs: ['opc7a', 'opc7b'] });
  });
});

describe('switchyard status', { timeout: T }, () => {
  it('shows coordinators, etcd, hosts with their lag, and the counts on one screen', async () => {
    const r = await runCli(['status', '--api', `${api},http://127.0.0.1:1`], {}, T - 30_000);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/Coordinators \(1\/2 reachable\)/);
    expect(r.stdout).toMatch(new RegExp(`${api}\\s+up`));
    expect(r.stdout).toMatch(/http:\/\/127\.0\.0\.1:1\s+DOWN/);
    expect(r.stdout).toMatch(/etcd \(revision \d+, leader \S+\)/);
    expect(r.stdout).toMatch(/\S+\s+leader\s+http:\/\/127\.0\.0\.1:\d+/);
    expect(r.stdout).toMatch(/HOST\s+ALIVE\s+DATAPLANE\s+APPLIED\s+LAG\s+ERRORS\s+WARNINGS/);
    // op-a1 has applied every L4 change (its lag is against the newest one, not etcd's revision).
    expect(r.stdout).toMatch(/op-a1\s+yes\s+dry-run\s+\d+\s+0\s+\d+\s+\d+/);
    expect(r.stdout).toMatch(/L4 services\s+1500/);
    expect(r.stdout).toMatch(/CENs \/ CINs\s+400 \/ 0 \(800 containers\)/);
    expect(r.stdout.split('\n').length).toBeLessThan(40);

    const json = JSON.parse((await sy('status', '--json')).stdout) as { status: { counts: Record<string, number>; etcd: { members: { leader: boolean }[] } } };
    expect(json.status.counts).toMatchObject({ services: 1500, cens: 400, containers: 800, portServices: 0 });
    expect(json.status.etcd.members.filter((m) => m.leader)).toHaveLength(1);
  });

  it('exits 1 when no coordinator answers', async () => {
    const r = await runCli(['status', '--api', 'http://127.0.0.1:1'], {}, T - 30_000);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/Coordinators \(0\/1 reachable\)/);
  });
});

describe('switchyard completion', { timeout: T }, () => {
  const bash = promisify(execFile);
  it('gives bash a completion that knows the commands, verbs and flags', async () => {
    // Load the script into a real bash and ask it, as the shell does on <Tab>.
    const script = `source <(${[process.execPath, ...NODE_ARGS, CLI_MAIN].join(' ')} completion bash)
COMP_WORDS=(switchyard ser); COMP_CWORD=1; _switchyard; echo "1:\${COMPREPLY[*]}"
COMP_WORDS=(switchyard service im); COMP_CWORD=2; _switchyard; echo "2:\${COMPREPLY[*]}"
COMP_WORDS=(switchyard coordinator --offer); COMP_CWORD=2; _switchyard; echo "3:\${COMPREPLY[*]}"`;
    const { stdout } = await bash('bash', ['-c', script]);
    expect(stdout).toContain('1:service server');
    expect(stdout).toContain('2:import');
    expect(stdout).toContain('3:--offer-ttl');
  });

  it('gives zsh the same through bashcompinit, and refuses other shells', async () => {
    const zsh = await runCli(['completion', 'zsh'], {}, T - 30_000);
    expect(zsh.code).toBe(0);
    expect(zsh.stdout).toMatch(/bashcompinit/);
    expect(zsh.stdout).toMatch(/complete -F _switchyard switchyard/);
    const fish = await runCli(['completion', 'fish'], {}, T - 30_000);
    expect(fish.code).toBe(2);
  });
});
