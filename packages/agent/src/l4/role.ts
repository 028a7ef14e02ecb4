/**
 * The L4 role: follows `<p>/l4/` with a PrefixMirror (list at R, watch from
 * R+1, list again on cancel/compaction) and keeps the dataplane equal to the
 * services of the current generation this host applies (`serviceAppliesTo`).
 * A PUT /services switches generations in one revision: the desired map is
 * rebuilt from the new generation in that same event, so a pass never sees
 * half of the old set and half of the new (etcd/generations.ts). Changes mark
 * their service ids dirty and trigger the sync loop, so a burst becomes one
 * pass; a relist or the periodic resync makes the pass full.
 *
 * The desired map is kept up to date from the mirror's change events, so an
 * incremental pass costs O(changed services), not O(all services).
 *
 * While etcd is unreachable the mirror keeps the last state it saw and no
 * pass changes anything: the kernel stays exactly as it is.
 *
 * Health checks: the dataplane is handed the *effective* services — desired
 * ones with this host's unhealthy servers at weight 0 (`health/overlay.ts`).
 * A server entering or leaving the pick marks its service dirty like any
 * change; etcd's weights are never written. Servers held by `/provide?lb=`
 * providers (an `owned` marker under disco/lb/) are healthy while connected
 * and never probed.
 *
 * Connection feedback (nftables only; IPVS counts in the kernel): services
 * with a least-connection scheduler or connection thresholds get, on top of
 * health, the feedback's pick of servers for new connections (l4/feedback);
 * a round that changes a service's pick marks it dirty like any change.
 */
import type { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';
import {
  mirroredGeneration,
  parseGenerationRecord,
  PrefixMirror,
  Service,
  serviceAppliesTo,
  type GenerationRecord,
  type Keyspace,
  type MirrorChange,
  type ServiceReport,
} from '@switchyard/shared';
import type { RoleStatus } from '../status.js';
import type { AgentConfig } from '../config.js';
import { listErrorLogger } from '../log.js';
import { SyncLoop, type SyncObserver } from '../loop.js';
import type { RoleProgress } from '../metrics.js';
import type { StatusReporter } from '../status.js';
import type { AgentRole } from '../role.js';
import type { ConnectionTable } from '../adapters/conntrack.js';
import type { EffectiveService, L4Dataplane } from './dataplane.js';
import { ConnectionFeedback } from './feedback/index.js';
import { effectiveService, hostHealth, targetsOf, type HealthChecks, type HealthChecksFactory } from './health/index.js';

/** Health-only status changes (no pick change) are published at most this often. */
const HEALTH_STATUS_MS = 200;

export class L4Role implements AgentRole {
  readonly name = 'l4';
  private readonly mirror: PrefixMirror<GenerationRecord<Service>>;
  /** The generation the desired map holds. */
  private gen: string;
  private readonly loop: SyncLoop;
  /** The services this host applies, by id (follows the mirror). */
  private readonly desired = new Map<string, Service>();
  /** What the dataplane applies: `desired` with unhealthy servers at weight 0, and the feedback's pick. */
  private readonly effective = new Map<string, EffectiveService>();
  /** nftables: least-connection schedulers and thresholds from conntrack's counts. */
  readonly feedback?: ConnectionFeedback;
  /** Services whose every serving server fails its checks (all kept in). */
  private readonly allDown = new Set<string>();
  readonly health: HealthChecks;
  /** `<serviceId>/<serverId>` of servers providers hold (disco/lb/…/owned). */
  private readonly held = new Set<string>();
  private readonly heldMirror: PrefixMirror<true>;
  private lastStatus?: RoleStatus;
  private healthTimer?: NodeJS.Timeout;
  private dirty = new Set<string>();
  private readonly reports = new Map<string, ServiceReport[]>();
  /** `reports` flattened, rebuilt only when a service's reports change. */
  private flatReports: ServiceReport[] = [];
  private lastFullSync?: string;
  /** The revision the last pass applied. */
  private applied = 0;

  constructor(
    etcd: Etcd3,
    private readonly keys: Keyspace,
    private readonly config: AgentConfig,
    readonly dataplane: L4Dataplane,
    private readonly status: StatusReporter,
    private readonly log: Logger,
    healthChecks: HealthChecksFactory,
    observer?: SyncObserver,
    /** Where the feedback reads connections (nftables with --nft-feedback-interval > 0); no feedback without it. */
    connections?: ConnectionTable,
  ) {
    if (connections && config.nftFeedbackIntervalMs > 0) {
      this.feedback = new ConnectionFeedback({
        table: connections,
        intervalMs: config.nftFeedbackIntervalMs,
        log: log.child({ component: 'feedback' }),
        onChange: (ids) => {
          for (const id of ids) this.applyHealth(id, false);
          this.loop.trigger();
        },
      });
    }
    this.health = healthChecks({
      concurrency: config.healthConcurrency,
      onChange: (serviceId, pickChanged) => this.onHealth(serviceId, pickChanged),
    });
    this.heldMirror = new PrefixMirror<true>(etcd, {
      prefix: keys.disco.lb,
      parse: (key) => (keys.disco.parseLb(key)?.kind === 'owned' ? true : undefined),
      onListError: listErrorLogger(log, keys.disco.lb),
    });
    this.heldMirror.on('change', (c: MirrorChange<true>) => {
      const k = keys.disco.parseLb(c.key);
      if (!k) return;
      if (c.type === 'put') this.held.add(`${k.serviceId}/${k.serverId}`);
      else this.held.delete(`${k.serviceId}/${k.serverId}`);
      this.refresh(k.serviceId);
    });
    this.heldMirror.on('resync', () => {
      this.held.clear();
      for (const key of this.heldMirror.entries.keys()) {
        const k = keys.disco.parseLb(key);
        if (k) this.held.add(`${k.serviceId}/${k.serverId}`);
      }
      for (const id of this.desired.keys()) this.refresh(id);
    });
    this.mirror = new PrefixMirror<GenerationRecord<Service>>(etcd, {
      prefix: keys.l4.root,
      parse: (key, raw) => parseGenerationRecord(keys.l4, key, raw, (rel, value) => (rel.includes('/') ? undefined : Service.parse(JSON.parse(value.toString())))),
      onInvalid: (key, err) => log.warn({ key, err: (err as Error).message }, 'ignoring invalid service in etcd'),
      onListError: listErrorLogger(log, keys.l4.root),
    });
    this.gen = mirroredGeneration(this.mirror, keys.l4).id;
    this.mirror.on('change', (c: MirrorChange<GenerationRecord<Service>>) => this.onChange(c));
    this.mirror.on('resync', () => this.loop.requestFull());
    this.mirror.on('revision', () => this.loop.trigger());
    const prepareFull = dataplane.prepareFull?.bind(dataplane);
    this.loop = new SyncLoop({
      sync: (full) => this.sync(full),
      // A snapshot: the plan is made in slices while the map keeps changing.
      ...(prepareFull ? { prepareFull: () => prepareFull(new Map(this.effective)) } : {}),
      minIntervalMs: config.minSyncIntervalMs,
      burst: config.syncBurst,
      resyncMs: config.resyncMs,
      log,
      ...(observer ? { observer } : {}),
    });
  }

  private onChange(c: MirrorChange<GenerationRecord<Service>>): void {
    const now = mirroredGeneration(this.mirror, this.keys.l4).id;
    if (now !== this.gen) {
      this.switchTo(now);
      return;
    }
    // Records of other generations (one being written, one being deleted) are not desired state.
    const k = this.keys.l4.parseService(c.key);
    if (!k || k.gen !== this.gen) return;
    const prev = c.previous?.value;
    const before = prev?.kind === 'record' ? prev.value.id : k.id;
    this.desired.delete(before);
    this.refresh(before);
    if (c.type === 'put' && c.entry.value.kind === 'record' && serviceAppliesTo(c.entry.value.value, this.config.hostId)) {
      this.desired.set(c.entry.value.value.id, c.entry.value.value);
      this.refresh(c.entry.value.value.id);
    }
    this.loop.trigger();
  }

  /** Re-derive one service's checks and effective state; marks it dirty. */
  private refresh(id: string): void {
    const service = this.desired.get(id);
    this.health.setService(id, targetsOf(service, (serverId) => this.held.has(`${id}/${serverId}`)));
    this.applyHealth(id);
  }

  /** `serviceChanged` false: only the feedback's pick moved (the service and its health are as they were). */
  private applyHealth(id: string, serviceChanged = true): void {
    const service = this.desired.get(id);
    if (!service) {
      this.effective.delete(id);
      this.allDown.delete(id);
      this.feedback?.setService(id, undefined);
    } else {
      const e = effectiveService(service, (serverId) => this.health.state(id, serverId));
      if (serviceChanged) this.feedback?.setService(id, e.service);
      this.effective.set(id, this.feedback ? this.feedback.overlay(e.service) : e.service);
      if (e.allDown) this.allDown.add(id);
      else this.allDown.delete(id);
    }
    this.dirty.add(id);
  }

  private onHealth(serviceId: string, pickChanged: boolean): void {
    if (pickChanged && this.desired.has(serviceId)) {
      this.applyHealth(serviceId);
      this.loop.trigger();
    }
    // The pass (if any) reports too; this covers changes that move nothing.
    this.healthTimer ??= setTimeout(() => {
      this.healthTimer = undefined;
      if (this.lastStatus) this.publish({ ...this.lastStatus });
    }, HEALTH_STATUS_MS);
  }

  private publish(status: RoleStatus): void {
    this.lastStatus = status;
    this.status.update(this.name, this.health.size > 0 ? { ...status, health: hostHealth(this.health) } : status);
  }

  /**
   * `current` names another generation: the desired map becomes that one,
   * whole, in this event (every record of it arrived in earlier revisions).
   * Records of it that arrive later in the same relist are added one by one
   * by onChange, before any pass runs.
   */
  private switchTo(gen: string): void {
    this.gen = gen;
    const touched = new Set(this.desired.keys());
    this.desired.clear();
    const set = this.keys.l4.set(gen);
    for (const [key, e] of this.mirror.entries) {
      if (!key.startsWith(set) || e.value.kind !== 'record') continue;
      const svc = e.value.value;
      touched.add(svc.id);
      if (serviceAppliesTo(svc, this.config.hostId)) this.desired.set(svc.id, svc);
    }
    // Each touched service: its checks and effective state follow, and it is dirty.
    for (const id of touched) this.refresh(id);
    this.log.info({ generation: gen, services: this.desired.size }, 'services replaced');
    this.loop.trigger();
  }

  async start(): Promise<void> {
    // The first pass waits for the first complete list: never apply an empty
    // desired state just because etcd has not answered yet.
    void this.heldMirror.start();
    void this.mirror.start().then(() => {
      this.log.info({ revision: this.mirror.revision, services: this.desired.size }, 'services listed');
      this.loop.start();
      this.feedback?.start();
    });
  }

  private async sync(full: boolean): Promise<{ recheckMs?: number }> {
    const revision = this.mirror.revision;
    const changed = this.dirty;
    this.dirty = new Set();
    const started = performance.now();
    // The all-down warnings this pass reports are those of what it applies
    // (health may change while it runs; the next pass reports that).
    const allDown = new Set(this.allDown);
    let outcome;
    try {
      // A full pass gets a copy (it reads every service, possibly after an
      // await); an incremental one reads only the changed ids, at once.
      outcome = await this.dataplane.sync(full ? new Map(this.effective) : this.effective, full ? undefined : changed);
    } catch (err) {
      // Keep the ids for the retry (which is full anyway).
      for (const id of changed) this.dirty.add(id);
      throw err;
    }
    let reportsChanged = full && this.reports.size > 0;
    if (full) this.reports.clear();
    for (const id of full ? allDown : [...changed].filter((id) => allDown.has(id) || outcome.reports.has(id))) {
      const list = [...(outcome.reports.get(id) ?? [])];
      if (allDown.has(id)) list.push({ serviceId: id, level: 'warning', message: 'every real server fails its health check on this host; all are kept in' });
      outcome.reports.set(id, list);
    }
    for (const [id, list] of outcome.reports) {
      if (list.length > 0) {
        this.reports.set(id, list);
        reportsChanged = true;
      } else if (this.reports.delete(id)) reportsChanged = true;
    }
    if (reportsChanged) this.flatReports = [...this.reports.values()].flat();
    const now = new Date().toISOString();
    if (full) this.lastFullSync = now;
    // As /hosts reports it: applied, with the services that failed listed as errors.
    this.applied = revision;
    this.publish({
      appliedRevision: revision,
      lastSync: now,
      ...(this.lastFullSync ? { lastFullSync: this.lastFullSync } : {}),
      services: this.desired.size,
      reports: this.flatReports,
    });
    // Full passes (the first, relists, the periodic resync) at info: how long one takes is an operator's question.
    this.log[full ? 'info' : 'debug']({ full, revision, changed: changed.size, ms: Math.round(performance.now() - started) }, 'synced');
    if (outcome.failed) throw new Error('some services were not applied');
    return outcome.recheckMs !== undefined ? { recheckMs: outcome.recheckMs } : {};
  }

  progress(): RoleProgress {
    let servers = 0;
    for (const s of this.desired.values()) servers += s.servers.length;
    return {
      seenRevision: this.mirror.revision,
      appliedRevision: this.applied,
      dataplane: this.dataplane.name,
      objects: { service: this.desired.size, server: servers },
      ...(this.health.size > 0 ? { health: { checks: { ...this.health.stats }, unhealthy: this.health.summary().counts.unhealthy, delayMs: this.health.delayMs, probes: this.health.probes } } : {}),
      ...(this.feedback ? { feedback: { rounds: this.feedback.stats.rounds, failed: this.feedback.stats.failed, changes: this.feedback.stats.changes, services: this.feedback.size } } : {}),
    };
  }

  async stop(opts: { flush: boolean }): Promise<void> {
    clearTimeout(this.healthTimer);
    await this.feedback?.stop();
    await this.health.stop();
    await this.heldMirror.stop();
    await this.mirror.stop();
    await this.loop.stop();
    if (opts.flush) {
      await this.dataplane.flush();
      this.log.info({ dataplane: this.dataplane.name }, 'flushed everything the agent owns');
    }
    this.dataplane.close?.();
  }
}
