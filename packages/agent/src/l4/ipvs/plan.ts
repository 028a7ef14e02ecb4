/**
 * The pure IPVS planner: desired virtual services + what `ipvsadm -Sn` shows
 * → the operations that make the kernel match, touching only services this
 * agent owns. Ownership is explicit (IPVS objects carry no label): the set of
 * virtual-service keys the agent created, which the caller persists (the
 * daemon keeps it in etcd) and passes back in on the next plan. A service in
 * the kernel that is neither owned nor desired is foreign and left alone —
 * there is no `ipvsadm -C` anywhere in Switchyard.
 *
 * Deleting a real server drains it: its weight goes to 0 (no new
 * connections) and it is removed once `ipvsadm -Ln` counts no connections
 * on it, or after the drain timeout. Deleting the whole service removes it
 * at once (the VIP closes).
 */
import { planAddresses, type AddressOp } from '../local-addresses.js';
import { destKey, virtualKey, type IpvsDest, type IpvsServiceSpec, type IpvsVirtual } from './model.js';

export type IpvsOp =
  | { kind: 'add-service'; service: IpvsServiceSpec }
  | { kind: 'edit-service'; service: IpvsServiceSpec }
  | { kind: 'delete-service'; service: IpvsServiceSpec }
  | { kind: 'add-dest'; service: IpvsServiceSpec; dest: IpvsDest }
  | { kind: 'edit-dest'; service: IpvsServiceSpec; dest: IpvsDest }
  | { kind: 'delete-dest'; service: IpvsServiceSpec; dest: IpvsDest }
  /** Make a service address local on the agent's device (IPVS only sees local addresses), or drop it. */
  | AddressOp;

export interface IpvsPlanInput {
  desired: IpvsVirtual[];
  observed: IpvsVirtual[];
  /** Keys (`virtualKey`) of the services this agent created. */
  owned: ReadonlySet<string>;
  /** Addresses currently on the agent's device. */
  observedAddresses: readonly string[];
  /** Destinations being drained (`destKey` → drain start, ms). */
  draining?: ReadonlyMap<string, number>;
  /** Connections per destination (`destKey`), from `ipvsadm -Ln`; absent = unknown. */
  connections?: ReadonlyMap<string, number>;
  now?: number;
  drainTimeoutMs?: number;
}

export interface IpvsPlan {
  ops: IpvsOp[];
  /** Ownership after the ops are applied. */
  owned: Set<string>;
  /** Destinations still draining after the ops are applied. */
  draining: Map<string, number>;
}

function sameService(a: IpvsServiceSpec, b: IpvsServiceSpec): boolean {
  return a.scheduler === b.scheduler && a.persistence === b.persistence && a.netmask === b.netmask;
}

function sameDest(a: IpvsDest, b: IpvsDest): boolean {
  return a.forwarder === b.forwarder && a.weight === b.weight && a.upperThreshold === b.upperThreshold && a.lowerThreshold === b.lowerThreshold;
}

function spec(v: IpvsVirtual): IpvsServiceSpec {
  return { protocol: v.protocol, address: v.address, port: v.port, scheduler: v.scheduler, persistence: v.persistence, netmask: v.netmask };
}

const epOf = (d: Pick<IpvsDest, 'address' | 'port'>) => `${d.address}|${d.port}`;

/** Ops in the order they must run: addresses first, dest removals before service removals, adds last. */
const ORDER: Record<IpvsOp['kind'], number> = {
  'add-address': 0,
  'delete-dest': 1,
  'delete-service': 2,
  'edit-service': 3,
  'add-service': 4,
  'edit-dest': 5,
  'add-dest': 6,
  'delete-address': 7,
};

export function planIpvs(input: IpvsPlanInput): IpvsPlan {
  const now = input.now ?? Date.now();
  const drainTimeout = input.drainTimeoutMs ?? 30_000;
  const ops: IpvsOp[] = [];
  const owned = new Set(input.owned);
  const draining = new Map<string, number>();
  const observed = new Map(input.observed.map((v) => [virtualKey(v), v]));
  const desired = new Map(input.desired.map((v) => [virtualKey(v), v]));

  for (const [key, want] of desired) {
    const have = observed.get(key);
    owned.add(key);
    if (!have) {
      ops.push({ kind: 'add-service', service: spec(want) });
      for (const d of want.dests) ops.push({ kind: 'add-dest', service: spec(want), dest: d });
      continue;
    }
    if (!sameService(want, have)) ops.push({ kind: 'edit-service', service: spec(want) });
    const haveDests = new Map(have.dests.map((d) => [epOf(d), d]));
    const wantDests = new Map(want.dests.map((d) => [epOf(d), d]));
    for (const [ep, d] of wantDests) {
      const cur = haveDests.get(ep);
      if (!cur) ops.push({ kind: 'add-dest', service: spec(want), dest: d });
      else if (!sameDest(d, cur)) ops.push({ kind: 'edit-dest', service: spec(want), dest: d });
    }
    for (const [ep, cur] of haveDests) {
      if (wantDests.has(ep)) continue;
      const dk = destKey(want, cur);
      const since = input.draining?.get(dk) ?? now;
      const conns = input.connections?.get(dk);
      if (conns === 0 || now - since >= drainTimeout) {
        ops.push({ kind: 'delete-dest', service: spec(want), dest: cur });
        continue;
      }
      draining.set(dk, since);
      if (cur.weight !== 0) ops.push({ kind: 'edit-dest', service: spec(want), dest: { ...cur, weight: 0 } });
    }
  }

  for (const [key, have] of observed) {
    if (desired.has(key) || !owned.has(key)) continue;
    ops.push({ kind: 'delete-service', service: spec(have) });
  }
  // What is not desired is deleted above (or already gone): no longer ours.
  for (const key of [...owned]) if (!desired.has(key)) owned.delete(key);

  // Addresses: every desired service address is local; nothing else is (the device is the agent's own).
  ops.push(...planAddresses(input.desired.map((v) => v.address), input.observedAddresses));

  ops.sort((a, b) => ORDER[a.kind] - ORDER[b.kind]);
  return { ops, owned, draining };
}

const protoFlag = (s: IpvsServiceSpec) => (s.protocol === 'udp' ? '-u' : '-t');

function serviceArgs(s: IpvsServiceSpec): string[] {
  const args = [protoFlag(s), virtualKey(s).split(' ')[1], '-s', s.scheduler];
  if (s.persistence > 0) {
    args.push('-p', String(s.persistence));
    if (s.netmask) args.push('-M', s.netmask);
  }
  return args;
}

function destArgs(s: IpvsServiceSpec, d: IpvsDest, edit: boolean): string[] {
  const args = [protoFlag(s), virtualKey(s).split(' ')[1], '-r', virtualKey({ ...s, address: d.address, port: d.port }).split(' ')[1], `-${d.forwarder}`, '-w', String(d.weight)];
  // On an edit the thresholds are always given, so a threshold going back to 0 is cleared.
  if (edit || d.upperThreshold) args.push('-x', String(d.upperThreshold));
  if (edit || d.lowerThreshold) args.push('-y', String(d.lowerThreshold));
  return args;
}

/** One op as an `ipvsadm -R` line (undefined for address ops, which are `ip`'s). */
export function ipvsadmLine(op: IpvsOp): string | undefined {
  switch (op.kind) {
    case 'add-service':
      return ['-A', ...serviceArgs(op.service)].join(' ');
    case 'edit-service':
      return ['-E', ...serviceArgs(op.service)].join(' ');
    case 'delete-service':
      return ['-D', protoFlag(op.service), virtualKey(op.service).split(' ')[1]].join(' ');
    case 'add-dest':
      return ['-a', ...destArgs(op.service, op.dest, false)].join(' ');
    case 'edit-dest':
      return ['-e', ...destArgs(op.service, op.dest, true)].join(' ');
    case 'delete-dest':
      return ['-d', protoFlag(op.service), virtualKey(op.service).split(' ')[1], '-r', virtualKey({ ...op.service, address: op.dest.address, port: op.dest.port }).split(' ')[1]].join(' ');
    default:
      return undefined;
  }
}

/** The rules of a set of virtual services exactly as `ipvsadm -Sn` prints them (for comparisons). */
export function renderIpvsRules(virtuals: IpvsVirtual[]): string {
  const lines: string[] = [];
  for (const v of virtuals) {
    lines.push(['-A', ...serviceArgs(v)].join(' '));
    for (const d of v.dests) lines.push(['-a', ...destArgs(v, d, false)].join(' '));
  }
  return lines.map((l) => `${l}\n`).join('');
}
