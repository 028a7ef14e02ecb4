/**
 * Writes provider records to etcd in batches, on the coordinator lease.
 *
 * Connections come and go in bursts (a deploy connects hundreds of
 * processes, a coordinator restart closes thousands). One write per event
 * would be one raft entry per event; instead the desired state of each key
 * (present with a value, or absent) is queued, and a flush turns everything
 * queued into a few transactions of at most `maxOpsPerTxn` operations (etcd's
 * default --max-txn-ops is 128), sent together. While a flush is in flight
 * new events queue up and go in the next one, so the batch size follows the
 * load by itself: one op per txn when idle, hundreds during a burst.
 *
 * Level-triggered: the queue holds the latest desired state per key, so a
 * record put and deleted before the flush never reaches etcd, and a failed
 * flush is retried with whatever is current. After a lease loss every live
 * record is queued again, on the new lease.
 */
import type { Etcd3, IRequestOp } from 'etcd3';
import type { FastifyBaseLogger } from 'fastify';
import { atomically, op } from '@switchyard/shared';
import { isLeaseNotFound, type CoordinatorLease } from './lease.js';

export interface RecordWriterOptions {
  /** Operations per transaction (etcd's default --max-txn-ops is 128). */
  maxOpsPerTxn?: number;
  /** Pause after a failed flush before trying again (ms). */
  retryMs?: number;
}

/** A queued change: the value to put, or null to delete. */
type Desired = string | null;

export class RecordWriter {
  /** Records of live connections: key → value. Re-put after a lease loss. */
  private readonly live = new Map<string, string>();
  private readonly pending = new Map<string, Desired>();
  /** Keys whose put reached etcd and whose delete has not (yet). */
  private readonly written = new Set<string>();
  private readonly inFlight = new Set<string>();
  private flushing?: Promise<void>;
  private stopped = false;
  private readonly maxOps: number;
  private readonly retryMs: number;
  /** Counters for logs and benchmarks. */
  readonly stats = { txns: 0, puts: 0, deletes: 0, failures: 0 };

  constructor(
    private readonly etcd: Etcd3,
    private readonly lease: CoordinatorLease,
    private readonly log: FastifyBaseLogger,
    opts: RecordWriterOptions = {},
  ) {
    this.maxOps = opts.maxOpsPerTxn ?? 128;
    this.retryMs = opts.retryMs ?? 500;
    lease.on('lost', () => this.requeueLive());
  }

  get size(): number {
    return this.live.size;
  }

  put(key: string, value: string): void {
    this.live.set(key, value);
    this.pending.set(key, value);
    this.schedule();
  }

  delete(key: string): void {
    this.live.delete(key);
    if (typeof this.pending.get(key) === 'string' && !this.written.has(key) && !this.inFlight.has(key)) {
      // Never reached etcd: nothing to delete.
      this.pending.delete(key);
      return;
    }
    this.pending.set(key, null);
    this.schedule();
  }

  /** Resolves once everything queued so far has been written (or the writer stopped). */
  async settled(): Promise<void> {
    while (this.flushing) await this.flushing;
  }

  /** Stops writing; what is still queued is dropped (the lease revocation removes it). */
  stop(): void {
    this.stopped = true;
    this.pending.clear();
  }

  private requeueLive(): void {
    // The old lease took its keys with it.
    this.written.clear();
    for (const [key, value] of this.live) this.pending.set(key, value);
    this.schedule();
  }

  private schedule(): void {
    if (this.flushing || this.stopped) return;
    this.flushing = (async () => {
      // Let the current burst of events (one I/O phase) queue up first.
      await new Promise<void>((resolve) => setImmediate(resolve));
      await this.run();
    })().finally(() => {
      this.flushing = undefined;
      if (this.pending.size > 0 && !this.stopped) this.schedule();
    });
  }

  private async run(): Promise<void> {
    while (this.pending.size > 0 && !this.stopped) {
      const batch = [...this.pending];
      this.pending.clear();
      for (const [key] of batch) this.inFlight.add(key);
      let failed = false;
      try {
        const needsLease = batch.some(([, v]) => v !== null);
        const leaseId = needsLease ? await this.lease.id() : undefined;
        const chunks: [string, Desired][][] = [];
        for (let i = 0; i < batch.length; i += this.maxOps) chunks.push(batch.slice(i, i + this.maxOps));
        const results = await Promise.allSettled(
          chunks.map((chunk) => {
            const ops: IRequestOp[] = chunk.map(([key, v]) => (v === null ? op.del(key) : op.put(key, v, leaseId)));
            return atomically(this.etcd, ops);
          }),
        );
        results.forEach((r, i) => {
          const chunk = chunks[i];
          if (r.status === 'fulfilled') {
            this.stats.txns++;
            for (const [key, v] of chunk) {
              if (v === null) {
                this.written.delete(key);
                this.stats.deletes++;
              } else {
                this.written.add(key);
                this.stats.puts++;
              }
            }
            return;
          }
          failed = true;
          this.stats.failures++;
          if (leaseId && isLeaseNotFound(r.reason)) this.lease.invalidate(leaseId);
          this.log.warn({ err: (r.reason as Error)?.message, ops: chunk.length }, 'provider records not written; retrying');
          this.requeue(chunk);
        });
      } catch (err) {
        // No lease (etcd unreachable): keep everything queued.
        failed = true;
        this.stats.failures++;
        this.log.warn({ err: (err as Error)?.message, ops: batch.length }, 'no coordinator lease; provider records wait for etcd');
        this.requeue(batch);
      } finally {
        this.inFlight.clear();
      }
      if (failed && !this.stopped) await new Promise((resolve) => setTimeout(resolve, this.retryMs));
    }
  }

  /** Puts back what failed, unless a newer desired state was queued meanwhile. */
  private requeue(items: [string, Desired][]): void {
    for (const [key, v] of items) if (!this.pending.has(key)) this.pending.set(key, v);
  }
}
