/**
 * The `conntrack` (conntrack-tools) adapter: the only module that builds
 * `conntrack` argv. It lists the kernel's DNAT'ed connections of one address
 * family (`conntrack -L -f ipv4 --dst-nat`: one netlink dump; conntrack -L
 * without -f shows IPv4 only) and parses the text lines into the two tuples
 * the least-connection feedback needs: where the client went (the VIP) and
 * who answers (the real server). `FakeConntrack` is the in-memory stand-in.
 *
 * `watch` follows the same connections as events (`conntrack -E`: one
 * long-running process, lines only when a connection is created, changes TCP
 * state, or ends), so counting costs nothing while nothing happens — a dump
 * every feedback round costs two process starts (measured: bench/nft-feedback.ts).
 *
 * conntrack has no `-n NS`; a namespace goes through the runner's per-call
 * `ip netns exec`, like nft.
 */
import type { Runner } from '../exec/runner.js';

export type L4Proto = 'tcp' | 'udp';

/** One DNAT'ed connection as conntrack lists it. */
export interface ConntrackEntry {
  /** The original tuple (`tcp 10.0.0.2 40000 10.1.0.1 80`): the connection's identity across events. */
  id: string;
  proto: L4Proto;
  /** TCP state (`ESTABLISHED`, `TIME_WAIT`, …); undefined for UDP, which has none. */
  state?: string;
  /** Seconds until conntrack expires it (absent on destroy events). */
  timeout?: number;
  /** The original direction's destination: the service address and port. */
  vip: string;
  vport: number;
  /** The reply direction's source: the real server the connection was sent to. */
  server: string;
  sport: number;
}

export interface ConntrackEvent {
  /** new and update carry the connection's current state; destroy: it is gone. */
  type: 'new' | 'update' | 'destroy';
  entry: ConntrackEntry;
}

export interface ConnectionWatch {
  stop(): void;
}

export interface WatchHandlers {
  onEvent(e: ConntrackEvent): void;
  /** Events were or will be missed (the kernel dropped some; or the watch `ended`): counts need a fresh dump. */
  onLost(reason: string, ended: boolean): void;
}

/** What the feedback needs of a connection table (the adapter, or the fake). */
export interface ConnectionTable {
  dnatConnections(family: 4 | 6): Promise<ConntrackEntry[]>;
  /** Follows the DNAT'ed connections of both families as events; undefined when it cannot (then: a dump every round). */
  watch?(handlers: WatchHandlers): ConnectionWatch | undefined;
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
    const e = parseLine(line);
    if (e) out.push(e);
  }
  return out;
}

/** One line of `conntrack -L` (or of `-E` once its `[TYPE]` is cut off); undefined when it is not a tcp/udp connection. */
function parseLine(line: string): ConntrackEntry | undefined {
  const proto = line.slice(0, 3);
  if (proto !== 'tcp' && proto !== 'udp') return undefined;
  const words = line.split(/\s+/, 4);
  const state = proto === 'tcp' && words[3] && !words[3].includes('=') ? words[3] : undefined;
  const timeout = /^\d+$/.test(words[2] ?? '') ? Number(words[2]) : undefined;
  const kv: [string, string][] = [];
  for (const m of line.matchAll(FIELD)) {
    kv.push([m[1], m[2]]);
    if (kv.length === 8) break;
  }
  if (kv.length < 8) return undefined;
  const orig = Object.fromEntries(kv.slice(0, 4));
  const reply = Object.fromEntries(kv.slice(4));
  return {
    id: `${proto} ${orig.src} ${orig.sport} ${orig.dst} ${orig.dport}`,
    proto,
    ...(state ? { state } : {}),
    ...(timeout !== undefined ? { timeout } : {}),
    vip: orig.dst,
    vport: Number(orig.dport),
    server: reply.src,
    sport: Number(reply.sport),
  };
}

const EVENT_TYPES: Record<string, ConntrackEvent['type']> = { NEW: 'new', UPDATE: 'update', DESTROY: 'destroy' };

/** One line of `conntrack -E`: `    [NEW] tcp 6 120 SYN_SENT src=… dst=… sport=… dport=… [UNREPLIED] src=… …`. */
export function parseConntrackEvent(line: string): ConntrackEvent | undefined {
  const m = /^\s*\[(NEW|UPDATE|DESTROY)\]\s+(.*)$/.exec(line);
  if (!m) return undefined;
  const entry = parseLine(m[2]);
  return entry ? { type: EVENT_TYPES[m[1]], entry } : undefined;
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

  /**
   * `conntrack -E -e NEW,UPDATE,DESTROY --dst-nat` (every family). The kernel
   * drops events when the listener falls behind (conntrack says ENOBUFS on
   * stderr and goes on): that, or the process ending, is reported as lost.
   */
  watch(handlers: WatchHandlers): ConnectionWatch | undefined {
    if (!this.runner.stream) return undefined;
    let stopped = false;
    const handle = this.runner.stream('conntrack', ['-E', '-e', 'NEW,UPDATE,DESTROY', '--dst-nat'], {
      ...(this.netns ? { netns: this.netns } : {}),
      onLine: (line) => {
        const e = parseConntrackEvent(line);
        if (e) handlers.onEvent(e);
      },
      onStderrLine: (line) => {
        if (/ENOBUFS/.test(line)) handlers.onLost('conntrack -E: the kernel dropped events (ENOBUFS)', false);
      },
    });
    void handle.ended.then((code) => {
      if (!stopped) handlers.onLost(`conntrack -E ended (exit ${code})`, true);
    });
    return {
      stop: () => {
        stopped = true;
        handle.stop();
      },
    };
  }
}

/**
 * An in-memory connection table for tests: entries are set directly; every
 * read is recorded. With `events`, it is watchable: `emit` hands an event to
 * the watcher (and updates `entries` the same way), `lose` reports lost events.
 */
export class FakeConntrack implements ConnectionTable {
  entries: ConntrackEntry[] = [];
  readonly reads: (4 | 6)[] = [];
  private watcher?: WatchHandlers;

  constructor(private readonly events = false) {}

  watch(handlers: WatchHandlers): ConnectionWatch | undefined {
    if (!this.events) return undefined;
    this.watcher = handlers;
    return { stop: () => (this.watcher = undefined) };
  }

  emit(type: ConntrackEvent['type'], entry: ConntrackEntry): void {
    this.entries = this.entries.filter((e) => e.id !== entry.id);
    if (type !== 'destroy') this.entries.push(entry);
    this.watcher?.onEvent({ type, entry });
  }

  lose(reason = 'lost', ended = false): void {
    this.watcher?.onLost(reason, ended);
    if (ended) this.watcher = undefined;
  }
  /** Make the next read fail with this error. */
  failNext?: Error;
  /** Runs inside the next read, before it answers (events that race a dump). */
  duringNextRead?: () => void;

  async dnatConnections(family: 4 | 6): Promise<ConntrackEntry[]> {
    this.reads.push(family);
    const snapshot = this.entries.filter((e) => e.vip.includes(':') === (family === 6));
    const during = this.duringNextRead;
    this.duringNextRead = undefined;
    during?.();
    if (this.failNext) {
      const err = this.failNext;
      this.failNext = undefined;
      throw err;
    }
    return snapshot;
  }
}
