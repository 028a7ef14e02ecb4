/**
 * What every route plugin gets: the etcd client, the key layout and the
 * coordinator's identity. Plugins keep their own mirrors; nothing else is
 * shared between them.
 */
import type { Etcd3 } from 'etcd3';
import type { FastifyBaseLogger } from 'fastify';
import { etcdCall, etcdWrite, membersOf, type Keyspace } from '@switchyard/shared';
import type { CoordinatorConfig } from './config.js';

export interface CoordinatorContext {
  etcd: Etcd3;
  keys: Keyspace;
  config: CoordinatorConfig;
  /** Unique per process: names this coordinator's lease-bound records. */
  coordinatorId: string;
  log: FastifyBaseLogger;
  /** Runs an etcd read with the request deadline; failures become 503s. */
  call<T>(fn: () => Promise<T>, what?: string): Promise<T>;
  /**
   * Runs one etcd write with the request deadline: 503 only when it was not
   * applied, 504 OUTCOME_UNKNOWN when it was sent and no answer came (etcdWrite).
   */
  write<T>(fn: () => Promise<T>, what?: string, opts?: { ms?: number }): Promise<T>;
}

export function makeCall(config: CoordinatorConfig, etcd: Etcd3) {
  const members = membersOf(etcd);
  return <T>(fn: () => Promise<T>, what?: string) => etcdCall(fn, config.etcdTimeoutMs, what, members);
}

export function makeWrite(config: CoordinatorConfig, etcd: Etcd3) {
  const members = membersOf(etcd);
  return <T>(fn: () => Promise<T>, what?: string, opts: { ms?: number } = {}) => etcdWrite(fn, { ms: opts.ms ?? config.etcdTimeoutMs, what, members });
}
