/**
 * The `conntrack` (conntrack-tools) adapter: the only module that builds
 * `conntrack` argv. It lists the kernel's DNAT'ed connections of one address
 * family (`conntrack -L -f ipv4 --dst-nat`: one netlink dump; conntrack -L
 * without -f shows IPv4 only) and parses the text lines into the two tuples
 * the least-connection feedback needs: where the client went (the VIP) and
 * who answers (the real server). `FakeConntrack` is the in-memory stand-in.
 *
 * conntrack has no `-n NS`; a namespace goes through the runner's per-call
 * `ip netns exec`, like nft.
 */
import type { Runner } from '../exec/runner.js';

export type L4Proto = 'tcp' | 'udp';

/** One DNAT'ed connection as conntrack lists it. */
export interface ConntrackEntry {
  proto: L4Proto;
  /** TCP state (`ESTABLISHED`, `TIME_WAIT`, …); undefined for UDP, which has none. */
  state?: string;
  /** The original direction's destination: the service address and port. */
  vip: string;
  vport: number;
  /** The reply direction's source: the real server the connection was sent to. */
  server: string;
  sport: number;
}

/** What the feedback needs of a connection table (the adapter, or the fake). */
export interface ConnectionTable {
  dnatConnections(family: 4 | 6): Promise<ConntrackEntry[]>;
}

const FIELD = /(src|dst|sport|dport)=(\S+)/g;

/**
 * Parses `conntrack -L` text output. A line reads
 * `tcp 6 431999 ESTABLISHED src=C dst=VIP sport=P dport=80 src=S dst=C sport=8080 dport=P [ASSURED] mark=0 use=1`:
 * the first four key=value pairs are the original tuple, the next four the
 * reply tuple. Lines of other protocols and lines without both tuples are
 * skipped (the summary `N flow entries have been shown.` goes to stderr).
 */
export function parseConntrack(text: string): ConntrackEntry[] {
  const out: ConntrackEntry[] = [];
  for (const line of text.split('\n')) {
    const proto = line.slice(0, 3);
    if (proto !== 'tcp' && proto !== 'udp') continue;
    const words = line.split(/\s+/, 4);
    const state = proto === 'tcp' && words[3] && !words[3].includes('=') ? words[3] : undefined;
    const kv: [string, string][] = [];
    for (const m of line.matchAll(FIELD)) {
      kv.push([m[1], m[2]]);
      if (kv.length === 8) break;
    }
    if (kv.length < 8) continue;
    const orig = Object.fromEntries(kv.slice(0, 4));
    const reply = Object.fromEntries(kv.slice(4));
    out.push({ proto, ...(state ? { state } : {}), vip: orig.dst, vport: Number(orig.dport), server: reply.src, sport: Number(reply.sport) });
  }
  return out;
}

export class ConntrackAdapter implements ConnectionTable {
  constructor(
    private readonly runner: Runner,
    /** Run every command inside this network namespace. */
    private readonly netns?: string,
  ) {}

  /** Every destination-NAT'ed connection of `family` (`conntrack -L -f ipv4 --dst-nat`). */
  async dnatConnections(family: 4 | 6): Promise<ConntrackEntry[]> {
    const res = await this.runner.run('conntrack', ['-L', '-f', family === 4 ? 'ipv4' : 'ipv6', '--dst-nat'], this.netns ? { netns: this.netns } : {});
    return parseConntrack(res.stdout);
  }
}

/** An in-memory connection table for tests: entries are set directly; every read is recorded. */
export class FakeConntrack implements ConnectionTable {
  entries: ConntrackEntry[] = [];
  readonly reads: (4 | 6)[] = [];
  /** Make the next read fail with this error. */
  failNext?: Error;

  async dnatConnections(family: 4 | 6): Promise<ConntrackEntry[]> {
    this.reads.push(family);
    if (this.failNext) {
      const err = this.failNext;
      this.failNext = undefined;
      throw err;
    }
    return this.entries.filter((e) => e.vip.includes(':') === (family === 6));
  }
}
