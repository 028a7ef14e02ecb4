/**
 * The L4 role: follows `<p>/l4/services/` with a PrefixMirror (list at R,
 * watch from R+1, list again on cancel/compaction) and keeps the dataplane
 * equal to the services this host applies (`serviceAppliesTo`). Changes mark
 * their service ids dirty and trigger the sync loop, so a burst becomes one
 * pass; a relist or the periodic resync makes the pass full.
 *
 * While etcd is unreachable the mirror keeps the last state it saw and no
 * pass changes anything: the kernel stays exactly as it is.
 */
import type { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';
import { PrefixMirror, Service, serviceAppliesTo, type Keyspace, type ServiceReport } from '@switchyard/shared';
import type { AgentConfig } from '../config.js';
import { SyncLoop } from '../loop.js';
import type { StatusReporter } from '../status.js';
import type { AgentRole } from '../role.js';
import type { L4Dataplane } from './dataplane.js';

export class L4Role implements AgentRole {
  readonly name = 'l4';
  private readonly mirror: PrefixMirror<Service>;
  private readonly loop: SyncLoop;
  private dirty = new Set<string>();
  private readonly reports = new Map<string, ServiceReport[]>();
  private lastFullSync?: string;

  constructor(
    etcd: Etcd3,
    private readonly keys: Keyspace,
    private readonly config: AgentConfig,
    readonly dataplane: L4Dataplane,
    private readonly status: StatusReporter,
    private readonly log: Logger,
  ) {
    this.mirror = new PrefixMirror<Service>(etcd, {
      prefix: keys.l4.services,
      parse: (_key, value) => Service.parse(JSON.parse(value.toString())),
      onInvalid: (key, err) => log.warn({ key, err: (err as Error).message }, 'ignoring invalid service in etcd'),
    });
    this.mirror.on('change', (c: { key: string }) => {
      const id = keys.l4.parseService(c.key);
      if (id) this.dirty.add(id);
      this.loop.trigger();
    });
    this.mirror.on('resync', () => this.loop.requestFull());
    this.mirror.on('revision', () => this.loop.trigger());
    this.loop = new SyncLoop({
      sync: (full) => this.sync(full),
      minIntervalMs: config.minSyncIntervalMs,
      resyncMs: config.resyncMs,
      log,
    });
  }

  async start(): Promise<void> {
    // The first pass waits for the first complete list: never apply an empty
    // desired state just because etcd has not answered yet.
    void this.mirror.start().then(() => {
      this.log.info({ revision: this.mirror.revision, services: this.mirror.entries.size }, 'services listed');
      this.loop.start();
    });
  }

  private desired(): Map<string, Service> {
    const out = new Map<string, Service>();
    for (const s of this.mirror.values()) if (serviceAppliesTo(s, this.config.hostId)) out.set(s.id, s);
    return out;
  }

  private async sync(full: boolean): Promise<{ recheckMs?: number }> {
    const revision = this.mirror.revision;
    const changed = this.dirty;
    this.dirty = new Set();
    const started = performance.now();
    let outcome;
    try {
      outcome = await this.dataplane.sync(this.desired(), full ? undefined : changed);
    } catch (err) {
      // Keep the ids for the retry (which is full anyway).
      for (const id of changed) this.dirty.add(id);
      throw err;
    }
    if (full) this.reports.clear();
    for (const [id, list] of outcome.reports) {
      if (list.length > 0) this.reports.set(id, list);
      else this.reports.delete(id);
    }
    const now = new Date().toISOString();
    if (full) this.lastFullSync = now;
    this.status.update(this.name, {
      appliedRevision: revision,
      lastSync: now,
      ...(this.lastFullSync ? { lastFullSync: this.lastFullSync } : {}),
      services: this.desired().size,
      reports: [...this.reports.values()].flat(),
    });
    this.log.debug({ full, revision, changed: changed.size, ms: Math.round(performance.now() - started) }, 'synced');
    if (outcome.failed) throw new Error('some services were not applied');
    return outcome.recheckMs !== undefined ? { recheckMs: outcome.recheckMs } : {};
  }

  async stop(opts: { flush: boolean }): Promise<void> {
    await this.mirror.stop();
    await this.loop.stop();
    if (opts.flush) {
      await this.dataplane.flush();
      this.log.info({ dataplane: this.dataplane.name }, 'flushed everything the agent owns');
    }
  }
}
