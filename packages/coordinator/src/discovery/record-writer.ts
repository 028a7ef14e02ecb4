/**
 * Writes provider records to etcd in batches, on the coordinator lease.
 *
 * Connections come and go in bursts (a deploy connects hundreds of
 * processes, a coordinator restart closes thousands). One write per event
 * would be one raft entry per event; instead the desired state of each key
 * (present with a value, or absent) is queued, and a flush turns everything
 * queued into as few transactions as etcd accepts, sent together. While a
 * flush is in flight new events queue up and go in the next one, so the
 * batch size follows the load by itself: one op per txn when idle,
 * thousands during a burst.
 *
 * How big a transaction etcd accepts is its configuration (--max-txn-ops,
 * default 128; --max-request-bytes, default 1.5 MiB), which a client cannot
 * ask for. The writer starts large (`maxOpsPerTxn`, `maxBytesPerTxn`) and,
 * when etcd refuses a transaction as too big, falls back to limits every
 * etcd accepts for the rest of its life and resends at once. Fewer, bigger
 * transactions make a mass close cheaper for etcd and for the coordinator:
 * 10,000 deletes are one raft entry and one RPC instead of 80.
 *
 * Level-triggered: the queue holds the latest desired state per key, so a
 * record put and deleted before the flush never reaches etcd, and a failed
 * flush is retried with whatever is current. After a lease loss every live
 * record is queued again, on the new lease.
 */
import type { Etcd3, IRequestOp } from 'etcd3';
import type { FastifyBaseLogger } from 'fastify';
import { atomically, chunkBySize, op } from '@switchyard/shared';
import { isLeaseNotFound, type CoordinatorLease } from './lease.js';

export interface RecordWriterOptions {
  /** Operations per transaction to start with. Default 10,000; 128 (etcd's default --max-txn-ops) once etcd refuses more. */
  maxOpsPerTxn?: number;
  /** Request bytes per transaction to start with. Default 1 MiB (below etcd's default --max-request-bytes, 1.5 MiB); halved once etcd refuses. */
  maxBytesPerTxn?: number;
  /** Pause after a failed flush before trying again (ms). */
  retryMs?: number;
}

/** A queued change: the value to put, or null to delete. */
type Desired = string | null;

/** etcd's default --max-txn-ops: every etcd takes this many. */
const ETCD_DEFAULT_MAX_TXN_OPS = 128;
/** Below etcd's default --max-request-bytes (1.5 MiB). */
const DEFAULT_MAX_TXN_BYTES = 1024 * 1024;
/** Per-operation bytes in a txn request beyond key and value (protobuf framing, lease id). */
const OP_OVERHEAD_BYTES = 32;

/** etcd refused the transaction for its size (--max-txn-ops or --max-request-bytes). */
export function isTxnTooBig(err: unknown): boolean {
  return /too many operations in txn request|request is too large/i.test(String((err as Error)?.message ?? err));
}

/** Cuts `items` into chunks of at most `maxOps` operations and about `maxBytes` bytes (at least one op each). */
export function chunkRecords(items: [string, Desired][], maxOps: number, maxBytes: number): [string, Desired][][] {
  return chunkBySize(items, ([key, value]) => key.length + (value?.length ?? 0) + OP_OVERHEAD_BYTES, { maxOps, maxBytes });
}

export class RecordWriter {
  /** Records of live connections: key → value. Re-put after a lease loss. */
  private readonly live = new Map<string, string>();
  private readonly pending = new Map<string, Desired>();
  /** Keys whose put reached etcd and whose delete has not (yet). */
  private readonly written = new Set<string>();
  private readonly inFlight = new Set<string>();
  private flushing?: Promise<void>;
  private stopped = false;
  private maxOps: number;
  private maxBytes: number;
  private readonly retryMs: number;
  /** Counters for logs and benchmarks. */
  readonly stats = { txns: 0, puts: 0, deletes: 0, failures: 0 };

  constructor(
    private readonly etcd: Etcd3,
    private readonly lease: CoordinatorLease,
    private readonly log: FastifyBaseLogger,
    opts: RecordWriterOptions = {},
  ) {
    this.maxOps = opts.maxOpsPerTxn ?? 10_000;
    this.maxBytes = opts.maxBytesPerTxn ?? DEFAULT_MAX_TXN_BYTES;
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
      let tooBig = false;
      try {
        const needsLease = batch.some(([, v]) => v !== null);
        const leaseId = needsLease ? await this.lease.id() : undefined;
        const chunks = chunkRecords(batch, this.maxOps, this.maxBytes);
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
          this.stats.failures++;
          if (isTxnTooBig(r.reason) && this.canShrink()) {
            // Resent at once, in chunks etcd takes.
            tooBig = true;
            this.requeue(chunk);
            return;
          }
          failed = true;
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
      if (tooBig) {
        this.maxOps = Math.min(this.maxOps, ETCD_DEFAULT_MAX_TXN_OPS);
        this.maxBytes = Math.max(64 * 1024, Math.floor(this.maxBytes / 2));
        this.log.info({ maxOpsPerTxn: this.maxOps, maxBytesPerTxn: this.maxBytes }, 'etcd refused a transaction as too big; sending smaller ones');
      }
      if (failed && !this.stopped) await new Promise((resolve) => setTimeout(resolve, this.retryMs));
    }
  }

  private canShrink(): boolean {
    return this.maxOps > ETCD_DEFAULT_MAX_TXN_OPS || this.maxBytes > 64 * 1024;
  }

  /** Puts back what failed, unless a newer desired state was queued meanwhile. */
  private requeue(items: [string, Desired][]): void {
    for (const [key, v] of items) if (!this.pending.has(key)) this.pending.set(key, v);
  }
}
