/**
 * L4 virtual services and their real servers, as Portal defines them.
 *
 * One schema per resource: the coordinator validates REST bodies with the
 * `*Input` schemas, answers with the `Service`/`Server` shapes, the agent
 * parses etcd values with `Service`, and the OpenAPI document is generated
 * from the same objects.
 */
import { isIP } from 'node:net';
import { z } from 'zod';

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
  if (isIP(mask) !== 4) return false;
  const bits = mask
    .split('.')
    .map((o) => Number(o).toString(2).padStart(8, '0'))
    .join('');
  return /^1*0*$/.test(bits);
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
};

function finishService<T extends { host: string; port: number; type: Protocol; netmask: string; servers?: Server[] }>(
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
});

/** A service as stored in etcd (always with `servers`, possibly empty). */
export const Service = serviceObject
  .refine((s) => s.id === serviceId(s), { message: 'id does not match type, host and port', path: ['id'] })
  .refine((s) => validNetmask(s.netmask, ipFamily(s.host)), { message: 'invalid netmask', path: ['netmask'] });
export type Service = z.infer<typeof Service>;

/**
 * A service as Portal's API prints it: Portal's struct tags say
 * `servers,omitempty`, so a service without servers has no `servers` key.
 * (`hosts` only appears on services pinned through Switchyard's own API.)
 */
export const ServiceView = serviceObject.extend({ servers: z.array(Server).optional() });
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
 * out that only Switchyard knows (`servers` on a reset, `hosts` pinning, which
 * Portal clients never send) are kept from `current`.
 */
export function toService(input: ServiceInput, current?: Pick<Service, 'servers' | 'hosts'>): Service {
  const { hosts, ...rest } = input;
  const pinned = hosts ?? current?.hosts;
  return { ...rest, servers: input.servers ?? current?.servers ?? [], ...(pinned ? { hosts: pinned } : {}) };
}

/** Does this host apply this service? (`hosts` absent = every host.) */
export function serviceAppliesTo(service: Pick<Service, 'hosts'>, hostId: string): boolean {
  return !service.hosts || service.hosts.includes(hostId);
}
