/**
 * Reads what the kernel has, for the planner: the machine's namespaces, the
 * role's links in the host context (with addresses and VXLAN flood lists),
 * and the links and default route inside each container namespace of
 * interest. `reader` "netlink" (the default): the namespaces, the host's
 * links and every container namespace in ONE netns-helper process; "ip"
 * (the old way, kept as the benchmark's baseline): `ip netns list`,
 * `ip -j -d addr show` and one `ip -j -d -batch -` per namespace. Either
 * way the nft tables, host routes and proxy ARP come from their own tools,
 * all reads at once; VXLAN flood lists from one `bridge -j fdb show`, read
 * only when there is a VXLAN device.
 */
import { isIP } from 'node:net';
import { isInterfaceName, levNames } from '@switchyard/shared';
import { observeFloodLists } from '../adapters/bridge.js';
import { listNamespaces, observeLinks, observeNamespace, observeRoutesAndProxyArp } from '../adapters/ip.js';
import { observeNamespaces, type NsObservation } from '../adapters/netns-helper.js';
import { listTable } from '../adapters/nft.js';
import type { Runner } from '../exec/runner.js';
import { DELETE_GROUP, ISOLATION_TABLE, NAT_TABLE, parseIsolation, parseJoins, parseNat } from './execute.js';
import { emptyObserved, type ObservedTopology } from './model.js';

export type NamespaceReader = 'netlink' | 'ip';

export async function observeTopology(runner: Runner, hostNs: string | undefined, containerNamespaces: Iterable<string>, reader: NamespaceReader = 'netlink'): Promise<ObservedTopology> {
  const o = emptyObserved();
  const interest = [...new Set(containerNamespaces)];
  // Independent reads, all at once: the host context's (one process each) and,
  // with the helper, every container namespace's (one process; a namespace
  // that does not exist is simply absent from its answer).
  const [helper, names, ipLinks, table, extras, nat] = await Promise.all([
    reader === 'netlink' ? observeNamespaces(runner, hostNs, interest) : undefined,
    reader === 'netlink' ? undefined : listNamespaces(runner),
    reader === 'netlink' ? undefined : observeLinks(runner, hostNs),
    listTable(runner, 'inet', ISOLATION_TABLE, hostNs),
    observeRoutesAndProxyArp(runner, hostNs, (l) => levNames.isOwnedLink(l)),
    listTable(runner, 'ip', NAT_TABLE, hostNs),
  ]);
  o.namespaces = new Set(helper?.namespaces ?? names);
  const links = helper?.hostLinks ?? ipLinks ?? [];
  // Flood lists only where there is a VXLAN device (the whole fdb holds an entry per bridge port).
  const flood = links.some((l) => l.kind === 'vxlan' && levNames.isOwnedLink(l.name)) ? await observeFloodLists(runner, hostNs) : new Map<string, string[]>();
  for (const l of links) {
    if (!levNames.isOwnedLink(l.name)) continue;
    o.hostLinks.set(l.name, { kind: l.kind, master: l.master, up: l.up, vni: l.vni, mtu: l.mtu, addrs: l.addrs, ...(l.group === DELETE_GROUP ? { doomed: true } : {}) });
    if (l.kind === 'vxlan') o.flood.set(l.name, flood.get(l.name) ?? []);
  }
  const wanted = interest.filter((ns) => o.namespaces.has(ns));
  let insides: Map<string, NsObservation | undefined>;
  if (helper) insides = helper.insides;
  else {
    // The old way (benchmark baseline): one process per namespace, one after the other.
    insides = new Map();
    for (const ns of wanted) insides.set(ns, await observeNamespace(runner, ns));
  }
  for (const ns of wanted) {
    const seen = insides.get(ns);
    if (!seen) continue;
    o.nsLinks.set(ns, new Map(seen.links.map((l) => [l.name, { kind: l.kind, up: l.up, mtu: l.mtu, addrs: l.addrs }])));
    if (seen.defaultRoute) o.defaultRoutes.set(ns, seen.defaultRoute);
  }
  o.isolation = table === undefined ? undefined : parseIsolation(table);
  o.joins = table === undefined ? undefined : parseJoins(table);
  const bridge = (l: string) => o.hostLinks.get(l)?.kind === 'bridge';
  o.hostRoutes = new Map([...extras.hostRoutes].filter(([, dev]) => bridge(dev)));
  o.proxyArp = new Set([...extras.proxyArp].filter(bridge));
  o.nat = nat === undefined ? undefined : parseNat(nat);
  return o;
}

/** An underlay given by flags or embedders, checked before any command runs (IPv4: what hosts publish, LevUnderlay). */
export function checkUnderlayWanted(want: { address?: string; iface?: string }): void {
  if (want.iface !== undefined && !isInterfaceName(want.iface)) throw new Error(`underlay interface: not a valid interface name: ${JSON.stringify(want.iface)}`);
  if (want.address !== undefined && isIP(want.address) !== 4) throw new Error(`underlay address: not an IPv4 address: ${JSON.stringify(want.address)}`);
}

export interface Underlay {
  /** The VXLAN local address, published for the other hosts. */
  address?: string;
  /** The interface holding it, when found. */
  iface?: string;
  /** That interface's MTU. */
  mtu?: number;
}

/**
 * The underlay in the host context: the given address (and the interface
 * holding it, for its MTU), the first global IPv4 address of the given
 * interface, or, with neither, the first global IPv4 address outside the
 * role's own links and `lo`. A given interface that does not exist is an
 * error; a given address no interface holds is used as it is (MTU unknown:
 * VXLAN devices then get the kernel's default).
 */
export async function findUnderlay(runner: Runner, hostNs: string | undefined, want: { address?: string; iface?: string } = {}): Promise<Underlay> {
  checkUnderlayWanted(want);
  const links = (await observeLinks(runner, hostNs)).filter((l) => !levNames.isOwnedLink(l.name));
  const bare = (cidr: string) => cidr.split('/')[0];
  if (want.iface) {
    const l = links.find((x) => x.name === want.iface);
    if (!l) throw new Error(`underlay interface ${want.iface} does not exist${hostNs ? ` in ${hostNs}` : ''}`);
    const address = want.address ?? (l.addrs[0] ? bare(l.addrs[0]) : undefined);
    return { ...(address ? { address } : {}), iface: l.name, ...(l.mtu ? { mtu: l.mtu } : {}) };
  }
  const l = want.address ? links.find((x) => x.addrs.some((c) => bare(c) === want.address)) : links.find((x) => x.name !== 'lo' && x.addrs.some((c) => !c.startsWith('127.')));
  const address = want.address ?? (l ? bare(l.addrs.find((c) => !c.startsWith('127.')) as string) : undefined);
  return { ...(address ? { address } : {}), ...(l ? { iface: l.name, ...(l.mtu ? { mtu: l.mtu } : {}) } : {}) };
}
