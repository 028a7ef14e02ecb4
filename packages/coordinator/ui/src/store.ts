/**
 * The page's copy of the coordinator's state, kept by the feed: a snapshot,
 * then patches. Views read it; `version` changes with every message so a
 * component knows to render again. Derived lists (sorted service ids,
 * reports per service) are rebuilt only when what they depend on changed.
 */
import type { Host, ServiceReport } from '@switchyard/shared';
import type { FeedMessage, Keyed, LevItem, PmServiceItem, ProviderItem, ServiceItem } from '../../src/ui/protocol.ts';

export interface HostReport extends ServiceReport {
  host: string;
}

function applyKeyed<T>(map: Map<string, T>, patch: Keyed<T> | undefined, key: (x: T) => string): boolean {
  if (!patch) return false;
  let membership = false;
  for (const k of patch.del) membership = map.delete(k) || membership;
  for (const x of patch.put) {
    const k = key(x);
    if (!map.has(k)) membership = true;
    map.set(k, x);
  }
  return membership;
}

/**
 * The snapshot splices in the JSON GET /services/:id answers, Portal's view:
 * a service without servers has no `servers` key. The page always wants the list.
 */
function withServers(item: ServiceItem): ServiceItem {
  (item.s as { servers?: ServiceItem['s']['servers'] }).servers ??= [];
  return item;
}

export class Store {
  version = 0;
  revision = 0;
  l4Revision = 0;
  readonly services = new Map<string, ServiceItem>();
  readonly hosts = new Map<string, Host>();
  readonly pm = new Map<string, PmServiceItem>();
  readonly providers = new Map<string, ProviderItem>();
  lev: LevItem = { cens: [], cins: [], containers: [] };
  /** False while the snapshot's services are still arriving. */
  complete = false;
  totalServices = 0;
  private sortedIds?: string[];
  private reports?: Map<string, HostReport[]>;

  apply(msg: FeedMessage): void {
    if (msg.t === 'services') {
      for (const s of msg.services) this.services.set(s.s.id, withServers(s));
      this.complete = msg.last;
      this.sortedIds = undefined;
      this.version++;
      return;
    }
    this.revision = msg.revision;
    this.l4Revision = msg.l4Revision;
    if (msg.t === 'snapshot') {
      this.totalServices = msg.totalServices;
      this.complete = msg.services.length === msg.totalServices;
      for (const m of [this.services, this.hosts, this.pm, this.providers]) m.clear();
      for (const s of msg.services) this.services.set(s.s.id, withServers(s));
      for (const h of msg.hosts) this.hosts.set(h.id, h);
      for (const p of msg.pm) this.pm.set(p.name, p);
      for (const p of msg.providers) this.providers.set(p.key, p);
      this.lev = msg.lev;
      this.sortedIds = undefined;
      this.reports = undefined;
    } else {
      if (applyKeyed(this.services, msg.services, (s) => s.s.id)) this.sortedIds = undefined;
      if (applyKeyed(this.hosts, msg.hosts, (h) => h.id) || msg.hosts) this.reports = undefined;
      applyKeyed(this.pm, msg.pm, (p) => p.name);
      applyKeyed(this.providers, msg.providers, (p) => p.key);
      if (msg.lev) this.lev = msg.lev;
    }
    this.version++;
  }

  /** Service ids in order; recomputed only when a service appears or goes. */
  serviceIds(): string[] {
    this.sortedIds ??= [...this.services.keys()].sort();
    return this.sortedIds;
  }

  /** Errors and warnings the agents report, by service id. */
  reportsByService(): Map<string, HostReport[]> {
    if (!this.reports) {
      const m = new Map<string, HostReport[]>();
      for (const h of this.hosts.values()) {
        for (const r of [...h.errors, ...h.warnings]) {
          const list = m.get(r.serviceId) ?? [];
          list.push({ ...r, host: h.id });
          m.set(r.serviceId, list);
        }
      }
      this.reports = m;
    }
    return this.reports;
  }

  /** The hosts that should carry a service: its pinned hosts, else every live agent. */
  hostsFor(item: ServiceItem): Host[] {
    const pinned = item.s.hosts;
    const all = [...this.hosts.values()];
    return pinned ? all.filter((h) => pinned.includes(h.id)) : all.filter((h) => h.alive);
  }
}
