/**
 * Reads what the kernel has, for the planner: the machine's namespaces, the
 * role's links in the host context (with addresses and VXLAN flood lists),
 * and the links and default route inside each container namespace of
 * interest. One command per namespace: `ip -j -d -batch -`.
 */
import { levNames } from '@switchyard/shared';
import { listNamespaces, observeFloodList, observeLinks, observeNamespace } from '../adapters/ip.js';
import { listTable } from '../adapters/nft.js';
import type { Runner } from '../exec/runner.js';
import { ISOLATION_TABLE, NAT_TABLE, parseIsolation, parseNat } from './execute.js';
import { emptyObserved, type ObservedTopology } from './model.js';

export async function observeTopology(runner: Runner, hostNs: string | undefined, containerNamespaces: Iterable<string>): Promise<ObservedTopology> {
  const o = emptyObserved();
  o.namespaces = new Set(await listNamespaces(runner));
  for (const l of await observeLinks(runner, hostNs)) {
    if (!levNames.isOwnedLink(l.name)) continue;
    o.hostLinks.set(l.name, { kind: l.kind, master: l.master, up: l.up, vni: l.vni, addrs: l.addrs });
    if (l.kind === 'vxlan') o.flood.set(l.name, await observeFloodList(runner, l.name, hostNs));
  }
  for (const ns of new Set(containerNamespaces)) {
    if (!o.namespaces.has(ns)) continue;
    const seen = await observeNamespace(runner, ns);
    if (!seen) continue;
    o.nsLinks.set(ns, new Map(seen.links.map((l) => [l.name, { kind: l.kind, up: l.up, addrs: l.addrs }])));
    if (seen.defaultRoute) o.defaultRoutes.set(ns, seen.defaultRoute);
  }
  const table = await listTable(runner, 'inet', ISOLATION_TABLE, hostNs);
  o.isolation = table === undefined ? undefined : parseIsolation(table);
  const nat = await listTable(runner, 'ip', NAT_TABLE, hostNs);
  o.nat = nat === undefined ? undefined : parseNat(nat);
  return o;
}

/** The first global IPv4 address of the host context outside the role's own links: the VXLAN underlay. */
export async function detectUnderlay(runner: Runner, hostNs: string | undefined): Promise<string | undefined> {
  for (const l of await observeLinks(runner, hostNs)) {
    if (levNames.isOwnedLink(l.name) || l.name === 'lo') continue;
    const a = l.addrs.find((x) => !x.startsWith('127.'));
    if (a) return a.split('/')[0];
  }
  return undefined;
}
