/**
 * Runs etcd as child processes: for `switchyard up` (one member, or three with
 * `--cluster`), the test setup and the benchmarks. A production cluster is run
 * by the user (three members on three machines, see README); `up --cluster`
 * shows its shape on one machine.
 *
 * It runs with etcd's default limits (128 operations and 1.5 MiB per
 * request), as a user's own cluster usually does: nothing in Switchyard needs
 * more (large replacements are written in chunks, see etcd/generations.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';

export interface EmbeddedEtcd {
  /** Member name (`--name`). */
  name: string;
  url: string;
  peerUrl: string;
  clientPort: number;
  dataDir: string;
  process: ChildProcess;
  /** SIGTERM, wait for exit. */
  stop(): Promise<void>;
  /** SIGKILL (a crash), wait for exit. */
  kill(): Promise<void>;
}

export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export interface StartEtcdOptions {
  /** One member: its data dir. Several: each member's data dir is `<dataDir>/<member name>`. */
  dataDir: string;
  /** Client port of the first member; member i uses this + 2i. Free ports when absent. */
  clientPort?: number;
  /** Peer port of the first member; member i uses this + 2i. Free ports when absent. */
  peerPort?: number;
  host?: string;
  etcdBinary?: string;
  /** Called with each line etcd logs (stderr). */
  onLog?: (line: string) => void;
  extraArgs?: string[];
  /**
   * Run etcd in its own process group, so a terminal's Ctrl-C reaches only
   * the parent, which stops etcd last (`up`: the coordinators revoke their
   * leases and the agent deregisters while etcd still answers).
   */
  ownProcessGroup?: boolean;
  /**
   * Serve clients over TLS and require a client certificate signed by
   * `trustedCaFile` (etcd's --client-cert-auth). Health is then checked on a
   * plain-HTTP metrics listener of its own (loopback).
   */
  tls?: { certFile: string; keyFile: string; trustedCaFile: string };
}

export interface EmbeddedEtcdCluster {
  members: EmbeddedEtcd[];
  /** Client URLs of every member: what `--etcd` takes. */
  urls: string[];
  /** SIGTERM each member in turn, waiting for its exit. */
  stop(): Promise<void>;
}

interface MemberSpec {
  name: string;
  dataDir: string;
  url: string;
  peerUrl: string;
}

/**
 * One member; resolves once etcd answers /health as healthy (which needs a
 * quorum of its cluster). When `giveUp` rejects (another member failed), it
 * kills its process and rejects too.
 */
async function startMember(m: MemberSpec, initialCluster: string, opts: StartEtcdOptions, giveUp: Promise<never>): Promise<EmbeddedEtcd> {
  mkdirSync(m.dataDir, { recursive: true });
  const healthUrl = opts.tls ? `http://${new URL(m.url).hostname}:${await freePort(new URL(m.url).hostname)}` : m.url;
  const tlsArgs = opts.tls
    ? ['--cert-file', opts.tls.certFile, '--key-file', opts.tls.keyFile, '--trusted-ca-file', opts.tls.trustedCaFile, '--client-cert-auth', '--listen-metrics-urls', healthUrl]
    : [];
  const args = [
    '--name', m.name,
    '--data-dir', m.dataDir,
    '--listen-client-urls', m.url,
    '--advertise-client-urls', m.url,
    '--listen-peer-urls', m.peerUrl,
    '--initial-advertise-peer-urls', m.peerUrl,
    '--initial-cluster', initialCluster,
    '--initial-cluster-token', 'switchyard',
    '--log-level', 'warn',
    ...tlsArgs,
    ...(opts.extraArgs ?? []),
  ];
  const child = spawn(opts.etcdBinary ?? 'etcd', args, { stdio: ['ignore', 'ignore', 'pipe'], detached: opts.ownProcessGroup ?? false });
  let log = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    if (log.length < 64_000) log += chunk;
    if (opts.onLog) for (const line of chunk.split('\n')) if (line) opts.onLog(line);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const signal = async (sig: NodeJS.Signals) => {
    if (child.pid === undefined) return; // never started: no exit to wait for
    if (child.exitCode === null && child.signalCode === null) child.kill(sig);
    await exited;
  };
  const spawnError = new Promise<never>((_, reject) =>
    child.once('error', (e) =>
      reject(new Error(`cannot start etcd (${e.message}); install the Debian package etcd-server`)),
    ),
  );

  const deadline = Date.now() + 20_000;
  try {
    for (;;) {
      const ok = await Promise.race([
        fetch(`${healthUrl}/health`).then((r) => r.ok, () => false),
        spawnError,
        giveUp,
        exited.then(() => {
          throw new Error(`etcd ${m.name} exited during start:\n${log}`);
        }),
      ]);
      if (ok) break;
      if (Date.now() > deadline) throw new Error(`etcd ${m.name} did not become healthy within 20 s:\n${log}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (e) {
    await signal('SIGKILL');
    throw e;
  }

  return {
    ...m,
    clientPort: Number(new URL(m.url).port),
    process: child,
    stop: () => signal('SIGTERM'),
    kill: () => signal('SIGKILL'),
  };
}

/**
 * Members that already have data ignore `--initial-cluster` and look for
 * their peers where they first found them, so a cluster restarted on other
 * ports would never reach a quorum (and its start would time out). The first
 * start writes the peer URLs next to the members' dirs; a later start on
 * other ports is refused at once.
 */
function checkClusterDir(dataDir: string, initialCluster: string): void {
  const file = join(dataDir, 'initial-cluster');
  if (existsSync(file)) {
    const was = readFileSync(file, 'utf8').trim();
    if (was !== initialCluster) {
      throw new Error(`the etcd cluster in ${dataDir} was made as ${was}; start it on the same ports, or use another data dir`);
    }
    return;
  }
  mkdirSync(dataDir, { recursive: true });
  writeFileSync(file, `${initialCluster}\n`);
}

/**
 * `members` etcd processes forming one cluster, each with its own data dir
 * and ports; resolves when every member is healthy. All members are started
 * before any is waited for: a member of three is healthy only once a quorum
 * runs. If any fails to start, the others are stopped before this throws.
 */
export async function startEtcdCluster(opts: StartEtcdOptions & { members: number }): Promise<EmbeddedEtcdCluster> {
  const host = opts.host ?? '127.0.0.1';
  const specs: MemberSpec[] = [];
  for (let i = 0; i < opts.members; i++) {
    const clientPort = opts.clientPort !== undefined ? opts.clientPort + 2 * i : await freePort(host);
    const peerPort = opts.peerPort !== undefined ? opts.peerPort + 2 * i : await freePort(host);
    // One member keeps the name and data dir the embedded etcd always had.
    const name = opts.members === 1 ? 'switchyard' : `switchyard${i}`;
    specs.push({ name, dataDir: opts.members === 1 ? opts.dataDir : join(opts.dataDir, name), url: `${opts.tls ? 'https' : 'http'}://${host}:${clientPort}`, peerUrl: `http://${host}:${peerPort}` });
  }
  const initialCluster = specs.map((m) => `${m.name}=${m.peerUrl}`).join(',');
  if (opts.members > 1) checkClusterDir(opts.dataDir, initialCluster);
  let fail: (e: unknown) => void = () => undefined;
  const giveUp = new Promise<never>((_, reject) => (fail = reject));
  giveUp.catch(() => undefined);
  const started = await Promise.allSettled(
    specs.map((m) =>
      startMember(m, initialCluster, opts, giveUp).catch((e: unknown) => {
        fail(e);
        throw e;
      }),
    ),
  );
  const members = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  // One after another: SIGTERM makes a leader hand over leadership first, and
  // with every member stopping at once that hand-over waits for peers that are
  // gone (7 s for three members here, against 0.4 s one by one).
  const stop = async () => {
    for (const m of members) await m.stop();
  };
  const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await stop();
    throw failed.reason;
  }
  return { members, urls: members.map((m) => m.url), stop };
}

/** A single-member etcd (the embedded default). */
export async function startEtcd(opts: StartEtcdOptions): Promise<EmbeddedEtcd> {
  return (await startEtcdCluster({ ...opts, members: 1 })).members[0];
}
