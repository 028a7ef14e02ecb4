/**
 * What the nftables dataplane writes, as data: every object a service owns
 * in the agent's table, named after the service so one service's update
 * touches only its own objects (kube-proxy's nftables proxier has the same
 * shape). NAT lives in ONE table, `inet <table>`, direct routing in
 * `netdev <table>` (below); nothing outside them is ever read or written.
 *
 *   map services4/6  VIP . proto . port            → goto svc.<serviceId>
 *   map backends<4|6>_<tcp|udp>  VIP . port . slot  → server addr . port   (one dnat per connection)
 *   map pick<4|6>_<tcp|udp>      VIP . port . slot  → goto ep.<sid>.<srvId> (persistence, mixed forwarders)
 *   chain grp.<picker>.<T>.<proto><family>[.masq]  shared by every service that
 *                    picks a slot the same way: one rule, `dnat … . <picker> map @backends…`
 *   chain svc.<sid>  only for persistent services and mixed forwarders: the
 *                    affinity checks, then a slot pick into pick…
 *   chain ep.<sid>.<srvId>, set aff.<sid>.<srvId>  per-server chain and timed affinity set
 *
 * Most services therefore own only map elements: changing one is a handful
 * of element deletions and additions in one transaction, and nft's cache
 * (which it reloads for every invocation) stays small — per-service chains
 * cost ~3 µs each in every `nft -f`, and binding one named map from 10,000
 * rules in one transaction took 25 s of kernel time (measured here). The
 * price: services of one group share the group rule's `numgen inc` counter,
 * so rr/wrr rotate strictly only per group; over many connections each
 * service still gets each of its slots equally often.
 *
 * Slots turn weights into a distribution: a server of weight w owns w/gcd
 * slots of the service's `mod T` (capped at MAX_SLOTS, approximated with a
 * warning beyond it). Slot maps are global named maps on purpose: thousands
 * of per-rule anonymous maps make one nft transaction quadratic (measured:
 * 10,000 services with anonymous maps took 19 s to load, with named maps 0.7 s).
 * They are per protocol because nft 1.0.6 cannot add a rule later against a
 * map typed with `th dport` once the rule has a `tcp` match ("conflicting
 * protocols specified: tcp vs. th"); a map typed `tcp dport` has no such issue.
 *
 * Least-connection schedulers (lc, wlc, sed, nq, lblc, lblcr) and
 * connection thresholds: nftables cannot count connections per server, so the
 * agent does (l4/feedback: conntrack every --nft-feedback-interval) and hands
 * each such service a `pick` — the servers that take new connections for the
 * next interval and their shares. Only the slots follow the pick; per-server
 * chains and affinity sets stay for every server of weight > 0, so a client
 * keeps its persistence to a server that is out of the pick (IPVS: a
 * persistence template wins over the scheduler). An empty pick (every server
 * overloaded) sends new connections to `grp.reject`: ICMP port unreachable,
 * as IPVS answers when it has no destination (ip_vs_leave).
 *
 * Direct routing (forwarder g, with `--nft-dr-device`) lives in a second
 * table, `netdev <table>`, whose ingress chain on that device sees packets
 * before the IP stack: `fwd ip to <server> device <dev>` resolves the
 * server's MAC and sends the packet out with the VIP still its destination
 * (nft_fwd_netdev.c, neigh_xmit), and the server answers the client
 * directly. Ingress has no conntrack, so every packet of a flow must pick the
 * same server by itself: the slot is a jhash of the flow (or of the client
 * for sh/persistence, of the VIP for dh), and weights still apply through
 * the slots. Such a service keeps an inet part too: DNAT for what ingress
 * never sees (the host's own connections, other interfaces), and in a
 * service mixing g with m/i, for the slots of its other servers, which find
 * no address at ingress and go on to the inet table. For IPv4
 * the slot maps are global like the inet table's; nft 1.0.6 aborts on a
 * jhash inside a concatenation with an IPv6 address in this table ("BUG:
 * register reg_low 15 invalid"), so an IPv6 service gets its own chain with
 * the slots in the rule.
 *
 * Masquerade (forwarder m) marks the first packet of a connection
 * (MASQ_MARK); the postrouting chain masquerades marked packets and clears
 * the bit. NAT rules only ever see the first packet of a connection, and an
 * established connection keeps its conntrack NAT binding whatever happens to
 * the rules, so rewriting a service never disturbs existing connections.
 */
import { createHash } from 'node:crypto';
import { ipFamily, maskOfPrefix, netmaskBits, type Service, type ServiceReport } from '@switchyard/shared';
import type { EffectiveService } from '../dataplane.js';
import { LEAST_CONNECTION } from '../feedback/pick.js';

export const MASQ_MARK = '0x00100000';
export const MAX_SLOTS = 256;
/** Fixed jhash seed: a rewritten rule hashes clients the same way as the one it replaces. */
export const JHASH_SEED = '0x5359';
/** The shared chain new connections of a service whose every server is overloaded go to. */
export const REJECT_CHAIN = 'grp.reject';

export interface NftChain {
  name: string;
  rules: string[];
}

export interface NftSet {
  name: string;
  /** The set body: `type ipv4_addr ; flags dynamic,timeout ; timeout 300s ;` */
  spec: string;
}

export interface NftElement {
  map: string;
  key: string;
  value: string;
}

/** The table a service's objects live in: `inet <table>` (NAT) or `netdev <table>` (direct routing). */
export type NftFamily = 'inet' | 'netdev';

/** Every kernel object of one service. */
export interface ServiceObjects {
  id: string;
  family: NftFamily;
  chains: NftChain[];
  sets: NftSet[];
  elements: NftElement[];
  /** Shared group chains the service jumps to (never deleted by a service update). */
  groups: NftChain[];
  /** Hash of all of the above; carried as the first rule's comment so a full sync can tell it wrote them. */
  digest: string;
  /** With --nft-dr-device, a service with g servers: its direct-routing part in the netdev table (this is its inet part). */
  dr?: ServiceObjects;
}

export const svcChain = (sid: string) => `svc.${sid}`;
export const isGroupChain = (name: string) => name.startsWith('grp.');
export const epChain = (sid: string, srvId: string) => `ep.${sid}.${srvId}`;
export const affSet = (sid: string, srvId: string) => `aff.${sid}.${srvId}`;

/** Service id of an object name this dataplane owns, or undefined. */
export function serviceOfObject(name: string): string | undefined {
  const m = /^(?:svc|ep|aff)\.([^.]+)/.exec(name);
  return m ? m[1] : undefined;
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

/**
 * Slots per server for the weights (0 = no slot), exact when the reduced
 * total fits in MAX_SLOTS, else proportional by largest remainder with every
 * positive weight keeping at least one slot.
 */
export function slotCounts(weights: number[]): { counts: number[]; exact: boolean } {
  const positive = weights.filter((w) => w > 0);
  if (positive.length === 0) return { counts: weights.map(() => 0), exact: true };
  const g = positive.reduce(gcd);
  const reduced = weights.map((w) => w / g);
  const total = reduced.reduce((a, b) => a + b, 0);
  if (total <= MAX_SLOTS) return { counts: reduced, exact: true };
  const budget = MAX_SLOTS - positive.length;
  const shares = reduced.map((w) => (w > 0 ? (w / total) * budget : 0));
  const counts = shares.map((s, i) => (reduced[i] > 0 ? 1 + Math.floor(s) : 0));
  let left = MAX_SLOTS - counts.reduce((a, b) => a + b, 0);
  const order = shares.map((s, i) => ({ i, r: s - Math.floor(s) })).filter((x) => reduced[x.i] > 0).sort((a, b) => b.r - a.r || a.i - b.i);
  for (const { i } of order) {
    if (left <= 0) break;
    counts[i]++;
    left--;
  }
  return { counts, exact: false };
}

/**
 * The slot → server sequence: smooth weighted round robin (nginx's), so
 * `numgen inc` interleaves servers the way IPVS's wrr does rather than
 * sending w consecutive connections to one server.
 */
export function slotSequence(counts: number[]): number[] {
  const total = counts.reduce((a, b) => a + b, 0);
  const current = counts.map(() => 0);
  const seq: number[] = [];
  for (let n = 0; n < total; n++) {
    let best = -1;
    for (let i = 0; i < counts.length; i++) {
      if (counts[i] === 0) continue;
      current[i] += counts[i];
      if (best < 0 || current[i] > current[best]) best = i;
    }
    current[best] -= total;
    seq.push(best);
  }
  return seq;
}

/** The client-address expression persistence is keyed on: `ip saddr & 255.255.255.0`. */
function clientExpr(family: 4 | 6, netmask: string): string {
  const saddr = family === 4 ? 'ip saddr' : 'ip6 saddr';
  if (netmask === '') return saddr;
  const bits = netmaskBits(netmask) ?? (family === 4 ? 32 : 128);
  if (bits >= (family === 4 ? 32 : 128)) return saddr;
  return `${saddr} & ${maskOfPrefix(family, bits)}`;
}

export interface ModelOptions {
  /** `--nft-dr-device`: where direct-routed (forwarder g) traffic arrives and leaves; unset, g is applied as DNAT. */
  drDevice?: string;
  /**
   * The connection feedback runs (l4/feedback), so least-connection
   * schedulers and thresholds are honoured. Without it (--nft-feedback-interval 0,
   * dry-run) they are approximated by the plain weights, with a warning.
   */
  feedback?: boolean;
}
/** (The feedback branch's name for the same options.) */
export type ServiceObjectsOptions = ModelOptions;

const target = (address: string, port: number) => (address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`);

/** Desired objects of one service, plus the warnings nftables has to give about it. */
export function serviceObjects(s: EffectiveService, opts: ModelOptions = {}): { objects: ServiceObjects; reports: ServiceReport[] } {
  const reports: ServiceReport[] = [];
  const warn = (message: string) => reports.push({ serviceId: s.id, level: 'warning', message });
  const active = s.servers.filter((srv) => srv.weight > 0);
  const routed = opts.drDevice !== undefined ? active.filter((srv) => srv.forwarder === 'g') : [];
  if (opts.drDevice !== undefined && routed.length > 0) {
    const mixed = routed.length < active.length;
    const dr = directRouted(s, active, opts.drDevice, mixed, warn);
    if (!mixed) {
      // What the ingress chain never sees — a process on this host connecting to the VIP (output hook),
      // VIP traffic arriving on another interface — is DNATed to the same servers and port, as without the flag.
      return { objects: { ...serviceObjects({ ...s, servers: s.servers.map((srv) => ({ ...srv, port: s.port })) }, { feedback: opts.feedback ?? false }).objects, dr }, reports };
    }
    // The other servers' share of the slots finds no address in the netdev table: those packets go on
    // up the stack, where the inet table DNATs them among the other servers by their own weights.
    const nat = serviceObjects({ ...s, servers: s.servers.filter((srv) => srv.forwarder !== 'g') }, { feedback: opts.feedback ?? false });
    return { objects: { ...nat.objects, dr }, reports: [...reports, ...nat.reports] };
  }
  const family = ipFamily(s.host);
  const ip = family === 4 ? 'ip' : 'ip6';
  const sfx = family === 4 ? '4' : '6';
  const key = `${s.host} . ${s.port}`;
  const vipKey = `${ip} daddr . ${s.type} dport`;
  const backends = `backends${sfx}_${s.type}`;
  const pick = `pick${sfx}_${s.type}`;

  const feedback = opts.feedback ?? false;
  if (feedback && s.countsUnavailable) warn(`connection counts unavailable (${s.countsUnavailable}); least-connection and thresholds use the last counts, or the weights`);
  if (!feedback && LEAST_CONNECTION.includes(s.scheduler)) warn(`scheduler ${s.scheduler} needs connection counts and the feedback is off; using the weights`);
  for (const srv of s.servers) {
    if (!feedback && srv.upper_threshold > 0) warn(`server ${srv.id}: connection thresholds need connection counts and the feedback is off; not enforced`);
    if (srv.forwarder === 'i') warn(`server ${srv.id}: forwarder i is applied as DNAT without masquerade (nftables cannot encapsulate IPIP)`);
    // (With --nft-dr-device a g server routes directly once it has a weight.)
    if (srv.forwarder === 'g' && opts.drDevice === undefined) warn(`server ${srv.id}: forwarder g is applied as DNAT without masquerade (direct routing needs --nft-dr-device)`);
  }

  // The feedback's choice for new connections (absent: every server by its weight).
  const shares = s.pick ? new Map(s.pick.map((p) => [p.id, p.weight])) : undefined;
  const picked = shares ? active.filter((srv) => shares.has(srv.id)) : active;
  const rejectAll = shares !== undefined && picked.length === 0 && active.length > 0;
  const weights = picked.map((srv) => (s.scheduler === 'rr' ? 1 : (shares?.get(srv.id) ?? srv.weight)));
  const { counts, exact } = slotCounts(weights);
  if (!exact) warn(`weights approximated with ${MAX_SLOTS} slots`);
  const seq = slotSequence(counts);
  const total = seq.length;
  // Least-connection schedulers share a pick's ties at random (IPVS alternates; over many connections the same split).
  const picker =
    s.scheduler === 'sh'
      ? `jhash ${ip} saddr mod ${total} seed ${JHASH_SEED}`
      : s.scheduler === 'dh'
        ? `jhash ${ip} daddr mod ${total} seed ${JHASH_SEED}`
        : s.scheduler === 'rr' || s.scheduler === 'wrr'
          ? `numgen inc mod ${total}`
          : `numgen random mod ${total}`;

  const chains: NftChain[] = [];
  const sets: NftSet[] = [];
  const svcKey = `${s.host} . ${s.type} . ${s.port}`;
  const elements: NftElement[] = [];
  const groups: NftChain[] = [];
  const svcRules: string[] = [];
  const forwarders = new Set(active.map((srv) => srv.forwarder === 'm'));
  const perServer = s.persistence > 0 || forwarders.size > 1;

  if (rejectAll && !perServer) {
    groups.push({ name: REJECT_CHAIN, rules: ['reject'] });
    elements.push({ map: `services${sfx}`, key: svcKey, value: `goto ${REJECT_CHAIN}` });
  } else if (total === 0 && !rejectAll) {
    // No server takes new connections: the service address is not rewritten.
  } else if (!perServer) {
    const masq = picked[0].forwarder === 'm';
    const group = `grp.${picker.split(' ').filter((w) => !['mod', 'seed', JHASH_SEED, String(total)].includes(w)).join('-')}.${total}.${s.type}${sfx}${masq ? '.masq' : ''}`;
    const mark = masq ? `meta mark set meta mark | ${MASQ_MARK} ` : '';
    groups.push({ name: group, rules: [`${mark}dnat ${ip} to ${vipKey} . ${picker} map @${backends}`] });
    elements.push({ map: `services${sfx}`, key: svcKey, value: `goto ${group}` });
    seq.forEach((srvIndex, slot) => {
      const srv = picked[srvIndex];
      elements.push({ map: backends, key: `${key} . ${slot}`, value: `${srv.host} . ${srv.port}` });
    });
  } else {
    elements.push({ map: `services${sfx}`, key: svcKey, value: `goto ${svcChain(s.id)}` });
    const client = clientExpr(family, s.netmask);
    for (const srv of active) {
      const ep = epChain(s.id, srv.id);
      const rules: string[] = [];
      if (s.persistence > 0) {
        const aff = affSet(s.id, srv.id);
        sets.push({ name: aff, spec: `type ${family === 4 ? 'ipv4_addr' : 'ipv6_addr'} ; flags dynamic,timeout ; timeout ${s.persistence}s ;` });
        svcRules.push(`${client} @${aff} goto ${ep}`);
        rules.push(`update @${aff} { ${client} }`);
      }
      if (srv.forwarder === 'm') rules.push(`meta mark set meta mark | ${MASQ_MARK}`);
      rules.push(`meta l4proto ${s.type} dnat ${ip} to ${target(srv.host, srv.port)}`);
      chains.push({ name: ep, rules });
    }
    // Clients with affinity still reach their server; the others are rejected when every server is overloaded.
    if (rejectAll) svcRules.push('reject');
    else svcRules.push(`${vipKey} . ${picker} vmap @${pick}`);
    seq.forEach((srvIndex, slot) => {
      elements.push({ map: pick, key: `${key} . ${slot}`, value: `goto ${epChain(s.id, picked[srvIndex].id)}` });
    });
  }

  if (chains.length === 0 && svcRules.length === 0) return { objects: { id: s.id, family: 'inet', chains, sets, elements, groups, digest: '' }, reports };
  const digest = createHash('sha256')
    .update(JSON.stringify([svcRules, chains, sets, elements]))
    .digest('hex')
    .slice(0, 16);
  // The first rule carries the digest; it also counts the service's new connections.
  chains.unshift({ name: svcChain(s.id), rules: [`counter comment "sy:${digest}"`, ...svcRules] });
  return { objects: { id: s.id, family: 'inet', chains, sets, elements, groups, digest }, reports };
}

/**
 * The direct-routing part of a service: objects for `netdev <table>`, with
 * an address for the slots of its g servers only (`mixed`: others have some).
 * The slot hash replaces the scheduler (ingress sees every packet, not only
 * a connection's first): sh and persistence hash the client address (with
 * the netmask) — affinity then lasts as long as the server set, without a
 * timeout — dh the VIP, everything else the flow (address and port).
 */
function directRouted(s: Service, active: Service['servers'], device: string, mixed: boolean, warn: (m: string) => void): ServiceObjects {
  const family = ipFamily(s.host);
  const ip = family === 4 ? 'ip' : 'ip6';
  const sfx = family === 4 ? '4' : '6';
  // With other forwarders mixed in, the inet part reports the scheduler and its own servers.
  if (!mixed && LEAST_CONNECTION.includes(s.scheduler)) warn(`scheduler ${s.scheduler} is not expressible at ingress (no connection tracking there); direct routing uses a weighted hash of the flow`);
  for (const srv of s.servers.filter((x) => x.forwarder === 'g')) {
    if (srv.weight > 0 && srv.port !== s.port) warn(`server ${srv.id}: direct routing keeps the service port ${s.port}; the server port ${srv.port} is not used`);
    if (srv.upper_threshold > 0) warn(`server ${srv.id}: connection thresholds are not enforced for direct routing (no connection tracking at ingress)`);
  }
  const { counts, exact } = slotCounts(active.map((srv) => (s.scheduler === 'rr' ? 1 : srv.weight)));
  if (!exact) warn(`weights approximated with ${MAX_SLOTS} slots`);
  const seq = slotSequence(counts);
  const total = seq.length;
  const keyed =
    s.persistence > 0 || s.scheduler === 'sh'
      ? { name: `client${s.persistence > 0 && s.netmask !== '' ? (netmaskBits(s.netmask) ?? '') : ''}`, expr: s.persistence > 0 ? clientExpr(family, s.netmask) : `${ip} saddr` }
      : s.scheduler === 'dh'
        ? { name: 'vip', expr: `${ip} daddr` }
        : { name: 'flow', expr: `${ip} saddr . ${s.type} sport` };
  const hash = `jhash ${keyed.expr} mod ${total} seed ${JHASH_SEED}`;
  const dev = JSON.stringify(device);
  const svcKey = `${s.host} . ${s.type} . ${s.port}`;
  const elements: NftElement[] = [];
  const groups: NftChain[] = [];
  const chains: NftChain[] = [];
  if (family === 4) {
    const group = `grp.fwd-${keyed.name}.${total}.${s.type}4`;
    groups.push({ name: group, rules: [`fwd ip to ip daddr . ${s.type} dport . ${hash} map @fwd4_${s.type} device ${dev}`] });
    elements.push({ map: 'services4', key: svcKey, value: `goto ${group}` });
    seq.forEach((i, slot) => {
      if (active[i].forwarder === 'g') elements.push({ map: `fwd4_${s.type}`, key: `${s.host} . ${s.port} . ${slot}`, value: active[i].host });
    });
    return { id: s.id, family: 'netdev', chains, sets: [], elements, groups, digest: '' };
  }
  const slots = seq.flatMap((i, slot) => (active[i].forwarder === 'g' ? [`${slot} : ${active[i].host}`] : [])).join(', ');
  const rules = [`fwd ${ip} to ${hash} map { ${slots} } device ${dev}`];
  elements.push({ map: `services${sfx}`, key: svcKey, value: `goto ${svcChain(s.id)}` });
  const digest = createHash('sha256').update(JSON.stringify([rules, elements])).digest('hex').slice(0, 16);
  chains.push({ name: svcChain(s.id), rules: [`counter comment "sy:${digest}"`, ...rules] });
  return { id: s.id, family: 'netdev', chains, sets: [], elements, groups, digest };
}
