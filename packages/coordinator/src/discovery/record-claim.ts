/**
 * The rules by which provider records are claimed and removed in etcd, as
 * plain data and pure functions, so the record writer is a thin executor
 * and these rules are unit-tested without etcd.
 *
 * A record key belongs to whoever put it there: a coordinator owns exactly
 * the keys attached to one of its own leases (etcd lease ids are unique in
 * a cluster). Every write is guarded on that:
 *
 *  - a put creates the key (create revision 0), or replaces it only while it
 *    is still on one of this coordinator's leases;
 *  - a delete removes the key only while it is on the lease we put it on.
 *
 * Each record is its own nested transaction (compare → write, else read the
 * key back), and one outer transaction without compares carries many of
 * them: a burst of connects or closes is still one request and one raft
 * entry, yet each record succeeds or fails on its own condition. A single
 * multi-compare transaction would be all-or-nothing: one key taken by
 * another coordinator would fail the whole batch and force a second round
 * (or per-key fallbacks). The read-back of the failure branch costs nothing
 * extra and tells the writer, in the same reply, whether the key is gone,
 * still ours on another lease (one lost meanwhile), or someone else's.
 * Nested transactions need etcd 3.3 or later.
 */
import type { IKeyValue, IRequestOp, IResponseOp } from 'etcd3';
import { chunkBySize, cmp, op } from '@switchyard/shared';

/** The n-th key a record with this id can hold: `base` itself, then `base-2`, `base-3`, … */
export function suffixedKey(base: string, n: number): string {
  return n <= 1 ? base : `${base}-${n}`;
}

/** The first n ≥ `from` whose key `taken` says is free here. */
export function firstFree(base: string, from: number, taken: (key: string) => boolean): { n: number; key: string } {
  let n = Math.max(1, from);
  while (taken(suffixedKey(base, n))) n++;
  return { n, key: suffixedKey(base, n) };
}

/**
 * One guarded write. `expect` is what the writer believes of the key: null,
 * absent; else the id of our lease it is on. A put (value set) goes on
 * `lease`; a delete (value null) only ever with a lease in `expect`.
 */
export interface RecordOp {
  key: string;
  value: string | null;
  expect: string | null;
  lease?: string;
}

/** The nested transaction for one record: the write if the key is as expected, else its metadata read back. */
export function guardedOp(o: RecordOp): IRequestOp {
  if (o.value === null && o.expect === null) throw new Error(`guardedOp: a delete of ${o.key} needs the lease it is on`);
  const write = o.value === null ? op.del(o.key) : op.put(o.key, o.value, o.lease);
  return {
    request_txn: {
      compare: [o.expect === null ? cmp.absent(o.key) : cmp.leaseIs(o.key, o.expect)],
      success: [write],
      failure: [op.head(o.key)],
    },
  };
}

/** The key as a failed guard found it: gone, on one of our leases (which), or someone else's (another coordinator's lease, or none). */
export type Seen = { kind: 'absent' } | { kind: 'ours'; lease: string } | { kind: 'foreign' };

export function classify(kv: Pick<IKeyValue, 'lease'> | undefined, ownLeases: ReadonlySet<string>): Seen {
  if (!kv) return { kind: 'absent' };
  const lease = String(kv.lease);
  return lease !== '0' && ownLeases.has(lease) ? { kind: 'ours', lease } : { kind: 'foreign' };
}

/** The reply to one guardedOp: undefined if it applied, else what the read-back saw. */
export function outcome(res: IResponseOp, ownLeases: ReadonlySet<string>): Seen | undefined {
  const sub = res.response_txn;
  if (sub.succeeded) return undefined;
  return classify(sub.responses[0]?.response_range?.kvs[0], ownLeases);
}

/**
 * What the writer does with a record whose guard failed:
 *  - `retry`: write it again, now expecting `expect` (the key is free, or
 *    ours on the lease the read-back named);
 *  - `done`: a delete with nothing left of ours to delete;
 *  - `move`: a put whose key another coordinator holds: the record takes
 *    the next suffix instead.
 */
export type Next = { kind: 'retry'; expect: string | null } | { kind: 'done' } | { kind: 'move' };

export function nextStep(o: Pick<RecordOp, 'value'>, seen: Seen): Next {
  if (seen.kind === 'ours') return { kind: 'retry', expect: seen.lease };
  if (o.value === null) return { kind: 'done' };
  return seen.kind === 'absent' ? { kind: 'retry', expect: null } : { kind: 'move' };
}

/**
 * Per-record bytes of a guarded op beyond key and value: the key three
 * times (compare, write, read-back) is counted by `opBytes`; this is the
 * framing of the nested transaction, the lease ids and the compare.
 */
const OP_OVERHEAD_BYTES = 64;

export function opBytes(o: RecordOp): number {
  return 3 * Buffer.byteLength(o.key) + (o.value === null ? 0 : Buffer.byteLength(o.value)) + OP_OVERHEAD_BYTES;
}

/**
 * Guarded ops cut into transactions etcd accepts under `maxTxnOps`
 * (its --max-txn-ops): etcd counts an outer transaction's operations and
 * then, against what is left of the same budget, each nested one's (one
 * each here), so a transaction carries at most maxTxnOps − 1 records.
 */
export function chunkRecordOps<T extends RecordOp>(ops: T[], maxTxnOps: number, maxBytes: number): T[][] {
  return chunkBySize(ops, opBytes, { maxOps: Math.max(1, maxTxnOps - 1), maxBytes });
}
