/**
 * Small helpers over etcd's raw transaction RPC, for the cases the fluent
 * builder cannot express (a transaction with no comparison, a range delete of
 * a whole prefix next to thousands of puts).
 */
import type { Etcd3, ICompare, IRequestOp, ITxnResponse } from 'etcd3';

/** The key just past every key that starts with `prefix` (etcd's range_end). */
export function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix);
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i] < 0xff) {
      const end = Buffer.from(b.subarray(0, i + 1));
      end[i]++;
      return end;
    }
  }
  return Buffer.from([0]);
}

export const op = {
  put(key: string, value: string, lease?: string): IRequestOp {
    return { request_put: { key: Buffer.from(key), value: Buffer.from(value), ...(lease ? { lease } : {}) } };
  },
  del(key: string): IRequestOp {
    return { request_delete_range: { key: Buffer.from(key) } };
  },
  delPrefix(prefix: string): IRequestOp {
    return { request_delete_range: { key: Buffer.from(prefix), range_end: prefixEnd(prefix) } };
  },
  get(key: string): IRequestOp {
    return { request_range: { key: Buffer.from(key) } };
  },
};

/**
 * Compare: no key under `prefix` was created or changed after `revision`
 * (etcd compares every key in the range). Deletions are not seen, which is
 * fine for callers that only need "nothing appeared or changed since I read".
 */
export function unchangedSince(prefix: string, revision: number): ICompare {
  return { key: Buffer.from(prefix), range_end: prefixEnd(prefix), target: 'Mod', result: 'Less', mod_revision: revision + 1 };
}

/** A transaction: all of `ops` if every compare holds, else `failure`. */
export function transact(etcd: Etcd3, compare: ICompare[], ops: IRequestOp[], failure: IRequestOp[] = []): Promise<ITxnResponse> {
  return etcd.kv.txn({ compare, success: ops, failure });
}

/** Keys (no values) under a prefix, with the revision they were read at. */
export async function keysAt(etcd: Etcd3, prefix: string): Promise<{ keys: string[]; revision: number }> {
  const res = await etcd.kv.range({ key: Buffer.from(prefix), range_end: prefixEnd(prefix), keys_only: true });
  return { keys: res.kvs.map((kv) => kv.key.toString()), revision: Number(res.header.revision) };
}

/** An unconditional transaction: all of `ops` or none, at one revision. */
export function atomically(etcd: Etcd3, ops: IRequestOp[]): Promise<ITxnResponse> {
  return etcd.kv.txn({ compare: [], success: ops, failure: [] });
}
