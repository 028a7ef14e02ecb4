/**
 * The nftables dataplane (and dry-run, which is the same planner without an
 * executor). A full pass reads the table back (`nft -j list table`) and
 * plans against it; an incremental pass plans the changed services against
 * the model of what the last pass applied, so one change among 10,000
 * services is a few lines of nft script. The script applies as one
 * transaction; if it fails, each service is tried on its own so one bad
 * service is reported without holding back the others.
 */
import type { Logger } from 'pino';
import type { Service, ServiceReport } from '@switchyard/shared';
import { NftExecutor } from '../dataplanes/nftables/executor.js';
import { serviceObjects, type ServiceObjects } from '../dataplanes/nftables/model.js';
import { emptyObserved, observedOf, type NftObserved } from '../dataplanes/nftables/observe.js';
import { NFT_BASE, planNft, renderNftScript, type NftOp } from '../dataplanes/nftables/plan.js';
import type { L4Dataplane, SyncOutcome } from './dataplane.js';

interface Computed {
  objects: ServiceObjects;
  reports: ServiceReport[];
}

export class NftDataplane implements L4Dataplane {
  readonly name: 'nftables' | 'dry-run';
  /** What the kernel holds after the last successful pass (or, for dry-run, would hold). */
  private model: NftObserved = emptyObserved();
  private readonly computed = new WeakMap<Service, Computed>();

  constructor(
    private readonly executor: NftExecutor | undefined,
    private readonly table: string,
    private readonly log: Logger,
  ) {
    this.name = executor ? 'nftables' : 'dry-run';
  }

  private compute(s: Service): Computed {
    let c = this.computed.get(s);
    if (!c) {
      c = serviceObjects(s);
      this.computed.set(s, c);
    }
    return c;
  }

  async sync(desired: ReadonlyMap<string, Service>, changed?: ReadonlySet<string>): Promise<SyncOutcome> {
    const ids = changed ? [...changed] : [...desired.keys()];
    const objects = new Map<string, ServiceObjects>();
    const reports = new Map<string, ServiceReport[]>();
    for (const id of changed ? ids : desired.keys()) {
      const s = desired.get(id);
      if (!s) {
        reports.set(id, []);
        continue;
      }
      const c = this.compute(s);
      objects.set(id, c.objects);
      reports.set(id, c.reports);
    }
    if (!changed && this.executor) this.model = await this.executor.observe();
    const ops = planNft({ desired: objects, observed: this.model, ...(changed ? { scope: changed } : {}) });
    // The full script only at debug level (rendering 60,000 ops is not free).
    if (this.log.isLevelEnabled('debug')) this.log.debug({ full: !changed, ops: ops.length, script: renderNftScript(this.table, ops) }, 'nftables plan');
    if (ops.length === 0) return { reports, failed: false };
    if (!this.executor) {
      this.record(objects, changed);
      this.log.info({ full: !changed, ops: ops.length, services: objects.size }, 'dry-run: plan computed, nothing applied');
      return { reports, failed: false };
    }
    try {
      await this.executor.apply(ops);
      this.record(objects, changed);
      this.log.info({ full: !changed, ops: ops.length, services: changed ? changed.size : objects.size }, 'nftables applied');
      return { reports, failed: false };
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'nftables transaction failed; applying service by service');
      return this.applyOneByOne(objects, reports, changed);
    }
  }

  /** Brings the model in line with what was just applied. */
  private record(objects: ReadonlyMap<string, ServiceObjects>, changed?: ReadonlySet<string>): void {
    const m = this.model;
    m.table = true;
    for (const c of NFT_BASE.chains) m.baseChains.set(c.name, c.rules.length);
    for (const map of NFT_BASE.maps) m.maps.add(map.name);
    if (!changed) {
      m.services.clear();
      m.groups.clear();
    }
    for (const id of changed ?? objects.keys()) {
      const o = objects.get(id);
      if (o) {
        m.services.set(id, observedOf(o));
        for (const g of o.groups) m.groups.set(g.name, g.rules.length);
      } else m.services.delete(id);
    }
  }

  private async applyOneByOne(objects: Map<string, ServiceObjects>, reports: Map<string, ServiceReport[]>, changed?: ReadonlySet<string>): Promise<SyncOutcome> {
    const executor = this.executor as NftExecutor;
    // Start again from the kernel's truth: the failed transaction changed nothing.
    this.model = await executor.observe();
    const base = planNft({ desired: new Map(), observed: this.model, scope: new Set() });
    await executor.apply(base);
    this.record(new Map(), new Set());
    let failed = false;
    const ids = changed ? [...changed] : [...new Set([...objects.keys(), ...this.model.services.keys()])];
    for (const id of ids) {
      const one = new Set([id]);
      const ops: NftOp[] = planNft({ desired: objects, observed: this.model, scope: one });
      try {
        await executor.apply(ops);
        this.record(objects, one);
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
    if (this.executor) await this.executor.deleteTable();
    this.model = emptyObserved();
  }
}
