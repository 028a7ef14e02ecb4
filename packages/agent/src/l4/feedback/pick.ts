/**
 * Which real servers take a service's new connections for the next feedback
 * interval, from the connection counts the kernel has now — pure, so every
 * IPVS rule it imitates is a unit test. IPVS decides per connection, in the
 * kernel; the nftables dataplane can only rewrite its weighted pick every so
 * often, so the pick for one interval is the set of servers IPVS would send
 * the NEXT connection to (ties share it by weight), and the next round looks
 * again. The IPVS rules (net/netfilter/ipvs, read, not copied):
 *
 *  - Counts: a connection is *active* while TCP is ESTABLISHED and *inactive*
 *    in any other state (SYN_RECV, FIN_WAIT, TIME_WAIT, …; ip_vs_proto_tcp.c
 *    set_tcp_state). UDP connections are always inactive (nothing in
 *    ip_vs_proto_udp.c clears IP_VS_CONN_F_INACTIVE, which every new
 *    connection starts with), which is why `ipvsadm -Ln` lists them as
 *    InActConn.
 *  - lc / wlc: overhead = active × 256 + inactive (ip_vs_dest_conn_overhead);
 *    lc takes the least overhead, wlc the least overhead / weight.
 *  - sed: (active + 1) / weight (ip_vs_sed.c). nq: a server with no active
 *    connection first, else as sed (ip_vs_nq.c).
 *  - lblc / lblcr: pick a server for a destination address with wlc's formula
 *    (`__ip_vs_lblc_schedule`) and keep sending that destination there until
 *    the server is overloaded. Behind a VIP every connection has the same
 *    destination, so their locality has no meaning here: they run as wlc.
 *  - Thresholds (ip_vs_conn.c ip_vs_bind_dest / ip_vs_unbind_dest): a server
 *    becomes overloaded once active + inactive ≥ upper_threshold, and stays so
 *    until active + inactive < lower_threshold — or, when lower_threshold is 0,
 *    until (active + inactive) × 4 < upper_threshold × 3. Raising the upper
 *    threshold or setting it to 0 clears the flag at once (ip_vs_ctl.c
 *    __ip_vs_update_dest). Every scheduler skips overloaded servers; with all
 *    of them overloaded IPVS has no destination and answers with ICMP port
 *    unreachable (ip_vs_leave).
 *  - Servers of weight 0 take no new connection under any scheduler.
 */
import type { Scheduler } from '@switchyard/shared';

/** Schedulers that choose by connection counts: IPVS does it in the kernel, nftables through the feedback. */
export const LEAST_CONNECTION: readonly Scheduler[] = ['lc', 'wlc', 'sed', 'nq', 'lblc', 'lblcr'];

/** lc and wlc weigh active connections this much more than inactive ones (IPVS: `activeconns << 8`). */
export const ACTIVE_OVERHEAD = 256;

export interface ServerLoad {
  active: number;
  inactive: number;
}

export interface PickServer {
  id: string;
  weight: number;
  upper_threshold: number;
  lower_threshold: number;
}

/** A server that takes new connections, and its share of them (slots of the weighted pick). */
export interface PickedServer {
  id: string;
  weight: number;
}

export interface PickInput {
  scheduler: Scheduler;
  servers: readonly PickServer[];
  /** Connections per server id (a server without any is absent); undefined when the counts are unknown. */
  loads?: ReadonlyMap<string, ServerLoad>;
  /** Servers overloaded after the previous round, each with the upper threshold that made it so. */
  overloaded: ReadonlyMap<string, number>;
}

export interface PickResult {
  /** The servers that take new connections, in the service's order; empty with servers of weight > 0 = all overloaded. */
  pick: PickedServer[];
  overloaded: Map<string, number>;
}

const NONE: ServerLoad = { active: 0, inactive: 0 };

/** A load as a fraction num/den, compared exactly by cross-multiplication as IPVS does. */
interface Score {
  num: number;
  den: number;
}

function score(scheduler: Scheduler, load: ServerLoad, weight: number): Score {
  switch (scheduler) {
    case 'lc':
      return { num: load.active * ACTIVE_OVERHEAD + load.inactive, den: 1 };
    case 'sed':
    case 'nq':
      return { num: load.active + 1, den: weight };
    default:
      // wlc, lblc, lblcr
      return { num: load.active * ACTIVE_OVERHEAD + load.inactive, den: weight };
  }
}

/** The overload flag after this round (IPVS hysteresis); `was` is the upper threshold that set it, if set. */
export function overloadedNow(server: PickServer, load: ServerLoad | undefined, was: number | undefined): boolean {
  const upper = server.upper_threshold;
  if (upper === 0) return false;
  // Raising the threshold clears the flag (a lower one keeps it).
  let flagged = was !== undefined && upper <= was;
  // Unknown counts: nothing happened that IPVS would see.
  if (!load) return flagged;
  const total = load.active + load.inactive;
  if (total >= upper) return true;
  if (flagged) {
    const resume = server.lower_threshold > 0 ? total < server.lower_threshold : total * 4 < upper * 3;
    if (resume) flagged = false;
  }
  return flagged;
}

export function pickServers(input: PickInput): PickResult {
  const { scheduler, servers, loads } = input;
  const overloaded = new Map<string, number>();
  for (const s of servers) {
    const was = input.overloaded.get(s.id);
    if (overloadedNow(s, loads ? (loads.get(s.id) ?? NONE) : undefined, was)) {
      overloaded.set(s.id, was !== undefined && s.upper_threshold <= was ? was : s.upper_threshold);
    }
  }
  const candidates = servers.filter((s) => s.weight > 0 && !overloaded.has(s.id));
  const lc = LEAST_CONNECTION.includes(scheduler);
  // Not a least-connection scheduler, or nothing known yet: the plain weights.
  if (!lc || !loads || candidates.length === 0) return { pick: candidates.map((s) => ({ id: s.id, weight: s.weight })), overloaded };

  let pool = candidates;
  if (scheduler === 'nq') {
    const idle = candidates.filter((s) => (loads.get(s.id) ?? NONE).active === 0);
    if (idle.length > 0) pool = idle;
  }
  const scores = pool.map((s) => score(scheduler, loads.get(s.id) ?? NONE, s.weight));
  let best = scores[0];
  for (const sc of scores) if (sc.num * best.den < best.num * sc.den) best = sc;
  const pick = pool.filter((_, i) => scores[i].num * best.den === best.num * scores[i].den);
  // lc ignores weights, so its ties share equally; the others share by weight.
  return { pick: pick.map((s) => ({ id: s.id, weight: scheduler === 'lc' ? 1 : s.weight })), overloaded };
}


/** Two picks are the same (same servers, same weights, same order). */
export function samePick(a: readonly PickedServer[] | undefined, b: readonly PickedServer[] | undefined): boolean {
  if (a === b) return true;
  if (!a || !b || a.length !== b.length) return false;
  return a.every((x, i) => x.id === b[i].id && x.weight === b[i].weight);
}
