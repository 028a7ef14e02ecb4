/**
 * A role is one thing the agent keeps in the kernel (L4 load balancing,
 * container networks). Each follows its own etcd prefix, runs its own sync
 * loop and reports what it applied.
 */
import type { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';
import type { Keyspace } from '@switchyard/shared';
import type { AgentConfig } from './config.js';
import type { Runner } from './exec/runner.js';
import type { SyncObserver } from './loop.js';
import type { RoleProgress } from './metrics.js';
import type { StatusReporter } from './status.js';

export interface AgentRole {
  readonly name: string;
  start(): Promise<void>;
  /** `flush`: remove what the role owns in the kernel (--flush-on-exit). */
  stop(opts: { flush: boolean }): Promise<void>;
  /** Revisions and object counts, read when the metrics are scraped. */
  progress?(): RoleProgress | undefined;
}

/** What a role factory gets from the agent. */
export interface RoleContext {
  config: AgentConfig;
  etcd: Etcd3;
  keys: Keyspace;
  runner: Runner;
  status: StatusReporter;
  log: Logger;
  /** What the role's SyncLoop reports to (metrics, and the heap compactor). */
  syncObserver(role: string): SyncObserver;
}
