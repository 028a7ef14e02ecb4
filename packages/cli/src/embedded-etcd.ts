/**
 * Runs a single-member etcd as a child process: for `switchyard up`, the test
 * setup and the benchmarks. A real cluster is run by the user (three members,
 * see README); this is only the embedded default.
 *
 * It runs with etcd's default limits (128 operations and 1.5 MiB per
 * request), as a user's own cluster usually does: nothing in Switchyard needs
 * more (large replacements are written in chunks, see etcd/generations.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';

export interface EmbeddedEtcd {
  url: string;
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
  dataDir: string;
  clientPort?: number;
  peerPort?: number;
  host?: string;
  etcdBinary?: string;
  /** Called with each line etcd logs (stderr). */
  onLog?: (line: string) => void;
  extraArgs?: string[];
  /**
   * Serve clients over TLS and require a client certificate signed by
   * `trustedCaFile` (etcd's --client-cert-auth). Health is then checked on a
   * plain-HTTP metrics listener of its own (loopback).
   */
  tls?: { certFile: string; keyFile: string; trustedCaFile: string };
}

export async function startEtcd(opts: StartEtcdOptions): Promise<EmbeddedEtcd> {
  const host = opts.host ?? '127.0.0.1';
  const clientPort = opts.clientPort ?? (await freePort(host));
  const peerPort = opts.peerPort ?? (await freePort(host));
  mkdirSync(opts.dataDir, { recursive: true });
  const url = `${opts.tls ? 'https' : 'http'}://${host}:${clientPort}`;
  const peer = `http://${host}:${peerPort}`;
  const healthUrl = opts.tls ? `http://${host}:${await freePort(host)}` : url;
  const tlsArgs = opts.tls
    ? ['--cert-file', opts.tls.certFile, '--key-file', opts.tls.keyFile, '--trusted-ca-file', opts.tls.trustedCaFile, '--client-cert-auth', '--listen-metrics-urls', healthUrl]
    : [];
  const args = [
    '--name', 'switchyard',
    '--data-dir', opts.dataDir,
    '--listen-client-urls', url,
    '--advertise-client-urls', url,
    '--listen-peer-urls', peer,
    '--initial-advertise-peer-urls', peer,
    '--initial-cluster', `switchyard=${peer}`,
    '--log-level', 'warn',
    ...tlsArgs,
    ...(opts.extraArgs ?? []),
  ];
  const child = spawn(opts.etcdBinary ?? 'etcd', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    if (log.length < 64_000) log += chunk;
    if (opts.onLog) for (const line of chunk.split('\n')) if (line) opts.onLog(line);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const spawnError = new Promise<never>((_, reject) =>
    child.once('error', (e) =>
      reject(new Error(`cannot start etcd (${e.message}); install the Debian package etcd-server`)),
    ),
  );

  const deadline = Date.now() + 20_000;
  for (;;) {
    const ok = await Promise.race([
      fetch(`${healthUrl}/health`).then((r) => r.ok, () => false),
      spawnError,
      exited.then(() => {
        throw new Error(`etcd exited during start:\n${log}`);
      }),
    ]);
    if (ok) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`etcd did not become healthy within 20 s:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  const signal = async (sig: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(sig);
    await exited;
  };
  return {
    url,
    clientPort,
    dataDir: opts.dataDir,
    process: child,
    stop: () => signal('SIGTERM'),
    kill: () => signal('SIGKILL'),
  };
}
