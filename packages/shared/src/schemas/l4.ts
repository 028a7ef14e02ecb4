/**
 * L4 virtual services and their real servers, as Portal defines them.
 *
 * One schema per resource: the coordinator validates REST bodies with the
 * `*Input` schemas, answers with the `Service`/`Server` shapes, the agent
 * parses etcd values with `Service`, and the OpenAPI document is generated
 * from the same objects.
 */
import { isIP } from 'node:net';
import { prefixOfMask } from '../netmask.js';
import { z } from 'zod';
import { formatDuration, parseDuration } from '../duration.js';

export const SCHEDULERS = ['rr', 'wrr', 'lc', 'wlc', 'lblc', 'lblcr', 'dh', 'sh', 'sed', 'nq'] as const;
export const FORWARDERS = ['g', 'i', 'm'] as const;
export const PROTOCOLS = ['tcp', 'udp'] as const;

export type Scheduler = (typeof SCHEDULERS)[number];
export type Forwarder = (typeof FORWARDERS)[number];
export type Protocol = (typeof PROTOCOLS)[number];

/** Canonical text of an IP literal (IPv6 compressed, lower case), or undefined. */
export function canonicalIp(host: string): string | undefined {
  const family = isIP(host);
  if (family === 4) return host.split('.').map((o) => String(Number(o))).join('.');
  if (family === 6) {
    try {
      return new URL(`http://[${host}]/`).hostname.slice(1, -1);
    } catch {
      return undefined;
    }
  }
  return undefined;
}

export function ipFamily(host: string): 4 | 6 {
  return isIP(host) === 6 ? 6 : 4;
}

const ipLiteral = z
  .string()
  .refine((h) => canonicalIp(h) !== undefined, { message: 'must be an IPv4 or IPv6 literal' })
  .transform((h) => canonicalIp(h) as string);

const port = z.int().min(1).max(65535);
const count = z.int().min(0).max(2 ** 31 - 1);

/**
 * One of `values`, defaulting to `fallback` when absent or `""`. Portal's CLI
 * marshals Go structs, so a field the user did not give arrives as its zero
 * value: `"type":""`, `"scheduler":""`, `"forwarder":""` mean "the default",
 * as they do to Portal itself (core.Service.GenId and ipvsadm treat "" so).
 * Numbers are different: a zero weight is a real value ("no traffic").
 */
function choice<const T extends readonly [string, ...string[]]>(values: T, fallback: T[number]) {
  return z
    .enum(['', ...values])
    .optional()
    .transform((v): T[number] => (v === undefined || v === '' ? fallback : (v as T[number])));
}

/**
 * `ipvsadm -M`: a dotted netmask for IPv4 services, a prefix length for IPv6
 * services. Empty means "not set" (one client address per persistence entry).
 */
function validNetmask(mask: string, family: 4 | 6): boolean {
  if (mask === '') return true;
  if (family === 6) return /^\d{1,3}$/.test(mask) && Number(mask) >= 1 && Number(mask) <= 128;
  return isIP(mask) === 4 && prefixOfMask(mask) !== undefined;
}

// ---------- ids ----------
// Portal's ids: service `type-host-port`, server `host-port`, with the host's
// dots as underscores. An IPv6 host has its colons as underscores instead; its
// canonical form never contains a dot and an IPv4 one never a colon, so the id
// stays reversible, and `-` never occurs inside a host, so splitting on the
// first and last `-` recovers all parts.

const hostToId = (host: string) => host.replace(/[.:]/g, '_');

function hostFromId(part: string): string | undefined {
  const v4 = part.replace(/_/g, '.');
  if (isIP(v4) === 4) return v4;
  const v6 = part.replace(/_/g, ':');
  return isIP(v6) === 6 ? v6 : undefined;
}

export function serviceId(s: { type: Protocol; host: string; port: number }): string {
  return `${s.type}-${hostToId(s.host)}-${s.port}`;
}

export function serverId(s: { host: string; port: number }): string {
  return `${hostToId(s.host)}-${s.port}`;
}

export function parseServiceId(id: string): { type: Protocol; host: string; port: number } | undefined {
  const m = /^(tcp|udp)-([0-9A-Za-z_]+)-(\d{1,5})$/.exec(id);
  const host = m && hostFromId(m[2]);
  return m && host ? { type: m[1] as Protocol, host, port: Number(m[3]) } : undefined;
}

export function parseServerId(id: string): { host: string; port: number } | undefined {
  const m = /^([0-9A-Za-z_]+)-(\d{1,5})$/.exec(id);
  const host = m && hostFromId(m[1]);
  return m && host ? { host, port: Number(m[2]) } : undefined;
}

// ---------- servers ----------

export const ServerInput = z
  .object({
    host: ipLiteral,
    port,
    forwarder: choice(FORWARDERS, 'g'),
    weight: count.default(1),
    upper_threshold: count.optional(),
    lower_threshold: count.optional(),
    /** Portal's README spells the thresholds this way; accepted on input. */
    UpperThreshold: count.optional(),
    LowerThreshold: count.optional(),
  })
  .transform(({ UpperThreshold, LowerThreshold, upper_threshold, lower_threshold, ...s }) => ({
    id: serverId(s),
    host: s.host,
    port: s.port,
    forwarder: s.forwarder,
    weight: s.weight,
    upper_threshold: upper_threshold ?? UpperThreshold ?? 0,
    lower_threshold: lower_threshold ?? LowerThreshold ?? 0,
  }));

/**
 * Stored values are parsed as strictly as input: the agent renders them into
 * nft scripts and ipvsadm batches, so whatever wrote them (another coordinator
 * version, a hand-edit with etcdctl) must not be able to smuggle text in.
 */
const storedIp = z.string().refine((h) => canonicalIp(h) === h, { message: 'must be a canonical IP literal' });
const hostId = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/);

export const Server = z.object({
  id: z.string(),
  host: storedIp,
  port,
  forwarder: z.enum(FORWARDERS),
  weight: count,
  upper_threshold: count,
  lower_threshold: count,
}).refine((s) => s.id === serverId(s), { message: 'id does not match host and port' });
export type Server = z.infer<typeof Server>;

// ---------- health checks ----------

export const HEALTH_TYPES = ['tcp', 'http', 'none'] as const;
export type HealthType = (typeof HEALTH_TYPES)[number];

/** Milliseconds of a duration text, NaN when it is not one (checks run even after a field failed). */
function msOf(t: string): number {
  try {
    return parseDuration(t);
  } catch {
    return Number.NaN;
  }
}

/** A duration as flags take it (`500ms`, `2s`), kept in its canonical text. */
function durationText(minMs: number, maxMs: number) {
  return z
    .string()
    .refine(
      (t) => {
        const ms = msOf(t);
        return ms >= minMs && ms <= maxMs;
      },
      { message: `must be a duration from ${formatDuration(minMs)} to ${formatDuration(maxMs)} (e.g. 500ms, 2s)` },
    )
    .transform((t) => formatDuration(parseDuration(t)));
}

/**
 * An HTTP path the agent puts on a request line: printable ASCII without
 * spaces, so no value can add a header or a second request.
 */
const httpPath = z.string().regex(/^\/[\x21-\x7e]{0,1023}$/, { message: 'must start with "/" and hold printable ASCII without spaces (at most 1024 characters)' });

const healthFields = {
  type: z.enum(HEALTH_TYPES),
  path: httpPath.optional(),
  expect: z.int().min(100).max(599).optional(),
  interval: durationText(100, 3_600_000).default('2s'),
  timeout: durationText(10, 3_600_000).default('1s'),
  rise: z.int().min(1).max(100).default(2),
  fall: z.int().min(1).max(100).default(3),
  /** Probe this port instead of the server's. */
  port: port.optional(),
};

function checkHealth(h: { type: HealthType; interval: string; timeout: string; path?: string | undefined; expect?: number | undefined }, ctx: z.RefinementCtx) {
  if (msOf(h.timeout) > msOf(h.interval)) {
    ctx.addIssue({ code: 'custom', path: ['timeout'], message: 'must not be longer than interval' });
  }
  if (h.type !== 'http' && (h.path !== undefined || h.expect !== undefined)) {
    ctx.addIssue({ code: 'custom', path: ['type'], message: 'path and expect belong to type "http"' });
  }
}

/**
 * Switchyard only (Portal clients never send it): how every agent that
 * applies the service checks its real servers. Defaults filled in, so what is
 * stored is exactly what agents run.
 */
export const HealthCheckInput = z
  .strictObject(healthFields)
  .superRefine(checkHealth)
  .transform((h) => ({
    type: h.type,
    ...(h.type === 'http' ? { path: h.path ?? '/healthz', expect: h.expect ?? 200 } : {}),
    interval: h.interval,
    timeout: h.timeout,
    rise: h.rise,
    fall: h.fall,
    ...(h.port !== undefined ? { port: h.port } : {}),
  }));

export const HealthCheck = z
  .strictObject({
    type: z.enum(HEALTH_TYPES),
    path: httpPath.optional(),
    expect: z.int().min(100).max(599).optional(),
    interval: z.string().refine((t) => msOf(t) >= 100, { message: 'invalid interval' }),
    timeout: z.string().refine((t) => msOf(t) >= 10, { message: 'invalid timeout' }),
    rise: z.int().min(1).max(100),
    fall: z.int().min(1).max(100),
    port: port.optional(),
  })
  .superRefine(checkHealth);
export type HealthCheck = z.infer<typeof HealthCheck>;

// ---------- services ----------

const serviceFields = {
  host: ipLiteral,
  port,
  type: choice(PROTOCOLS, 'tcp'),
  scheduler: choice(SCHEDULERS, 'wlc'),
  persistence: count.default(0),
  netmask: z.string().default(''),
  /** Switchyard only: pin the service to these agents (all agents when absent). */
  hosts: z.array(hostId).optional(),
  /** Switchyard only: health checks of the real servers. */
  health: HealthCheckInput.optional(),
};

/**
 * A UDP server has no connection to open: only an explicit probe port (a TCP
 * or HTTP side door of the server) can be checked.
 */
function udpWithoutProbePort(s: { type: Protocol; health?: HealthCheck | undefined }): boolean {
  return s.type === 'udp' && s.health !== undefined && s.health.type !== 'none' && s.health.port === undefined;
}

function finishService<T extends { host: string; port: number; type: Protocol; netmask: string; servers?: Server[]; health?: HealthCheck | undefined }>(
  s: T,
  ctx: z.RefinementCtx,
) {
  const family = ipFamily(s.host);
  if (!validNetmask(s.netmask, family)) {
    ctx.addIssue({
      code: 'custom',
      path: ['netmask'],
      message: family === 4 ? 'must be empty or a dotted IPv4 netmask (e.g. 255.255.255.0)' : 'must be empty or an IPv6 prefix length (1-128)',
    });
  }
  const seen = new Set<string>();
  for (const [i, srv] of (s.servers ?? []).entries()) {
    if (ipFamily(srv.host) !== family) {
      ctx.addIssue({ code: 'custom', path: ['servers', i, 'host'], message: 'must be of the same address family as the service host' });
    }
    if (seen.has(srv.id)) {
      ctx.addIssue({ code: 'custom', path: ['servers', i], message: `duplicate server ${srv.id}` });
    }
    seen.add(srv.id);
  }
  if (udpWithoutProbePort(s)) {
    ctx.addIssue({ code: 'custom', path: ['health', 'port'], message: 'a UDP service can only be checked over TCP or HTTP on an explicit port' });
  }
}

/** A service as a client sends it (POST /services, PUT /services, PUT /services/:id). */
export const ServiceInput = z
  .object({ ...serviceFields, servers: z.array(ServerInput).optional() })
  .superRefine(finishService)
  .transform((s) => ({
    id: serviceId(s),
    host: s.host,
    port: s.port,
    type: s.type,
    scheduler: s.scheduler,
    persistence: s.persistence,
    netmask: s.netmask,
    servers: s.servers,
    ...(s.hosts ? { hosts: s.hosts } : {}),
    ...(s.health ? { health: s.health } : {}),
  }));
export type ServiceInput = z.output<typeof ServiceInput>;

const serviceObject = z.object({
  id: z.string(),
  host: storedIp,
  port,
  type: z.enum(PROTOCOLS),
  scheduler: z.enum(SCHEDULERS),
  persistence: count,
  netmask: z.string(),
  servers: z.array(Server),
  hosts: z.array(hostId).optional(),
  health: HealthCheck.optional(),
});

/** A service as stored in etcd (always with `servers`, possibly empty). */
export const Service = serviceObject
  .refine((s) => s.id === serviceId(s), { message: 'id does not match type, host and port', path: ['id'] })
  .refine((s) => validNetmask(s.netmask, ipFamily(s.host)), { message: 'invalid netmask', path: ['netmask'] })
  .refine((s) => !udpWithoutProbePort(s), { message: 'a UDP service needs an explicit health check port', path: ['health', 'port'] });
export type Service = z.infer<typeof Service>;

/** How the hosts that apply a checked service see one of its servers (GET /services/:id). */
export const ServerHealthSummary = z.object({
  up: z.int(),
  down: z.int(),
  unknown: z.int(),
  /** Live hosts that apply the service. */
  hosts: z.int(),
  /** e.g. "2/3 hosts see it up". */
  summary: z.string(),
});
export type ServerHealthSummary = z.infer<typeof ServerHealthSummary>;

/**
 * A service as Portal's API prints it: Portal's struct tags say
 * `servers,omitempty`, so a service without servers has no `servers` key.
 * (`hosts` and `health` only appear on services given them through
 * Switchyard's own API; GET /services/:id of a checked service adds each
 * server's health across hosts.)
 */
export const ServiceView = serviceObject.extend({ servers: z.array(z.object({ ...Server.shape, health: ServerHealthSummary.optional() })).optional() });
export type ServiceView = z.infer<typeof ServiceView>;

export function toServiceView(s: Service): ServiceView {
  if (s.servers.length > 0) return s;
  const { servers: _none, ...rest } = s;
  return rest;
}

export const ServiceListInput = z.array(ServiceInput);
export const ServerListInput = z.array(ServerInput);

/**
 * Completes an input service into the stored shape. Fields the client left
 * out that only Switchyard knows (`servers` on a reset, `hosts` pinning and
 * `health`, which Portal clients never send) are kept from `current`.
 */
export function toService(input: ServiceInput, current?: Pick<Service, 'servers' | 'hosts' | 'health'>): Service {
  const { hosts, health, ...rest } = input;
  const pinned = hosts ?? current?.hosts;
  const checks = health ?? current?.health;
  return { ...rest, servers: input.servers ?? current?.servers ?? [], ...(pinned ? { hosts: pinned } : {}), ...(checks ? { health: checks } : {}) };
}

/** Does this host apply this service? (`hosts` absent = every host.) */
export function serviceAppliesTo(service: Pick<Service, 'hosts'>, hostId: string): boolean {
  return !service.hosts || service.hosts.includes(hostId);
}
