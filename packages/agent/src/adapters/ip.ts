/**
 * The `ip` (iproute2) adapter: the only module that builds `ip` argv.
 * Every name is checked before it reaches a command (interface names are at
 * most 15 characters, see packages/shared/src/names.ts). Several changes go
 * through one `ip -batch -` where the caller has more than one.
 */
import { isInterfaceName } from '@switchyard/shared';
import type { Runner } from '../exec/runner.js';

export interface IpAddress {
  /** Canonical address text (no prefix length). */
  address: string;
  prefixLength: number;
  family: 4 | 6;
}

export class IpAdapterError extends Error {
  override name = 'IpAdapterError';
}

export function checkIfname(name: string): string {
  if (!isInterfaceName(name)) throw new IpAdapterError(`not a valid interface name: ${JSON.stringify(name)}`);
  return name;
}

/** `address/len` with the host-route length of its family when none is given. */
export function hostCidr(address: string): string {
  return address.includes(':') ? `${address}/128` : `${address}/32`;
}

interface IpJsonLink {
  ifname: string;
  link_type?: string;
  operstate?: string;
  flags?: string[];
  linkinfo?: { info_kind?: string };
  addr_info?: { family: string; local: string; prefixlen: number }[];
}

export class IpAdapter {
  constructor(
    private readonly runner: Runner,
    /** Run every command inside this network namespace. */
    private readonly netns?: string,
  ) {}

  private run(args: string[], opts: { input?: string; allowFail?: boolean } = {}) {
    return this.runner.run('ip', args, { ...opts, ...(this.netns ? { netns: this.netns } : {}) });
  }

  /** Runs several `ip` commands (one per line, without the leading `ip`) in one process. */
  async batch(lines: string[]): Promise<void> {
    if (lines.length === 0) return;
    await this.run(['-batch', '-'], { input: `${lines.join('\n')}\n` });
  }

  /** The link's kind (`dummy`, `veth`, …) and state, or undefined when it does not exist. */
  async link(name: string): Promise<{ kind?: string; up: boolean } | undefined> {
    const res = await this.run(['-j', '-d', 'link', 'show', 'dev', checkIfname(name)], { allowFail: true });
    if (res.exitCode !== 0) return undefined;
    const [link] = JSON.parse(res.stdout) as IpJsonLink[];
    if (!link) return undefined;
    return { kind: link.linkinfo?.info_kind, up: (link.flags ?? []).includes('UP') };
  }

  /** Creates a dummy interface (and brings it up) unless it exists. */
  async ensureDummy(name: string): Promise<void> {
    const existing = await this.link(name);
    if (existing && existing.kind !== 'dummy') throw new IpAdapterError(`${name} exists and is not a dummy interface (it is ${existing.kind ?? 'of unknown kind'})`);
    await this.batch([...(existing ? [] : [`link add ${checkIfname(name)} type dummy`]), `link set ${checkIfname(name)} up`]);
  }

  /** Deletes a link; a link that is already gone is not an error. */
  async deleteLink(name: string): Promise<void> {
    const res = await this.run(['link', 'del', 'dev', checkIfname(name)], { allowFail: true });
    if (res.exitCode !== 0 && !/Cannot find device|does not exist/i.test(res.stderr)) {
      throw new IpAdapterError(`ip link del ${name} failed: ${res.stderr.trim()}`);
    }
  }

  /** Addresses on a device ([] when the device does not exist). */
  async addresses(dev: string): Promise<IpAddress[]> {
    const res = await this.run(['-j', 'addr', 'show', 'dev', checkIfname(dev)], { allowFail: true });
    if (res.exitCode !== 0) return [];
    const links = JSON.parse(res.stdout) as IpJsonLink[];
    return links.flatMap((l) =>
      (l.addr_info ?? []).map((a) => ({ address: a.local, prefixLength: a.prefixlen, family: a.family === 'inet6' ? (6 as const) : (4 as const) })),
    );
  }

  /** Adds addresses (`a.b.c.d/len`); `replace` makes re-adding an existing one a no-op. */
  async addAddresses(dev: string, cidrs: string[]): Promise<void> {
    await this.batch(cidrs.map((c) => `address replace ${c} dev ${checkIfname(dev)}`));
  }

  /** Removes addresses; one that is already gone is skipped (`-force` keeps the batch going). */
  async deleteAddresses(dev: string, cidrs: string[]): Promise<void> {
    if (cidrs.length === 0) return;
    const present = new Set((await this.addresses(dev)).map((a) => `${a.address}/${a.prefixLength}`));
    await this.batch(cidrs.filter((c) => present.has(c)).map((c) => `address del ${c} dev ${checkIfname(dev)}`));
  }
}

// ---------- topology (container networks): namespaces, bridges, veths, VXLAN ----------
// Line builders for `ip [-n NS] -batch -` (one
// command per line, without the leading tool name), and the reads the
// topology role observes with. Namespaces are addressed with `-n NS` rather
// than the runner's `ip netns exec`: no extra process, and `ip netns add`
// must NOT run under `ip netns exec` (its private mount namespace would hide
// the new namespace's bind mount from everyone else).

export const checkNs = (ns: string) => {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(ns)) throw new IpAdapterError(`not a valid namespace name: ${JSON.stringify(ns)}`);
  return ns;
};
export const checkCidr = (cidr: string) => {
  if (!/^[0-9a-fA-F:.]+\/\d{1,3}$/.test(cidr)) throw new IpAdapterError(`not an address/length: ${JSON.stringify(cidr)}`);
  return cidr;
};
export const checkIp = (ip: string) => {
  if (!/^[0-9a-fA-F:.]+$/.test(ip)) throw new IpAdapterError(`not an address: ${JSON.stringify(ip)}`);
  return ip;
};

/** ` mtu N` (68, IPv4's minimum, up to 65535), or nothing. */
const mtuArg = (mtu?: number) => {
  if (mtu === undefined) return '';
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new IpAdapterError(`not an MTU: ${JSON.stringify(mtu)}`);
  return ` mtu ${mtu}`;
};

export const ipLines = {
  netnsAdd: (ns: string) => `netns add ${checkNs(ns)}`,
  netnsDel: (ns: string) => `netns del ${checkNs(ns)}`,
  bridgeAdd: (name: string) => `link add name ${checkIfname(name)} up type bridge`,
  vxlanAdd: (name: string, vni: number, local: string, master: string, mtu?: number, port = 4789) =>
    `link add name ${checkIfname(name)}${mtuArg(mtu)} up master ${checkIfname(master)} type vxlan id ${Math.trunc(vni)} local ${checkIp(local)} dstport ${Math.trunc(port)}`,
  /** A veth whose host end joins `master` and whose peer is created inside `peerNs` as `peer` (both ends `mtu` when given). */
  vethAdd: (name: string, master: string, peer: string, peerNs: string, mtu?: number) =>
    `link add name ${checkIfname(name)}${mtuArg(mtu)} up master ${checkIfname(master)} type veth peer name ${checkIfname(peer)}${mtuArg(mtu)} netns ${checkNs(peerNs)}`,
  linkMtu: (name: string, mtu: number) => `link set dev ${checkIfname(name)}${mtuArg(mtu)}`,
  /** One veth pair with both ends inside namespaces, both named `name`. */
  wireAdd: (name: string, nsA: string, nsB: string) =>
    `link add name ${checkIfname(name)} netns ${checkNs(nsA)} type veth peer name ${checkIfname(name)} netns ${checkNs(nsB)}`,
  linkDel: (name: string) => `link del dev ${checkIfname(name)}`,
  /** Puts a link in a group (to delete many with one `link del group`). */
  linkGroup: (name: string, group: number) => `link set dev ${checkIfname(name)} group ${Math.trunc(group)}`,
  /** Deletes every link of a group at once: one RCU grace period for all, not one per link. */
  groupDel: (group: number) => `link del group ${Math.trunc(group)}`,
  linkUp: (name: string) => `link set dev ${checkIfname(name)} up`,
  addrAdd: (cidr: string, dev: string) => `addr replace ${checkCidr(cidr)} dev ${checkIfname(dev)}`,
  addrDel: (cidr: string, dev: string) => `addr del ${checkCidr(cidr)} dev ${checkIfname(dev)}`,
  defaultRoute: (via: string, dev: string) => `route replace default via ${checkIp(via)} dev ${checkIfname(dev)}`,
  defaultRouteDel: () => 'route del default',
  /** A /32 through a bridge (IPv4: CIN addresses). */
  hostRoute: (dst: string, dev: string) => `route replace ${checkIp(dst)}/32 dev ${checkIfname(dev)}`,
  hostRouteDel: (dst: string, dev: string) => `route del ${checkIp(dst)}/32 dev ${checkIfname(dev)}`,
};

/** `-n NS` when a namespace is given. */
export function nsArgs(ns?: string): string[] {
  return ns ? ['-n', checkNs(ns)] : [];
}

/** Errors a removal may meet when the object is already gone (deleting what is gone succeeds). */
export const GONE = /Cannot find device|does not exist|No such (file|device|process)|Cannot assign requested address|No such file or directory|RTNETLINK answers: No such/i;

/** A link as `ip -j -d addr show` describes it. */
export interface ObservedLink {
  name: string;
  kind?: string;
  master?: string;
  up: boolean;
  vni?: number;
  mtu?: number;
  /** `a.b.c.d/len`, IPv4 global only. */
  addrs: string[];
  /** The link's group (`ip link set … group`), when not the default one. */
  group?: number;
}

interface IpJsonDetailedLink extends IpJsonLink {
  master?: string;
  group?: string;
  mtu?: number;
  linkinfo?: { info_kind?: string; info_data?: { id?: number } };
  addr_info?: { family: string; local: string; prefixlen: number; scope?: string }[];
}

export function parseLinks(json: string): ObservedLink[] {
  const links = (json.trim() ? JSON.parse(json) : []) as IpJsonDetailedLink[];
  return links.map((l) => ({
    name: l.ifname,
    kind: l.linkinfo?.info_kind,
    master: l.master,
    up: (l.flags ?? []).includes('UP'),
    vni: l.linkinfo?.info_kind === 'vxlan' ? l.linkinfo.info_data?.id : undefined,
    ...(l.mtu !== undefined ? { mtu: l.mtu } : {}),
    ...(l.group !== undefined && /^\d+$/.test(l.group) && l.group !== '0' ? { group: Number(l.group) } : {}),
    addrs: (l.addr_info ?? []).filter((a) => a.family === 'inet' && (a.scope ?? 'global') === 'global').map((a) => `${a.local}/${a.prefixlen}`),
  }));
}

/** Every link of a namespace, with its IPv4 addresses (one `ip -j -d addr show`). */
export async function observeLinks(runner: Runner, ns?: string): Promise<ObservedLink[]> {
  const res = await runner.run('ip', [...nsArgs(ns), '-j', '-d', 'addr', 'show']);
  return parseLinks(res.stdout);
}

/** Links and the default route of a namespace in one process (`ip -batch` prints one JSON array per line). */
export async function observeNamespace(runner: Runner, ns: string): Promise<{ links: ObservedLink[]; defaultRoute?: { via?: string; dev?: string } } | undefined> {
  const res = await runner.run('ip', [...nsArgs(ns), '-j', '-d', '-batch', '-'], { input: 'addr show\nroute show default\n', allowFail: true });
  if (res.exitCode !== 0) return undefined;
  const arrays = res.stdout.split('\n').filter((l) => l.startsWith('['));
  const routes = (arrays[1] ? JSON.parse(arrays[1]) : []) as { dst: string; gateway?: string; dev?: string }[];
  const def = routes.find((r) => r.dst === 'default');
  return { links: parseLinks(arrays[0] ?? '[]'), ...(def ? { defaultRoute: { via: def.gateway, dev: def.dev } } : {}) };
}

/**
 * The host context's /32 routes through the links `owned` accepts (address
 * → link) and those links with proxy ARP on, in one process.
 */
export async function observeRoutesAndProxyArp(runner: Runner, ns: string | undefined, owned: (link: string) => boolean): Promise<{ hostRoutes: Map<string, string>; proxyArp: Set<string> }> {
  const res = await runner.run('ip', [...nsArgs(ns), '-j', '-batch', '-'], { input: 'route show\nnetconf show\n' });
  const arrays = res.stdout.split('\n').filter((l) => l.startsWith('['));
  const routes = (arrays[0] ? JSON.parse(arrays[0]) : []) as { dst: string; dev?: string; protocol?: string }[];
  const conf = (arrays[1] ? JSON.parse(arrays[1]) : []) as { family: string; interface: string; proxy_neigh?: boolean }[];
  const hostRoutes = new Map<string, string>();
  for (const r of routes) if (r.dev && owned(r.dev) && !r.dst.includes('/') && r.dst !== 'default' && r.protocol !== 'kernel') hostRoutes.set(r.dst, r.dev);
  const proxyArp = new Set(conf.filter((c) => c.family === 'inet' && c.proxy_neigh && owned(c.interface)).map((c) => c.interface));
  return { hostRoutes, proxyArp };
}

/** Names of the machine's named network namespaces. */
export async function listNamespaces(runner: Runner): Promise<string[]> {
  const res = await runner.run('ip', ['-j', 'netns', 'list']);
  const list = (res.stdout.trim() ? JSON.parse(res.stdout) : []) as { name: string }[];
  return list.map((n) => n.name);
}

