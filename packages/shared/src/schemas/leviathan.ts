/**
 * Container networks, as Leviathan defines them: CENs (container edge
 * networks: an L2 segment, a bridge or a wire), CINs (interconnect networks:
 * addresses over one or more CENs), containers (network namespaces on a host)
 * and CPools (pools of containers started together).
 *
 * One schema per resource, used by the REST routes (input), the coordinator's
 * answers, the etcd values and the agent's parsing of them. The kernel names
 * derived from ids (bridges, veths, VXLAN devices) are computed here too, so
 * the coordinator can refuse an id that cannot become a name before anything
 * is written, and the agent derives exactly the same names.
 */
import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import { z } from 'zod';
import { isInterfaceName, isSafeName } from '../names.js';

// ---------- ids ----------

/** Names the kernel already uses inside every namespace: a CEN may not take them. */
const RESERVED_IFNAMES = new Set(['lo', 'all', 'default']);

/** A CEN id names the container's interface (Leviathan's convention), so it must be a valid interface name. */
export function isCenId(id: string): boolean {
  return isInterfaceName(id) && !RESERVED_IFNAMES.has(id);
}

/** A container id names its network namespace (a file under /var/run/netns). */
export function isContainerId(id: string): boolean {
  return isSafeName(id, 64);
}

/** CIN, CPool and host ids never reach the kernel, but are path segments of keys and URLs. */
export function isLevId(id: string): boolean {
  return isSafeName(id, 64);
}

const badName = (what: string, rule: string) => ({ message: `${what}: ${rule}` });
const IFNAME_RULE = 'letters, digits, "_", "." and "-", starting with a letter or digit, at most 15 characters, not lo/all/default';
const NAME_RULE = 'letters, digits, "_", "." and "-", starting with a letter or digit, at most 64 characters';

/** The rule each kind of id must follow, as the BAD_NAME message states it. */
export const LEV_NAME_RULES = { cen: IFNAME_RULE, other: NAME_RULE } as const;

export const CinId = z.string().refine(isLevId, badName('CIN id', NAME_RULE));

export const WIRINGS = ['bridge', 'wire'] as const;
export type Wiring = (typeof WIRINGS)[number];

/** Leviathan's status words. */
export const LEV_STATES = ['pending', 'preparing', 'ready', 'destroy', 'error'] as const;
export type LevState = (typeof LEV_STATES)[number];

// ---------- kernel names ----------
// Host-side objects carry a prefix the agent owns, so pruning never touches a
// foreign link: `syb` bridges, `syv` veth host ends, `syx` VXLAN devices.
// `<prefix>-<cen>` when it fits in 15 characters, otherwise `<prefix>_<hash>`;
// an id never starts with "_", so the two forms cannot collide. A veth joins
// two ids and is always `syv` + 12 hex digits of a hash of both.
//
// Ownership is decided by these exact forms, not by the three letters: the
// planner deletes every owned link it does not want, and a host may well
// have a `sybase0` or a `syvpn` of its own.

export const LEV_LINK_PREFIXES = ['syb', 'syv', 'syx'] as const;

/** Exactly the names `levNames` generates for host-side links. */
const OWNED_LINK = /^(?:sy[bx]-[A-Za-z0-9][A-Za-z0-9_.-]*|sy[bx]_[0-9a-f]{11}|syv[0-9a-f]{12})$/;

function shortHash(text: string, length: number): string {
  return createHash('sha256').update(text).digest('hex').slice(0, length);
}

function prefixed(prefix: string, id: string): string {
  const plain = `${prefix}-${id}`;
  return plain.length <= 15 ? plain : `${prefix}_${shortHash(id, 15 - prefix.length - 1)}`;
}

export const levNames = {
  bridge: (cenId: string) => prefixed('syb', cenId),
  vxlan: (cenId: string) => prefixed('syx', cenId),
  vethHost: (containerId: string, cenId: string) => `syv${shortHash(`${containerId}/${cenId}`, 12)}`,
  /** Inside the container the interface is named after the CEN (Leviathan). */
  containerIf: (cenId: string) => cenId,
  /** A host-side link name this role generates (and so may delete). */
  isOwnedLink: (name: string) => name.length <= 15 && OWNED_LINK.test(name),
};

// ---------- address pool ----------

function ipToInt(ip: string): number {
  return ip.split('.').reduce((a, o) => a * 256 + Number(o), 0);
}

export function intToIp(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

/**
 * Where CIN subnets come from. Default (Leviathan's): subnets of /16 in
 * 10.0.0.0/8, the first one 10.10.0.0/16, the bridge at .0.1, containers from
 * .0.10.
 */
export const LevPool = z
  .object({
    network: z
      .string()
      .regex(/^\d+\.\d+\.\d+\.\d+\/\d+$/, 'an IPv4 CIDR')
      .refine((c) => isIP(c.split('/')[0]) === 4 && Number(c.split('/')[1]) <= 30, 'an IPv4 CIDR of at most /30')
      .default('10.0.0.0/8'),
    subnetPrefix: z.int().min(8).max(30).default(16),
    firstSubnet: z.int().min(0).default(10),
    gatewayOffset: z.int().min(1).default(1),
    firstHostOffset: z.int().min(2).default(10),
  })
  .superRefine((p, ctx) => {
    const bits = Number(p.network.split('/')[1]);
    if (p.subnetPrefix < bits) ctx.addIssue({ code: 'custom', path: ['subnetPrefix'], message: 'must be at least the network prefix' });
    if (p.firstSubnet >= 2 ** (p.subnetPrefix - bits)) ctx.addIssue({ code: 'custom', path: ['firstSubnet'], message: 'beyond the network' });
    const size = 2 ** (32 - p.subnetPrefix);
    if (p.gatewayOffset >= size - 1 || p.firstHostOffset >= size - 1) ctx.addIssue({ code: 'custom', path: ['firstHostOffset'], message: 'beyond the subnet' });
    if (p.gatewayOffset >= p.firstHostOffset) ctx.addIssue({ code: 'custom', path: ['gatewayOffset'], message: 'must come before firstHostOffset' });
  });
export type LevPool = z.output<typeof LevPool>;
export const DEFAULT_LEV_POOL: LevPool = LevPool.parse({});

export const levPool = {
  /** How many subnets the pool holds (index 0 is the network's first). */
  subnetCount(p: LevPool): number {
    return 2 ** (p.subnetPrefix - Number(p.network.split('/')[1]));
  },
  subnetBase(p: LevPool, index: number): number {
    const base = ipToInt(p.network.split('/')[0]);
    const size = 2 ** (32 - p.subnetPrefix);
    return base - (base % (size * levPool.subnetCount(p))) + index * size;
  },
  subnet(p: LevPool, index: number): string {
    return `${intToIp(levPool.subnetBase(p, index))}/${p.subnetPrefix}`;
  },
  gateway(p: LevPool, index: number): string {
    return intToIp(levPool.subnetBase(p, index) + p.gatewayOffset);
  },
  /** Container address number `k` (0-based) of subnet `index`, or undefined past the end. */
  host(p: LevPool, index: number, k: number): string | undefined {
    const offset = p.firstHostOffset + k;
    if (offset >= 2 ** (32 - p.subnetPrefix) - 1) return undefined;
    return intToIp(levPool.subnetBase(p, index) + offset);
  },
};

// ---------- input files ----------

// Ids in input files are plain strings here and checked by the coordinator
// (`isCenId`, `isContainerId`, `isLevId`), so a bad one is refused with the
// BAD_NAME code and the rule it breaks, before anything is written.
const idText = z.string().max(256);

export const CenFileEntry = z.object({
  cenID: idText,
  containerIDs: z.array(idText).default([]),
  /** Switchyard: "bridge" (default) or "wire" (exactly two containers). */
  wiring_type: z.enum(WIRINGS).nullable().optional(),
});

export const CenFile = z.object({ cenList: z.array(CenFileEntry) });
export type CenFile = z.output<typeof CenFile>;

/** `{"cin1": ["cen1"], …}` */
export const CinFile = z.record(idText, z.array(idText));
export type CinFile = z.output<typeof CinFile>;

/** A JSON list of ids (make/destroy bodies); each id is checked against its kind by the route. */
export const IdList = z.array(z.string());

const boolish = z.union([z.boolean(), z.enum(['true', 'false'])]).transform((v) => v === true || v === 'true');

export const CpoolEntry = z.object({
  cpoolID: idText,
  type: z.string().max(256).default(''),
  start_with: z.int().min(0).max(1000).default(0),
  /** Leviathan's `cinID` here names the CEN the pool's containers join. */
  cins: z.array(z.object({ cinID: idText, default_route: boolish.optional() })).default([]),
});
export const CpoolFile = z.object({ cpoolList: z.array(CpoolEntry) });
export type CpoolFile = z.output<typeof CpoolFile>;

export const ContainerInput = z.object({ tag: z.string().max(256).nullable().optional() }).nullish();
export const CenInput = z.object({ wiring_type: z.enum(WIRINGS).optional() }).nullish();

// ---------- stored in etcd ----------

export const StoredCen = z.object({
  cenID: z.string(),
  contIDs: z.array(z.string()),
  wiring: z.enum(WIRINGS),
  /** Desired: the kernel objects exist (after /cen/make, until /cen/destroy). */
  made: z.boolean(),
  /** VXLAN network identifier, unique in the cluster. */
  vni: z.int().min(1).max(16_777_215),
});
export type StoredCen = z.infer<typeof StoredCen>;

export const CinAddress = z.object({ containerID: z.string(), cenID: z.string(), ip: z.string() });
export type CinAddress = z.infer<typeof CinAddress>;

export const StoredCin = z.object({
  cinID: z.string(),
  cenIDs: z.array(z.string()),
  made: z.boolean(),
  /** Allocated while made: index of the subnet in the pool, its CIDR, the bridge address. */
  subnet: z.object({ index: z.int(), cidr: z.string(), gateway: z.string() }).nullable(),
  addresses: z.array(CinAddress),
});
export type StoredCin = z.infer<typeof StoredCin>;

export const StoredContainer = z.object({
  containerID: z.string(),
  host: z.string(),
  tag: z.string().nullable(),
  /** The CEN whose interface carries the default route (CPool `default_route`). */
  defaultRoute: z.string().nullable(),
  cpoolID: z.string().nullable(),
});
export type StoredContainer = z.infer<typeof StoredContainer>;

export const StoredCpool = z.object({
  cpoolID: z.string(),
  type: z.string(),
  start_with: z.int(),
  cins: z.array(z.object({ cinID: z.string(), default_route: z.boolean() })),
});
export type StoredCpool = z.infer<typeof StoredCpool>;

/** What an agent reports: per object, ready or error, at an applied revision. */
export const LevHostStatus = z.object({
  hostId: z.string(),
  appliedRevision: z.int(),
  /**
   * With `errors`: the desired revision the failing pass tried to apply. A
   * client waiting for revision R knows an error is about its write (not one
   * left from before it, still being retried) when this is ≥ R.
   */
  failedRevision: z.int().optional(),
  lastSync: z.string(),
  cens: z.record(z.string(), z.enum(['ready', 'error'])),
  cins: z.record(z.string(), z.enum(['ready', 'error'])),
  containers: z.record(z.string(), z.enum(['ready', 'error'])),
  errors: z.array(z.object({ object: z.string(), message: z.string() })),
});
export type LevHostStatus = z.infer<typeof LevHostStatus>;

export const LevUnderlay = z.object({ hostId: z.string(), address: z.string().refine((a) => isIP(a) === 4, 'an IPv4 address') });
export type LevUnderlay = z.infer<typeof LevUnderlay>;

/** A namespace the agent created (so it, and only it, is removed with its container). */
export const LevCreatedNs = z.object({ containerID: z.string(), createdAt: z.string() });
export type LevCreatedNs = z.infer<typeof LevCreatedNs>;

// ---------- API answers ----------

const State = z.enum(LEV_STATES);

export const CenView = z.object({
  cenID: z.string(),
  contIDs: z.array(z.string()),
  wiring_type: z.enum(WIRINGS).nullable(),
  status: State,
  hosts: z.record(z.string(), State),
});
export type CenView = z.infer<typeof CenView>;

export const CinView = z.object({
  cinID: z.string(),
  cenIDs: z.array(z.string()),
  subnet: z.string().nullable(),
  gateway: z.string().nullable(),
  addresses: z.array(z.object({ containerID: z.string(), cenID: z.string(), ipaddress: z.string(), tag: z.string().nullable() })),
  status: State,
  hosts: z.record(z.string(), State),
});
export type CinView = z.infer<typeof CinView>;

export const ContainerView = z.object({
  contID: z.string(),
  hostID: z.string(),
  cenIDs: z.array(z.string()),
  tag: z.string().nullable(),
  cpoolID: z.string().nullable(),
  addresses: z.array(z.object({ cinID: z.string(), cenID: z.string(), ipaddress: z.string() })),
  status: State,
});
export type ContainerView = z.infer<typeof ContainerView>;

/** GET /leviathan/hosts: one agent's topology report, its objects counted. */
export const LevHostView = z.object({
  hostId: z.string(),
  /** The Leviathan revision this host has fully applied. */
  appliedRevision: z.int(),
  /** While `errors` is not empty: the revision the failing pass tried to apply (null when the agent does not say). */
  failedRevision: z.int().nullable(),
  lastSync: z.string(),
  /** How many objects of each kind the host holds (ready or in error). */
  cens: z.int(),
  cins: z.int(),
  containers: z.int(),
  errors: z.array(z.object({ object: z.string(), message: z.string() })),
});
export type LevHostView = z.infer<typeof LevHostView>;

// ---------- monitor websocket ----------

export const MonitorStart = z.object({
  type: z.literal('start'),
  sequence: z.union([z.string(), z.number()]),
  monitor: z.literal('CIN'),
  monitorID: z.string().min(1).max(128).optional(),
  parameters: z.object({ cinID: CinId, container_tag: z.string().optional() }),
});
export type MonitorStart = z.infer<typeof MonitorStart>;

export const MonitorStop = z.object({
  type: z.literal('stop'),
  sequence: z.union([z.string(), z.number()]),
  monitorID: z.string(),
});

export interface MonitorItem {
  containerID: string;
  ipaddress: string;
  tag: string | null;
}
