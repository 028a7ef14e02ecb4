/**
 * What the topology role wants on one host, what it found, and the ops
 * between them. All plain data: tests print and compare them.
 *
 * "Host context" is the host's network (the agent's --netns, or the
 * machine's own); container namespaces are named namespaces of the machine.
 */
import {
  levNames,
  type StoredCen,
  type StoredCin,
  type StoredContainer,
} from '@switchyard/shared';

export interface DesiredTopology {
  /** Namespaces of the containers placed on this host. */
  namespaces: Set<string>;
  bridges: Map<string, { cenId: string; addrs: string[] }>;
  /** Host end → its bridge and the container end; `mtu` on a VXLAN-backed CEN (both ends). */
  veths: Map<string, { cenId: string; bridge: string; ns: string; peer: string; mtu?: number }>;
  /** "wire" CENs with both containers here: one veth pair between two namespaces. */
  wires: Map<string, { cenId: string; a: string; b: string }>;
  vxlans: Map<string, { cenId: string; bridge: string; vni: number; local: string; remotes: string[]; mtu?: number }>;
  /** Container namespace → its CEN interfaces, their addresses and (VXLAN-backed CENs) MTU. */
  ifaces: Map<string, Map<string, { addrs: string[]; mtu?: number }>>;
  defaultRoutes: Map<string, { dev: string; via: string }>;
  /** Bridges kept apart at L3 (CINs stay apart even where the host forwards); sorted. */
  isolation: string[];
  /**
   * CIN subnets masqueraded on their way out of the host: those whose
   * gateway is the default route of a container here; sorted.
   */
  nat: string[];
  /**
   * CINs whose CENs have two or more bridges here: routed between those
   * bridges (the isolation table lets their subnet through, sorted by subnet).
   */
  joins: CinJoin[];
  /** Address → bridge of its CEN, for every address of a joined CIN: /32 routes that tell the bridges apart. */
  hostRoutes: Map<string, string>;
  /** Bridges answering ARP for addresses behind another bridge of their CIN; sorted. */
  proxyArp: string[];
  /** What each object needs, for per-object status. */
  objects: { cens: string[]; cins: string[]; containers: string[] };
}

/** A CIN routed between several CEN bridges of this host. */
export interface CinJoin {
  subnet: string;
  /** Sorted. */
  bridges: string[];
}

export interface ObservedTopology {
  namespaces: Set<string>;
  /** Host-context links the role owns (levNames.isOwnedLink); `doomed`: found in the delete group (execute.ts DELETE_GROUP). */
  hostLinks: Map<string, { kind?: string; master?: string; up: boolean; vni?: number; mtu?: number; addrs: string[]; doomed?: boolean }>;
  /** VXLAN device → remote VTEPs it floods to. */
  flood: Map<string, string[]>;
  /** Container namespace → its links (all of them: the role never deletes one it cannot attribute). */
  nsLinks: Map<string, Map<string, { kind?: string; up: boolean; mtu?: number; addrs: string[] }>>;
  defaultRoutes: Map<string, { dev?: string; via?: string }>;
  /** Bridges named in the isolation table, sorted; undefined when there is no table. */
  isolation?: string[];
  /** Subnets the NAT table masquerades, sorted; undefined when there is no table. */
  nat?: string[];
  /** CINs the isolation table routes between bridges (undefined: no table). */
  joins?: CinJoin[];
  /** /32 routes in the host context through the role's bridges: address → bridge. */
  hostRoutes: Map<string, string>;
  /** The role's bridges with proxy ARP on. */
  proxyArp: Set<string>;
}

export type TopologyOp =
  | { op: 'netns-add'; ns: string }
  | { op: 'netns-del'; ns: string }
  | { op: 'bridge-add'; name: string }
  | { op: 'vxlan-add'; name: string; vni: number; local: string; master: string; mtu?: number }
  | { op: 'veth-add'; name: string; master: string; peer: string; peerNs: string; mtu?: number }
  | { op: 'wire-add'; name: string; a: string; b: string }
  /**
   * `ns` absent: the host context. `goesWith`: a host veth end whose peer is
   * in that container namespace, which this plan deletes — the kernel deletes
   * the pair with the namespace, so an executor may leave it to the kernel.
   */
  | { op: 'link-del'; ns?: string; name: string; goesWith?: string }
  | { op: 'link-up'; ns: string; name: string }
  /** `ns` absent: the host context. */
  | { op: 'link-mtu'; ns?: string; name: string; mtu: number }
  | { op: 'addr-add'; ns?: string; dev: string; cidr: string }
  | { op: 'addr-del'; ns?: string; dev: string; cidr: string }
  | { op: 'fdb-add'; dev: string; dst: string }
  | { op: 'fdb-del'; dev: string; dst: string }
  | { op: 'route-default'; ns: string; dev: string; via: string }
  | { op: 'route-default-del'; ns: string }
  /** Rewrite the isolation table for these bridges and joined CINs (no bridges: delete it). */
  | { op: 'isolation'; bridges: string[]; joins?: CinJoin[] }
  | { op: 'route-host'; dst: string; dev: string }
  | { op: 'route-host-del'; dst: string; dev: string }
  | { op: 'proxy-arp'; dev: string; on: boolean }
  /** Rewrite the NAT table for these subnets (none: delete it). */
  | { op: 'nat'; subnets: string[] };

export interface TopologyInput {
  hostId: string;
  /** This host's underlay address (VXLAN local end), if known. */
  underlay?: string;
  /** MTU of the interface holding the underlay address, if known: VXLAN-backed CENs get it less the encapsulation. */
  underlayMtu?: number;
  /** Host id → underlay address of every agent that published one. */
  underlays: Map<string, string>;
  cens: StoredCen[];
  cins: StoredCin[];
  containers: StoredContainer[];
}

export function emptyObserved(): ObservedTopology {
  return { namespaces: new Set(), hostLinks: new Map(), flood: new Map(), nsLinks: new Map(), defaultRoutes: new Map(), hostRoutes: new Map(), proxyArp: new Set() };
}

/**
 * Bytes VXLAN adds to each frame on the underlay: inner Ethernet 14 + VXLAN
 * 8 + UDP 8 + the outer IP header (20 for IPv4, 40 for IPv6) — the kernel's
 * VXLAN_HEADROOM / VXLAN6_HEADROOM.
 */
export function vxlanOverhead(underlay: string): number {
  return underlay.includes(':') ? 70 : 50;
}

/** The desired topology of host `hostId` from the cluster's Leviathan records. */
export function desiredFor(input: TopologyInput): DesiredTopology {
  const d: DesiredTopology = {
    namespaces: new Set(),
    bridges: new Map(),
    veths: new Map(),
    wires: new Map(),
    vxlans: new Map(),
    ifaces: new Map(),
    defaultRoutes: new Map(),
    isolation: [],
    nat: [],
    joins: [],
    hostRoutes: new Map(),
    proxyArp: [],
    objects: { cens: [], cins: [], containers: [] },
  };
  const hostOf = new Map(input.containers.map((c) => [c.containerID, c.host]));
  const local = (id: string) => hostOf.get(id) === input.hostId;
  const iface = (ns: string, name: string) => {
    let m = d.ifaces.get(ns);
    if (!m) d.ifaces.set(ns, (m = new Map()));
    let i = m.get(name);
    if (!i) m.set(name, (i = { addrs: [] }));
    return i;
  };

  for (const c of input.containers) {
    if (c.host !== input.hostId) continue;
    d.namespaces.add(c.containerID);
    d.objects.containers.push(c.containerID);
  }

  for (const cen of [...input.cens].sort((a, b) => (a.cenID < b.cenID ? -1 : 1))) {
    if (!cen.made) continue;
    const members = cen.contIDs.filter((id) => hostOf.has(id));
    const here = members.filter(local);
    if (here.length === 0) continue;
    d.objects.cens.push(cen.cenID);
    // A wire needs both ends on this host; across hosts it is wired as a bridge + VXLAN.
    if (cen.wiring === 'wire' && members.length === 2 && here.length === 2) {
      const [a, b] = [...here].sort();
      d.wires.set(cen.cenID, { cenId: cen.cenID, a, b });
      iface(a, cen.cenID);
      iface(b, cen.cenID);
      continue;
    }
    const bridge = levNames.bridge(cen.cenID);
    d.bridges.set(bridge, { cenId: cen.cenID, addrs: [] });
    for (const id of here) {
      d.veths.set(levNames.vethHost(id, cen.cenID), { cenId: cen.cenID, bridge, ns: id, peer: levNames.containerIf(cen.cenID) });
      iface(id, levNames.containerIf(cen.cenID));
    }
    const remoteHosts = [...new Set(members.filter((id) => !local(id)).map((id) => hostOf.get(id) as string))].sort();
    const remotes = remoteHosts.map((h) => input.underlays.get(h)).filter((a): a is string => !!a);
    if (remotes.length > 0 && input.underlay) {
      const mtu = input.underlayMtu === undefined ? undefined : input.underlayMtu - vxlanOverhead(input.underlay);
      d.vxlans.set(levNames.vxlan(cen.cenID), { cenId: cen.cenID, bridge, vni: cen.vni, local: input.underlay, remotes, ...(mtu ? { mtu } : {}) });
      // Every port of the bridge, and the container ends, at the VXLAN's MTU: a bridge
      // silently drops a frame too big for its outgoing port, so a container must
      // never send one (no ICMP "fragmentation needed" comes back from a bridge).
      if (mtu) {
        for (const id of here) {
          (d.veths.get(levNames.vethHost(id, cen.cenID)) as { mtu?: number }).mtu = mtu;
          iface(id, levNames.containerIf(cen.cenID)).mtu = mtu;
        }
      }
    }
  }
  d.isolation = [...d.bridges.keys()].sort();

  const madeCens = new Set(d.objects.cens);
  const containerById = new Map(input.containers.map((c) => [c.containerID, c]));
  for (const cin of [...input.cins].sort((a, b) => (a.cinID < b.cinID ? -1 : 1))) {
    if (!cin.made || !cin.subnet) continue;
    const prefix = cin.subnet.cidr.split('/')[1];
    let touches = false;
    // A CIN over several CENs: each CEN is its own L2 segment, so the host
    // routes between their bridges — a /32 per address (every bridge holds
    // the same subnet, so the connected routes cannot tell them apart) and
    // proxy ARP, as containers think the whole subnet is on their link.
    const joined = [...new Set(cin.cenIDs.filter((id) => madeCens.has(id) && d.bridges.has(levNames.bridge(id))).map((id) => levNames.bridge(id)))].sort();
    if (joined.length > 1) {
      d.joins.push({ subnet: cin.subnet.cidr, bridges: joined });
      for (const b of joined) if (!d.proxyArp.includes(b)) d.proxyArp.push(b);
      for (const a of cin.addresses) {
        const b = levNames.bridge(a.cenID);
        if (joined.includes(b)) d.hostRoutes.set(a.ip, b);
      }
    }
    for (const cenId of cin.cenIDs) {
      const bridge = d.bridges.get(levNames.bridge(cenId));
      if (bridge && madeCens.has(cenId)) {
        bridge.addrs.push(`${cin.subnet.gateway}/${prefix}`);
        touches = true;
      }
    }
    for (const a of cin.addresses) {
      if (!local(a.containerID) || !madeCens.has(a.cenID)) continue;
      touches = true;
      const ns = a.containerID;
      iface(ns, levNames.containerIf(a.cenID)).addrs.push(`${a.ip}/${prefix}`);
      if (containerById.get(ns)?.defaultRoute === a.cenID && !d.defaultRoutes.has(ns)) {
        d.defaultRoutes.set(ns, { dev: levNames.containerIf(a.cenID), via: cin.subnet.gateway });
        if (!d.nat.includes(cin.subnet.cidr)) d.nat.push(cin.subnet.cidr);
      }
    }
    if (touches) d.objects.cins.push(cin.cinID);
  }
  d.nat.sort();
  d.joins.sort((a, b) => (a.subnet < b.subnet ? -1 : 1));
  d.proxyArp.sort();
  return d;
}
