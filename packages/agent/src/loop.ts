/**
 * The sync loop every role runs (the shape of kube-proxy's
 * BoundedFrequencyRunner and Cilium's reconciler): triggers are coalesced,
 * two syncs are at least `minIntervalMs` apart, a periodic full resync undoes
 * drift, and a failed sync makes the next one full, after an exponential
 * backoff. Only one sync runs at a time.
 */
import type { Logger } from 'pino';

export interface SyncLoopOptions {
  /** One pass; `full` asks for a comparison against the kernel instead of the last applied model. */
  sync: (full: boolean) => Promise<{ recheckMs?: number } | void>;
  minIntervalMs: number;
  resyncMs: number;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  log: Logger;
}

export class SyncLoop {
  private pending = false;
  private pendingFull = true;
  private running?: Promise<void>;
  private timer?: NodeJS.Timeout;
  private resyncTimer?: NodeJS.Timeout;
  private lastEnd = 0;
  private failures = 0;
  private stopped = false;
  private started = false;

  constructor(private readonly opts: SyncLoopOptions) {}

  start(): void {
    this.started = true;
    this.resyncTimer = setInterval(() => this.requestFull(), this.opts.resyncMs);
    this.resyncTimer.unref();
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

  /** Resolves when no sync is running (used by stop and by tests). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.resyncTimer);
    await this.idle();
  }

  private schedule(delayMs: number): void {
    // Before start() triggers only accumulate: the first pass is the full one start() asks for.
    if (!this.started || this.stopped || this.running) return;
    const wait = Math.max(delayMs, this.lastEnd + this.opts.minIntervalMs - Date.now(), 0);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.runOnce(), wait);
  }

  private async runOnce(): Promise<void> {
    if (this.stopped || this.running || !this.pending) return;
    const full = this.pendingFull;
    this.pending = false;
    this.pendingFull = false;
    let next = 0;
    this.running = (async () => {
      try {
        const res = await this.opts.sync(full);
        this.failures = 0;
        if (res?.recheckMs !== undefined) {
          // Something is in progress (a draining server): look again later.
          clearTimeout(this.timer);
          setTimeout(() => this.trigger(), res.recheckMs).unref();
        }
      } catch (err) {
        this.failures++;
        const initial = this.opts.backoffInitialMs ?? 500;
        next = Math.min(this.opts.backoffMaxMs ?? 30_000, initial * 2 ** (this.failures - 1));
        this.opts.log.error({ err, full, failures: this.failures, retryInMs: next }, 'sync failed; full resync after backoff');
        this.pending = true;
        this.pendingFull = true;
      }
    })();
    await this.running;
    this.running = undefined;
    this.lastEnd = Date.now();
    if (this.pending) this.schedule(next);
  }
}
