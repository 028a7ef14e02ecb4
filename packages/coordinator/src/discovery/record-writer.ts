/**
 * Claims, writes and removes provider records in etcd, in batches, on the
 * coordinator lease.
 *
 * A connection asks for a record id (`claim`); the record is its own only
 * once etcd agreed: the put creates the key, or replaces it only while it is
 * on one of this coordinator's leases (record-claim.ts has the rules). When
 * another coordinator holds the key, the record moves to the next suffix
 * (`-2`, `-3`, …) and tries again. Several coordinators on one etcd thus
 * never share a key, and the first connection keeps its id. Within this
 * coordinator, `holders` keeps two connections from even trying one key.
 * A close (`release`) deletes the key only while it is still on the lease
 * this coordinator put it on, so a key another coordinator claimed since
 * (ours expired, say) is never removed.
 *
 * Connections come and go in bursts (a deploy connects hundreds of
 * processes, a coordinator restart closes thousands). One write per event
 * would be one raft entry per event; instead the desired state of each key
 * (this claim's record, or absent) is queued, and a flush turns everything
 * queued into as few transactions as etcd accepts, sent together: each
 * record is a nested, guarded transaction inside one outer transaction, so
 * a burst is one request even when a few of its keys are taken. While a
 * flush is in flight new events queue up and go in the next one, so the
 * batch size follows the load by itself: one record per txn when idle,
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
 * record claimed and released before the flush never reaches etcd, a
 * connection that closes and comes back before its delete went out gets its
 * key back untouched, and a failed flush is retried with whatever is
 * current. After a lease loss every live record is claimed again, guarded
 * like a new one: if another coordinator took the key meanwhile, the live
 * record moves to the next suffix (its SRV target name changes; the old one
 * belongs to the other connection now).
 */
import type { Etcd3, ITxnResponse } from 'etcd3';
import type { FastifyBaseLogger } from 'fastify';
import { isLeaseNotFound, type CoordinatorLease } from './lease.js';
import { chunkRecordOps, firstFree, guardedOp, nextStep, outcome, type RecordOp } from './record-claim.js';

export interface RecordWriterOptions {
  /** Operations per transaction to start with. Default 10,000; 128 (etcd's default --max-txn-ops) once etcd refuses more. */
  maxOpsPerTxn?: number;
  /** Request bytes per transaction to start with. Default 1 MiB (below etcd's default --max-request-bytes, 1.5 MiB); halved once etcd refuses. */
  maxBytesPerTxn?: number;
  /** Pause after a failed flush before trying again (ms). */
  retryMs?: number;
}

/** One connection's record. The writer moves it between keys; callers only read it. */
export interface RecordClaim {
  /** The id skyapi derives for the provider (its key with no suffix). */
  readonly base: string;
  readonly value: string;
  /** The key it holds or is trying to claim: `base`, or `base-<n>`. */
  key: string;
  /** The suffix number of `key` (1: none). */
  n: number;
  /** etcd took the put on this coordinator's lease: the key is this connection's. */
  held: boolean;
  released: boolean;
}

/** etcd's default --max-txn-ops: every etcd takes this many. */
const ETCD_DEFAULT_MAX_TXN_OPS = 128;
/** Below etcd's default --max-request-bytes (1.5 MiB). */
const DEFAULT_MAX_TXN_BYTES = 1024 * 1024;
/** Lease ids of this writer still recognised as ours in a read-back (a lost lease's keys linger until its TTL). */
const OWN_LEASES_KEPT = 16;

/** etcd refused the transaction for its size (--max-txn-ops or --max-request-bytes). */
export function isTxnTooBig(err: unknown): boolean {
  return /too many operations in txn request|request is too large/i.test(String((err as Error)?.message ?? err));
}

/** A guarded op in flight, with the claim whose put it is. */
type Sent = RecordOp & { claim?: RecordClaim };

export class RecordWriter {
  /** Key → the live claim of this coordinator that holds or is claiming it. */
  private readonly holders = new Map<string, RecordClaim>();
  /** Key → its desired state: the claim whose record to put, or null to delete. */
  private readonly pending = new Map<string, RecordClaim | null>();
  /**
   * Key → the lease of ours it may be on in etcd: set when a put is sent
   * (a reply lost on the way may still have applied), cleared when a delete
   * applied or a read-back found the key gone or someone else's. What a
   * delete is guarded on; no entry means nothing of ours to delete.
   */
  private readonly mayHold = new Map<string, string>();
  private readonly ownLeases = new Set<string>();
  private flushing?: Promise<void>;
  private stopped = false;
  private maxOps: number;
  private maxBytes: number;
  private readonly retryMs: number;
  /** Counters for logs and benchmarks: transactions sent, records put and deleted, refused requests, guards that failed. */
  readonly stats = { txns: 0, puts: 0, deletes: 0, failures: 0, conflicts: 0 };

  constructor(
    private readonly etcd: Etcd3,
    private readonly lease: CoordinatorLease,
    private readonly log: FastifyBaseLogger,
    opts: RecordWriterOptions = {},
  ) {
    this.maxOps = opts.maxOpsPerTxn ?? 10_000;
    this.maxBytes = opts.maxBytesPerTxn ?? DEFAULT_MAX_TXN_BYTES;
    this.retryMs = opts.retryMs ?? 500;
    lease.on('lost', () => this.reclaimLive());
  }

  /** Live records (claimed, not released). */
  get size(): number {
    return this.holders.size;
  }

  /** Starts claiming `base` (or the first free suffix) for a connection's record. */
  claim(base: string, value: string): RecordClaim {
    const claim: RecordClaim = { base, value, key: base, n: 1, held: false, released: false };
    this.place(claim, 1);
    return claim;
  }

  /** The connection closed: its record goes (if it ever reached etcd, by a delete guarded on our lease). */
  release(claim: RecordClaim): void {
    if (claim.released) return;
    claim.released = true;
    claim.held = false;
    if (this.holders.get(claim.key) !== claim) return;
    this.holders.delete(claim.key);
    if (this.mayHold.has(claim.key)) this.pending.set(claim.key, null);
    else this.pending.delete(claim.key); // never sent: nothing in etcd
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

  /** Puts the claim on the first key from suffix `from` on that no connection here holds. */
  private place(claim: RecordClaim, from: number): void {
    const { n, key } = firstFree(claim.base, from, (k) => this.holders.has(k));
    claim.n = n;
    claim.key = key;
    claim.held = false;
    this.holders.set(key, claim);
    this.pending.set(key, claim);
    this.schedule();
  }

  private reclaimLive(): void {
    // The old lease took its keys with it (or will within its TTL: it is no
    // longer kept alive), so the records are claimed anew as absent keys; a
    // read-back that still finds one on the old lease counts it as ours.
    // Deletes still queued have nothing left to do.
    this.mayHold.clear();
    for (const [key, claim] of this.holders) {
      claim.held = false;
      this.pending.set(key, claim);
    }
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
      let leaseId: string | undefined;
      if ([...this.pending.values()].some((v) => v !== null)) {
        try {
          leaseId = await this.lease.id();
        } catch (err) {
          // No lease (etcd unreachable): everything stays queued.
          this.stats.failures++;
          this.log.warn({ err: (err as Error)?.message, records: this.pending.size }, 'no coordinator lease; provider records wait for etcd');
          await this.pause();
          continue;
        }
        if (this.stopped) return;
      }
      const sent = this.take(leaseId);
      if (sent.length === 0) continue;
      const failed = await this.send(sent, leaseId);
      if (failed) await this.pause();
    }
  }

  /** Turns the queue into guarded ops, synchronously, so no release slips between deciding and sending. */
  private take(leaseId: string | undefined): Sent[] {
    const sent: Sent[] = [];
    for (const [key, want] of this.pending) {
      const expect = this.mayHold.get(key) ?? null;
      if (want === null) {
        // Not on a lease of ours as far as we know: nothing of ours to delete.
        if (expect !== null) sent.push({ key, value: null, expect });
        continue;
      }
      sent.push({ key, value: want.value, expect, lease: leaseId, claim: want });
      this.mayHold.set(key, leaseId!);
    }
    this.pending.clear();
    if (leaseId && !this.ownLeases.has(leaseId)) {
      this.ownLeases.add(leaseId);
      if (this.ownLeases.size > OWN_LEASES_KEPT) this.ownLeases.delete(this.ownLeases.values().next().value!);
    }
    return sent;
  }

  /** Sends the ops in as few transactions as etcd takes; true if something failed and waits for a retry. */
  private async send(sent: Sent[], leaseId: string | undefined): Promise<boolean> {
    const chunks = chunkRecordOps(sent, this.maxOps, this.maxBytes);
    const results = await Promise.allSettled(chunks.map((chunk) => this.etcd.kv.txn({ compare: [], success: chunk.map(guardedOp), failure: [] })));
    let failed = false;
    let tooBig = false;
    let moved = 0;
    results.forEach((r, i) => {
      const chunk = chunks[i];
      if (r.status === 'fulfilled') {
        this.stats.txns++;
        moved += this.settle(chunk, r.value);
        return;
      }
      this.stats.failures++;
      if (isTxnTooBig(r.reason) && this.canShrink()) {
        // Resent at once, in chunks etcd takes. A refused request applied
        // nothing: each key is as it was before.
        tooBig = true;
        for (const o of chunk) this.unsent(o);
      } else {
        // The outcome is unknown (the reply may have been lost after etcd
        // applied it): each put's key stays one that may be ours.
        failed = true;
        if (leaseId && isLeaseNotFound(r.reason)) this.lease.invalidate(leaseId);
        this.log.warn({ err: (r.reason as Error)?.message, records: chunk.length }, 'provider records not written; retrying');
      }
      for (const o of chunk) this.requeue(o);
    });
    if (tooBig) {
      this.maxOps = Math.min(this.maxOps, ETCD_DEFAULT_MAX_TXN_OPS);
      this.maxBytes = Math.max(64 * 1024, Math.floor(this.maxBytes / 2));
      this.log.info({ maxOpsPerTxn: this.maxOps, maxBytesPerTxn: this.maxBytes }, 'etcd refused a transaction as too big; sending smaller ones');
    }
    // Once per flush: after a coordinator was killed, thousands may move at once.
    if (moved > 0) this.log.info({ records: moved }, 'provider record ids held through other coordinators; taking the next suffixes');
    return failed;
  }

  /** Applies one transaction's reply, record by record; returns how many records moved to another suffix. */
  private settle(chunk: Sent[], res: ITxnResponse): number {
    let moved = 0;
    chunk.forEach((o, i) => {
      const seen = outcome(res.responses[i], this.ownLeases);
      if (!seen) {
        if (o.value === null) {
          this.mayHold.delete(o.key);
          this.stats.deletes++;
        } else {
          this.stats.puts++;
          if (o.claim && this.holders.get(o.key) === o.claim) o.claim.held = true;
        }
        return;
      }
      // A guard failed: retried at once (the loop goes on while anything is queued), not after retryMs.
      this.stats.conflicts++;
      const next = nextStep(o, seen);
      if (next.kind === 'retry') {
        if (next.expect === null) this.mayHold.delete(o.key);
        else this.mayHold.set(o.key, next.expect);
        this.requeue(o);
        return;
      }
      this.mayHold.delete(o.key);
      if (next.kind === 'done') return;
      // Another coordinator holds the key: whichever connection here wants
      // it (the one this put was for, or one that took the key over since)
      // moves on. A delete queued meanwhile has nothing of ours to remove.
      const holder = this.holders.get(o.key);
      this.pending.delete(o.key);
      if (!holder) return;
      this.holders.delete(o.key);
      this.place(holder, holder.n + 1);
      moved++;
      this.log.debug({ taken: o.key, key: holder.key }, 'provider record id held through another coordinator; taking the next suffix');
    });
    return moved;
  }

  /** A put etcd refused outright: what we knew of its key before holds again. */
  private unsent(o: Sent): void {
    if (o.value === null || this.mayHold.get(o.key) !== o.lease) return;
    if (o.expect === null) this.mayHold.delete(o.key);
    else this.mayHold.set(o.key, o.expect);
  }

  private canShrink(): boolean {
    return this.maxOps > ETCD_DEFAULT_MAX_TXN_OPS || this.maxBytes > 64 * 1024;
  }

  /** Puts back what did not apply, unless a newer desired state was queued meanwhile. */
  private requeue(o: Sent): void {
    if (this.pending.has(o.key)) return;
    if (o.value === null) this.pending.set(o.key, null);
    else if (o.claim && this.holders.get(o.key) === o.claim) this.pending.set(o.key, o.claim);
  }

  private pause(): Promise<void> {
    return this.stopped ? Promise.resolve() : new Promise((resolve) => setTimeout(resolve, this.retryMs));
  }
}
