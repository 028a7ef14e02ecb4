/** What the L4 role asks of a dataplane (ipvs, nftables, dry-run). */
import type { Dataplane, Service, ServiceReport } from '@switchyard/shared';

export interface SyncOutcome {
  /** Reports of the services this pass looked at (all of them on a full pass), by service id. */
  reports: Map<string, ServiceReport[]>;
  /** Some services could not be applied (their errors are in `reports`): the next pass must be full. */
  failed: boolean;
  /** Ask for another pass after this long (a server is draining). */
  recheckMs?: number;
}

export interface L4Dataplane {
  readonly name: Dataplane;
  /**
   * Make the kernel match `desired` (every service this host applies, by id).
   * `changed` lists the ids that may differ since the last pass (incremental);
   * without it the pass compares everything against the kernel (full).
   */
  sync(desired: ReadonlyMap<string, Service>, changed?: ReadonlySet<string>): Promise<SyncOutcome>;
  /**
   * The slow half of the next full pass (reading the kernel back, planning
   * every service), run beside the loop while incremental passes go on;
   * `desired` is a snapshot. The full `sync` that follows applies what it
   * planned, less what incremental passes changed meanwhile.
   */
  prepareFull?(desired: ReadonlyMap<string, Service>): Promise<void>;
  /** Remove everything this dataplane owns (--flush-on-exit). */
  flush(): Promise<void>;
  /** Ends long-lived helper processes (agent stop). */
  close?(): void;
}
