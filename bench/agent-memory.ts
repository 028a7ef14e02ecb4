/**
 * Agent memory (issue 14 §3): RSS of the agent as users run it
 * (`node packages/cli/dist/main.js agent …`, run `npm run build` first),
 * idle on an empty prefix and with 10,000 services × 5 servers applied with
 * nftables in a namespace, next to two baselines started in the same run:
 * a bare `node` process, and `node` holding one etcd3 watch on the prefix.
 * The agent runs with node's defaults, with `--max-semi-space-size=1`, and
 * as docker-compose.yml runs it (that flag through NODE_OPTIONS,
 * MALLOC_MMAP_THRESHOLD_=32768, and a metrics endpoint). Idle processes are sampled every 5 s over
 * `--idle-window` seconds once settled (their RSS creeps between major GCs);
 * with services, 5 samples a second apart `--settle` seconds after the
 * status says applied (well before the first periodic resync at 1 min). Each
 * figure is the median, next to the highest sample and the peak (VmHWM).
 *
 *   node --conditions=source --import tsx bench/agent-memory.ts [--services 10000] [--settle 10] [--idle-window 180] [--baseline-cli OTHER/packages/cli/dist/main.js]
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

const { values } = parseArgs({ options: { services: { type: 'string', default: '10000' }, settle: { type: 'string', default: '10' }, 'idle-window': { type: 'string', default: '180' }, 'baseline-cli': { type: 'string' } } });
const N = Number(values.services);
const SETTLE_MS = Number(values.settle) * 1000;
const IDLE_WINDOW_MS = Number(values['idle-window']) * 1000;
/** What docker-compose.yml adds to the agent's environment besides NODE_OPTIONS, and a flag of its that loads more code. */
const COMPOSE_ENV = { MALLOC_MMAP_THRESHOLD_: '32768' };
const COMPOSE_FLAGS = ['--metrics-listen', '127.0.0.1:0'];
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

interface Sample {
  rss: number;
  hwm: number;
  tree: number;
  procs: number;
  children: string;
  /** The highest RSS sampled. */
  max: number;
  samples: number;
}

/** RSS sampled `count` times, `everyMs` apart: the median (and the highest). */
async function sample(pid: number, count = 5, everyMs = 1000): Promise<Sample> {
  const xs: number[] = [];
  const ts: number[] = [];
  for (let i = 0; i < count; i++) {
    xs.push(kib(pid, 'VmRSS'));
    ts.push(treeKib(pid));
    if (i < count - 1) await sleep(everyMs);
  }
  return { rss: median(xs), hwm: kib(pid, 'VmHWM'), tree: median(ts), procs: tree(pid).length, children: childrenKib(pid), max: Math.max(...xs), samples: count };
}

function start(args: string[], env: Record<string, string> = {}): ChildProcess {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
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
  const row = (what: string, m: Sample, appliedS?: number) => {
    rows.push(`| ${what} | ${mib(m.rss)} (${m.samples}) | ${mib(m.max)} | ${mib(m.hwm)} | ${mib(m.tree)} (${m.procs}) | ${m.children} | ${appliedS === undefined ? '—' : `${appliedS.toFixed(2)} s`} |`);
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
    // As docker-compose.yml runs it: that flag, glibc's malloc handing blocks of 32 KiB or more straight to mmap, and a metrics endpoint.
    const idle2 = start(['--max-semi-space-size=1', ...idleArgs, ...COMPOSE_FLAGS, '--host-id', 'mem-idle2', 'agent2'], COMPOSE_ENV);
    // --baseline-cli: the same, from another build (an earlier commit's packages/cli/dist/main.js).
    const base = values['baseline-cli'] ? start(['--max-semi-space-size=1', values['baseline-cli'], ...idleArgs.slice(1), '--host-id', 'mem-idle-base', 'agent-base']) : undefined;
    const idlers = [bare, watcher, idle, idle1, idle2, ...(base ? [base] : [])];
    children.push(...idlers);
    await sleep(SETTLE_MS);
    // An idle agent's RSS creeps between major GCs (its etcd member probes and
    // keep-alives): sampled every 5 s over a window, not once.
    const count = Math.max(1, Math.round(IDLE_WINDOW_MS / 5000));
    const [b, w, a, a1, a2, a0] = await Promise.all(idlers.map((c) => sample(c.pid!, count, 5000)));
    row('bare `node`', b);
    row('`node` + one etcd3 watch', w);
    row('agent, idle (empty prefix, dry-run)', a);
    row('agent, idle, `node --max-semi-space-size=1`', a1);
    row('agent, idle, as docker-compose.yml runs it (that flag, `MALLOC_MMAP_THRESHOLD_=32768`, `--metrics-listen`)', a2);
    if (a0) row(`agent, idle, \`node --max-semi-space-size=1\`, baseline build (${values['baseline-cli']})`, a0);
    await Promise.all(idlers.map(stopChild));

    const prefix = '/bench-mem';
    const keys = keyspace(prefix);
    const services = Array.from({ length: N }, (_, i) => toService(ServiceInput.parse(service(i))));
    const rev = await preloadServices(etcd, keys, services);
    for (const [dataplane, semi, compose] of [['dry-run', 0, false], ['nftables', 0, false], ['nftables', 1, false], ['nftables', 1, true]] as const) {
      const hostId = `mem-${dataplane}${semi || ''}${compose ? 'c' : ''}`;
      const args = [...(semi ? [`--max-semi-space-size=${semi}`] : []), CLI, 'agent', '--host-id', hostId, '--etcd', etcdServer.url, '--prefix', prefix, '--dataplane', dataplane, '--log-level', 'warn'];
      if (dataplane === 'nftables') args.push('--netns', NS, '--nft-table', `symem${semi}${compose ? 'c' : ''}`, '--flush-on-exit');
      const agent = start([...args, ...(compose ? COMPOSE_FLAGS : []), hostId], compose ? COMPOSE_ENV : {});
      children.push(agent);
      const t0 = performance.now();
      await waitApplied(etcd, prefix, hostId, rev);
      const appliedS = (performance.now() - t0) / 1000;
      await sleep(SETTLE_MS);
      row(`agent, ${N.toLocaleString('en')} × 5 applied (${dataplane}${semi ? `, \`node --max-semi-space-size=${semi}\`` : ''}${compose ? ', `MALLOC_MMAP_THRESHOLD_=32768`, `--metrics-listen`' : ''})`, await sample(agent.pid!), appliedS);
      await stopChild(agent);
    }
  } finally {
    await Promise.all(children.map(stopChild));
    etcd.close();
    await etcdServer.cleanup();
    execFileSync('ip', ['netns', 'del', NS]);
  }
  const load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  process.stdout.write(['| process | RSS, median (samples) | highest sample | peak (VmHWM) | with its child processes (how many) | child processes, MiB each | start → applied |', '| --- | --- | --- | --- | --- | --- | --- |', ...rows, '', `load average at the end: ${load}`, ''].join('\n'));
}

runMain(main);
