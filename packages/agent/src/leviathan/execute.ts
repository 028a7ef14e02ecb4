/**
 * Turns ops into commands and runs them. Three modes, same ops, same order:
 *
 *   netlink     (default) the host context in one `ip -batch -` per stage;
 *               every container namespace's insides (links up, MTU,
 *               addresses, default routes, deletions) in ONE netns-helper
 *               process per stage, whatever the number of containers; host
 *               links deleted as one group (`link set … group G` each, then
 *               one `link del group G`); a host veth end whose container
 *               namespace is deleted in the same plan is left to the kernel
 *               (it deletes the pair with the namespace, in one batch);
 *               commands that do not depend on each other run together
 *   batched     one `ip -batch -` per namespace touched (the host context,
 *               each container); host links deleted one by one
 *   per-object  one command per op (what a naive agent does)
 *
 * All modes: one `bridge -batch -`, one `nft -f -` (the isolation and NAT
 * tables together), one `sysctl` (proxy ARP on bridges of CINs over
 * several CENs). Removals run with `-force` and succeed when the only errors
 * say the object is already gone (deleting what is gone is not a failure);
 * creations must all succeed.
 */
import { bridgeLines } from '../adapters/bridge.js';
import { proxyArpArgs, sysctlWriteArgs } from '../adapters/sysctl.js';
import { GONE, ipLines, nsArgs } from '../adapters/ip.js';
import { helperCommand, type NsHelperOp } from '../adapters/netns-helper.js';
import type { PythonInterpreter } from '../exec/python.js';
import { nftScript } from '../adapters/nft.js';
import { CommandError, type Runner } from '../exec/runner.js';
import { isInterfaceName } from '@switchyard/shared';
import type { CinJoin, TopologyOp } from './model.js';

export { proxyArpArgs };

export type ExecMode = 'netlink' | 'batched' | 'per-object';

/**
 * The link group (`ip link set … group`) host links are put in just before
 * one `link del group` deletes them together: the kernel unregisters them as
 * one batch (100 bridges: ~1.7 s, against ~3.6 s one `link del` at a time).
 * A link left in it (the batch died in between) is deleted by the next plan
 * (observed as `doomed`), never kept.
 */
export const DELETE_GROUP = 0x7379;

export interface Command {
  cmd: 'ip' | 'bridge' | 'nft' | 'sysctl' | PythonInterpreter;
  args: string[];
  input?: string;
  /** Run in this namespace through the runner (nft has no -n). */
  netns?: string;
  /** A removal: "already gone" errors are success. */
  tolerant: boolean;
  /** Runs together with the command before it (neither needs the other's result). */
  concurrent?: boolean;
}

/** The nft table that keeps CINs apart where the host forwards (root namespace hosts). */
export const ISOLATION_TABLE = 'switchyard_lev';

/** The two forms of a CEN bridge's name (levNames.bridge): `syb-<cen>` and `syb_<hash>`. */
const BRIDGE_WILDCARDS = ['syb-*', 'syb_*'];

/**
 * Rules per bridge: routed traffic from it to any OTHER CEN bridge is
 * dropped. Not `iifname "syb*" oifname "syb*"`: with br_netfilter loaded
 * (bridge-nf-call-iptables=1, the default once the module is in), bridged
 * traffic inside one bridge also passes this hook with the bridge as both
 * input and output device, and must not be dropped. Not `oifname "syb*"`
 * either: a host's own `sybase0` is no CEN bridge (one rule per name form,
 * as older nft has no wildcards in anonymous sets).
 */
export function isolationRules(bridges: string[], joins: CinJoin[] = []): string {
  // Declaring then deleting makes removal idempotent; flush + define makes creation so.
  if (bridges.length === 0) return `table inet ${ISOLATION_TABLE}\ndelete table inet ${ISOLATION_TABLE}\n`;
  for (const j of joins) {
    if (!IPV4_CIDR.test(j.subnet)) throw new Error(`not an IPv4 subnet: ${JSON.stringify(j.subnet)}`);
    for (const b of j.bridges) if (!isInterfaceName(b)) throw new Error(`not an interface name: ${JSON.stringify(b)}`);
  }
  // A joined CIN's own traffic between its own bridges passes (first: accept ends the chain).
  const set = (bs: string[]) => `{ ${bs.map((b) => `"${b}"`).join(', ')} }`;
  return [
    `table inet ${ISOLATION_TABLE}`,
    `flush table inet ${ISOLATION_TABLE}`,
    `table inet ${ISOLATION_TABLE} {`,
    '  chain forward {',
    '    type filter hook forward priority filter; policy accept;',
    ...joins.map((j) => `    iifname ${set(j.bridges)} oifname ${set(j.bridges)} ip saddr ${j.subnet} ip daddr ${j.subnet} accept`),
    ...bridges.flatMap((b) => BRIDGE_WILDCARDS.map((w) => `    iifname "${b}" oifname "${w}" oifname != "${b}" drop`)),
    '  }',
    '}',
    '',
  ].join('\n');
}

/**
 * The bridges an isolation table's text (`nft list table`) isolates, sorted.
 * A bridge counts only with the rule for each name form, so a table written
 * in an older form reads as different and is rewritten.
 */
export function parseIsolation(text: string): string[] {
  const forms = new Map<string, Set<string>>();
  for (const m of text.matchAll(/iifname "([^"]+)" oifname "([^"]+)" oifname != "([^"]+)" drop/g)) {
    if (m[1] !== m[3]) continue;
    const seen = forms.get(m[1]) ?? new Set<string>();
    seen.add(m[2]);
    forms.set(m[1], seen);
  }
  return [...forms].filter(([, seen]) => BRIDGE_WILDCARDS.every((w) => seen.has(w))).map(([b]) => b).sort();
}

/** The nft table (family ip) that masquerades CIN subnets leaving the host (`default_route`). */
export const NAT_TABLE = 'switchyard_lev_nat';

const IPV4_CIDR = /^(\d{1,3}\.){3}\d{1,3}\/\d{1,2}$/;

/**
 * Masquerade per CIN subnet: traffic from it leaving through anything but a
 * CEN bridge (the underlay, the host's uplink) takes the outgoing
 * interface's address, so the outside needs no route back to the CIN. Traffic
 * between CEN bridges or inside one (bridged, seen with the bridge as output
 * under br_netfilter) keeps its source.
 */
export function natRules(subnets: string[]): string {
  if (subnets.length === 0) return `table ip ${NAT_TABLE}\ndelete table ip ${NAT_TABLE}\n`;
  for (const s of subnets) if (!IPV4_CIDR.test(s)) throw new Error(`not an IPv4 subnet: ${JSON.stringify(s)}`);
  return [
    `table ip ${NAT_TABLE}`,
    `flush table ip ${NAT_TABLE}`,
    `table ip ${NAT_TABLE} {`,
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    ...subnets.map((s) => `    ip saddr ${s} ${BRIDGE_WILDCARDS.map((w) => `oifname != "${w}"`).join(' ')} masquerade`),
    '  }',
    '}',
    '',
  ].join('\n');
}

/** The subnets a NAT table's text (`nft list table`) masquerades, sorted; a rule in another form does not count. */
export function parseNat(text: string): string[] {
  const want = BRIDGE_WILDCARDS.map((w) => `oifname != "${w}"`).join(' ');
  const out = new Set<string>();
  for (const m of text.matchAll(/ip saddr (\S+) (.*) masquerade/g)) if (m[2] === want) out.add(m[1]);
  return [...out].sort();
}

/** The joined CINs an isolation table's text lets through (nft lists set elements in its own order; sorted here). */
export function parseJoins(text: string): CinJoin[] {
  const names = (set: string) => [...set.matchAll(/"([^"]+)"/g)].map((m) => m[1]).sort();
  const out: CinJoin[] = [];
  for (const m of text.matchAll(/iifname \{([^}]*)\} oifname \{([^}]*)\} ip saddr (\S+) ip daddr (\S+) accept/g)) {
    const bridges = names(m[1]);
    if (m[3] === m[4] && bridges.join() === names(m[2]).join()) out.push({ subnet: m[3], bridges });
  }
  return out.sort((a, b) => (a.subnet < b.subnet ? -1 : 1));
}


type Where = { tool: 'ip' | 'bridge'; ns?: string; global?: boolean } | { tool: 'nft' } | { tool: 'sysctl' };

/** Where an op runs and its batch line. `hostNs` is the agent's --netns (undefined: the machine's own). */
function render(op: TopologyOp, hostNs: string | undefined): { where: Where; line: string } {
  const host = { tool: 'ip' as const, ns: hostNs };
  switch (op.op) {
    case 'netns-add':
      return { where: { tool: 'ip', global: true }, line: ipLines.netnsAdd(op.ns) };
    case 'netns-del':
      return { where: { tool: 'ip', global: true }, line: ipLines.netnsDel(op.ns) };
    case 'bridge-add':
      return { where: host, line: ipLines.bridgeAdd(op.name) };
    case 'vxlan-add':
      return { where: host, line: ipLines.vxlanAdd(op.name, op.vni, op.local, op.master, op.mtu) };
    case 'veth-add':
      return { where: host, line: ipLines.vethAdd(op.name, op.master, op.peer, op.peerNs, op.mtu) };
    case 'wire-add':
      return { where: host, line: ipLines.wireAdd(op.name, op.a, op.b) };
    case 'link-del':
      return { where: op.ns ? { tool: 'ip', ns: op.ns } : host, line: ipLines.linkDel(op.name) };
    case 'link-up':
      return { where: { tool: 'ip', ns: op.ns }, line: ipLines.linkUp(op.name) };
    case 'link-mtu':
      return { where: op.ns ? { tool: 'ip', ns: op.ns } : host, line: ipLines.linkMtu(op.name, op.mtu) };
    case 'addr-add':
      return { where: op.ns ? { tool: 'ip', ns: op.ns } : host, line: ipLines.addrAdd(op.cidr, op.dev) };
    case 'addr-del':
      return { where: op.ns ? { tool: 'ip', ns: op.ns } : host, line: ipLines.addrDel(op.cidr, op.dev) };
    case 'fdb-add':
      return { where: { tool: 'bridge', ns: hostNs }, line: bridgeLines.fdbAppend(op.dev, op.dst) };
    case 'fdb-del':
      return { where: { tool: 'bridge', ns: hostNs }, line: bridgeLines.fdbDel(op.dev, op.dst) };
    case 'route-default':
      return { where: { tool: 'ip', ns: op.ns }, line: ipLines.defaultRoute(op.via, op.dev) };
    case 'route-default-del':
      return { where: { tool: 'ip', ns: op.ns }, line: ipLines.defaultRouteDel() };
    case 'isolation':
      return { where: { tool: 'nft' }, line: isolationRules(op.bridges, op.joins) };
    case 'route-host':
      return { where: host, line: ipLines.hostRoute(op.dst, op.dev) };
    case 'route-host-del':
      return { where: host, line: ipLines.hostRouteDel(op.dst, op.dev) };
    case 'proxy-arp':
      // Lines of sysctl arguments, space-separated (names are checked interface names).
      return { where: { tool: 'sysctl' }, line: proxyArpArgs(op.dev, op.on).join(' ') };
    case 'nat':
      return { where: { tool: 'nft' }, line: natRules(op.subnets) };
  }
}

const REMOVALS = new Set<TopologyOp['op']>(['netns-del', 'link-del', 'addr-del', 'fdb-del', 'route-default-del', 'route-host-del']);

function isRemoval(op: TopologyOp): boolean {
  return REMOVALS.has(op.op) || (op.op === 'proxy-arp' && !op.on) || (op.op === 'isolation' && op.bridges.length === 0) || (op.op === 'nat' && op.subnets.length === 0);
}

/**
 * Commands for `ops`, in an order that respects dependencies: removals
 * (inside containers, then the host context, then namespaces), then
 * creations (namespaces, then host links, flood lists, container insides).
 */
export function commandsFor(ops: TopologyOp[], mode: ExecMode, hostNs?: string): Command[] {
  const stage = (op: TopologyOp): number => {
    const removal = isRemoval(op);
    const w = render(op, hostNs).where;
    if (removal) {
      if (op.op === 'netns-del') return 3;
      if (w.tool === 'nft' || w.tool === 'sysctl') return 3;
      if (w.tool === 'bridge') return 1;
      return 'ns' in w && w.ns !== hostNs ? 0 : 2;
    }
    if (op.op === 'netns-add') return 4;
    if (w.tool === 'nft' || w.tool === 'sysctl') return 8;
    if (w.tool === 'bridge') return 6;
    if ('ns' in w && w.ns !== hostNs) return 7;
    return 5;
  };
  // Inside a stage, bridges come before what joins them (one host batch either way).
  const sub = (op: TopologyOp) => (op.op === 'bridge-add' ? 0 : 1);
  const ordered = ops.map((op, i) => ({ op, i, s: stage(op) })).sort((a, b) => a.s - b.s || sub(a.op) - sub(b.op) || a.i - b.i);
  const out: Command[] = [];
  if (mode === 'per-object') {
    for (const { op } of ordered) {
      const { where, line } = render(op, hostNs);
      const tolerant = isRemoval(op);
      if (where.tool === 'nft') out.push({ ...nftScript(line, hostNs), tolerant });
      else if (where.tool === 'sysctl') out.push(sysctlCommand([line], hostNs, tolerant));
      else out.push({ cmd: where.tool, args: [...(where.global ? [] : nsArgs(where.ns)), ...line.split(' ')], tolerant });
    }
    return out;
  }
  // Batched: consecutive ops of one stage grouped by (tool, namespace), in first-seen order;
  // netlink: every container namespace's ops of a stage in one helper request.
  const netlink = mode === 'netlink';
  const going = new Set(ops.flatMap((o) => (o.op === 'netns-del' ? [o.ns] : [])));
  // Netlink mode runs independent stages together: the host's removals, the
  // namespaces' deletion and the nft/sysctl removals (1–3); and, once the host
  // links exist, flood lists, container insides and nft/sysctl (6–8).
  const wave = (s: number) => (s >= 1 && s <= 3 ? 1 : s >= 6 ? 6 : s);
  let lastWave = -1;
  const push = (c: Command, s: number) => {
    out.push(netlink && wave(s) === lastWave ? { ...c, concurrent: true } : c);
    lastWave = wave(s);
  };
  let i = 0;
  while (i < ordered.length) {
    const s = ordered[i].s;
    const groups = new Map<string, { where: Where; lines: string[]; tolerant: boolean; groupDel?: boolean }>();
    const inside = new Map<string, NsHelperOp[]>();
    let insideTolerant = false;
    for (; i < ordered.length && ordered[i].s === s; i++) {
      const { op } = ordered[i];
      if (netlink && op.op === 'link-del' && op.goesWith && going.has(op.goesWith)) continue;
      const { where, line } = render(op, hostNs);
      const helperOp = netlink ? insideOp(op) : undefined;
      if (helperOp && 'ns' in op && op.ns) {
        const nsOps = inside.get(op.ns) ?? [];
        nsOps.push(helperOp);
        inside.set(op.ns, nsOps);
        insideTolerant = isRemoval(op);
        continue;
      }
      const key = where.tool === 'nft' || where.tool === 'sysctl' ? where.tool : `${where.tool}|${where.global ? '*' : (where.ns ?? '')}`;
      const g = groups.get(key) ?? { where, lines: [], tolerant: isRemoval(op) };
      if (netlink && op.op === 'link-del' && !op.ns) {
        g.lines.push(ipLines.linkGroup(op.name, DELETE_GROUP));
        g.groupDel = true;
      } else g.lines.push(line);
      groups.set(key, g);
    }
    for (const g of groups.values()) {
      if (g.where.tool === 'nft') {
        push({ ...nftScript(g.lines.join(''), hostNs), tolerant: g.tolerant }, s);
        continue;
      }
      if (g.where.tool === 'sysctl') {
        push(sysctlCommand(g.lines, hostNs, g.tolerant), s);
        continue;
      }
      const lines = g.groupDel ? [...g.lines, ipLines.groupDel(DELETE_GROUP)] : g.lines;
      const ns = g.where.global ? [] : nsArgs(g.where.ns);
      push({ cmd: g.where.tool, args: [...ns, ...(g.tolerant ? ['-force'] : []), '-batch', '-'], input: `${lines.join('\n')}\n`, tolerant: g.tolerant }, s);
    }
    if (inside.size > 0) {
      const apply = [...inside].map(([ns, nsOps]) => ({ ns, ops: nsOps }));
      push({ ...helperCommand({ apply, ...(insideTolerant ? { tolerant: true } : {}) }), tolerant: insideTolerant }, s);
    }
  }
  return out;
}

/** The netns-helper op for an op inside a container namespace (undefined: not one). */
function insideOp(op: TopologyOp): NsHelperOp | undefined {
  switch (op.op) {
    case 'link-del':
      return op.ns ? ['del', op.name] : undefined;
    case 'link-up':
      return ['up', op.name];
    case 'link-mtu':
      return op.ns ? ['mtu', op.name, op.mtu] : undefined;
    case 'addr-add':
      return op.ns ? ['addr', op.dev, op.cidr] : undefined;
    case 'addr-del':
      return op.ns ? ['addr-del', op.dev, op.cidr] : undefined;
    case 'route-default':
      return ['route', op.via, op.dev];
    case 'route-default-del':
      return ['route-del'];
    default:
      return undefined;
  }
}

/** One `sysctl -q -w` for several settings, in the host context (the runner's netns: sysctl has no -n). */
function sysctlCommand(lines: string[], hostNs: string | undefined, tolerant: boolean): Command {
  return { cmd: 'sysctl', args: sysctlWriteArgs(lines.flatMap((l) => l.split(' '))), ...(hostNs ? { netns: hostNs } : {}), tolerant };
}

/** Error lines of a failed command that are not "already gone" (ip's "Command failed -:N" trailers aside). */
export function realErrors(stderr: string): string[] {
  return stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !/^Command failed/.test(l) && !GONE.test(l) && !/^Error: (argument|Device) .* (is wrong|does not exist)/.test(l));
}

/**
 * Runs the commands in order (a `concurrent` one together with those before
 * it); the first real failure stops the run and is thrown, once the commands
 * running with it have ended.
 */
export async function execute(runner: Runner, commands: Command[]): Promise<void> {
  let i = 0;
  while (i < commands.length) {
    let j = i + 1;
    while (j < commands.length && commands[j].concurrent) j++;
    const results = await Promise.allSettled(commands.slice(i, j).map((c) => runOne(runner, c)));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    i = j;
  }
}

async function runOne(runner: Runner, c: Command): Promise<void> {
  const res = await runner.run(c.cmd, c.args, { ...(c.input !== undefined ? { input: c.input } : {}), ...(c.netns ? { netns: c.netns } : {}), allowFail: true });
  if (res.exitCode === 0) return;
  if (c.tolerant && realErrors(res.stderr).length === 0) return;
  // The helper's program is not worth repeating in an error.
  const argv = [c.cmd, ...c.args.map((a) => (a.length > 200 ? `<${a.length} characters>` : a))];
  throw new CommandError(argv, res.exitCode, `${res.stderr}${c.input ? `\n(input: ${c.input.slice(0, 2000)})` : ''}`, res.stdout);
}
