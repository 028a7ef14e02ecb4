/**
 * The nftables dataplane (and dry-run, which is the same planner without an
 * executor). An incremental pass plans the changed services against what the
 * last pass applied, so one change among 10,000 services is a few lines of
 * nft script and O(changed services) of work. The script applies as one
 * transaction; if it fails, each service is tried on its own so one bad
 * service is reported without holding back the others.
 *
 * A full pass reads the table back (`nft -j list table`) and plans every
 * service against it, which undoes drift. At 10,000 services that read takes
 * seconds of nft's CPU, so it runs in `prepareFull`, beside incremental
 * passes. Two things follow:
 *  - The read may predate a change applied meanwhile, so services (and group
 *    chains) an incremental pass touched during the read are planned against
 *    what that pass applied, not against the read; the next full pass checks
 *    them against the kernel.
 *  - nft restarts a listing whenever the ruleset generation changes under it
 *    (nft 1.0.6 `nft_cache_update`: the genid is compared before and after the
 *    dump) — so our own applies restart it. Once a read has taken twice as
 *    long as the last complete one, incremental passes wait for it to end
 *    instead of restarting it forever.
 *
 * With `--nft-dr-device` the same passes also plan `netdev <table>` (direct
 * routing): each service's objects go to the table its forwarders call for
 * and leave the other, in the same transaction.
 *
 * The model keeps only a reference to each applied service (the etcd
 * mirror's object, or the role's copy with a feedback pick) and recomputes a service's nft objects when they are
 * needed: memory stays close to the mirror's own.
 */
import type { Logger } from 'pino';
import type { ServiceReport } from '@switchyard/shared';
import { planAddresses, type DeviceAddresses } from '../local-addresses.js';
import { NftExecutor } from './executor.js';
import { serviceObjects, type ModelOptions, type NftFamily, type ServiceObjects } from './model.js';
import { emptyObserved, observedOf, type NftObserved, type ObservedService } from './observe.js';
import { drBase, NFT_BASE, planTables, renderNftScript, type NftOp } from './plan.js';
import type { EffectiveService, L4Dataplane, SyncOutcome } from '../dataplane.js';

export interface NftDataplaneOptions {
  /**
   * A read-back may overlap incremental passes for at least this long (ms)
   * before they wait for it (default 1000; the bound is twice the last
   * complete read when that is longer).
   */
  minReadOverlapMs?: number;
  /**
   * `--nft-local-vips`: the dummy device that holds every VIP, and whether
   * it should. Off, full passes still empty the device, so addresses an
   * earlier run left there go.
   */
  localVips?: { device: DeviceAddresses; enabled: boolean };
  /**
   * `--nft-dr-device`: services whose servers all use forwarder g route
   * directly on this device (the `netdev` table). Unset, an earlier run's
   * netdev table is deleted on the first full pass.
   */
  drDevice?: string;
  /** `--nft-dr-ingress`: where the direct-routed traffic arrives (default: the DR device). */
  drIngress?: string[];
  /**
   * The role runs the connection feedback (l4/feedback), so least-connection
   * schedulers and thresholds need no warning (default false: they are
   * approximated by the weights, and each such service says so).
   */
  feedback?: boolean;
}

/** What the kernel holds of one service, per table (a service lives in one; a failed pass may find it in both). */
type Held = Partial<Record<NftFamily, ObservedService>>;

/** Both tables as the planner wants them. */
interface TablesObserved {
  observed: NftObserved;
  observedDr: NftObserved;
}

/** What the full pass after a read-back needs to know about incremental passes that ran during it. */
interface ReadBack {
  started: number;
  /** Settles when the read ends (never rejects). */
  ended: Promise<void>;
  /** Services and group chains incremental passes wrote while the table was being read. */
  services: Set<string>;
  groups: Set<string>;
}

interface Snapshot extends TablesObserved {
  during: ReadBack;
}

export class NftDataplane implements L4Dataplane {
  readonly name: 'nftables' | 'dry-run';
  /** The table skeleton and shared group chains the kernel holds after the last pass (`services` unused). */
  private base: NftObserved = emptyObserved();
  /** The same for the direct-routing table. */
  private drBase: NftObserved = emptyObserved();
  /** Per service: the service whose objects the kernel holds after the last successful pass. */
  private readonly applied = new Map<string, EffectiveService>();
  /** Per service whose apply failed: what the kernel was read to hold instead. */
  private readonly unknown = new Map<string, Held>();
  /** Without --nft-dr-device: whether an earlier run's netdev table has been deleted. */
  private drCleaned = false;
  private readonly model: ModelOptions;
  private reading?: ReadBack;
  private snapshot?: Snapshot;
  private lastReadMs = 0;
  /** The VIPs on the local-VIP device after the last pass (undefined: read it). */
  private vips?: Set<string>;

  constructor(
    private readonly executor: NftExecutor | undefined,
    private readonly table: string,
    private readonly log: Logger,
    private readonly opts: NftDataplaneOptions = {},
  ) {
    this.name = executor ? 'nftables' : 'dry-run';
    this.model = { ...(opts.drDevice !== undefined ? { drDevice: opts.drDevice } : {}), feedback: opts.feedback ?? false };
  }

  private objectsOf(s: EffectiveService): { objects: ServiceObjects; reports: ServiceReport[] } {
    return serviceObjects(s, this.model);
  }

  /** The kernel's objects of one service as the model knows them. */
  private held(id: string): Held | undefined {
    const s = this.applied.get(id);
    if (!s) return this.unknown.get(id);
    const o = this.objectsOf(s).objects;
    return { [o.family]: observedOf(o), ...(o.dr ? { netdev: observedOf(o.dr) } : {}) };
  }

  private observedWith(have: Map<string, Held>): TablesObserved {
    const inet = new Map<string, ObservedService>();
    const dr = new Map<string, ObservedService>();
    for (const [id, h] of have) {
      if (h.inet) inet.set(id, h.inet);
      if (h.netdev) dr.set(id, h.netdev);
    }
    return { observed: { ...this.base, services: inet }, observedDr: { ...this.drBase, services: dr } };
  }

  private plan(desired: ReadonlyMap<string, ServiceObjects>, observed: TablesObserved, scope?: ReadonlySet<string>): NftOp[] {
    return planTables({ desired, ...observed, ...(scope ? { scope } : {}), ...this.model, ...(this.opts.drIngress ? { drIngress: this.opts.drIngress } : {}) });
  }

  /** Both tables from the kernel (the netdev one only with --nft-dr-device). */
  private async readTables(executor: NftExecutor): Promise<TablesObserved> {
    const [observed, observedDr] = await Promise.all([executor.observe('inet'), this.opts.drDevice !== undefined ? executor.observe('netdev', drBase(this.opts.drDevice, this.opts.drIngress)) : emptyObserved()]);
    return { observed, observedDr };
  }

  async prepareFull(): Promise<void> {
    if (!this.executor) return;
    const started = performance.now();
    const read = this.readTables(this.executor);
    const during: ReadBack = { started, ended: read.then(() => undefined, () => undefined), services: new Set(), groups: new Set() };
    this.reading = during;
    try {
      this.snapshot = { ...(await read), during };
      this.lastReadMs = performance.now() - started;
      this.log.debug({ ms: Math.round(this.lastReadMs), changedMeanwhile: during.services.size }, 'table read back');
    } finally {
      this.reading = undefined;
    }
  }

  sync(desired: ReadonlyMap<string, EffectiveService>, changed?: ReadonlySet<string>): Promise<SyncOutcome> {
    return changed ? this.syncChanged(desired, changed) : this.syncAll(desired);
  }

  private async syncChanged(desired: ReadonlyMap<string, EffectiveService>, changed: ReadonlySet<string>): Promise<SyncOutcome> {
    const reading = this.reading;
    if (reading && this.executor && performance.now() - reading.started > Math.max(this.opts.minReadOverlapMs ?? 1000, 2 * this.lastReadMs)) {
      this.log.info({ readingMs: Math.round(performance.now() - reading.started) }, 'table read-back keeps restarting under changes; waiting for it');
      await reading.ended;
    }
    const services = new Map<string, EffectiveService>();
    const objects = new Map<string, ServiceObjects>();
    const reports = new Map<string, ServiceReport[]>();
    const have = new Map<string, Held>();
    const scope = new Set<string>();
    for (const id of changed) {
      const s = desired.get(id);
      // The very service object already applied: nothing to do (its reports stand).
      if (s && this.applied.get(id) === s) continue;
      scope.add(id);
      if (s) {
        const c = this.objectsOf(s);
        services.set(id, s);
        objects.set(id, c.objects);
        reports.set(id, c.reports);
      } else reports.set(id, []);
      const h = this.held(id);
      if (h) have.set(id, h);
    }
    if (scope.size === 0) return { reports, failed: false };
    const ops = this.plan(objects, this.observedWith(have), scope);
    this.logPlan(false, ops);
    if (ops.length === 0) {
      this.record(scope, services, objects);
      return this.syncLocalVips(desired, false, reports);
    }
    if (!this.executor) {
      this.record(scope, services, objects);
      this.log.info({ full: false, ops: ops.length, services: scope.size }, 'dry-run: plan computed, nothing applied');
      return { reports, failed: false };
    }
    try {
      await this.executor.apply(ops);
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'nftables transaction failed; applying service by service');
      return this.afterOneByOne(await this.applyOneByOne(services, objects, reports, scope), desired, false);
    }
    this.record(scope, services, objects);
    this.log.info({ full: false, ops: ops.length, services: scope.size }, 'nftables applied');
    return this.syncLocalVips(desired, false, reports);
  }

  private async syncAll(desired: ReadonlyMap<string, EffectiveService>): Promise<SyncOutcome> {
    let observed: TablesObserved;
    if (this.executor) {
      const snap = this.snapshot ?? { ...(await this.readTables(this.executor)), during: undefined };
      this.snapshot = undefined;
      observed = snap;
      // Changes applied while the tables were being read: the read may predate them, the model does not.
      for (const id of snap.during?.services ?? []) {
        const h = this.held(id);
        for (const [family, table] of [['inet', snap.observed], ['netdev', snap.observedDr]] as const) {
          const o = h?.[family];
          if (o) table.services.set(id, o);
          else table.services.delete(id);
        }
      }
      for (const g of snap.during?.groups ?? []) {
        for (const [base, table] of [[this.base, snap.observed], [this.drBase, snap.observedDr]] as const) {
          const n = base.groups.get(g);
          if (n !== undefined) table.groups.set(g, n);
        }
      }
      if (this.opts.drDevice === undefined && !this.drCleaned) {
        await this.executor.deleteTable('netdev').catch((err: Error) => this.log.warn({ err: err.message }, 'netdev table of an earlier run not deleted'));
        this.drCleaned = true;
      }
    } else {
      // Dry-run: what the last passes would have left is the only truth.
      const services = new Map<string, Held>();
      for (const id of new Set([...this.applied.keys(), ...this.unknown.keys()])) services.set(id, this.held(id) as Held);
      observed = this.observedWith(services);
    }
    const objects = new Map<string, ServiceObjects>();
    const reports = new Map<string, ServiceReport[]>();
    for (const [id, s] of desired) {
      const c = this.objectsOf(s);
      objects.set(id, c.objects);
      reports.set(id, c.reports);
    }
    const ops = this.plan(objects, observed);
    this.logPlan(true, ops);
    if (ops.length > 0 && this.executor) {
      try {
        await this.executor.apply(ops);
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'nftables transaction failed; applying service by service');
        return this.afterOneByOne(await this.applyOneByOne(desired, objects, reports), desired, true);
      }
    }
    // The kernel now holds exactly the desired state (a full plan also deletes unused group chains).
    this.base = emptyObserved();
    this.drBase = emptyObserved();
    this.applied.clear();
    this.unknown.clear();
    this.record(desired.keys(), desired, objects);
    if (ops.length > 0) this.log.info({ full: true, ops: ops.length, services: objects.size }, this.executor ? 'nftables applied' : 'dry-run: plan computed, nothing applied');
    return this.syncLocalVips(desired, true, reports);
  }

  /**
   * Puts every desired VIP on the local-VIP device and takes off the others,
   * after the rules are in (so a VIP is never local before its DNAT is).
   * Incremental passes compare against what the last pass left; full passes
   * read the device (one `ip addr show`), which undoes drift. A failure is
   * reported on the services of the pass (the host's status shows it) and
   * makes the next pass full.
   */
  private async syncLocalVips(desired: ReadonlyMap<string, EffectiveService>, full: boolean, reports: Map<string, ServiceReport[]>): Promise<SyncOutcome> {
    const lv = this.opts.localVips;
    if (!lv || !this.executor || (!lv.enabled && !full)) return { reports, failed: false };
    const wanted = new Set<string>();
    if (lv.enabled) for (const s of desired.values()) wanted.add(s.host);
    try {
      const have = full || !this.vips ? await lv.device.observe() : this.vips;
      const ops = planAddresses(wanted, have);
      if (ops.length > 0) {
        await lv.device.apply(ops);
        this.log.info({ device: lv.device.device, added: ops.filter((o) => o.kind === 'add-address').length, removed: ops.filter((o) => o.kind === 'delete-address').length }, 'local VIPs applied');
      }
      this.vips = wanted;
      return { reports, failed: false };
    } catch (err) {
      this.vips = undefined;
      const message = `VIP not made local on ${lv.device.device} (--nft-local-vips): ${(err as Error).message}`;
      this.log.error({ device: lv.device.device, err: (err as Error).message }, 'local VIPs not applied');
      for (const [id, list] of reports) {
        const s = desired.get(id);
        if (s) list.push({ serviceId: id, level: 'error', message });
      }
      return { reports, failed: true };
    }
  }

  private async afterOneByOne(outcome: SyncOutcome, desired: ReadonlyMap<string, EffectiveService>, full: boolean): Promise<SyncOutcome> {
    const vips = await this.syncLocalVips(desired, full, outcome.reports);
    return { ...outcome, failed: outcome.failed || vips.failed };
  }

  private logPlan(full: boolean, ops: NftOp[]): void {
    // The full script only at debug level (rendering 60,000 ops is not free).
    if (this.log.isLevelEnabled('debug')) this.log.debug({ full, ops: ops.length, script: renderNftScript(this.table, ops) }, 'nftables plan');
  }

  /** Brings the model in line with what was just applied for `ids` (absent from `services` = deleted). */
  private record(ids: Iterable<string>, services: ReadonlyMap<string, EffectiveService>, objects: ReadonlyMap<string, ServiceObjects>): void {
    const m = this.base;
    m.table = true;
    for (const c of NFT_BASE.chains) m.baseChains.set(c.name, c.rules.length);
    for (const map of NFT_BASE.maps) m.maps.add(map.name);
    const d = this.drBase;
    if (this.opts.drDevice !== undefined) {
      const skeleton = drBase(this.opts.drDevice, this.opts.drIngress);
      d.table = true;
      d.device = skeleton.device;
      for (const c of skeleton.chains) d.baseChains.set(c.name, c.rules.length);
      for (const map of skeleton.maps) d.maps.add(map.name);
    }
    for (const id of ids) {
      const s = services.get(id);
      const o = objects.get(id);
      this.unknown.delete(id);
      this.reading?.services.add(id);
      if (s && o) {
        this.applied.set(id, s);
        for (const g of [...o.groups, ...(o.dr?.groups ?? [])]) {
          (o.family === 'netdev' || o.dr?.groups.includes(g) ? d : m).groups.set(g.name, g.rules.length);
          this.reading?.groups.add(g.name);
        }
      } else this.applied.delete(id);
    }
  }

  private async applyOneByOne(
    services: ReadonlyMap<string, EffectiveService>,
    objects: ReadonlyMap<string, ServiceObjects>,
    reports: Map<string, ServiceReport[]>,
    scope?: ReadonlySet<string>,
  ): Promise<SyncOutcome> {
    const executor = this.executor as NftExecutor;
    // Start again from the kernel's truth: the failed transaction changed nothing.
    const { observed, observedDr } = await this.readTables(executor);
    this.applied.clear();
    this.unknown.clear();
    for (const [family, table] of [['inet', observed], ['netdev', observedDr]] as const) {
      for (const [id, o] of table.services) this.unknown.set(id, { ...this.unknown.get(id), [family]: o });
    }
    this.base = { ...observed, services: new Map() };
    this.drBase = { ...observedDr, services: new Map() };
    await executor.apply(this.plan(new Map(), { observed: this.base, observedDr: this.drBase }, new Set()));
    this.record([], services, objects);
    let failed = false;
    for (const id of scope ?? new Set([...objects.keys(), ...this.unknown.keys()])) {
      const one = new Set([id]);
      const have = new Map<string, Held>();
      const h = this.held(id);
      if (h) have.set(id, h);
      try {
        await executor.apply(this.plan(objects, this.observedWith(have), one));
        this.record(one, services, objects);
      } catch (err) {
        failed = true;
        const message = `nftables rejected the service: ${(err as Error).message}`;
        reports.set(id, [...(reports.get(id) ?? []), { serviceId: id, level: 'error', message }]);
        this.log.error({ serviceId: id, err: (err as Error).message }, 'service not applied');
      }
    }
    return { reports, failed };
  }

  async flush(): Promise<void> {
    if (this.executor) await this.executor.deleteTable('inet');
    if (this.executor && this.opts.drDevice !== undefined) await this.executor.deleteTable('netdev');
    if (this.executor && this.opts.localVips) await this.opts.localVips.device.remove();
    this.vips = undefined;
    this.base = emptyObserved();
    this.drBase = emptyObserved();
    this.applied.clear();
    this.unknown.clear();
  }
}
