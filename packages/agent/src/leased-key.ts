/**
 * One key kept in etcd under a lease for as long as the agent runs: the
 * agent's registration, the topology role's underlay address. The lease's
 * keep-alive is the heartbeat; when the agent dies the key expires. A lost
 * lease — etcd was unreachable longer than the TTL, or someone revoked it —
 * is replaced by a new one and the key written again; a failed write is
 * retried. Neither ever blocks the agent.
 */
import type { Etcd3, Lease } from 'etcd3';
import type { Logger } from 'pino';

export interface LeasedKeyOptions {
  key: string;
  value: string;
  ttlSeconds: number;
  /** What the key is, for logs ("registration", "underlay"). */
  what: string;
  log: Logger;
  /** Wait before retrying a failed write (ms, default 1000). */
  retryMs?: number;
}

export class LeasedKey {
  private lease?: Lease;
  private stopped = false;
  private retry?: NodeJS.Timeout;

  constructor(
    private readonly etcd: Etcd3,
    private readonly opts: LeasedKeyOptions,
  ) {}

  /** Writes the key in the background; the promise settles after the first attempt (it never rejects). */
  start(): Promise<void> {
    return this.put();
  }

  private async put(): Promise<void> {
    if (this.stopped) return;
    const { log, what } = this.opts;
    const lease = this.etcd.lease(this.opts.ttlSeconds, { autoKeepAlive: true });
    this.lease = lease;
    lease.on('lost', (err) => {
      if (this.stopped || this.lease !== lease) return;
      log.warn({ err: err.message, what }, 'lease lost; writing the key again on a new lease');
      this.scheduleRetry(0);
    });
    try {
      await lease.put(this.opts.key).value(this.opts.value);
      log.info({ what, leaseTtl: this.opts.ttlSeconds }, 'leased key written');
    } catch (err) {
      log.warn({ err: (err as Error).message, what }, 'writing leased key failed; retrying');
      lease.release();
      this.scheduleRetry(this.opts.retryMs ?? 1000);
    }
  }

  private scheduleRetry(ms: number): void {
    clearTimeout(this.retry);
    if (this.stopped) return;
    this.retry = setTimeout(() => void this.put(), ms);
  }

  /** Revokes the lease, so the key goes at once (bounded: etcd may be down). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retry);
    const lease = this.lease;
    this.lease = undefined;
    if (lease) await Promise.race([lease.revoke().catch(() => lease.release()), new Promise((r) => setTimeout(r, 1000))]);
  }
}
