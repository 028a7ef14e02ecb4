/**
 * The nftables dataplane (and dry-run, which is the same planner without an
 * executor). An incremental pass plans the changed services against what the
 * last pass applied, so one change among 10,000 services is a few lines of
 * nft script and O(changed services) of work, applied through a persistent
 * `nft -i` (1–2 ms instead of 20–40 ms for a new `nft -f`). The script
 * applies as one transaction; if it fails, each service is tried on its own
 * so one bad service is reported without holding back the others.
 *
 * A full pass never holds up a change. Its work is done beside the loop
 * (`prepareFull`), and the loop's own part only applies the resulting diff
 * — nothing at all when there is no drift:
 *  - Drift comes from other processes, and the event monitor sees their
 *    transactions (monitor.ts). While it vouches that
 *    nothing foreign touched the table since the kernel last equalled the
 *    model, a full pass compares desired state against the model (by object
 *    identity: O(services), no kernel read). Otherwise — after a foreign
 *    change, after a failed apply, or without a monitor — it reads the table
 *    back (`nft -j list table`, seconds at 10,000 services) and plans every
 *    service against that. The monitor starts before the first read (see
 *    planFull) and then also sees the first load's elements (CPU of its own
 *    process, not the agent's).
 *  - Planning runs in slices with yields to the event loop in between, so
 *    incremental passes keep running; services (and group chains) they touch
 *    meanwhile are left out of the full plan: the model has them as applied,
 *    and the next full pass checks them against the kernel.
 *  - nft restarts a listing whenever the ruleset generation changes under it
 *    (nft 1.0.6 `nft_cache_update`: the genid is compared before and after the
 *    dump) — so our own applies restart a read-back. Once a read has taken
 *    twice as long as the last complete one, incremental passes wait for it
 *    to end instead of restarting it forever. With the monitor this only
 *    happens after drift.
 *
 * With `--nft-dr-device` the same passes also plan `netdev <table>` (direct
 * routing): each service's objects go to the table its forwarders call for
 * and leave the other, in the same transaction; the monitor follows both
 * tables.
 *
 * The model keeps only a reference to each applied service (the etcd
 * mirror's object, or the role's copy with a feedback pick) and recomputes a
 * service's nft objects when they are needed: memory stays close to the
 * mirror's own.
 */
import type { Logger } from 'pino';
import type { ServiceReport } from '@switchyard/shared';
import { planAddresses, type DeviceAddresses } from '../local-addresses.js';
import { NftExecutor } from './executor.js';
import { serviceObjects, type ModelOptions, type NftFamily, type ServiceObjects } from './model.js';
import { emptyObserved, observedOf, type NftObserved, type ObservedService } from './observe.js';
import { drBase, NFT_BASE, planService, planSkeleton, planTables, renderNftScript, replacedTable, sortOps, type NftBase, type NftOp } from './plan.js';
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
  /** Services planned between two yields to the event loop in a full pass (default 250). */
  sliceSize?: number;
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

/** What incremental passes changed while a full pass was being prepared. */
interface During {
  /** Services and group chains incremental passes wrote. */
  services: Set<string>;
  groups: Set<string>;
  /** VIPs incremental passes added to or removed from the local-VIP device. */
  vips: Set<string>;
}

/** A running table read-back (incremental passes may wait for it when it keeps restarting). */
interface Reading {
  started: number;
  /** Settles when the read ends (never rejects). */
  ended: Promise<void>;
}

/** The full pass, planned beside the loop; `sync` then applies it. */
interface FullPlan {
  during: During;
  desired: ReadonlyMap<string, EffectiveService>;
  /** Ops, with the service each belongs to (undefined: the table skeleton and group chains). */
  ops: NftOp[];
  owners: (string | undefined)[];
  /** Group chain of each skeleton op (to drop those an incremental pass took over). */
  groupOf: (string | undefined)[];
  /** Objects of every desired service, when they were computed (planned against a read-back). */
  objects?: Map<string, ServiceObjects>;
  /**
   * Planned against the model: the services that differ from it (desired
   * not the applied object, or held as unknown), with the objects of those
   * still desired. Only these change in the model.
   */
  differing?: { ids: Set<string>; objects: Map<string, ServiceObjects> };
  /** Per service with reports (a service without an entry has none). */
  reports: Map<string, ServiceReport[]>;
  /** Planned against the kernel (read back) rather than the model. */
  read: boolean;
  /** The monitor's epoch when the read started, if it could vouch for what follows. */
  basis?: number;
  /** The monitor process running when the plan started. */
  monitorStarts?: number;
  /** What the local-VIP device held when read (full passes read it). */
  vips?: string[];
}

const yieldToLoop = () => new Promise<void>((r) => setImmediate(r));

export class NftDataplane implements L4Dataplane {
  readonly name: 'nftables' | 'dry-run';
  /** The table skeleton and shared group chains the kernel holds after the last pass (`services` unused). */
  private base: NftObserved = emptyObserved();
  /** The same for the direct-routing table. */
  private drBase: NftObserved = emptyObserved();
  /** Per service: the service whose objects the kernel holds after the last successful pass. */
  private readonly applied = new Map<string, EffectiveService>();
  /** Per applied service with warnings: its reports (a full pass against the model reuses them). */
  private readonly appliedReports = new Map<string, ServiceReport[]>();
  /** Per service whose apply failed: what the kernel was read to hold instead. */
  private readonly unknown = new Map<string, Held>();
  /** Without --nft-dr-device: whether an earlier run's netdev table has been deleted. */
  private drCleaned = false;
  private readonly model: ModelOptions;
  private reading?: Reading;
  /** Set while a full pass is prepared: what incremental passes change meanwhile. */
  private during?: During;
  private prepared?: FullPlan;
  private lastReadMs = 0;
  /** The VIPs on the local-VIP device after the last pass (undefined: read it). */
  private vips?: Set<string>;
  /**
   * The monitor's epoch at which the kernel was last known to hold exactly
   * the model; while it stays the same, a full pass compares against the
   * model instead of reading the table back.
   */
  private basis?: number;
  /** The monitor process started right after the last full pass, not yet armed (see planFull). */
  private trustArm?: number;
  /** Full passes that compared against the kernel / against the model (tests, logs). */
  readonly fullPasses = { read: 0, model: 0 };

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

  /**
   * Plans the next full pass beside the loop: reads the table back (unless
   * the monitor vouches that nothing but this agent touched it since it
   * last equalled the model), then plans every service in slices, yielding
   * to the event loop between slices so incremental passes keep running.
   * Services those passes change meanwhile are left out of the plan (the
   * model has them as applied; the next full pass checks them).
   */
  async prepareFull(desired: ReadonlyMap<string, EffectiveService>): Promise<void> {
    const during: During = { services: new Set(), groups: new Set(), vips: new Set() };
    this.during = during;
    this.prepared = undefined;
    try {
      this.prepared = await this.planFull(desired, during);
    } catch (err) {
      this.during = undefined;
      throw err;
    }
  }

  private async planFull(desired: ReadonlyMap<string, EffectiveService>, during: During): Promise<FullPlan> {
    const monitor = this.executor?.monitor;
    // The monitor that ran through the last read-back vouches for the kernel from its start on —
    // also before it has shown it is subscribed (at 10,000 services it prints the first load for
    // seconds before our transaction's generation comes through), for at most a minute. What it
    // cannot cover: a change between the read and its subscription (~0.3 s at the first start).
    if (monitor && this.trustArm !== undefined) {
      if (monitor.starts !== this.trustArm) this.trustArm = undefined;
      else {
        this.basis ??= monitor.startEpoch;
        if (monitor.armed) this.trustArm = undefined;
      }
    }
    // Started before the first read, while the table is small or quiet: the `nft monitor` fallback
    // reads the whole ruleset when it starts (seconds at 10,000 services) and restarts that read at
    // every change, so under churn it would never get going if started later.
    this.executor?.startMonitor();
    const vouches = monitor !== undefined && (monitor.armed || (this.trustArm === monitor.starts && performance.now() - monitor.startedAt < 60_000));
    const epoch = vouches ? monitor.epoch : undefined;
    const trusted = this.executor === undefined || (epoch !== undefined && this.basis === epoch);
    this.log.debug({ trusted, armed: monitor?.armed, epoch, basis: this.basis, foreign: monitor?.foreign }, 'full pass: compare against the model or read back');
    const slice = this.opts.sliceSize ?? 250;
    const plan: FullPlan = {
      during,
      desired,
      ops: [],
      owners: [],
      groupOf: [],
      reports: new Map(),
      read: !trusted,
      ...(epoch !== undefined ? { basis: epoch } : {}),
      ...(monitor ? { monitorStarts: monitor.starts } : {}),
    };
    const lv = this.opts.localVips;
    // Off, the device only needs emptying once (what an earlier run left): not a spawn every resync
    // (forking this process costs the event loop 10–40 ms on a loaded machine).
    if (lv && this.executor && (lv.enabled || this.vips === undefined)) plan.vips = await lv.device.observe();

    if (trusted) {
      // The kernel holds the model: only services whose desired state is not the applied one differ.
      this.fullPasses.model++;
      const objects = new Map<string, ServiceObjects>();
      const have = new Map<string, Held>();
      let n = 0;
      const gone = [...this.applied.keys(), ...this.unknown.keys()].filter((id) => !desired.has(id));
      for (const id of [...desired.keys(), ...new Set(gone)]) {
        if (++n % (slice * 8) === 0) await yieldToLoop();
        const s = desired.get(id);
        if (s && this.applied.get(id) === s && !this.unknown.has(id)) {
          const r = this.appliedReports.get(id);
          if (r) plan.reports.set(id, [...r]);
          continue;
        }
        if (s) {
          const c = this.objectsOf(s);
          objects.set(id, c.objects);
          plan.reports.set(id, c.reports);
        }
        const h = this.held(id);
        if (h) have.set(id, h);
      }
      plan.differing = { ids: new Set([...objects.keys(), ...have.keys()]), objects };
      await this.planSlices(plan, objects, this.observedWith(have), [...plan.differing.ids], true);
      return plan;
    }

    this.fullPasses.read++;
    const started = performance.now();
    const read = this.readTables(this.executor as NftExecutor);
    this.reading = { started, ended: read.then(() => undefined, () => undefined) };
    let observed: TablesObserved;
    try {
      observed = await read;
      this.lastReadMs = performance.now() - started;
      this.log.debug({ ms: Math.round(this.lastReadMs), changedMeanwhile: during.services.size }, 'table read back');
    } finally {
      this.reading = undefined;
    }
    const objects = new Map<string, ServiceObjects>();
    let n = 0;
    for (const [id, s] of desired) {
      if (++n % slice === 0) await yieldToLoop();
      const c = this.objectsOf(s);
      objects.set(id, c.objects);
      plan.reports.set(id, c.reports);
    }
    plan.objects = objects;
    await this.planSlices(plan, objects, observed, [...new Set([...objects.keys(), ...observed.observed.services.keys(), ...observed.observedDr.services.keys()])], false);
    return plan;
  }

  /**
   * Plans `ids` (all of them: a full skeleton) into `plan`, a slice at a
   * time — in the inet table and, with --nft-dr-device, the netdev one
   * (each service's objects in the table they are for, as planTables does).
   */
  private async planSlices(plan: FullPlan, objects: Map<string, ServiceObjects>, observed: TablesObserved, ids: string[], modelOnly: boolean): Promise<void> {
    const inetPart = new Map<string, ServiceObjects>();
    const drPart = new Map<string, ServiceObjects>();
    for (const [id, o] of objects) {
      if (o.family === 'netdev') drPart.set(id, o);
      else inetPart.set(id, o);
      if (o.dr) drPart.set(id, o.dr);
    }
    const dr = this.opts.drDevice;
    const tables: { family: NftFamily; desired: Map<string, ServiceObjects>; observed: NftObserved; base?: NftBase }[] = [{ family: 'inet', desired: inetPart, observed: observed.observed }];
    if (dr !== undefined) tables.push({ family: 'netdev', desired: drPart, observed: observed.observedDr, base: drBase(dr, this.opts.drIngress) });
    const scope = modelOnly ? { scope: new Set(ids) } : {};
    // Against the model, only the differing services are planned: group chains are created where they
    // need to be, and unused ones are left for a pass that reads the kernel (a scoped skeleton).
    for (const t of tables) {
      const skeleton = planSkeleton({ desired: t.desired, observed: t.observed, ...scope, ...(t.base ? { base: t.base } : {}) });
      // A table the skeleton replaces holds nothing for the services.
      if (replacedTable(t.observed, t.base)) t.observed = emptyObserved();
      for (const raw of skeleton) {
        const op: NftOp = t.family === 'netdev' ? { ...raw, family: 'netdev' } : raw;
        plan.ops.push(op);
        plan.owners.push(undefined);
        plan.groupOf.push(op.kind === 'add-chain' || op.kind === 'flush-chain' || op.kind === 'delete-chain' ? op.name : op.kind === 'add-rule' ? op.chain : undefined);
      }
    }
    const slice = this.opts.sliceSize ?? 250;
    const sorted = [...new Set(ids)].sort();
    for (let i = 0; i < sorted.length; i++) {
      if (i > 0 && i % slice === 0) await yieldToLoop();
      const id = sorted[i];
      for (const t of tables) {
        const before = plan.ops.length;
        planService(t.desired.get(id), t.observed.services.get(id), plan.ops);
        for (let k = before; k < plan.ops.length; k++) {
          if (t.family === 'netdev') plan.ops[k] = { ...plan.ops[k], family: 'netdev' };
          plan.owners.push(id);
          plan.groupOf.push(undefined);
        }
      }
    }
  }

  sync(desired: ReadonlyMap<string, EffectiveService>, changed?: ReadonlySet<string>): Promise<SyncOutcome> {
    return changed ? this.syncChanged(desired, changed) : this.syncAll(desired);
  }

  private async syncChanged(desired: ReadonlyMap<string, EffectiveService>, changed: ReadonlySet<string>, inFull = false): Promise<SyncOutcome> {
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
      this.record(scope, services, objects, reports);
      return inFull ? { reports, failed: false } : this.syncLocalVips(desired, false, reports);
    }
    if (!this.executor) {
      this.record(scope, services, objects, reports);
      this.log.info({ full: false, ops: ops.length, services: scope.size }, 'dry-run: plan computed, nothing applied');
      return { reports, failed: false };
    }
    try {
      await this.executor.apply(ops);
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'nftables transaction failed; applying service by service');
      const one = await this.applyOneByOne(services, objects, reports, scope);
      return inFull ? one : this.afterOneByOne(one, desired, false);
    }
    this.record(scope, services, objects, reports);
    this.log.info({ full: false, ops: ops.length, services: scope.size }, 'nftables applied');
    return inFull ? { reports, failed: false } : this.syncLocalVips(desired, false, reports);
  }

  /**
   * The full pass: applies what `prepareFull` planned (planning it now if
   * nobody did), minus what incremental passes changed since, and makes the
   * model what the kernel now holds.
   */
  private async syncAll(current: ReadonlyMap<string, EffectiveService>): Promise<SyncOutcome> {
    if (!this.prepared) await this.prepareFull(current);
    const plan = this.prepared as FullPlan;
    this.prepared = undefined;
    this.during = undefined;
    const { during, desired } = plan;
    const ops: NftOp[] = [];
    for (let i = 0; i < plan.ops.length; i++) {
      const owner = plan.owners[i];
      const group = plan.groupOf[i];
      if (owner !== undefined ? during.services.has(owner) : group !== undefined && during.groups.has(group)) continue;
      ops.push(plan.ops[i]);
    }
    const sorted = sortOps(ops);
    this.logPlan(true, sorted);
    if (this.executor && this.opts.drDevice === undefined && !this.drCleaned) {
      await this.executor.deleteTable('netdev').catch((err: Error) => this.log.warn({ err: err.message }, 'netdev table of an earlier run not deleted'));
      this.drCleaned = true;
    }
    if (sorted.length > 0 && this.executor) {
      try {
        await this.executor.apply(sorted);
      } catch (err) {
        this.basis = undefined;
        this.trustArm = undefined;
        this.log.warn({ err: (err as Error).message }, 'nftables transaction failed; applying service by service');
        const objects = plan.objects ?? new Map([...desired].map(([id, s]) => [id, this.objectsOf(s).objects]));
        return this.afterOneByOne(await this.applyOneByOne(desired, objects, plan.reports), desired, true);
      }
    }
    if (plan.differing) {
      // Against the model: the kernel now holds it, with the differing services as planned (those
      // incremental passes changed meanwhile as they left them). Nothing else in the model moves,
      // so a resync without drift costs no more than its comparison.
      const ids = [...plan.differing.ids].filter((id) => !during.services.has(id));
      this.record(ids, desired, plan.differing.objects, plan.reports);
    } else this.rebuildModel(plan);
    if (plan.read) this.basis = plan.basis;
    if (sorted.length > 0) this.log.info({ full: true, read: plan.read, ops: sorted.length, services: desired.size }, this.executor ? 'nftables applied' : 'dry-run: plan computed, nothing applied');
    // The plan is of a snapshot taken when it started: services whose desired state is not what
    // the model now holds (changed since, and no incremental pass has applied that yet: their
    // triggers are this very pass's) are applied now.
    let outcome: SyncOutcome = { reports: plan.reports, failed: false };
    const stale = new Set<string>();
    for (const [id, s] of current) if (this.applied.get(id) !== s) stale.add(id);
    for (const id of this.applied.keys()) if (!current.has(id)) stale.add(id);
    if (stale.size > 0) {
      const inc = await this.syncChanged(current, stale, true);
      for (const [id, r] of inc.reports) plan.reports.set(id, r);
      outcome = { reports: plan.reports, failed: inc.failed };
    }
    const vips = await this.syncLocalVips(current, true, plan.reports, plan);
    outcome = { reports: plan.reports, failed: outcome.failed || vips.failed };
    // From now on the monitor can tell whether anything but us touches the table.
    const monitor = this.executor?.monitor;
    if (monitor && plan.read && !outcome.failed && monitor.starts === plan.monitorStarts && this.basis === undefined) {
      this.trustArm = plan.monitorStarts;
      // Not armed yet (no transaction of ours seen since it started): make one. A moment later, so
      // that starting the nft -i session (a process start blocks the event loop until the child
      // has exec'd: 10–100 ms on a loaded machine) does not hold up the status reporting this pass.
      const executor = this.executor as NftExecutor;
      if (!monitor.armed) setTimeout(() => executor.armMonitor(), 50).unref();
    }
    return outcome;
  }

  /**
   * Puts every desired VIP on the local-VIP device and takes off the others,
   * after the rules are in (so a VIP is never local before its DNAT is).
   * Incremental passes compare against what the last pass left; full passes
   * read the device (one `ip addr show`, while the pass is prepared), which
   * undoes drift; VIPs incremental passes changed since that read are taken
   * from the model. A failure is
   * reported on the services of the pass (the host's status shows it) and
   * makes the next pass full.
   */
  private async syncLocalVips(desired: ReadonlyMap<string, EffectiveService>, full: boolean, reports: Map<string, ServiceReport[]>, plan?: FullPlan): Promise<SyncOutcome> {
    const lv = this.opts.localVips;
    if (!lv || !this.executor || (!lv.enabled && (!full || (this.vips !== undefined && !plan?.vips)))) return { reports, failed: false };
    const wanted = new Set<string>();
    if (lv.enabled) for (const s of desired.values()) wanted.add(s.host);
    try {
      let have: Iterable<string>;
      if (full && plan?.vips) {
        const read = new Set(plan.vips);
        for (const a of plan.during.vips) {
          if (this.vips?.has(a)) read.add(a);
          else read.delete(a);
        }
        have = read;
      } else have = full || !this.vips ? await lv.device.observe() : this.vips;
      const ops = planAddresses(wanted, have);
      for (const op of ops) this.during?.vips.add(op.address);
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

  /**
   * After a pass planned against the kernel: the model becomes what the kernel
   * now holds — the planned state, and incremental passes' services as they
   * left them.
   */
  private rebuildModel(plan: FullPlan): void {
    const { during, desired } = plan;
    const kept = new Map<string, EffectiveService>();
    const keptUnknown = new Map<string, Held>();
    for (const id of during.services) {
      const s = this.applied.get(id);
      if (s) kept.set(id, s);
      const u = this.unknown.get(id);
      if (u) keptUnknown.set(id, u);
    }
    const keptGroups = new Map<string, number>();
    const keptDrGroups = new Map<string, number>();
    for (const g of during.groups) {
      const n = this.base.groups.get(g);
      if (n !== undefined) keptGroups.set(g, n);
      const d = this.drBase.groups.get(g);
      if (d !== undefined) keptDrGroups.set(g, d);
    }
    this.base = emptyObserved();
    this.drBase = emptyObserved();
    this.applied.clear();
    this.appliedReports.clear();
    this.unknown.clear();
    const ids = [...desired.keys()].filter((id) => !during.services.has(id));
    const objects = plan.objects ?? new Map<string, ServiceObjects>();
    this.record(ids, desired, objects, plan.reports);
    for (const [id, s] of kept) this.applied.set(id, s);
    for (const [id, u] of keptUnknown) this.unknown.set(id, u);
    for (const [g, n] of keptGroups) this.base.groups.set(g, n);
    for (const [g, n] of keptDrGroups) this.drBase.groups.set(g, n);
  }

  /**
   * Brings the model in line with what was just applied for `ids` (absent
   * from `services` = deleted). `objects` may lack a service whose group
   * chains the model already has (a full pass against the model).
   */
  private record(ids: Iterable<string>, services: ReadonlyMap<string, EffectiveService>, objects: ReadonlyMap<string, ServiceObjects>, reports?: ReadonlyMap<string, ServiceReport[]>): void {
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
      this.during?.services.add(id);
      const r = reports?.get(id);
      if (s && r && r.length > 0) this.appliedReports.set(id, r);
      else this.appliedReports.delete(id);
      if (s) {
        this.applied.set(id, s);
        for (const g of [...(o?.groups ?? []), ...(o?.dr?.groups ?? [])]) {
          (o?.family === 'netdev' || o?.dr?.groups.includes(g) ? d : m).groups.set(g.name, g.rules.length);
          this.during?.groups.add(g.name);
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
    this.basis = undefined;
    this.trustArm = undefined;
    // Start again from the kernel's truth: the failed transaction changed nothing.
    const { observed, observedDr } = await this.readTables(executor);
    this.applied.clear();
    this.appliedReports.clear();
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
        this.record(one, services, objects, reports);
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
    this.basis = undefined;
    this.trustArm = undefined;
    this.base = emptyObserved();
    this.drBase = emptyObserved();
    this.applied.clear();
    this.appliedReports.clear();
    this.unknown.clear();
  }

  close(): void {
    this.executor?.close();
  }
}
