/**
 * Group commit: independent single-purpose transactions submitted while
 * earlier ones are in flight travel to etcd together, as the sub-transactions
 * (RequestOp.request_txn, etcd ≥ 3.3) of one outer transaction.
 *
 * Each sub-transaction keeps its own comparisons and its own outcome — one
 * that fails its compare runs its failure branch and does not affect the
 * others — but the batch costs etcd one request, one raft entry and one
 * revision instead of one each. Under load that is what lets a REST write
 * keep up with a raw etcd put; when idle, a submission is sent at once, alone,
 * exactly as the transaction it is.
 *
 * Rules that keep a batch valid for etcd:
 *  - no two sub-transactions in a batch (or in flight) touch the same key
 *    when one of them writes it: etcd refuses a transaction that writes a key
 *    twice, and per-key order stays arrival order (keys only compared or read
 *    are shared freely);
 *  - a batch stays under etcd's default limits (128 operations, 1.5 MiB);
 *  - a batch etcd cannot be reached for fails every submission in it, as each
 *    would have failed alone; a batch etcd refuses (a cluster with smaller
 *    limits, a bad sub-transaction) is retried one submission at a time, so
 *    only the one at fault fails;
 *  - a submission that waited in the queue longer than its caller waits is
 *    dropped unsent, so a request already answered 503 is not written later.
 */
import type { Etcd3, ICompare, IRequestOp, IResponseOp, ITxnRequest } from 'etcd3';
import { SwitchyardError } from '../errors.js';
import { toSwitchyardError } from './client.js';

export interface SubTxn {
  compare: ICompare[];
  success: IRequestOp[];
  failure?: IRequestOp[];
}

export interface SubTxnResult {
  succeeded: boolean;
  responses: IResponseOp[];
  /** The revision of the (outer) transaction that carried it. */
  revision: number;
}

export interface GroupCommitOptions {
  /** Batches on the wire at once (default 2: one being applied while the next fills). */
  maxInFlight?: number;
  /** Sub-transactions per batch (default 100; etcd's default --max-txn-ops is 128). */
  maxOps?: number;
  /** Approximate bytes per batch (default 1 MiB; etcd's default --max-request-bytes is 1.5 MiB). */
  maxBytes?: number;
  /** Longest a submission may wait unsent before it fails instead (default 3 s: the request deadline). */
  queueTimeoutMs?: number;
}

interface Entry {
  txn: SubTxn;
  keys: { writes: string[]; reads: string[] };
  bytes: number;
  queuedAt: number;
  resolve(r: SubTxnResult): void;
  reject(e: unknown): void;
}

/**
 * Keys a sub-transaction writes, and keys it only compares or reads (range
 * ends are ignored: ops here are single-key). Many sub-transactions may
 * compare one key — every L4 write compares the current generation — as long
 * as none of them writes it.
 */
function keysOf(txn: SubTxn): { writes: string[]; reads: string[] } {
  const writes = new Set<string>();
  const reads = new Set<string>();
  for (const o of [...txn.success, ...(txn.failure ?? [])]) {
    if (o.request_txn) throw new Error('group commit: a sub-transaction cannot nest another');
    const w = o.request_put?.key ?? o.request_delete_range?.key;
    if (w) writes.add(w.toString('latin1'));
    if (o.request_range?.key) reads.add(o.request_range.key.toString('latin1'));
  }
  for (const c of txn.compare) if (c.key) reads.add(c.key.toString('latin1'));
  for (const k of writes) reads.delete(k);
  return { writes: [...writes], reads: [...reads] };
}

/** etcd validated the request and said no — as opposed to not answering, or answering after applying it. */
function refusedByEtcd(err: unknown): boolean {
  return toSwitchyardError(err).code !== 'ETCD_UNAVAILABLE' && /etcdserver: /.test(String((err as Error)?.message ?? err));
}

function sizeOf(txn: SubTxn): number {
  let n = 16;
  for (const c of txn.compare) n += (c.key?.length ?? 0) + 16;
  for (const o of [...txn.success, ...(txn.failure ?? [])]) {
    n += 16 + (o.request_put?.key?.length ?? 0) + (o.request_put?.value?.length ?? 0);
    n += (o.request_range?.key?.length ?? 0) + (o.request_delete_range?.key?.length ?? 0);
  }
  return n;
}

export class GroupCommit {
  private readonly maxInFlight: number;
  private readonly maxOps: number;
  private readonly maxBytes: number;
  private readonly queueTimeoutMs: number;
  private pending: Entry[] = [];
  private inFlight = 0;
  /** Keys written / only read by sub-transactions on the wire, counted (busy while > 0). */
  private readonly busyWrites = new Map<string, number>();
  private readonly busyReads = new Map<string, number>();
  private scheduled = false;

  constructor(
    private readonly etcd: Etcd3,
    opts: GroupCommitOptions = {},
  ) {
    this.maxInFlight = opts.maxInFlight ?? 2;
    this.maxOps = opts.maxOps ?? 100;
    this.maxBytes = opts.maxBytes ?? 1024 * 1024;
    this.queueTimeoutMs = opts.queueTimeoutMs ?? 3000;
  }

  /** Commits `txn` (alone or with others) and answers with its own outcome. */
  submit(txn: SubTxn): Promise<SubTxnResult> {
    const keys = keysOf(txn);
    return new Promise<SubTxnResult>((resolve, reject) => {
      this.pending.push({ txn, keys, bytes: sizeOf(txn), queuedAt: performance.now(), resolve, reject });
      this.schedule();
    });
  }

  /**
   * Flushes after the current turn of the event loop, so every request that
   * arrived in it joins the same batch (no timer, no added wait when idle).
   */
  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.pump();
    });
  }

  private pump(): void {
    while (this.inFlight < this.maxInFlight && this.pending.length > 0) {
      const batch = this.take();
      if (batch.length === 0) return; // everything pending waits on a busy key
      this.inFlight++;
      for (const e of batch) {
        for (const k of e.keys.writes) this.busyWrites.set(k, (this.busyWrites.get(k) ?? 0) + 1);
        for (const k of e.keys.reads) this.busyReads.set(k, (this.busyReads.get(k) ?? 0) + 1);
      }
      void this.send(batch).finally(() => {
        this.inFlight--;
        const release = (busy: Map<string, number>, keys: string[]) => {
          for (const k of keys) {
            const n = (busy.get(k) ?? 1) - 1;
            if (n === 0) busy.delete(k);
            else busy.set(k, n);
          }
        };
        for (const e of batch) {
          release(this.busyWrites, e.keys.writes);
          release(this.busyReads, e.keys.reads);
        }
        if (this.pending.length > 0) this.schedule();
      });
    }
  }

  /** The next batch, in arrival order, skipping (and keeping) entries whose keys are taken. */
  private take(): Entry[] {
    const batch: Entry[] = [];
    const rest: Entry[] = [];
    // Keys of entries already batched or held back, written or only read.
    const takenWrites = new Set<string>();
    const takenReads = new Set<string>();
    let bytes = 0;
    const now = performance.now();
    for (const e of this.pending) {
      if (now - e.queuedAt > this.queueTimeoutMs) {
        e.reject(new SwitchyardError('ETCD_UNAVAILABLE', `etcd is unavailable: the write waited ${Math.round(now - e.queuedAt)} ms to be sent`));
        continue;
      }
      const full = batch.length >= this.maxOps || (batch.length > 0 && bytes + e.bytes > this.maxBytes);
      const { writes, reads } = e.keys;
      // A write clashes with any use of its key; a read only with a write.
      const clash =
        writes.some((k) => takenWrites.has(k) || takenReads.has(k) || this.busyWrites.has(k) || this.busyReads.has(k)) ||
        reads.some((k) => takenWrites.has(k) || this.busyWrites.has(k));
      // A later entry on a clashing key must not overtake this one either.
      for (const k of writes) takenWrites.add(k);
      for (const k of reads) takenReads.add(k);
      if (full || clash) {
        rest.push(e);
        continue;
      }
      batch.push(e);
      bytes += e.bytes;
    }
    this.pending = rest;
    return batch;
  }

  private async send(batch: Entry[]): Promise<void> {
    try {
      if (batch.length === 1) {
        const { txn } = batch[0];
        const res = await this.etcd.kv.txn({ compare: txn.compare, success: txn.success, failure: txn.failure ?? [] });
        batch[0].resolve({ succeeded: res.succeeded, responses: res.responses, revision: Number(res.header.revision) });
        return;
      }
      const outer: ITxnRequest = {
        compare: [],
        success: batch.map((e) => ({ request_txn: { compare: e.txn.compare, success: e.txn.success, failure: e.txn.failure ?? [] } })),
        failure: [],
      };
      const res = await this.etcd.kv.txn(outer);
      const revision = Number(res.header.revision);
      batch.forEach((e, i) => {
        const sub = res.responses[i]?.response_txn;
        if (sub) e.resolve({ succeeded: sub.succeeded, responses: sub.responses, revision });
        else e.reject(new Error('group commit: etcd answered without the sub-transaction result'));
      });
    } catch (err) {
      // etcd checked the request and refused it (its "etcdserver: …" answers:
      // too many operations, too large, a missing lease): nothing was applied,
      // so each submission can go again alone, and only the one at fault fails.
      if (batch.length > 1 && refusedByEtcd(err)) {
        await Promise.all(batch.map((e) => this.send([e])));
        return;
      }
      for (const e of batch) e.reject(err);
    }
  }
}
