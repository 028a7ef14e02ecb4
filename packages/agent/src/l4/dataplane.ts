/** What the L4 role asks of a dataplane (ipvs, nftables, dry-run). */
import type { Dataplane, Service, ServiceReport } from '@switchyard/shared';
import type { PickedServer } from './feedback/pick.js';

/**
 * A service as the role hands it to a dataplane: health already applied to
 * the weights, and — with the nftables connection feedback — `pick`, the
 * servers that take new connections until the next feedback round and their
 * shares (absent: every server of weight > 0, by weight). IPVS ignores it:
 * its schedulers count connections in the kernel.
 */
export type EffectiveService = Service & {
  readonly pick?: readonly PickedServer[];
  /** The feedback cannot read connection counts right now (why): the service says so in its status. */
  readonly countsUnavailable?: string;
};

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
  sync(desired: ReadonlyMap<string, EffectiveService>, changed?: ReadonlySet<string>): Promise<SyncOutcome>;
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
