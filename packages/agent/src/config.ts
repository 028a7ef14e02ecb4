/**
 * The agent's configuration: one schema, validated once at start. The CLI
 * fills it from flags and SWITCHYARD_* environment variables.
 */
import { z } from 'zod';
import { DEFAULT_PREFIX, isInterfaceName, isSafeName } from '@switchyard/shared';

export const DATAPLANE_CHOICES = ['auto', 'ipvs', 'nftables', 'dry-run'] as const;

export const AgentConfig = z.object({
  hostId: z.string().refine((s) => isSafeName(s, 63), { message: 'host id: letters, digits, "_", "." and "-", at most 63' }),
  etcd: z.array(z.string()).min(1),
  prefix: z.string().default(DEFAULT_PREFIX),
  dataplane: z.enum(DATAPLANE_CHOICES).default('auto'),
  /** Treat this named network namespace as the host's network. */
  netns: z.string().refine((s) => isSafeName(s, 63), { message: 'netns: a plain name' }).optional(),
  /** Full resync period (ms). */
  resyncMs: z.int().positive().default(60_000),
  /** Minimum interval between two applies; bursts inside it are coalesced (ms). */
  minSyncIntervalMs: z.int().min(0).default(20),
  /** How long a deleted server is drained before removal (ms). */
  drainTimeoutMs: z.int().min(0).default(30_000),
  /** Lease TTL of the agent's registration (seconds). */
  leaseTtlSeconds: z.int().min(2).default(10),
  flushOnExit: z.boolean().default(false),
  /** Name of the nft table the agent owns. */
  nftTable: z.string().refine((s) => isSafeName(s, 32), { message: 'nft table: a plain name' }).default('switchyard'),
  /** Dummy interface that holds IPVS service addresses (the agent creates and owns it). */
  ipvsDevice: z.string().refine((s) => isInterfaceName(s), { message: 'ipvs device: an interface name of at most 15 characters' }).default('sy-ipvs0'),
  /** Serve GET /metrics (Prometheus) here, e.g. { host: '127.0.0.1', port: 9464 }; off when absent. */
  metricsListen: z.object({ host: z.string(), port: z.int().min(0).max(65535) }).optional(),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});
export type AgentConfig = z.output<typeof AgentConfig>;
export type AgentConfigInput = z.input<typeof AgentConfig>;
