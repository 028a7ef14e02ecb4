/**
 * The sync loop every role runs (the shape of kube-proxy's
 * BoundedFrequencyRunner and Cilium's reconciler): triggers are coalesced,
 * passes are rate-limited by a token bucket (`burst` passes at once, then
 * one per `minIntervalMs`), a full resync `resyncMs` after the last one
 * undoes drift, and a
 * failed sync makes the next one full, after an exponential backoff. Only
 * one sync runs at a time.
 *
 * The bucket is what lets the first change after a quiet spell apply at
 * once (a fixed interval after every pass made each change of a client
 * writing one after the other wait it out: ~20 ms of every change's
 * latency) while sustained churn is still coalesced into at most one pass
 * per interval.
 *
 * A full pass may have a slow first half (`prepareFull`: nftables plans
 * every service, and may read its whole table back first, seconds at
 * 10,000 services). That half runs beside the loop: incremental passes keep
 * applying changes while it runs, and the full pass itself runs once it is
 * done. Incremental passes only start after a first full pass has
 * succeeded: until then the dataplane does not know what the kernel holds.
 */
import type { Logger } from 'pino';

/** Told of every pass as it ends (metrics). */
export interface SyncObserver {
  /** A pass ended (successfully or not) after `seconds`. */
  synced(full: boolean, seconds: number): void;
  /** A pass, or the kernel read before a full one, failed. */
  failed(): void;
}

export interface SyncLoopOptions {
  /** One pass; `full` asks for a comparison against the kernel instead of the last applied model. */
  sync: (full: boolean) => Promise<{ recheckMs?: number } | void>;
  /** The read-only half of a full pass, run while incremental passes go on (optional). */
  prepareFull?: () => Promise<void>;
  /** On average at most one pass per this interval under sustained triggers (0: no limit). */
  minIntervalMs: number;
  /** Passes that may run back to back before the interval applies (default 4). */
  burst?: number;
  resyncMs: number;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  log: Logger;
  observer?: SyncObserver;
}

export class SyncLoop {
  private pending = false;
  private pendingFull = true;
  private running?: Promise<void>;
  /** The read of the next full pass, while it is under way. */
  private preparing?: Promise<void>;
  /** That read is done: the next pass may be the full one. */
  private prepared = false;
  /** A full pass has succeeded, so incremental passes have a model to work from. */
  private fullDone = false;
  private timer?: NodeJS.Timeout;
  private resyncTimer?: NodeJS.Timeout;
  /** Passes that may start now without waiting (a token bucket refilled one per minIntervalMs). */
  private tokens: number;
  private refilled = performance.now();
  private failures = 0;
  private stopped = false;
  private started = false;

  constructor(private readonly opts: SyncLoopOptions) {
    this.tokens = opts.burst ?? 4;
  }

  /** Refills the bucket; how long until a token is there. */
  private tokenWait(): number {
    const now = performance.now();
    const interval = this.opts.minIntervalMs;
    if (interval <= 0) return 0;
    this.tokens = Math.min(this.opts.burst ?? 4, this.tokens + (now - this.refilled) / interval);
    this.refilled = now;
    return this.tokens >= 1 ? 0 : Math.ceil((1 - this.tokens) * interval);
  }

  start(): void {
    this.started = true;
    this.requestFull();
  }

  /** Something changed: sync soon (coalesced with other triggers). */
  trigger(): void {
    this.pending = true;
    this.schedule(0);
  }

  /** Compare against the kernel on the next pass. */
  requestFull(): void {
    this.pendingFull = true;
    this.trigger();
  }

  /** Resolves when no sync (nor the read of a full one) is running (used by stop and by tests). */
  async idle(): Promise<void> {
    while (this.running || this.preparing) await (this.running ?? this.preparing);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.resyncTimer);
    await this.idle();
  }

  private schedule(delayMs: number): void {
    // Before start() triggers only accumulate: the first pass is the full one start() asks for.
    if (!this.started || this.stopped || this.running) return;
    const wait = Math.max(delayMs, this.tokenWait(), 0);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.runOnce(), wait);
  }

  /** Starts the read of the next full pass (once); its end triggers the loop again. */
  private startPrepare(prepare: () => Promise<void>): void {
    if (this.preparing || this.prepared) return;
    this.preparing = (async () => {
      try {
        await prepare();
        this.prepared = true;
        this.pending = true;
      } catch (err) {
        this.onFailure(err, true);
      }
    })().finally(() => {
      this.preparing = undefined;
      if (this.pending) this.schedule(this.backoff());
    });
  }

  private backoff(): number {
    if (this.failures === 0) return 0;
    const initial = this.opts.backoffInitialMs ?? 500;
    return Math.min(this.opts.backoffMaxMs ?? 30_000, initial * 2 ** (this.failures - 1));
  }

  private onFailure(err: unknown, full: boolean): void {
    this.failures++;
    this.opts.observer?.failed();
    this.opts.log.error({ err, full, failures: this.failures, retryInMs: this.backoff() }, 'sync failed; full resync after backoff');
    this.pending = true;
    this.pendingFull = true;
  }

  private async runOnce(): Promise<void> {
    if (this.stopped || this.running || !this.pending) return;
    const wait = this.tokenWait();
    if (wait > 0) {
      this.schedule(wait);
      return;
    }
    let full = this.pendingFull;
    const prepare = this.opts.prepareFull;
    if (full && prepare && !this.prepared) {
      this.startPrepare(prepare);
      // While the kernel is read, changes still apply, once there is a model to apply them to.
      if (!this.fullDone) return;
      full = false;
    }
    this.pending = false;
    this.tokens--;
    if (full) {
      this.pendingFull = false;
      this.prepared = false;
    }
    let failed = false;
    const started = performance.now();
    this.running = (async () => {
      try {
        const res = await this.opts.sync(full);
        this.failures = 0;
        if (full) {
          this.fullDone = true;
          // The next resync is resyncMs after this one ended (not on a fixed beat): a full pass
          // that took longer than the period is not followed at once by another one.
          clearTimeout(this.resyncTimer);
          this.resyncTimer = setTimeout(() => this.requestFull(), this.opts.resyncMs);
          this.resyncTimer.unref();
        }
        if (res?.recheckMs !== undefined) {
          // Something is in progress (a draining server): look again later.
          clearTimeout(this.timer);
          setTimeout(() => this.trigger(), res.recheckMs).unref();
        }
      } catch (err) {
        failed = true;
        this.onFailure(err, full);
      }
      this.opts.observer?.synced(full, (performance.now() - started) / 1000);
    })();
    await this.running;
    this.running = undefined;
    // A read that ended during this pass: the full pass is next.
    if (this.pendingFull && this.prepared) this.pending = true;
    if (this.pending) this.schedule(failed ? this.backoff() : 0);
  }
}
