/**
 * The coordinator's configuration: one schema, validated once at start.
 *
 * It is also the CLI's flag table: every key with a description is a flag of
 * `switchyard coordinator` (`offerTtlMs` → `--offer-ttl`, SWITCHYARD_OFFER_TTL),
 * its default is the flag's default, and the description is its `--help`.
 * Keys in milliseconds end in `Ms` and take durations on the command line.
 */
import { z } from 'zod';
import { DEFAULT_ETCD_ENDPOINTS, DEFAULT_PREFIX, EtcdAccessConfig, LOG_FORMATS, LOG_LEVELS } from '@switchyard/shared';

const Listen = z.object({ host: z.string(), port: z.int().min(0).max(65535) });

export const CoordinatorConfig = z.object({
  etcd: z.array(z.string()).min(1).default([...DEFAULT_ETCD_ENDPOINTS]).describe('etcd endpoints, comma-separated'),
  /** --etcd-ca/--etcd-cert/--etcd-key (TLS), --etcd-user/--etcd-password-file: the agent's too. */
  ...EtcdAccessConfig.shape,
  listen: Listen.default({ host: '127.0.0.1', port: 8443 }).describe('HOST:PORT to serve the API on'),
  token: z.string().min(1).optional().describe('require this X-AUTH-TOKEN on every route but /healthz'),
  prefix: z.string().default(DEFAULT_PREFIX).describe('etcd key prefix'),
  tlsCert: z.string().optional().describe('PEM certificate: serve HTTPS'),
  tlsKey: z.string().optional().describe('PEM private key for --tls-cert'),
  /** Upper bound on any one etcd operation behind a request. */
  etcdTimeoutMs: z.int().positive().default(3000).describe('deadline of the etcd work behind one request'),
  /** Portmaster. */
  offerTtlMs: z.int().positive().default(30 * 60_000).describe('port offers not accepted within this expire'),
  /** Leviathan. */
  defaultHost: z.string().default('host1').describe('host of containers a CEN file names but places nowhere'),
  /** skyapi: DNS root of the SkyDNS records. */
  dnsRoot: z.string().default('skydns.local').describe('SkyDNS root domain of provider records'),
  /** skyapi: coordinator lease TTL; its records vanish this long after it dies. */
  providerTtlMs: z.int().positive().default(10_000).describe("lease TTL: a dead coordinator's provider records vanish within it"),
  pingIntervalMs: z
    .int()
    .positive()
    .default(10_000)
    .describe('websocket ping interval (skyapi providers, Leviathan monitors); a peer that misses a pong is dropped'),
  /** Built-in DNS responder; off when absent. */
  dnsListen: Listen.optional().describe('HOST:PORT for the built-in DNS responder (UDP and TCP); off when unset'),
  metrics: z.boolean().default(true).describe('serve GET /metrics and record HTTP request metrics (--no-metrics leaves both out)'),
  metricsPublic: z.boolean().default(false).describe('GET /metrics answers without the token (scrapers on a trusted network)'),
  logLevel: z.enum(LOG_LEVELS).default('info').describe('log level'),
  logFormat: z.enum(LOG_FORMATS).default('auto').describe('log lines: pretty (for people), json, or auto (pretty on a terminal)'),
});
export type CoordinatorConfig = z.output<typeof CoordinatorConfig>;
export type CoordinatorConfigInput = z.input<typeof CoordinatorConfig>;

// Shared with the agent's --metrics-listen (the agent must not load this package).
export { parseListen } from '@switchyard/shared';
