/**
 * The nftables dataplane's connection feedback: it counts the kernel's
 * DNAT'ed connections per real server of every service that needs counts (a
 * least-connection scheduler, or a server with an upper threshold), and every
 * `--nft-feedback-interval` asks the pure `pickServers` which servers take
 * the new connections of each service whose counts moved. A service whose
 * pick changed is handed back to the role (`onChange`), which marks it dirty:
 * the next incremental pass rewrites that service's slot elements, in one nft
 * transaction with every other service that changed. Services whose counts
 * stay are not even looked at.
 *
 * IPVS counts its own connections; conntrack is the nftables equivalent: the
 * original tuple's destination is the VIP, the reply tuple's source the real
 * server, and the TCP state says active (ESTABLISHED) or not. Counts follow
 * conntrack's events (`conntrack -E`, one long-running process: no cost while
 * nothing happens), on top of a full dump (`conntrack -L`) at the start, every
 * RESYNC_MS, when the set of followed services changes, and when events were
 * lost. Without events (a runner that cannot stream) every round dumps.
 * Rounds never overlap. A failed dump keeps every pick as it is.
 *
 * A connection's end is only an event once the kernel's conntrack garbage
 * collector reaps it, which can be most of a minute after it expired
 * (`conntrack -L` hides expired entries at once). So a TCP connection in a
 * closing state (TIME_WAIT, FIN_WAIT, …: timeouts nothing refreshes) is
 * dropped from the counts when the timeout its last event gave runs out.
 */
import type { Logger } from 'pino';
import { canonicalIp, ipFamily, type Service } from '@switchyard/shared';
import type { ConnectionTable, ConnectionWatch, ConntrackEntry, ConntrackEvent } from '../../adapters/conntrack.js';
import type { EffectiveService } from '../dataplane.js';
import { LEAST_CONNECTION, pickServers, samePick, type PickedServer, type ServerLoad } from './pick.js';

export { LEAST_CONNECTION, pickServers, overloadedNow, samePick, ACTIVE_OVERHEAD, type PickedServer, type PickServer, type ServerLoad, type PickInput, type PickResult } from './pick.js';

/** The service needs connection counts to be scheduled as IPVS would. */
export function needsFeedback(s: Service): boolean {
  return LEAST_CONNECTION.includes(s.scheduler) || s.servers.some((srv) => srv.upper_threshold > 0);
}

/** A full dump at least this often while events flow: undoes drift from events nobody saw. */
export const RESYNC_MS = 30_000;

export interface ConnectionFeedbackOptions {
  table: ConnectionTable;
  intervalMs: number;
  log: Logger;
  /** The pick of these services changed: re-derive their effective state and sync them. */
  onChange: (serviceIds: readonly string[]) => void;
}

interface Tracked {
  service: Service;
  /** The counts of the last decision (by server id); undefined before the first. */
  loads?: Map<string, ServerLoad>;
  /** Those counts as text: counts equal to the last decision's decide nothing anew. */
  signature?: string;
  pick?: PickedServer[];
  overloaded: Map<string, number>;
}

/** A counted connection: its service, its real server (`host port`), and whether it is active. */
interface Counted {
  sid: string;
  server: string;
  active: boolean;
  /** A closing TCP connection: dropped from the counts at this time (performance.now() ms). */
  expires?: number;
}

export interface FeedbackStats {
  rounds: number;
  /** Rounds whose dump failed. */
  failed: number;
  /** Full dumps (`conntrack -L`), and events applied. */
  dumps: number;
  events: number;
  /** Service picks changed, over all rounds. */
  changes: number;
  /** Duration of the last round (ms), and the connections counted after it. */
  lastRoundMs: number;
  connections: number;
}

const NO_LOADS: ReadonlyMap<string, ServerLoad> = new Map();
const connKey = (proto: string, vip: string, vport: number) => `${proto} ${vip} ${vport}`;
const serverKey = (host: string, port: number) => `${host} ${port}`;
const canon = (addr: string) => (addr.includes(':') ? (canonicalIp(addr) ?? addr) : addr);

export class ConnectionFeedback {
  private readonly tracked = new Map<string, Tracked>();
  /** `proto vip vport` → service id, rebuilt when the tracked set changes. */
  private index?: Map<string, string>;
  private readonly conns = new Map<string, Counted>();
  /** Per service id, per `host port`: active and inactive connections. */
  private readonly counts = new Map<string, Map<string, ServerLoad>>();
  /** Services whose counts moved since the last round. */
  private readonly dirty = new Set<string>();
  private watch?: ConnectionWatch;
  private watchUnavailable = false;
  private needDump = true;
  private lastDump = 0;
  /** While a dump runs: the events that arrive meanwhile, applied again on top of it. */
  private duringDump?: ConntrackEvent[];
  private lostLogged = 0;
  /** The last dump's error, until a dump succeeds. */
  private unreadable?: string;
  /** Closing connections by the 100 ms slice their timeout runs out in (checked lazily against `expires`). */
  private readonly expiring = new Map<number, string[]>();
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private stopped = false;
  readonly stats: FeedbackStats = { rounds: 0, failed: 0, dumps: 0, events: 0, changes: 0, lastRoundMs: 0, connections: 0 };

  constructor(private readonly opts: ConnectionFeedbackOptions) {}

  get size(): number {
    return this.tracked.size;
  }

  /**
   * The service as the role has it after health checks (undefined: gone).
   * Services that need no counts are not tracked. A changed service is
   * picked for at once from the last counts (a server that joins has none,
   * so a least-connection service sends it new connections from the very
   * pass that adds it); the next round decides again.
   */
  setService(id: string, service: Service | undefined): void {
    const had = this.tracked.get(id);
    if (!service || !needsFeedback(service)) {
      if (had) {
        this.tracked.delete(id);
        this.index = undefined;
      }
      return;
    }
    if (!had || had.service.host !== service.host || had.service.port !== service.port || had.service.type !== service.type) {
      // Connections of a service nobody followed were not counted: read them.
      this.index = undefined;
      this.needDump = true;
    }
    const t: Tracked = { service, overloaded: had?.overloaded ?? new Map() };
    if (had?.loads) {
      t.loads = had.loads;
      const next = pickServers({ scheduler: service.scheduler, servers: service.servers, loads: had.loads, overloaded: t.overloaded });
      t.overloaded = next.overloaded;
      t.pick = next.pick;
    }
    this.tracked.set(id, t);
    this.dirty.add(id);
  }

  /** The service with the current pick, or as it is when there is none (untracked, or nothing counted yet). */
  overlay(service: Service): EffectiveService {
    const t = this.tracked.get(service.id);
    if (!t) return service;
    if (this.unreadable) return { ...service, ...(t.pick ? { pick: t.pick } : {}), countsUnavailable: this.unreadable };
    return t.pick ? { ...service, pick: t.pick } : service;
  }

  /** Why the connections cannot be read right now (the last dump failed), if so. */
  get unavailable(): string | undefined {
    return this.unreadable;
  }

  /** Readable or not flipped: every followed service reports it (or stops reporting it) in its status. */
  private setUnreadable(reason: string | undefined): void {
    const flipped = (reason === undefined) !== (this.unreadable === undefined);
    this.unreadable = reason;
    if (flipped && this.tracked.size > 0) this.opts.onChange([...this.tracked.keys()]);
  }

  start(): void {
    this.stopped = false;
    this.schedule();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
    this.watch?.stop();
    this.watch = undefined;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.round().then(
        () => undefined,
        (err: unknown) => this.opts.log.warn({ err: (err as Error).message }, 'connection feedback round failed'),
      );
      void this.running.finally(() => this.schedule());
    }, this.opts.intervalMs);
    this.timer.unref();
  }

  private onEvent(e: ConntrackEvent): void {
    this.stats.events++;
    this.duringDump?.push(e);
    this.apply(e.entry, e.type === 'destroy');
  }

  private onLost(reason: string, ended: boolean): void {
    this.needDump = true;
    if (ended) this.watch = undefined;
    this.lostLogged++;
    if (this.lostLogged === 1 || this.lostLogged % 100 === 0) this.opts.log.warn({ reason, times: this.lostLogged }, 'connection events lost; counting again from a dump');
  }

  /** One connection created, changed or gone (`gone`): the counts and the dirty set follow. */
  private apply(entry: ConntrackEntry, gone: boolean): void {
    const old = this.conns.get(entry.id);
    const sid = gone ? undefined : this.indexOf().get(connKey(entry.proto, canon(entry.vip), entry.vport));
    const now: Counted | undefined = sid ? { sid, server: serverKey(canon(entry.server), entry.sport), active: entry.state === 'ESTABLISHED' } : undefined;
    if (now && entry.proto === 'tcp' && !now.active && entry.timeout !== undefined) {
      now.expires = performance.now() + entry.timeout * 1000;
      const slice = Math.ceil(now.expires / 100);
      const list = this.expiring.get(slice);
      if (list) list.push(entry.id);
      else this.expiring.set(slice, [entry.id]);
    }
    if (old && now && old.sid === now.sid && old.server === now.server && old.active === now.active) {
      old.expires = now.expires;
      return;
    }
    if (old) {
      const l = this.counts.get(old.sid)?.get(old.server);
      if (l) {
        if (old.active) l.active--;
        else l.inactive--;
        if (l.active === 0 && l.inactive === 0) this.counts.get(old.sid)?.delete(old.server);
      }
      this.conns.delete(entry.id);
      this.dirty.add(old.sid);
    }
    if (now) {
      let perServer = this.counts.get(now.sid);
      if (!perServer) this.counts.set(now.sid, (perServer = new Map()));
      let l = perServer.get(now.server);
      if (!l) perServer.set(now.server, (l = { active: 0, inactive: 0 }));
      // IPVS: TCP ESTABLISHED is active, any other state (and UDP, which has none) inactive.
      if (now.active) l.active++;
      else l.inactive++;
      this.conns.set(entry.id, now);
      this.dirty.add(now.sid);
    }
  }

  /** Counts everything again from `conntrack -L`, then the events that came in meanwhile. */
  private async dump(): Promise<void> {
    const families = new Set<4 | 6>();
    for (const t of this.tracked.values()) families.add(ipFamily(t.service.host));
    this.duringDump = [];
    let entries: ConntrackEntry[] = [];
    try {
      for (const f of [...families].sort()) entries = entries.concat(await this.opts.table.dnatConnections(f));
    } catch (err) {
      this.duringDump = undefined;
      throw err;
    }
    const during = this.duringDump;
    this.duringDump = undefined;
    this.conns.clear();
    this.counts.clear();
    this.expiring.clear();
    for (const e of entries) this.apply(e, false);
    for (const e of during) this.apply(e.entry, e.type === 'destroy');
    this.needDump = false;
    this.setUnreadable(undefined);
    this.lastDump = performance.now();
    this.stats.dumps++;
  }

  /** One round: count, pick; returns the ids whose pick changed (also handed to onChange). */
  async round(): Promise<string[]> {
    if (this.tracked.size === 0) {
      // Nothing to follow: no events to read either.
      this.watch?.stop();
      this.watch = undefined;
      return [];
    }
    const started = performance.now();
    this.stats.rounds++;
    if (!this.watch && !this.watchUnavailable && this.opts.table.watch) {
      this.watch = this.opts.table.watch({ onEvent: (e) => this.onEvent(e), onLost: (r, ended) => this.onLost(r, ended) });
      if (!this.watch) this.watchUnavailable = true;
      this.needDump = true;
    }
    let all = false;
    if (!this.watch || this.needDump || performance.now() - this.lastDump >= RESYNC_MS) {
      try {
        await this.dump();
        all = true;
      } catch (err) {
        this.stats.failed++;
        this.setUnreadable((err as Error).message.split('\n')[0].slice(0, 200));
        // Picks stay as they are: better stale counts than none.
        if (this.stats.failed === 1 || this.stats.failed % 100 === 0) this.opts.log.warn({ err: (err as Error).message, failed: this.stats.failed }, 'cannot read connections (conntrack); picks unchanged');
        return [];
      }
    }
    this.expire();
    const ids = all ? [...this.tracked.keys()] : [...this.dirty];
    this.dirty.clear();
    const changed: string[] = [];
    for (const id of ids) {
      const t = this.tracked.get(id);
      if (!t) continue;
      const bySrv = this.counts.get(id);
      let loads = NO_LOADS as Map<string, ServerLoad>;
      let signature = '';
      if (bySrv) {
        loads = new Map();
        for (const srv of t.service.servers) {
          const l = bySrv.get(serverKey(srv.host, srv.port));
          if (!l) continue;
          loads.set(srv.id, { ...l });
          signature += `${srv.id}:${l.active}/${l.inactive} `;
        }
      }
      // Same counts as the last decision, same service (setService clears the signature): same pick, same flags.
      if (t.pick && t.signature === signature) continue;
      const next = pickServers({ scheduler: t.service.scheduler, servers: t.service.servers, loads, overloaded: t.overloaded });
      t.loads = loads;
      t.signature = signature;
      t.overloaded = next.overloaded;
      if (!samePick(t.pick, next.pick)) {
        t.pick = next.pick;
        changed.push(id);
      }
    }
    this.stats.changes += changed.length;
    this.stats.connections = this.conns.size;
    this.stats.lastRoundMs = performance.now() - started;
    if (changed.length > 0) {
      this.opts.log.debug({ changed: changed.length, looked: ids.length, connections: this.conns.size, ms: Math.round(this.stats.lastRoundMs) }, 'connection feedback moved picks');
      this.opts.onChange(changed);
    }
    return changed;
  }

  /** Drops closing connections whose conntrack timeout has run out (their destroy event may come much later). */
  private expire(): void {
    const now = performance.now();
    for (const [slice, ids] of this.expiring) {
      if (slice * 100 > now) continue;
      this.expiring.delete(slice);
      for (const id of ids) {
        const c = this.conns.get(id);
        // Only if the connection is still in the state that set this time.
        if (c?.expires !== undefined && c.expires <= now) this.apply({ id, proto: 'tcp', vip: '', vport: 0, server: '', sport: 0 }, true);
      }
    }
  }

  private indexOf(): Map<string, string> {
    if (this.index) return this.index;
    const index = new Map<string, string>();
    for (const [id, t] of this.tracked) index.set(connKey(t.service.type, t.service.host, t.service.port), id);
    this.index = index;
    return index;
  }
}
