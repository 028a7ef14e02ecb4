/**
 * Reads what the kernel has, for the planner: the machine's namespaces, the
 * role's links in the host context (with addresses and VXLAN flood lists),
 * and the links and default route inside each container namespace of
 * interest. One command per namespace: `ip -j -d -batch -`.
 */
import { isIP } from 'node:net';
import { isInterfaceName, levNames } from '@switchyard/shared';
import { listNamespaces, observeFloodList, observeLinks, observeNamespace, observeRoutesAndProxyArp } from '../adapters/ip.js';
import { listTable } from '../adapters/nft.js';
import type { Runner } from '../exec/runner.js';
import { ISOLATION_TABLE, NAT_TABLE, parseIsolation, parseJoins, parseNat } from './execute.js';
import { emptyObserved, type ObservedTopology } from './model.js';

export async function observeTopology(runner: Runner, hostNs: string | undefined, containerNamespaces: Iterable<string>): Promise<ObservedTopology> {
  const o = emptyObserved();
  o.namespaces = new Set(await listNamespaces(runner));
  for (const l of await observeLinks(runner, hostNs)) {
    if (!levNames.isOwnedLink(l.name)) continue;
    o.hostLinks.set(l.name, { kind: l.kind, master: l.master, up: l.up, vni: l.vni, mtu: l.mtu, addrs: l.addrs });
    if (l.kind === 'vxlan') o.flood.set(l.name, await observeFloodList(runner, l.name, hostNs));
  }
  for (const ns of new Set(containerNamespaces)) {
    if (!o.namespaces.has(ns)) continue;
    const seen = await observeNamespace(runner, ns);
    if (!seen) continue;
    o.nsLinks.set(ns, new Map(seen.links.map((l) => [l.name, { kind: l.kind, up: l.up, mtu: l.mtu, addrs: l.addrs }])));
    if (seen.defaultRoute) o.defaultRoutes.set(ns, seen.defaultRoute);
  }
  const table = await listTable(runner, 'inet', ISOLATION_TABLE, hostNs);
  o.isolation = table === undefined ? undefined : parseIsolation(table);
  o.joins = table === undefined ? undefined : parseJoins(table);
  const extras = await observeRoutesAndProxyArp(runner, hostNs, (l) => levNames.isOwnedLink(l) && o.hostLinks.get(l)?.kind === 'bridge');
  o.hostRoutes = extras.hostRoutes;
  o.proxyArp = extras.proxyArp;
  const nat = await listTable(runner, 'ip', NAT_TABLE, hostNs);
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
