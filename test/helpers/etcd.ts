/**
 * Real etcd for tests. `globalSetup` starts one server per test run on a free
 * loopback port; each test file works under its own key prefix so files can
 * run in parallel. Tests that need to stop or crash etcd start their own with
 * `startPrivateEtcd()`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inject } from 'vitest';
import type { Etcd3 } from 'etcd3';
import { createEtcdClient } from '@switchyard/shared';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js';
import { startEtcd, type EmbeddedEtcd } from '../../packages/cli/src/embedded-etcd.js';

import { createServer } from 'node:net';
import { freePort } from '../../packages/cli/src/embedded-etcd.js';

export { freePort };

/** The first of `n` consecutive free ports (`up --cluster`'s etcd members take 6, its coordinators 2). */
export async function freePortRun(n: number): Promise<number> {
  const isFree = (port: number) =>
    new Promise<boolean>((resolve) => {
      const srv = createServer();
      srv.once('error', () => resolve(false));
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
  for (;;) {
    const p = await freePort();
    let ok = p + n <= 65536;
    for (let i = 1; ok && i < n; i++) ok = await isFree(p + i);
    if (ok) return p;
  }
}

/** A free port whose successor (etcd's peer port under `up`) is free too. */
export function freePortPair(): Promise<number> {
  return freePortRun(2);
}

declare module 'vitest' {
  export interface ProvidedContext {
    etcdUrl: string;
  }
}

/** URL of the shared etcd started by the global setup. */
export function sharedEtcdUrl(): string {
  return inject('etcdUrl');
}

let counter = 0;
/** A key prefix no other test uses. */
export function uniquePrefix(name: string): string {
  return `/sy-test/${name}-${process.pid}-${Date.now().toString(36)}-${counter++}`;
}

export async function startPrivateEtcd(dataDir?: string, extraArgs: string[] = []): Promise<EmbeddedEtcd & { cleanup(): Promise<void> }> {
  const dir = dataDir ?? mkdtempSync(join(tmpdir(), 'sy-etcd-'));
  const etcd = await startEtcd({ dataDir: dir, extraArgs });
  return {
    ...etcd,
    async cleanup() {
      await etcd.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Two clients of one etcd: `direct`, and `viaProxy` through a proxy the test
 * can cut or hold (a partition, a lagging watch). `close()` ends all three.
 */
export async function etcdBehindProxy(
  etcdUrl: string,
  opts: { callTimeoutMs?: number } = {},
): Promise<{ direct: Etcd3; viaProxy: Etcd3; proxy: TcpProxy; close(): Promise<void> }> {
  const url = new URL(etcdUrl);
  const proxy = await startTcpProxy({ host: url.hostname, port: Number(url.port) });
  const direct = createEtcdClient({ hosts: [url.origin] });
  const viaProxy = createEtcdClient({ hosts: [proxy.url], ...opts });
  return {
    direct,
    viaProxy,
    proxy,
    async close() {
      viaProxy.close();
      direct.close();
      await proxy.close();
    },
  };
}
