/**
 * Shared bits of the benchmarks: statistics, a real etcd, processes of the
 * real CLI, and wrk as the HTTP load generator. Benchmarks print markdown.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Etcd3 } from 'etcd3';
import { atomically, chunkPuts, INITIAL_GENERATION, type Keyspace, type Service } from '@switchyard/shared';
import { freePort, startEtcd, type EmbeddedEtcd } from '../packages/cli/src/embedded-etcd.js';

export { freePort };

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}

export async function benchEtcd(): Promise<EmbeddedEtcd & { cleanup(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'sy-bench-etcd-'));
  const etcd = await startEtcd({ dataDir: dir, extraArgs: ['--quota-backend-bytes', String(8 * 1024 ** 3)] });
  return { ...etcd, cleanup: async () => (await etcd.stop(), rmSync(dir, { recursive: true, force: true })) };
}

const CLI = fileURLToPath(new URL('../packages/cli/src/main.ts', import.meta.url));
const BUILT_CLI = fileURLToPath(new URL('../packages/cli/dist/main.js', import.meta.url));

/**
 * Starts `switchyard <args>` and resolves once `ready` matches its output:
 * from the TypeScript sources through tsx, or with `built` the CLI as users
 * run it (`npm run build` first; no tsx in the process or its threads).
 */
export function startSwitchyard(args: string[], ready: RegExp, env: NodeJS.ProcessEnv = {}, opts: { built?: boolean; onOutput?: (d: string) => void } = {}): Promise<ChildProcess> {
  const argv = opts.built ? [BUILT_CLI, ...args] : ['--conditions=source', '--import', 'tsx', CLI, ...args];
  const child = spawn(process.execPath, argv, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  if (opts.onOutput) {
    child.stdout?.on('data', (d: Buffer) => opts.onOutput?.(String(d)));
    child.stderr?.on('data', (d: Buffer) => opts.onOutput?.(String(d)));
  }
  let out = '';
  return new Promise((resolve, reject) => {
    const onData = (d: Buffer) => {
      out += d;
      if (ready.test(out)) resolve(child);
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code) => reject(new Error(`switchyard ${args[0]} exited ${code}:\n${out}`)));
  });
}

export async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

export interface WrkResult {
  requests: number;
  requestsPerSec: number;
  non2xx: number;
  p50ms: number;
  p99ms: number;
}

/** Runs wrk (Debian package `wrk`); `lua` is an optional request script. */
export function wrk(url: string, opts: { connections: number; seconds: number; threads?: number; lua?: string }): WrkResult {
  const args = ['-t', String(opts.threads ?? 1), '-c', String(opts.connections), '-d', `${opts.seconds}s`, '--latency'];
  let dir: string | undefined;
  if (opts.lua) {
    dir = mkdtempSync(join(tmpdir(), 'sy-wrk-'));
    writeFileSync(join(dir, 'script.lua'), opts.lua);
    args.push('-s', join(dir, 'script.lua'));
  }
  try {
    const out = execFileSync('wrk', [...args, url], { encoding: 'utf8' });
    const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
    const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
    const lat = (p: string) => {
      const m = new RegExp(`\\s${p}%\\s+([\\d.]+)(us|ms|s)`).exec(out);
      if (!m) return NaN;
      return Number(m[1]) * (m[2] === 'us' ? 0.001 : m[2] === 's' ? 1000 : 1);
    };
    const requests = Number(/(\d+) requests in /.exec(out)?.[1]);
    return { requests, requestsPerSec: rps, non2xx, p50ms: lat('50'), p99ms: lat('99') };
  } finally {
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
}

/** CPU a process has used so far (utime + stime), in ms (from /proc; 10 ms resolution). */
export function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) * 10; // clock ticks, 100 a second
}

/** A node child process whose stderr is forwarded, prefixed. */
export function startChild(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
  child.stderr?.on('data', (d) => process.stderr.write(`[child] ${d}`));
  return child;
}

/**
 * How benches start an agent process of their own: node flags from
 * BENCH_AGENT_NODE_ARGS (e.g. `--cpu-prof`) and environment variables from
 * BENCH_AGENT_ENV (e.g. `MALLOC_MMAP_THRESHOLD_=32768`), for the agent alone.
 */
export function agentLaunch(): { nodeArgs: string[]; env: NodeJS.ProcessEnv } {
  const nodeArgs = (process.env.BENCH_AGENT_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const extra = (process.env.BENCH_AGENT_ENV ?? '').split(' ').filter(Boolean);
  return { nodeArgs, env: { ...process.env, ...Object.fromEntries(extra.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])) } };
}

export function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

/**
 * Service i of the agent benchmarks, as a REST body: VIP 10.(100+i>>16).x.y:80,
 * wrr, `servers` real servers 10.200.k.(i mod 250 + 1):8080 with masquerade.
 */
export function benchServiceInput(i: number, servers = 5) {
  return {
    host: `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`,
    port: 80,
    scheduler: 'wrr',
    servers: Array.from({ length: servers }, (_, k) => ({ host: `10.200.${k + 1}.${(i % 250) + 1}`, port: 8080, forwarder: 'm', weight: 1 })),
  };
}

/** Runs a benchmark's main(): exit 0 when it is done (children and sockets may linger), 1 with the stack on failure. */
export function runMain(main: () => Promise<void>): void {
  main().then(
    () => process.exit(0),
    (e: unknown) => {
      process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}

/** A wrk script that GETs /services/:id round-robin over `ids`. */
export const getServicesLua = (ids: string[]) => `
ids = { ${ids.map((id) => `"${id}"`).join(', ')} }
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/services/" .. ids[(counter % #ids) + 1])
end
`;

/**
 * Writes services straight into etcd (valid Service JSON, under the initial
 * generation, in transactions within etcd's default limits) before anyone
 * reads them; resolves with the revision of the last write.
 */
export async function preloadServices(etcd: Etcd3, keys: Keyspace, services: Service[]): Promise<number> {
  let revision = 0;
  for (const chunk of chunkPuts(services.map((s) => [keys.l4.service(INITIAL_GENERATION, s.id), JSON.stringify(s)]))) {
    revision = Number((await atomically(etcd, chunk)).header.revision);
  }
  return revision;
}
