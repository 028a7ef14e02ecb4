/**
 * The agent's configuration: one schema, validated once at start.
 *
 * It is also the CLI's flag table: every key with a description is a flag of
 * `switchyard agent` (`drainTimeoutMs` → `--drain-timeout`,
 * SWITCHYARD_DRAIN_TIMEOUT), its default is the flag's default, and the
 * description is its `--help`. Keys in milliseconds end in `Ms` and take
 * durations on the command line. Keys without a description are knobs for
 * tests and embedders only.
 */
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { z } from 'zod';
import { DEFAULT_ETCD_ENDPOINTS, DEFAULT_PREFIX, EtcdAccessConfig, isInterfaceName, isSafeName, LOG_FORMATS, LOG_LEVELS } from '@switchyard/shared';

export const DATAPLANE_CHOICES = ['auto', 'ipvs', 'nftables', 'dry-run'] as const;

export const AgentConfig = z.object({
  hostId: z
    .string()
    .refine((s) => isSafeName(s, 63), { message: 'host id: letters, digits, "_", "." and "-", at most 63' })
    .default(() => hostname())
    .describe("this host's id (the hostname by default)"),
  etcd: z.array(z.string()).min(1).default([...DEFAULT_ETCD_ENDPOINTS]).describe('etcd endpoints, comma-separated'),
  /** --etcd-ca/--etcd-cert/--etcd-key (TLS), --etcd-user/--etcd-password-file: the coordinator's too. */
  ...EtcdAccessConfig.shape,
  prefix: z.string().default(DEFAULT_PREFIX).describe('etcd key prefix'),
  dataplane: z.enum(DATAPLANE_CHOICES).default('auto').describe('how services reach the kernel: ipvs, nftables, dry-run, or auto (the first that works)'),
  netns: z
    .string()
    .refine((s) => isSafeName(s, 63), { message: 'netns: a plain name' })
    .optional()
    .describe("treat this network namespace as the host's network"),
  underlayAddress: z
    .string()
    .refine((s) => isIP(s) === 4, { message: 'underlay address: an IPv4 address' })
    .optional()
    .describe("address this host's VXLAN traffic leaves from, published for the other hosts (default: the underlay interface's first IPv4 address, or the host network's first global one)"),
  underlayInterface: z
    .string()
    .refine((s) => isInterfaceName(s), { message: 'underlay interface: an interface name of at most 15 characters of letters, digits, "_", "." and "-"' })
    .optional()
    .describe('interface the underlay address is on; VXLAN devices get its MTU less 50 (default: the one holding the underlay address)'),
  resyncMs: z.int().positive().default(60_000).describe('period of the full resync that undoes drift'),
  /** Under sustained changes, at most one apply per this interval (ms); triggers inside it are coalesced. */
  minSyncIntervalMs: z.int().min(0).default(10),
  /** Applies that may run back to back before minSyncIntervalMs applies (the first change after a quiet spell never waits). */
  syncBurst: z.int().min(1).default(4),
  /** nftables: apply small scripts through a persistent `nft -i` and skip the resync's table read while `nft monitor` sees no foreign change. */
  nftPersistent: z.boolean().default(true),
  /** Start short-lived commands from a small helper process: a spawn blocks the event loop until the child has exec'd (tens of ms on a loaded machine). */
  spawnHelper: z.boolean().default(true),
  drainTimeoutMs: z.int().min(0).default(30_000).describe('how long a deleted server drains before removal'),
  /** Lease TTL of the agent's registration (seconds). */
  leaseTtlSeconds: z.int().min(2).default(10),
  flushOnExit: z.boolean().default(false).describe('remove what the agent owns on SIGTERM (default: leave traffic flowing)'),
  nftTable: z
    .string()
    .refine((s) => isSafeName(s, 32), { message: 'nft table: a plain name' })
    .default('switchyard')
    .describe('the one nft table (family inet) the nftables dataplane owns'),
  nftLocalVips: z
    .boolean()
    .default(false)
    .describe('nftables: make every VIP local on --nft-device, so processes on this host can reach VIPs it has no route to'),
  nftFeedbackIntervalMs: z
    .int()
    .min(0)
    .max(60_000)
    .default(250)
    .describe('nftables: how often lc/wlc/sed/nq/lblc/lblcr services and connection thresholds re-read connection counts (conntrack) and re-pick servers for new connections; 0 turns this off (weights only, with a warning)'),
  nftDevice: z
    .string()
    .refine((s) => isInterfaceName(s), { message: 'nft device: an interface name of at most 15 characters' })
    .default('sy-nft0')
    .describe('dummy interface that holds the VIPs with --nft-local-vips (created and owned by the agent)'),
  nftDrDevice: z
    .string()
    .refine((s) => isInterfaceName(s), { message: 'nft dr device: an interface name of at most 15 characters' })
    .optional()
    .describe('nftables: route forwarder g (direct routing) on this interface: VIP traffic arriving on it is sent to a real server on the same L2 with the VIP kept as destination (off when unset: g is applied as DNAT)'),
  nftDrIngress: z
    .array(z.string().refine((s) => isInterfaceName(s), { message: 'nft dr ingress: interface names of at most 15 characters' }))
    .min(1)
    .optional()
    .describe('nftables: the interfaces the direct-routed VIP traffic arrives on, comma-separated (default: --nft-dr-device)'),
  ipvsDevice: z
    .string()
    .refine((s) => isInterfaceName(s), { message: 'ipvs device: an interface name of at most 15 characters' })
    .default('sy-ipvs0')
    .describe('dummy interface that holds IPVS service addresses (created and owned by the agent)'),
  metricsListen: z
    .object({ host: z.string(), port: z.int().min(0).max(65535) })
    .optional()
    .describe('HOST:PORT to serve GET /metrics (Prometheus) on; off when unset'),
  healthConcurrency: z.int().min(1).max(10_000).default(256).describe('health-check probes in flight at most (all services together)'),
  logLevel: z.enum(LOG_LEVELS).default('info').describe('log level'),
  logFormat: z.enum(LOG_FORMATS).default('auto').describe('log lines: pretty (for people), json, or auto (pretty on a terminal)'),
});
export type AgentConfig = z.output<typeof AgentConfig>;
export type AgentConfigInput = z.input<typeof AgentConfig>;
