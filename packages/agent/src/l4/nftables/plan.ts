/**
 * The pure nftables planner: desired objects per service + the observed (or
 * last applied) state → ops, rendered into one `nft -f -` transaction.
 *
 * With a `scope` only those services are compared (the incremental path:
 * a change to one service produces a script about that service alone, so
 * one update among 10,000 services stays a few lines). Without it, every
 * service in either state is compared (the full resync).
 */
import type { NftChain, NftElement, NftFamily, NftSet, ServiceObjects } from './model.js';
import { emptyObserved, type NftObserved, type ObservedService } from './observe.js';

export type NftOp = (
  | { kind: 'delete-table' }
  | { kind: 'add-table' }
  | { kind: 'add-map'; name: string; spec: string }
  | { kind: 'add-chain'; name: string; base?: string }
  | { kind: 'flush-chain'; name: string }
  | { kind: 'delete-chain'; name: string }
  | { kind: 'add-set'; name: string; spec: string }
  | { kind: 'delete-set'; name: string }
  | { kind: 'add-rule'; chain: string; rule: string }
  | { kind: 'add-element'; element: NftElement }
  | { kind: 'delete-element'; element: NftElement }
) & {
  /** The table the op is for (`inet` when absent). */
  family?: NftFamily;
};

/** The table's fixed skeleton: global maps and base chains with their rules. */
export interface NftBase {
  maps: { name: string; spec: string }[];
  chains: { name: string; spec: string; rules: string[] }[];
  /** A netdev table's devices as its base chain's name spells them (`ingressChain`); a table hooked otherwise is replaced. */
  device?: string;
}

export const NFT_BASE: NftBase = {
  maps: [
    { name: 'services4', spec: 'type ipv4_addr . inet_proto . inet_service : verdict ;' },
    { name: 'services6', spec: 'type ipv6_addr . inet_proto . inet_service : verdict ;' },
    ...(['4', '6'] as const).flatMap((f) =>
      (['tcp', 'udp'] as const).flatMap((p) => {
        const ip = f === '4' ? 'ip' : 'ip6';
        return [
          { name: `backends${f}_${p}`, spec: `typeof ${ip} daddr . ${p} dport . numgen inc mod 1 : ${ip} daddr . ${p} dport ;` },
          { name: `pick${f}_${p}`, spec: `typeof ${ip} daddr . ${p} dport . numgen inc mod 1 : verdict ;` },
        ];
      }),
    ),
  ],
  chains: [
    {
      name: 'prerouting',
      spec: 'type nat hook prerouting priority dstnat ; policy accept ;',
      rules: ['ip daddr . meta l4proto . th dport vmap @services4', 'ip6 daddr . meta l4proto . th dport vmap @services6'],
    },
    {
      // Connections the host itself opens to a service address.
      name: 'output',
      spec: 'type nat hook output priority -100 ; policy accept ;',
      rules: ['ip daddr . meta l4proto . th dport vmap @services4', 'ip6 daddr . meta l4proto . th dport vmap @services6'],
    },
    {
      name: 'postrouting',
      spec: 'type nat hook postrouting priority srcnat ; policy accept ;',
      rules: ['meta mark & 0x00100000 == 0x00100000 meta mark set meta mark ^ 0x00100000 masquerade'],
    },
  ],
};

/**
 * The netdev table's base chain: `ingress.<device>` when traffic arrives and
 * leaves on one device, else `ingress.<device>/<arrives on>/…` ("/" is never
 * in an interface name). The devices are in the name because nft 1.0.6's
 * JSON listing leaves a netdev chain's devices out.
 */
export function ingressChain(device: string, ingress: readonly string[] = [device]): string {
  return `ingress.${[device, ...(ingress.length === 1 && ingress[0] === device ? [] : ingress)].join('/')}`;
}

/**
 * The skeleton of `netdev <table>` for direct routing to real servers on
 * `device`, of traffic arriving on `ingress` (default: the same device):
 * packets to a VIP . protocol . port of a direct-routed service go to its
 * group (IPv4) or service chain (IPv6); every other packet passes untouched.
 * Priority 0 (filter): after any earlier ingress filtering of others.
 */
export function drBase(device: string, ingress: readonly string[] = [device]): NftBase {
  const name = ingressChain(device, ingress);
  // Several devices: nft 1.0.6 rejects `policy` after a quoted `devices = { … }` (accept is the default anyway).
  const hook = ingress.length === 1 ? `device ${JSON.stringify(ingress[0])} priority 0 ; policy accept ;` : `devices = { ${ingress.map((d) => JSON.stringify(d)).join(', ')} } priority 0 ;`;
  return {
    device: name.slice('ingress.'.length),
    maps: [
      { name: 'services4', spec: 'type ipv4_addr . inet_proto . inet_service : verdict ;' },
      { name: 'services6', spec: 'type ipv6_addr . inet_proto . inet_service : verdict ;' },
      // `typeof … numgen`, not `jhash`: nft 1.0.6 crashes listing a map typed with jhash (the key is the same 32-bit integer).
      ...(['tcp', 'udp'] as const).map((p) => ({ name: `fwd4_${p}`, spec: `typeof ip daddr . ${p} dport . numgen inc mod 1 : ip daddr ;` })),
    ],
    chains: [
      {
        name,
        spec: `type filter hook ingress ${hook}`,
        rules: ['ip daddr . meta l4proto . th dport vmap @services4', 'ip6 daddr . meta l4proto . th dport vmap @services6'],
      },
    ],
  };
}

export interface NftPlanInput {
  desired: ReadonlyMap<string, ServiceObjects>;
  observed: NftObserved;
  /** Only these service ids (incremental); all when absent (full). */
  scope?: ReadonlySet<string>;
  base?: NftBase;
}

const STAGE: Record<NftOp['kind'], number> = {
  'delete-table': 0,
  'delete-element': 1,
  'flush-chain': 2,
  'delete-chain': 3,
  'delete-set': 4,
  'add-table': 5,
  'add-map': 6,
  'add-chain': 7,
  'add-set': 8,
  'add-rule': 9,
  'add-element': 10,
};

const elemId = (e: NftElement) => `${e.map}\u0000${e.key}\u0000${e.value}`;

function unchanged(want: ServiceObjects, have: ObservedService): boolean {
  if ((have.digest ?? '') !== want.digest) return false;
  if (have.chains.size !== want.chains.length) return false;
  for (const c of want.chains) if (have.chains.get(c.name) !== c.rules.length) return false;
  if (have.sets.size !== want.sets.length) return false;
  for (const s of want.sets) if (have.sets.get(s.name) !== s.spec) return false;
  if (have.elements.length !== want.elements.length) return false;
  const ids = new Set(have.elements.map(elemId));
  return want.elements.every((e) => ids.has(elemId(e)));
}

/** Appends the ops that turn `have` into `want` for one service (either may be absent). */
export function planService(want: ServiceObjects | undefined, have: ObservedService | undefined, ops: NftOp[]): void {
  if (want && have && unchanged(want, have)) return;
  const haveElems = new Set((have?.elements ?? []).map(elemId));
  const wantElems = new Set((want?.elements ?? []).map(elemId));
  for (const e of have?.elements ?? []) if (!wantElems.has(elemId(e))) ops.push({ kind: 'delete-element', element: e });
  for (const e of want?.elements ?? []) if (!haveElems.has(elemId(e))) ops.push({ kind: 'add-element', element: e });

  const wantChains = new Map((want?.chains ?? []).map((c) => [c.name, c]));
  for (const name of have?.chains.keys() ?? []) {
    ops.push({ kind: 'flush-chain', name });
    if (!wantChains.has(name)) ops.push({ kind: 'delete-chain', name });
  }
  for (const c of wantChains.values()) {
    if (!have?.chains.has(c.name)) ops.push({ kind: 'add-chain', name: c.name });
    for (const rule of c.rules) ops.push({ kind: 'add-rule', chain: c.name, rule });
  }

  const wantSets = new Map<string, NftSet>((want?.sets ?? []).map((s) => [s.name, s]));
  for (const [name, spec] of have?.sets ?? []) {
    // A set whose spec is unchanged is kept with its entries (clients keep their affinity).
    if (wantSets.get(name)?.spec !== spec) ops.push({ kind: 'delete-set', name });
  }
  for (const s of wantSets.values()) {
    if (have?.sets.get(s.name) !== s.spec) ops.push({ kind: 'add-set', name: s.name, spec: s.spec });
  }
}

export function planNft(input: NftPlanInput): NftOp[] {
  const ops = planSkeleton(input);
  const observed = replacedTable(input.observed, input.base) ? emptyObserved() : input.observed;
  const ids = input.scope ? [...input.scope] : [...new Set([...input.desired.keys(), ...observed.services.keys()])];
  for (const id of ids.sort()) planService(input.desired.get(id), observed.services.get(id), ops);
  return sortOps(ops);
}

/**
 * A table hooked on another device than `base` wants (an earlier run's
 * flag) is replaced as a whole: the skeleton deletes it, and its services
 * must then be planned as if the kernel held nothing.
 */
export function replacedTable(observed: NftObserved, base: NftBase = NFT_BASE): boolean {
  return base.device !== undefined && observed.table && observed.device !== base.device;
}

/**
 * The table, its global maps and base chains, and the group chains: those
 * the services in scope need, and (full: no scope) the deletion of those no
 * desired service uses. The per-service part is `planService`; a caller
 * that plans 10,000 services in slices (the full pass, between incremental
 * passes) runs this once, `planService` per slice, then `sortOps`.
 */
export function planSkeleton(input: NftPlanInput): NftOp[] {
  const base = input.base ?? NFT_BASE;
  const ops: NftOp[] = [];
  let obs = input.observed;
  if (replacedTable(obs, base)) {
    // Hooked on another device (an earlier run's flag): replaced as a whole, in the same transaction.
    ops.push({ kind: 'delete-table' });
    obs = emptyObserved();
  }
  if (!obs.table) ops.push({ kind: 'add-table' });
  for (const m of base.maps) if (!obs.maps.has(m.name)) ops.push({ kind: 'add-map', name: m.name, spec: m.spec });
  for (const c of base.chains) {
    const count = obs.baseChains.get(c.name);
    if (count === c.rules.length) continue;
    if (count === undefined) ops.push({ kind: 'add-chain', name: c.name, base: c.spec });
    else ops.push({ kind: 'flush-chain', name: c.name });
    for (const rule of c.rules) ops.push({ kind: 'add-rule', chain: c.name, rule });
  }
  // Group chains: created when a service in scope needs one; deleted only on a full pass, when no service uses them.
  const groups = new Map<string, NftChain>();
  if (input.scope) {
    for (const id of input.scope) for (const g of input.desired.get(id)?.groups ?? []) groups.set(g.name, g);
  } else for (const o of input.desired.values()) for (const g of o.groups) groups.set(g.name, g);
  for (const g of [...groups.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const count = obs.groups.get(g.name);
    if (count === g.rules.length) continue;
    if (count === undefined) ops.push({ kind: 'add-chain', name: g.name });
    else ops.push({ kind: 'flush-chain', name: g.name });
    for (const rule of g.rules) ops.push({ kind: 'add-rule', chain: g.name, rule });
  }
  if (!input.scope) {
    for (const name of [...obs.groups.keys()].sort()) {
      if (!groups.has(name)) ops.push({ kind: 'flush-chain', name }, { kind: 'delete-chain', name });
    }
  }
  return ops;
}

/**
 * Puts ops in the order one transaction needs (deletions, then the
 * skeleton, then rules and elements). A stable sort keeps each stage in
 * service order, which keeps golden scripts readable — except for element
 * additions, which are grouped by map: nft then gets one `add element`
 * statement per map instead of one per service (20,000 statements → 12 at
 * 10,000 services; nft's parse and evaluation of the first load went from
 * 1.26 to ~1.0 s).
 */
export function sortOps(ops: NftOp[]): NftOp[] {
  const mapOf = (op: NftOp) => (op.kind === 'add-element' ? op.element.map : '');
  return ops
    .map((op, i) => ({ op, i }))
    .sort((a, b) => STAGE[a.op.kind] - STAGE[b.op.kind] || (mapOf(a.op) < mapOf(b.op) ? -1 : mapOf(a.op) > mapOf(b.op) ? 1 : 0) || a.i - b.i)
    .map((x) => x.op);
}

export interface NftTablesInput {
  desired: ReadonlyMap<string, ServiceObjects>;
  /** `inet <table>`. */
  observed: NftObserved;
  /** `netdev <table>` (empty when it was not read). */
  observedDr: NftObserved;
  scope?: ReadonlySet<string>;
  /** `--nft-dr-device`; unset, the netdev table is not planned. */
  drDevice?: string;
  /** `--nft-dr-ingress` (default: the DR device). */
  drIngress?: readonly string[];
}

/**
 * Both tables: each service's objects are planned in the table(s) they are
 * for and removed from the other, so a service that starts or stops routing
 * directly moves in one transaction.
 */
export function planTables(input: NftTablesInput): NftOp[] {
  const inetPart = new Map<string, ServiceObjects>();
  const drPart = new Map<string, ServiceObjects>();
  for (const [id, o] of input.desired) {
    if (o.family === 'netdev') drPart.set(id, o);
    else inetPart.set(id, o);
    if (o.dr) drPart.set(id, o.dr);
  }
  const scope = input.scope ? { scope: input.scope } : {};
  const inet = planNft({ desired: inetPart, observed: input.observed, ...scope });
  if (input.drDevice === undefined) return inet;
  const dr = planNft({ desired: drPart, observed: input.observedDr, ...scope, base: drBase(input.drDevice, input.drIngress) });
  return [...inet, ...dr.map((op): NftOp => ({ ...op, family: 'netdev' }))];
}

/** The ops as one nft script for `nft -f -` (one transaction: all or nothing). */
export function renderNftScript(table: string, ops: NftOp[]): string {
  const lines: string[] = [];
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i];
    const t = `${op.family ?? 'inet'} ${table}`;
    switch (op.kind) {
      case 'delete-table':
        lines.push(`delete table ${t}`);
        break;
      case 'add-table':
        lines.push(`add table ${t}`);
        break;
      case 'add-map':
        lines.push(`add map ${t} ${op.name} { ${op.spec} }`);
        break;
      case 'add-chain':
        lines.push(op.base ? `add chain ${t} ${op.name} { ${op.base} }` : `add chain ${t} ${op.name}`);
        break;
      case 'flush-chain':
        lines.push(`flush chain ${t} ${op.name}`);
        break;
      case 'delete-chain':
        lines.push(`delete chain ${t} ${op.name}`);
        break;
      case 'add-set':
        lines.push(`add set ${t} ${op.name} { ${op.spec} }`);
        break;
      case 'delete-set':
        lines.push(`delete set ${t} ${op.name}`);
        break;
      case 'add-rule':
        lines.push(`add rule ${t} ${op.chain} ${op.rule}`);
        break;
      case 'add-element':
      case 'delete-element': {
        // Consecutive elements of one map go in one statement.
        const group = [op.element];
        while (i + 1 < ops.length && ops[i + 1].kind === op.kind && ops[i + 1].family === op.family && (ops[i + 1] as typeof op).element.map === op.element.map) {
          group.push((ops[++i] as typeof op).element);
        }
        const body = group.map((e) => (op.kind === 'add-element' ? `${e.key} : ${e.value}` : e.key)).join(', ');
        lines.push(`${op.kind === 'add-element' ? 'add' : 'delete'} element ${t} ${op.element.map} { ${body} }`);
        break;
      }
    }
  }
  return lines.map((l) => `${l}\n`).join('');
}
