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
import { startEtcd, type EmbeddedEtcd } from '../../packages/cli/src/embedded-etcd.js';

export { freePort } from '../../packages/cli/src/embedded-etcd.js';

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
