/**
 * What every route plugin gets: the etcd client, the key layout and the
 * coordinator's identity. Plugins keep their own mirrors; nothing else is
 * shared between them.
 */
import type { Etcd3 } from 'etcd3';
import type { FastifyBaseLogger } from 'fastify';
import { etcdCall, type Keyspace } from '@switchyard/shared';
import type { CoordinatorConfig } from './config.js';

export interface CoordinatorContext {
  etcd: Etcd3;
  keys: Keyspace;
  config: CoordinatorConfig;
  /** Unique per process: names this coordinator's lease-bound records. */
  coordinatorId: string;
  log: FastifyBaseLogger;
  /** Runs an etcd operation with the request deadline (or `timeoutMs`, for bulk work); failures become 503s. */
  call<T>(fn: () => Promise<T>, what?: string, timeoutMs?: number): Promise<T>;
}

export function makeCall(config: CoordinatorConfig) {
  return <T>(fn: () => Promise<T>, what?: string, timeoutMs?: number) => etcdCall(fn, timeoutMs ?? config.etcdTimeoutMs, what);
}
