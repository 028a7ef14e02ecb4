/**
 * Agent memory (issue 14 §3): RSS of the agent as users run it
 * (`node packages/cli/dist/main.js agent …`, run `npm run build` first),
 * idle on an empty prefix and with 10,000 services × 5 servers applied with
 * nftables in a namespace, next to two baselines started in the same run:
 * a bare `node` process, and `node` holding one etcd3 watch on the prefix.
 * The agent runs with node's defaults and with `--max-semi-space-size=1`
 * (what docker-compose.yml sets through NODE_OPTIONS). Each figure is the median of 5 samples a second apart, taken once the
 * process has settled (with services: `--settle` seconds after its status
 * says it applied them, well before the first periodic resync at 1 min); the
 * peak (VmHWM) is printed too.
 *
 *   node --conditions=source --import tsx bench/agent-memory.ts [--services 10000] [--settle 10]
 *
 * Needs root (it makes and removes the namespace symem-<random>).
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { Etcd3 } from 'etcd3';
import { keyspace, ServiceInput, toService } from '@switchyard/shared';
import { benchEtcd, benchServiceInput, median, preloadServices, runMain } from './lib.js';

const { values } = parseArgs({ options: { services: { type: 'string', default: '10000' }, settle: { type: 'string', default: '10' } } });
const N = Number(values.services);
const SETTLE_MS = Number(values.settle) * 1000;
const NS = `symem-${randomBytes(2).toString('hex')}`;
const CLI = fileURLToPath(new URL('../packages/cli/dist/main.js', import.meta.url));
const ETCD3 = fileURLToPath(import.meta.resolve('etcd3'));

const service = (i: number) => benchServiceInput(i);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const kib = (pid: number, field: 'VmRSS' | 'VmHWM') => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
const mib = (k: number) => `${(k / 1024).toFixed(1)} MiB`;

/** The process and every descendant (the agent's spawn helper, `nft -i`, `nft monitor`, `conntrack -E`). */
function tree(pid: number): number[] {
  const out = [pid];
  for (const child of readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ').filter(Boolean).map(Number)) {
    try {
      out.push(...tree(child));
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

const treeKib = (pid: number) => tree(pid).reduce((n, p) => n + (Number.isNaN(kib(p, 'VmRSS')) ? 0 : kib(p, 'VmRSS')), 0);

/** Each descendant and its RSS in MiB, e.g. "spawn helper 11.2, event monitor 9.4, nft 12.0" (which helper costs what). */
function childrenKib(pid: number): string {
  const parts: string[] = [];
  for (const p of tree(pid).slice(1)) {
    try {
      const cmdline = readFileSync(`/proc/${p}/cmdline`, 'utf8');
      // The python3 helpers by their program: the spawn helper and the nftables event monitor.
      const what = cmdline.includes('subprocess.Popen') ? 'spawn helper' : cmdline.includes('NFNLGRP_NFTABLES') ? 'event monitor' : readFileSync(`/proc/${p}/comm`, 'utf8').trim();
      parts.push(`${what} ${(kib(p, 'VmRSS') / 1024).toFixed(1)}`);
    } catch {
      /* gone meanwhile */
    }
  }
  return parts.join(', ') || '—';
}

async function sample(pid: number): Promise<{ rss: number; hwm: number; tree: number; procs: number; children: string }> {
  const xs: number[] = [];
  const ts: number[] = [];
  for (let i = 0; i < 5; i++) {
    xs.push(kib(pid, 'VmRSS'));
    ts.push(treeKib(pid));
    await sleep(1000);
  }
  return { rss: median(xs), hwm: kib(pid, 'VmHWM'), tree: median(ts), procs: tree(pid).length, children: childrenKib(pid) };
}

function start(args: string[]): ChildProcess {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr?.on('data', (d: Buffer) => {
    err += d;
    if (process.env.BENCH_DEBUG) process.stderr.write(`[${args.at(-1)}] ${d}`);
  });
  child.once('exit', (code, signal) => {
    if (signal !== 'SIGTERM' && code !== 0) process.stderr.write(`${args.at(-1)} exited early (${code ?? signal}):\n${err}\n`);
  });
  return child;
}

async function stopChild(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  const exited = new Promise((r) => c.once('exit', r));
  c.kill('SIGTERM');
  await exited;
}

/** Waits until the host's status key in etcd says it applied `rev`. */
async function waitApplied(etcd: Etcd3, prefix: string, hostId: string, rev: number): Promise<void> {
  const key = keyspace(prefix).hosts.status(hostId);
  const deadline = Date.now() + 180_000;
  for (;;) {
    const raw = await etcd.get(key).string();
    if (raw && (JSON.parse(raw) as { appliedRevision?: number }).appliedRevision! >= rev) return;
    if (Date.now() > deadline) throw new Error(`${hostId} did not apply revision ${rev}: ${raw}`);
    await sleep(200);
  }
}

async function main(): Promise<void> {
  execFileSync('ip', ['netns', 'add', NS]);
  const etcdServer = await benchEtcd();
  const etcd = new Etcd3({ hosts: etcdServer.url });
  const children: ChildProcess[] = [];
  const rows: string[] = [];
  const row = (what: string, m: { rss: number; hwm: number; tree: number; procs: number; children: string }, appliedS?: number) => {
    rows.push(`| ${what} | ${mib(m.rss)} | ${mib(m.hwm)} | ${mib(m.tree)} (${m.procs}) | ${m.children} | ${appliedS === undefined ? '—' : `${appliedS.toFixed(2)} s`} |`);
    process.stderr.write(`${rows.at(-1)}\n`);
  };
  try {
    const idlePrefix = '/bench-mem-idle';
    const bare = start(['-e', 'setInterval(() => {}, 1000)', 'bare']);
    const watcher = start([
      '--input-type=module',
      '-e',
      `const { Etcd3 } = await import(${JSON.stringify(ETCD3)}); const c = new Etcd3({ hosts: ${JSON.stringify(etcdServer.url)} }); await c.watch().prefix('${idlePrefix}/').create(); setInterval(() => {}, 1000);`,
      'watch',
    ]);
    const idleArgs = [CLI, 'agent', '--etcd', etcdServer.url, '--prefix', idlePrefix, '--dataplane', 'dry-run', '--log-level', 'warn'];
    const idle = start([...idleArgs, '--host-id', 'mem-idle', 'agent']);
    // With a 1 MiB young generation (V8 grows it to 16 MiB under a start's allocations, and keeps it).
    const idle1 = start(['--max-semi-space-size=1', ...idleArgs, '--host-id', 'mem-idle1', 'agent1']);
    children.push(bare, watcher, idle, idle1);
    await sleep(SETTLE_MS);
    const [b, w, a, a1] = await Promise.all([sample(bare.pid!), sample(watcher.pid!), sample(idle.pid!), sample(idle1.pid!)]);
    row('bare `node`', b);
    row('`node` + one etcd3 watch', w);
    row('agent, idle (empty prefix, dry-run)', a);
    row('agent, idle, `node --max-semi-space-size=1`', a1);
    await Promise.all([stopChild(bare), stopChild(watcher), stopChild(idle), stopChild(idle1)]);

    const prefix = '/bench-mem';
    const keys = keyspace(prefix);
    const services = Array.from({ length: N }, (_, i) => toService(ServiceInput.parse(service(i))));
    const rev = await preloadServices(etcd, keys, services);
    for (const [dataplane, semi] of [['dry-run', 0], ['nftables', 0], ['nftables', 1]] as const) {
      const hostId = `mem-${dataplane}${semi || ''}`;
      const args = [...(semi ? [`--max-semi-space-size=${semi}`] : []), CLI, 'agent', '--host-id', hostId, '--etcd', etcdServer.url, '--prefix', prefix, '--dataplane', dataplane, '--log-level', 'warn'];
      if (dataplane === 'nftables') args.push('--netns', NS, '--nft-table', `symem${semi}`, '--flush-on-exit');
      const agent = start([...args, hostId]);
      children.push(agent);
      const t0 = performance.now();
      await waitApplied(etcd, prefix, hostId, rev);
      const appliedS = (performance.now() - t0) / 1000;
      await sleep(SETTLE_MS);
      row(`agent, ${N.toLocaleString('en')} × 5 applied (${dataplane}${semi ? `, \`node --max-semi-space-size=${semi}\`` : ''})`, await sample(agent.pid!), appliedS);
      await stopChild(agent);
    }
  } finally {
    await Promise.all(children.map(stopChild));
    etcd.close();
    await etcdServer.cleanup();
    execFileSync('ip', ['netns', 'del', NS]);
  }
  const load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  process.stdout.write(['| process | RSS (median of 5 samples) | peak (VmHWM) | with its child processes (how many) | child processes, MiB each | start → applied |', '| --- | --- | --- | --- | --- | --- |', ...rows, '', `load average at the end: ${load}`, ''].join('\n'));
}

runMain(main);
