/**
 * plan(desired, observed) → ops: removals first (innermost first), then
 * creations (outermost first). Pure; `applyOps` folds executed ops into the
 * observed state so a partial sync needs no kernel read.
 *
 * Ownership: in the host context only links with the role's prefixes are
 * touched; inside a container only links named after a CEN the cluster knows,
 * addresses on those, and a default route through one of them; a namespace is
 * deleted only if this agent created it (`created`).
 */
import { levNames } from '@switchyard/shared';
import type { DesiredTopology, ObservedTopology, TopologyOp } from './model.js';

export interface PlanContext {
  /** Namespaces this agent created (recorded in etcd). */
  created: Set<string>;
  /** Every CEN id in the cluster: container links with these names are the role's. */
  knownCens: Set<string>;
}

export function plan(d: DesiredTopology, o: ObservedTopology, ctx: PlanContext): TopologyOp[] {
  const removals: TopologyOp[] = [];
  const creations: TopologyOp[] = [];

  // ----- host context: which owned links stay -----
  const keepHost = new Set<string>();
  // A doomed link (marked for a group deletion that never ran) is deleted, even if wanted: it would go with the next one.
  const usable = (name: string) => {
    const l = o.hostLinks.get(name);
    return l && !l.doomed ? l : undefined;
  };
  for (const [name] of d.bridges) if (usable(name)?.kind === 'bridge') keepHost.add(name);
  for (const [name, v] of d.vxlans) {
    const l = usable(name);
    if (l?.kind === 'vxlan' && l.vni === v.vni && l.master === v.bridge && keepHost.has(v.bridge)) keepHost.add(name);
  }
  for (const [name, v] of d.veths) {
    const l = usable(name);
    // The container end vanishes with its namespace; a host end whose peer is gone is gone too.
    if (l?.kind === 'veth' && l.master === v.bridge && keepHost.has(v.bridge) && o.namespaces.has(v.ns) && o.nsLinks.get(v.ns)?.has(v.peer) !== false) keepHost.add(name);
  }
  // ----- namespaces -----
  const nsGoing = new Set([...o.namespaces].filter((ns) => ctx.created.has(ns) && !d.namespaces.has(ns)));
  /** Host end → the going namespace holding its peer (observed there). */
  const peerGoing = new Map<string, string>();
  for (const ns of nsGoing) for (const [name, l] of o.nsLinks.get(ns) ?? []) if (l.kind === 'veth') peerGoing.set(levNames.vethHost(ns, name), ns);

  const hostDeleted = new Set<string>();
  for (const [name, l] of o.hostLinks) {
    if (!keepHost.has(name)) {
      const goesWith = l.kind === 'veth' ? peerGoing.get(name) : undefined;
      removals.push({ op: 'link-del', name, ...(goesWith ? { goesWith } : {}) });
      hostDeleted.add(name);
    }
  }

  // ----- inside containers: links, addresses, default routes -----
  for (const [ns, links] of o.nsLinks) {
    if (nsGoing.has(ns) || !o.namespaces.has(ns)) continue;
    const want = d.ifaces.get(ns);
    const route = o.defaultRoutes.get(ns);
    const wantRoute = d.defaultRoutes.get(ns);
    if (route?.dev && ctx.knownCens.has(route.dev) && (!wantRoute || wantRoute.dev !== route.dev || wantRoute.via !== route.via)) {
      removals.push({ op: 'route-default-del', ns });
    }
    for (const [name, l] of links) {
      if (!ctx.knownCens.has(name) || l.kind !== 'veth') continue;
      const w = want?.get(name);
      if (!w || !endStays(d, o, ns, name, hostDeleted)) {
        // A bridge-wired end goes with its host end; delete only ends whose host end is not being deleted.
        if (!hostDeleted.has(levNames.vethHost(ns, name))) removals.push({ op: 'link-del', ns, name });
        continue;
      }
      for (const a of l.addrs) if (!w.addrs.includes(a)) removals.push({ op: 'addr-del', ns, dev: name, cidr: a });
    }
  }
  for (const [name, l] of o.hostLinks) {
    const b = d.bridges.get(name);
    if (!b || !keepHost.has(name)) continue;
    for (const a of l.addrs) if (!b.addrs.includes(a)) removals.push({ op: 'addr-del', dev: name, cidr: a });
  }
  for (const [name, dsts] of o.flood) {
    const v = d.vxlans.get(name);
    if (!v || !keepHost.has(name)) continue;
    for (const dst of dsts) if (!v.remotes.includes(dst)) removals.push({ op: 'fdb-del', dev: name, dst });
  }
  for (const ns of [...nsGoing].sort()) removals.push({ op: 'netns-del', ns });
  for (const [dst, dev] of o.hostRoutes) {
    if (d.hostRoutes.get(dst) !== dev && keepHost.has(dev)) removals.push({ op: 'route-host-del', dst, dev });
  }
  for (const dev of o.proxyArp) if (keepHost.has(dev) && !d.proxyArp.includes(dev)) removals.push({ op: 'proxy-arp', dev, on: false });
  if (o.isolation && d.isolation.length === 0) removals.push({ op: 'isolation', bridges: [] });
  if (o.nat && d.nat.length === 0) removals.push({ op: 'nat', subnets: [] });

  // ----- creations -----
  for (const ns of [...d.namespaces].sort()) if (!o.namespaces.has(ns)) creations.push({ op: 'netns-add', ns });
  const mtuFix = (want: number | undefined, have: number | undefined, ns: string | undefined, name: string) => {
    if (want !== undefined && have !== want) creations.push({ op: 'link-mtu', ...(ns ? { ns } : {}), name, mtu: want });
  };
  for (const [name, b] of d.bridges) {
    if (!keepHost.has(name)) creations.push({ op: 'bridge-add', name });
    const have = keepHost.has(name) ? (o.hostLinks.get(name)?.addrs ?? []) : [];
    for (const a of b.addrs) if (!have.includes(a)) creations.push({ op: 'addr-add', dev: name, cidr: a });
  }
  for (const [name, v] of d.vxlans) {
    if (!keepHost.has(name)) creations.push({ op: 'vxlan-add', name, vni: v.vni, local: v.local, master: v.bridge, ...(v.mtu ? { mtu: v.mtu } : {}) });
    else mtuFix(v.mtu, o.hostLinks.get(name)?.mtu, undefined, name);
    const have = keepHost.has(name) ? (o.flood.get(name) ?? []) : [];
    for (const dst of v.remotes) if (!have.includes(dst)) creations.push({ op: 'fdb-add', dev: name, dst });
  }
  for (const [name, v] of d.veths) {
    if (!keepHost.has(name)) creations.push({ op: 'veth-add', name, master: v.bridge, peer: v.peer, peerNs: v.ns, ...(v.mtu ? { mtu: v.mtu } : {}) });
    else mtuFix(v.mtu, o.hostLinks.get(name)?.mtu, undefined, name);
  }
  for (const [cenId, w] of d.wires) {
    const stays = [w.a, w.b].every((ns) => o.namespaces.has(ns) && !nsGoing.has(ns) && o.nsLinks.get(ns)?.get(cenId)?.kind === 'veth' && endStays(d, o, ns, cenId, hostDeleted));
    if (!stays) creations.push({ op: 'wire-add', name: cenId, a: w.a, b: w.b });
  }
  for (const [ns, ifs] of [...d.ifaces].sort(([a], [b]) => (a < b ? -1 : 1))) {
    for (const [name, w] of ifs) {
      const l = linkAfterRemovals(d, o, ns, name, hostDeleted);
      // A new end gets its MTU from veth-add; one in place is changed.
      if (l) mtuFix(w.mtu, l.mtu, ns, name);
      if (!l?.up) creations.push({ op: 'link-up', ns, name });
      for (const a of w.addrs) if (!l?.addrs.includes(a)) creations.push({ op: 'addr-add', ns, dev: name, cidr: a });
    }
    const r = d.defaultRoutes.get(ns);
    const have = o.defaultRoutes.get(ns);
    if (r && (have?.dev !== r.dev || have?.via !== r.via || !linkAfterRemovals(d, o, ns, r.dev, hostDeleted))) creations.push({ op: 'route-default', ns, dev: r.dev, via: r.via });
  }
  for (const [dst, dev] of d.hostRoutes) if (!keepHost.has(dev) || o.hostRoutes.get(dst) !== dev) creations.push({ op: 'route-host', dst, dev });
  for (const dev of d.proxyArp) if (!keepHost.has(dev) || !o.proxyArp.has(dev)) creations.push({ op: 'proxy-arp', dev, on: true });
  if (d.isolation.length > 0 && ((o.isolation ?? []).join() !== d.isolation.join() || joinsKey(o.joins ?? []) !== joinsKey(d.joins))) {
    creations.push({ op: 'isolation', bridges: d.isolation, ...(d.joins.length > 0 ? { joins: d.joins } : {}) });
  }
  if (d.nat.length > 0 && (o.nat ?? []).join() !== d.nat.join()) creations.push({ op: 'nat', subnets: d.nat });
  return [...removals, ...creations];
}

const joinsKey = (joins: { subnet: string; bridges: string[] }[]) => joins.map((j) => `${j.subnet}=${j.bridges.join()}`).join(';');

/** Does the container end `name` in `ns` survive the removals (its host end kept, or it is a wire end in place)? */
function endStays(d: DesiredTopology, o: ObservedTopology, ns: string, name: string, hostDeleted: Set<string>): boolean {
  const wire = d.wires.get(name);
  if (wire && (wire.a === ns || wire.b === ns)) return true;
  const hostEnd = levNames.vethHost(ns, name);
  return d.veths.has(hostEnd) && o.hostLinks.has(hostEnd) && !hostDeleted.has(hostEnd);
}

function linkAfterRemovals(d: DesiredTopology, o: ObservedTopology, ns: string, name: string, hostDeleted: Set<string>) {
  const l = o.nsLinks.get(ns)?.get(name);
  return l && o.namespaces.has(ns) && endStays(d, o, ns, name, hostDeleted) ? l : undefined;
}

/** The observed state after `ops` ran successfully. */
export function applyOps(o: ObservedTopology, ops: TopologyOp[]): ObservedTopology {
  const next: ObservedTopology = {
    namespaces: new Set(o.namespaces),
    hostLinks: new Map([...o.hostLinks].map(([k, v]) => [k, { ...v, addrs: [...v.addrs] }])),
    flood: new Map([...o.flood].map(([k, v]) => [k, [...v]])),
    nsLinks: new Map([...o.nsLinks].map(([ns, m]) => [ns, new Map([...m].map(([k, v]) => [k, { ...v, addrs: [...v.addrs] }]))])),
    defaultRoutes: new Map(o.defaultRoutes),
    isolation: o.isolation ? [...o.isolation] : undefined,
    nat: o.nat ? [...o.nat] : undefined,
    joins: o.joins?.map((j) => ({ subnet: j.subnet, bridges: [...j.bridges] })),
    hostRoutes: new Map(o.hostRoutes),
    proxyArp: new Set(o.proxyArp),
  };
  const nsMap = (ns: string) => {
    let m = next.nsLinks.get(ns);
    if (!m) next.nsLinks.set(ns, (m = new Map()));
    return m;
  };
  for (const op of ops) {
    switch (op.op) {
      case 'netns-add':
        next.namespaces.add(op.ns);
        next.nsLinks.set(op.ns, new Map());
        break;
      case 'netns-del':
        next.namespaces.delete(op.ns);
        next.nsLinks.delete(op.ns);
        next.defaultRoutes.delete(op.ns);
        break;
      case 'bridge-add':
        next.hostLinks.set(op.name, { kind: 'bridge', up: true, addrs: [] });
        break;
      case 'vxlan-add':
        next.hostLinks.set(op.name, { kind: 'vxlan', up: true, master: op.master, vni: op.vni, ...(op.mtu ? { mtu: op.mtu } : {}), addrs: [] });
        next.flood.set(op.name, []);
        break;
      case 'veth-add':
        next.hostLinks.set(op.name, { kind: 'veth', up: true, master: op.master, ...(op.mtu ? { mtu: op.mtu } : {}), addrs: [] });
        nsMap(op.peerNs).set(op.peer, { kind: 'veth', up: false, ...(op.mtu ? { mtu: op.mtu } : {}), addrs: [] });
        break;
      case 'wire-add':
        nsMap(op.a).set(op.name, { kind: 'veth', up: false, addrs: [] });
        nsMap(op.b).set(op.name, { kind: 'veth', up: false, addrs: [] });
        break;
      case 'link-del':
        if (op.ns) nsMap(op.ns).delete(op.name);
        else {
          next.hostLinks.delete(op.name);
          next.flood.delete(op.name);
          for (const [ns, m] of next.nsLinks) {
            for (const name of [...m.keys()]) if (levNames.vethHost(ns, name) === op.name) m.delete(name);
          }
          for (const [name, l] of next.hostLinks) if (l.master === op.name) next.hostLinks.set(name, { ...l, master: undefined });
          for (const [dst, dev] of next.hostRoutes) if (dev === op.name) next.hostRoutes.delete(dst);
          next.proxyArp.delete(op.name);
        }
        break;
      case 'link-up': {
        const l = nsMap(op.ns).get(op.name);
        if (l) l.up = true;
        break;
      }
      case 'link-mtu': {
        const l = op.ns ? nsMap(op.ns).get(op.name) : next.hostLinks.get(op.name);
        if (l) l.mtu = op.mtu;
        break;
      }
      case 'addr-add': {
        const l = op.ns ? nsMap(op.ns).get(op.dev) : next.hostLinks.get(op.dev);
        if (l && !l.addrs.includes(op.cidr)) l.addrs.push(op.cidr);
        break;
      }
      case 'addr-del': {
        const l = op.ns ? nsMap(op.ns).get(op.dev) : next.hostLinks.get(op.dev);
        if (l) l.addrs = l.addrs.filter((a) => a !== op.cidr);
        break;
      }
      case 'fdb-add':
        next.flood.set(op.dev, [...(next.flood.get(op.dev) ?? []), op.dst]);
        break;
      case 'fdb-del':
        next.flood.set(op.dev, (next.flood.get(op.dev) ?? []).filter((x) => x !== op.dst));
        break;
      case 'route-default':
        next.defaultRoutes.set(op.ns, { dev: op.dev, via: op.via });
        break;
      case 'route-default-del':
        next.defaultRoutes.delete(op.ns);
        break;
      case 'isolation':
        next.isolation = op.bridges.length > 0 ? [...op.bridges] : undefined;
        next.joins = op.bridges.length > 0 ? (op.joins ?? []).map((j) => ({ subnet: j.subnet, bridges: [...j.bridges] })) : undefined;
        break;
      case 'route-host':
        next.hostRoutes.set(op.dst, op.dev);
        break;
      case 'route-host-del':
        next.hostRoutes.delete(op.dst);
        break;
      case 'proxy-arp':
        if (op.on) next.proxyArp.add(op.dev);
        else next.proxyArp.delete(op.dev);
        break;
      case 'nat':
        next.nat = op.subnets.length > 0 ? [...op.subnets] : undefined;
        break;
    }
  }
  return next;
}
