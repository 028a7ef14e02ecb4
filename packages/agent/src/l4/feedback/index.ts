/**
 * The nftables dataplane's connection feedback: every `--nft-feedback-interval`
 * it reads the kernel's DNAT'ed connections (one `conntrack -L` dump per
 * address family in use), counts them per real server of every service that
 * needs counts (a least-connection scheduler, or a server with an upper
 * threshold), and asks the pure `pickServers` which servers take that
 * service's new connections until the next round. A service whose pick
 * changed is handed back to the role (`onChange`), which marks it dirty: the
 * next incremental pass rewrites that service's slot elements, in one nft
 * transaction with every other service that changed. Services whose pick
 * stays are not touched; with no such service nothing is read.
 *
 * IPVS counts its own connections; conntrack is the nftables equivalent: the
 * original tuple's destination is the VIP, the reply tuple's source the real
 * server, and the TCP state says active (ESTABLISHED) or not. Rounds never
 * overlap (each is scheduled when the previous one ends). A failed read keeps
 * every pick as it is; the next round tries again.
 */
import type { Logger } from 'pino';
import { canonicalIp, ipFamily, type Service } from '@switchyard/shared';
import type { ConnectionTable, ConntrackEntry } from '../../adapters/conntrack.js';
import type { EffectiveService } from '../dataplane.js';
import { LEAST_CONNECTION, pickServers, samePick, type PickedServer, type ServerLoad } from './pick.js';

export { LEAST_CONNECTION, pickServers, overloadedNow, samePick, ACTIVE_OVERHEAD, type PickedServer, type PickServer, type ServerLoad, type PickInput, type PickResult } from './pick.js';

/** The service needs connection counts to be scheduled as IPVS would. */
export function needsFeedback(s: Service): boolean {
  return LEAST_CONNECTION.includes(s.scheduler) || s.servers.some((srv) => srv.upper_threshold > 0);
}

export interface ConnectionFeedbackOptions {
  table: ConnectionTable;
  intervalMs: number;
  log: Logger;
  /** The pick of these services changed: re-derive their effective state and sync them. */
  onChange: (serviceIds: readonly string[]) => void;
}

interface Tracked {
  service: Service;
  /** The counts of the last round that read them (by server id); undefined before the first. */
  loads?: Map<string, ServerLoad>;
  pick?: PickedServer[];
  overloaded: Map<string, number>;
}

export interface FeedbackStats {
  rounds: number;
  /** Rounds whose read failed. */
  failed: number;
  /** Service picks changed, over all rounds. */
  changes: number;
  /** Duration of the last round (ms), and the connections it counted. */
  lastRoundMs: number;
  lastConnections: number;
}

const connKey = (proto: string, vip: string, vport: number) => `${proto} ${vip} ${vport}`;
const serverKey = (host: string, port: number) => `${host} ${port}`;

export class ConnectionFeedback {
  private readonly tracked = new Map<string, Tracked>();
  /** `proto vip vport` → service id, rebuilt when the tracked set changes. */
  private index?: Map<string, string>;
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private stopped = false;
  readonly stats: FeedbackStats = { rounds: 0, failed: 0, changes: 0, lastRoundMs: 0, lastConnections: 0 };

  constructor(private readonly opts: ConnectionFeedbackOptions) {}

  get size(): number {
    return this.tracked.size;
  }

  /**
   * The service as the role has it after health checks (undefined: gone).
   * Services that need no counts are not tracked. A changed service is
   * picked for at once from the last round's counts (a server that joins has
   * none, so a least-connection service sends it new connections from the
   * very pass that adds it); the next round reads again.
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
    if (!had || had.service.host !== service.host || had.service.port !== service.port || had.service.type !== service.type) this.index = undefined;
    const t: Tracked = { service, overloaded: had?.overloaded ?? new Map() };
    if (had?.loads) {
      t.loads = had.loads;
      const next = pickServers({ scheduler: service.scheduler, servers: service.servers, loads: had.loads, overloaded: t.overloaded });
      t.overloaded = next.overloaded;
      t.pick = next.pick;
    }
    this.tracked.set(id, t);
  }

  /** The service with this round's pick, or as it is when there is none (untracked, or no round yet). */
  overlay(service: Service): EffectiveService {
    const t = this.tracked.get(service.id);
    return t?.pick ? { ...service, pick: t.pick } : service;
  }

  start(): void {
    this.stopped = false;
    this.schedule();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
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

  /** One round: read, count, pick; returns the ids whose pick changed (also handed to onChange). */
  async round(): Promise<string[]> {
    if (this.tracked.size === 0) return [];
    const started = performance.now();
    this.stats.rounds++;
    const families = new Set<4 | 6>();
    for (const t of this.tracked.values()) families.add(ipFamily(t.service.host));
    let entries: ConntrackEntry[] = [];
    try {
      for (const f of [...families].sort()) entries = entries.concat(await this.opts.table.dnatConnections(f));
    } catch (err) {
      this.stats.failed++;
      // Picks stay as they are: better stale counts than none.
      if (this.stats.failed === 1 || this.stats.failed % 100 === 0) this.opts.log.warn({ err: (err as Error).message, failed: this.stats.failed }, 'cannot read connections (conntrack); picks unchanged');
      return [];
    }
    const index = this.indexOf();
    // Per service: per `host port` of a real server, the connections' states.
    const counted = new Map<string, Map<string, ServerLoad>>();
    for (const e of entries) {
      const v6 = e.vip.includes(':');
      const id = index.get(connKey(e.proto, v6 ? (canonicalIp(e.vip) ?? e.vip) : e.vip, e.vport));
      if (!id) continue;
      let perServer = counted.get(id);
      if (!perServer) counted.set(id, (perServer = new Map()));
      const sk = serverKey(v6 ? (canonicalIp(e.server) ?? e.server) : e.server, e.sport);
      let load = perServer.get(sk);
      if (!load) perServer.set(sk, (load = { active: 0, inactive: 0 }));
      // IPVS: TCP ESTABLISHED is active, any other state (and UDP, which has none) inactive.
      if (e.state === 'ESTABLISHED') load.active++;
      else load.inactive++;
    }
    const changed: string[] = [];
    for (const [id, t] of this.tracked) {
      const bySrv = counted.get(id);
      const loads = new Map<string, ServerLoad>();
      if (bySrv) {
        for (const srv of t.service.servers) {
          const l = bySrv.get(serverKey(srv.host, srv.port));
          if (l) loads.set(srv.id, l);
        }
      }
      const next = pickServers({ scheduler: t.service.scheduler, servers: t.service.servers, loads, overloaded: t.overloaded });
      t.loads = loads;
      t.overloaded = next.overloaded;
      if (!samePick(t.pick, next.pick)) {
        t.pick = next.pick;
        changed.push(id);
      }
    }
    this.stats.changes += changed.length;
    this.stats.lastConnections = entries.length;
    this.stats.lastRoundMs = performance.now() - started;
    if (changed.length > 0) this.opts.onChange(changed);
    return changed;
  }

  private indexOf(): Map<string, string> {
    if (this.index) return this.index;
    const index = new Map<string, string>();
    for (const [id, t] of this.tracked) index.set(connKey(t.service.type, t.service.host, t.service.port), id);
    this.index = index;
    return index;
  }
}
