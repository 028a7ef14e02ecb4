/**
 * The dashboard's live feed: one websocket per page, fed by the mirrors the
 * coordinator already keeps (L4 services, hosts, Portmaster, Leviathan) plus
 * two small ones of its own (the agents' Leviathan reports and the SkyDNS
 * records, so providers connected to any coordinator show up).
 *
 * Mirror changes only mark keys dirty; a flush a few milliseconds later
 * turns them into one patch, serialised once and sent to every page, so a
 * burst of writes costs one message and an idle feed costs nothing. The
 * snapshot a new page gets is built from the mirrors at that moment; patches
 * that follow are upserts, so one that repeats the snapshot is harmless.
 */
import type { WebSocket } from 'ws';
import {
  LevHostStatus,
  parseSkyDnsRecord,
  PrefixMirror,
  skydns,
  type MirrorChange,
  type SkyDnsRecord,
} from '@switchyard/shared';
import type { CoordinatorContext } from '../context.js';
import type { HostDirectory } from '../hosts/routes.js';
import type { L4Repository } from '../l4/repository.js';
import type { LeviathanRepository } from '../leviathan/repository.js';
import type { PmRecord, PortmasterRepository } from '../portmaster/repository.js';
import type { FeedMessage, Keyed, LevItem, Patch, PmServiceItem, PortHolder, ProviderItem, Snapshot } from './protocol.js';

/** The caches the feed reads. */
export interface FeedSources {
  l4: L4Repository;
  hosts: HostDirectory;
  portmaster: PortmasterRepository;
  leviathan: LeviathanRepository;
}

export interface FeedOptions {
  /** How long changes gather before one patch goes out (ms). */
  flushMs?: number;
  /** A page whose socket buffers more than this is dropped; it reconnects and gets a fresh snapshot. */
  maxBufferedBytes?: number;
}

interface PmIndex {
  service?: { description: string | null; start: number; end: number };
  ports: Map<number, PortHolder & { offer: boolean }>;
}

/** Services in the snapshot message itself: a first screen and then some (a page shows 50). */
const FIRST_SERVICES = 200;
const SERVICES_PER_MESSAGE = 2000;

const byKey = <T>(key: (x: T) => string) => (a: T, b: T) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0);

export class DashboardFeed {
  private readonly clients = new Set<WebSocket & { feedAlive?: boolean }>();
  private readonly levStatus: PrefixMirror<LevHostStatus>;
  private readonly dns: PrefixMirror<SkyDnsRecord>;
  private readonly pm = new Map<string, PmIndex>();
  private readonly dirty = { services: new Set<string>(), hosts: new Set<string>(), pm: new Set<string>(), providers: new Set<string>(), lev: false };
  private l4Revision = 0;
  private l4DeletePending = false;
  private timer?: NodeJS.Timeout;
  private sweeper?: NodeJS.Timeout;
  private readonly flushMs: number;
  private readonly maxBuffered: number;

  constructor(
    private readonly ctx: CoordinatorContext,
    private readonly src: FeedSources,
    opts: FeedOptions = {},
  ) {
    this.flushMs = opts.flushMs ?? 50;
    this.maxBuffered = opts.maxBufferedBytes ?? 64 * 1024 * 1024;
    const log = ctx.log.child({ component: 'ui-feed' });
    this.levStatus = new PrefixMirror<LevHostStatus>(ctx.etcd, {
      prefix: ctx.keys.lev.statuses,
      parse: (key, value) => {
        const s = LevHostStatus.parse(JSON.parse(value.toString()));
        return s.hostId === ctx.keys.lev.parseStatus(key) ? s : undefined;
      },
      onInvalid: (key) => log.debug({ key }, 'ignoring invalid agent report'),
    });
    this.dns = new PrefixMirror<SkyDnsRecord>(ctx.etcd, {
      prefix: skydns.dirForName(ctx.config.dnsRoot),
      parse: (_key, value) => parseSkyDnsRecord(value),
      onInvalid: (key) => log.debug({ key }, 'ignoring a SkyDNS record that does not parse'),
    });

    // Services live under the current generation (etcd/generations.ts). A
    // PUT /services writes a new one unseen, then switches `current` and
    // deletes the old set in one revision: the switch marks every service of
    // the new set, the deletes every one of the old.
    src.l4.mirror.on('change', (c: MirrorChange<unknown>) => {
      const current = src.l4.generation();
      if (c.key === ctx.keys.l4.current) {
        this.l4Revision = Math.max(this.l4Revision, current.revision);
        for (const { id } of this.currentServices()) this.mark('services', id);
        return;
      }
      const k = ctx.keys.l4.parseService(c.key);
      if (k === undefined || (k.gen !== current.id && c.type === 'put')) return;
      if (c.type === 'put') this.l4Revision = Math.max(this.l4Revision, c.entry.modRevision);
      else this.l4DeletePending = true;
      this.mark('services', k.id);
    });
    // A delete carries no revision of its own; the one the watch reports right after it does.
    src.l4.mirror.on('revision', (rev: number) => {
      if (!this.l4DeletePending) return;
      this.l4DeletePending = false;
      this.l4Revision = Math.max(this.l4Revision, rev);
      this.schedule();
    });
    src.hosts.mirror.on('change', (c: MirrorChange<unknown>) => {
      const k = ctx.keys.hosts.parse(c.key);
      if (k) this.mark('hosts', k.hostId);
    });
    src.portmaster.mirror.on('change', (c: MirrorChange<PmRecord>) => this.onPm(c));
    src.leviathan.mirror.on('change', () => this.markLev());
    this.levStatus.on('change', () => this.markLev());
    this.dns.on('change', (c: MirrorChange<SkyDnsRecord>) => this.mark('providers', c.key));
  }

  start(): void {
    void this.levStatus.start();
    void this.dns.start();
    this.sweeper = setInterval(() => this.sweep(), this.ctx.config.pingIntervalMs);
    this.sweeper.unref();
  }

  async stop(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper);
    if (this.timer) clearTimeout(this.timer);
    for (const ws of this.clients) ws.terminate();
    this.clients.clear();
    await Promise.all([this.levStatus.stop(), this.dns.stop()]);
  }

  /** The websocket handler of `/ui/feed` (the token was checked at the upgrade). */
  readonly handle = (ws: WebSocket & { feedAlive?: boolean }): void => {
    ws.feedAlive = true;
    ws.on('pong', () => (ws.feedAlive = true));
    ws.on('close', () => this.clients.delete(ws));
    ws.on('error', () => this.clients.delete(ws));
    // Client frames mean nothing here; a page only listens.
    this.clients.add(ws);
    for (const m of this.snapshotMessages()) ws.send(m);
  };

  get connected(): number {
    return this.clients.size;
  }

  // ---------- snapshot ----------

  /**
   * The whole state, as the messages a new page gets: the snapshot with the
   * first services (by id), then the rest in chunks. Services are the bulk
   * (10,000 of them in a big cluster): their JSON is spliced in as the L4
   * mirror already holds it instead of being serialised again. Built
   * synchronously, so no patch can slip in between the chunks.
   */
  snapshotMessages(): string[] {
    const entries = this.currentServices().sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const items = entries.map((e) => `{"rev":${e.rev},"s":${e.json}}`);
    const rest: Omit<Snapshot, 'services'> = {
      t: 'snapshot',
      revision: this.revision(),
      l4Revision: this.l4Revision,
      totalServices: items.length,
      hosts: this.hostIds().flatMap((id) => this.src.hosts.build(id) ?? []),
      pm: [...this.pm.keys()].flatMap((n) => this.pmItem(n) ?? []).sort(byKey((p) => p.name)),
      lev: this.levItem(),
      providers: [...this.dns.entries.keys()].flatMap((k) => this.provider(k) ?? []),
    };
    const out = [`{"services":[${items.slice(0, FIRST_SERVICES).join(',')}],${JSON.stringify(rest).slice(1)}`];
    for (let i = FIRST_SERVICES; i < items.length; i += SERVICES_PER_MESSAGE) {
      const last = i + SERVICES_PER_MESSAGE >= items.length;
      out.push(`{"t":"services","last":${last},"services":[${items.slice(i, i + SERVICES_PER_MESSAGE).join(',')}]}`);
    }
    return out;
  }

  // ---------- changes ----------

  private mark(kind: 'services' | 'hosts' | 'pm' | 'providers', key: string): void {
    this.dirty[kind].add(key);
    this.schedule();
  }

  private markLev(): void {
    this.dirty.lev = true;
    this.schedule();
  }

  private schedule(): void {
    this.timer ??= setTimeout(() => this.flush(), this.flushMs);
  }

  private onPm(c: MirrorChange<PmRecord>): void {
    const r = c.type === 'put' ? c.entry.value : c.previous?.value;
    if (!r || r.kind === 'ranges') return;
    const name = r.kind === 'service' ? r.service.name : r.service;
    let idx = this.pm.get(name);
    if (!idx) this.pm.set(name, (idx = { ports: new Map() }));
    if (r.kind === 'service') {
      idx.service = c.type === 'put' ? { description: r.service.description, start: r.service.start, end: r.service.end } : undefined;
    } else if (c.type === 'put') {
      idx.ports.set(r.port, { port: r.port, name: r.holder.name, created: r.holder.created, offer: r.holder.secret !== undefined });
    } else {
      idx.ports.delete(r.port);
    }
    if (!idx.service && idx.ports.size === 0) this.pm.delete(name);
    this.mark('pm', name);
  }

  /** The services of the generation the L4 mirror shows: id, mod revision and the JSON GET answers. */
  private currentServices(): { id: string; rev: number; json: string }[] {
    const set = this.ctx.keys.l4.set(this.src.l4.generation().id);
    const out: { id: string; rev: number; json: string }[] = [];
    for (const [key, e] of this.src.l4.mirror.entries) {
      if (e.value.kind === 'record' && key.startsWith(set)) out.push({ id: e.value.value.service.id, rev: e.modRevision, json: e.value.value.json });
    }
    return out;
  }

  /** Sends what changed since the last flush to every page, as one message. */
  flush(): void {
    this.timer = undefined;
    const d = this.dirty;
    const patch: Patch = { t: 'patch', revision: this.revision(), l4Revision: this.l4Revision };
    if (this.clients.size > 0) {
      if (d.services.size > 0) {
        patch.services = this.keyed(d.services, (id) => {
          const e = this.src.l4.mirror.get(this.ctx.keys.l4.service(this.src.l4.generation().id, id));
          return e && e.value.kind === 'record' ? { rev: e.modRevision, s: e.value.value.service } : undefined;
        });
      }
      if (d.hosts.size > 0) patch.hosts = this.keyed(d.hosts, (id) => this.src.hosts.build(id));
      if (d.pm.size > 0) patch.pm = this.keyed(d.pm, (n) => this.pmItem(n));
      if (d.providers.size > 0) patch.providers = this.keyed(d.providers, (k) => this.provider(k));
      if (d.lev) patch.lev = this.levItem();
      this.broadcast(patch);
    }
    d.services.clear();
    d.hosts.clear();
    d.pm.clear();
    d.providers.clear();
    d.lev = false;
  }

  private keyed<T>(keys: Set<string>, get: (key: string) => T | undefined): Keyed<T> {
    const out: Keyed<T> = { put: [], del: [] };
    for (const k of keys) {
      const v = get(k);
      if (v === undefined) out.del.push(k);
      else out.put.push(v);
    }
    return out;
  }

  private broadcast(msg: FeedMessage): void {
    const text = JSON.stringify(msg);
    for (const ws of this.clients) {
      if (ws.bufferedAmount > this.maxBuffered) {
        this.clients.delete(ws);
        ws.terminate();
        continue;
      }
      ws.send(text);
    }
  }

  /** Drops pages that did not answer the previous ping (the Leviathan monitor's rule). */
  private sweep(): void {
    for (const ws of this.clients) {
      if (!ws.feedAlive) {
        this.clients.delete(ws);
        ws.terminate();
        continue;
      }
      ws.feedAlive = false;
      ws.ping();
    }
  }

  // ---------- items ----------

  private revision(): number {
    return Math.max(this.src.l4.mirror.revision, this.src.hosts.mirror.revision, this.src.portmaster.mirror.revision, this.src.leviathan.mirror.revision);
  }

  private hostIds(): string[] {
    const ids = new Set<string>();
    for (const key of this.src.hosts.mirror.entries.keys()) {
      const k = this.ctx.keys.hosts.parse(key);
      if (k) ids.add(k.hostId);
    }
    return [...ids].sort();
  }

  private pmItem(name: string): PmServiceItem | undefined {
    const idx = this.pm.get(name);
    if (!idx?.service) return undefined;
    const holders = [...idx.ports.values()].sort((a, b) => a.port - b.port);
    const strip = ({ port, name: n, created }: PortHolder) => ({ port, name: n, created });
    return {
      name,
      ...idx.service,
      // Offer secrets stay out: the page has no use for them.
      offers: holders.filter((h) => h.offer).map(strip),
      instances: holders.filter((h) => !h.offer).map(strip),
    };
  }

  private levItem(): LevItem {
    const repo = this.src.leviathan;
    const snapshot = { model: repo.model(), statuses: new Map([...this.levStatus.entries.values()].map((e) => [e.value.hostId, e.value])) };
    const ids = <T>(m: Map<string, T>) => [...m.keys()].sort();
    return {
      cens: ids(snapshot.model.cens).map((id) => repo.cenView(snapshot, id)),
      cins: ids(snapshot.model.cins).map((id) => repo.cinView(snapshot, id)),
      containers: ids(snapshot.model.containers).map((id) => ({ contID: id, hostID: snapshot.model.containers.get(id)?.host ?? '' })),
    };
  }

  private provider(key: string): ProviderItem | undefined {
    const e = this.dns.get(key);
    if (!e) return undefined;
    return { key, name: skydns.nameOfKey(key) ?? key, host: e.value.host, port: e.value.port ?? 0, live: e.lease !== '0' };
  }
}
