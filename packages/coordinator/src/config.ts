/**
 * The coordinator's configuration: one schema, validated once at start.
 * The CLI fills it from flags and SWITCHYARD_* environment variables.
 */
import { z } from 'zod';
import { DEFAULT_PREFIX } from '@switchyard/shared';

export const CoordinatorConfig = z.object({
  etcd: z.array(z.string()).min(1),
  listen: z.object({ host: z.string(), port: z.int().min(0).max(65535) }).default({ host: '127.0.0.1', port: 8443 }),
  prefix: z.string().default(DEFAULT_PREFIX),
  token: z.string().min(1).optional(),
  tlsCert: z.string().optional(),
  tlsKey: z.string().optional(),
  /** Upper bound on any one etcd operation behind a request, ms. */
  etcdTimeoutMs: z.int().positive().default(3000),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Portmaster: unaccepted offers expire after this long (ms). */
  offerTtlMs: z.int().positive().default(30 * 60_000),
  /** Leviathan: containers named in a CEN file but on no host go here. */
  defaultHost: z.string().default('host1'),
  /** skyapi: DNS root of the SkyDNS records. */
  dnsRoot: z.string().default('skydns.local'),
  /** skyapi: coordinator lease TTL; its records vanish this long after it dies (ms). */
  providerTtlMs: z.int().positive().default(10_000),
  /** Websocket ping interval (ms): skyapi providers and Leviathan monitors that miss a pong are dropped. */
  pingIntervalMs: z.int().positive().default(10_000),
  /** Built-in DNS responder, e.g. { host: '127.0.0.1', port: 5353 }; off when absent. */
  dnsListen: z.object({ host: z.string(), port: z.int().min(0).max(65535) }).optional(),
  /** GET /metrics and the HTTP request metrics; off leaves both out (benchmarks compare the two). */
  metrics: z.boolean().default(true),
  /** GET /metrics answers without the token (scrapers on a trusted network). */
  metricsPublic: z.boolean().default(false),
});
export type CoordinatorConfig = z.output<typeof CoordinatorConfig>;
export type CoordinatorConfigInput = z.input<typeof CoordinatorConfig>;

// Shared with the agent's --metrics-listen (the agent must not load this package).
export { parseListen } from '@switchyard/shared';
