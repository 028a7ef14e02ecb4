/**
 * The ipvs dataplane: every pass reads `ipvsadm -Sn` (cheap: IPVS has no
 * per-invocation cache to rebuild) and plans against it, touching only the
 * virtual services this agent owns. Ownership is kept in etcd by the caller
 * (`OwnershipStore`) and saved before an apply that adds services, so a crash
 * mid-apply never leaves a service the agent would not recognise as its own.
 */
import type { Logger } from 'pino';
import type { Service, ServiceReport } from '@switchyard/shared';
import { desiredVirtuals, type IpvsVirtual } from './model.js';
import { ipvsadmLine, planIpvs } from './plan.js';
import type { IpvsExecutor } from './executor.js';
import type { L4Dataplane, SyncOutcome } from '../dataplane.js';

export interface OwnershipStore {
  load(): Promise<Set<string>>;
  save(owned: ReadonlySet<string>): Promise<void>;
}

/** Ownership kept in memory only (tests, and the VM script). */
export class MemoryOwnership implements OwnershipStore {
  owned = new Set<string>();
  async load() {
    return new Set(this.owned);
  }
  async save(owned: ReadonlySet<string>) {
    this.owned = new Set(owned);
  }
}

const DRAIN_RECHECK_MS = 1000;

export class IpvsDataplane implements L4Dataplane {
  readonly name = 'ipvs' as const;
  private owned?: Set<string>;
  private draining = new Map<string, number>();

  constructor(
    private readonly executor: IpvsExecutor,
    private readonly ownership: OwnershipStore,
    private readonly drainTimeoutMs: number,
    private readonly log: Logger,
  ) {}

  async sync(desired: ReadonlyMap<string, Service>): Promise<SyncOutcome> {
    this.owned ??= await this.ownership.load();
    const services = [...desired.values()];
    const { virtuals, reports: list } = desiredVirtuals(services);
    const reports = new Map<string, ServiceReport[]>(services.map((s) => [s.id, []]));
    for (const r of list) reports.get(r.serviceId)?.push(r);
    const observed = await this.executor.observe();
    const connections = this.draining.size > 0 ? await this.executor.connections() : undefined;
    const plan = planIpvs({
      desired: virtuals,
      observed: observed.virtuals,
      owned: this.owned,
      observedAddresses: observed.addresses,
      draining: this.draining,
      ...(connections ? { connections } : {}),
      drainTimeoutMs: this.drainTimeoutMs,
    });
    if (this.log.isLevelEnabled('debug')) this.log.debug({ ops: plan.ops.length, lines: plan.ops.map(ipvsadmLine).filter(Boolean) }, 'ipvs plan');
    const grows = [...plan.owned].some((k) => !this.owned?.has(k));
    if (grows) await this.ownership.save(new Set([...this.owned, ...plan.owned]));
    if (plan.ops.length > 0) {
      await this.executor.apply(plan.ops);
      this.log.info({ ops: plan.ops.length, draining: plan.draining.size }, 'ipvs applied');
    }
    const shrinks = [...this.owned].some((k) => !plan.owned.has(k));
    this.owned = plan.owned;
    if (shrinks || grows) await this.ownership.save(this.owned);
    this.draining = plan.draining;
    return { reports, failed: false, ...(this.draining.size > 0 ? { recheckMs: DRAIN_RECHECK_MS } : {}) };
  }

  async flush(): Promise<void> {
    this.owned ??= await this.ownership.load();
    const observed = await this.executor.observe();
    const plan = planIpvs({ desired: [] as IpvsVirtual[], observed: observed.virtuals, owned: this.owned, observedAddresses: observed.addresses });
    await this.executor.apply(plan.ops);
    await this.executor.removeDevice();
    this.owned = plan.owned;
    await this.ownership.save(this.owned);
  }
}
