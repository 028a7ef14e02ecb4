/**
 * What every feature is made of and what it gets. These types live here,
 * below the features and the app that lists them, so a feature never imports
 * the file that assembles it.
 *
 * A feature is one folder with a `feature.ts` exporting a factory
 * `(ctx, ...what it needs from other features) => Feature`: its HTTP routes as
 * a fastify plugin, its websocket endpoints by path, and a start/stop. The app
 * is the list of them (app.ts).
 */
import type { IncomingMessage } from 'node:http';
import type { Etcd3 } from 'etcd3';
import type { FastifyBaseLogger } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { WebSocket } from 'ws';
import { etcdCall, type Keyspace } from '@switchyard/shared';
import type { CoordinatorConfig } from './config.js';

export interface CoordinatorContext {
  etcd: Etcd3;
  keys: Keyspace;
  config: CoordinatorConfig;
  /** Unique per process: names this coordinator's lease-bound records. */
  coordinatorId: string;
  log: FastifyBaseLogger;
  /** Runs an etcd operation with the request deadline; failures become 503s. */
  call<T>(fn: () => Promise<T>, what?: string): Promise<T>;
}

export type WebSocketHandler = (socket: WebSocket, request: IncomingMessage) => void;

/** One capability of the coordinator (the shape every `feature.ts` returns). */
export interface Feature {
  name: string;
  /** Its HTTP routes, registered as an encapsulated fastify plugin. */
  routes?: FastifyPluginAsyncZod;
  /** Websocket endpoints by path (the token rules apply to the upgrade). */
  websockets?: Record<string, WebSocketHandler>;
  /** Called once at start, in list order; must not block on etcd being up. */
  start?(): Promise<void> | void;
  /** Called once at close, in reverse list order. */
  stop?(): Promise<void> | void;
}

export function makeCall(config: CoordinatorConfig) {
  return <T>(fn: () => Promise<T>, what?: string) => etcdCall(fn, config.etcdTimeoutMs, what);
}
