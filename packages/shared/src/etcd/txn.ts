/**
 * Small helpers over etcd's raw transaction RPC, for the cases the fluent
 * builder cannot express (a transaction with no comparison, a range delete of
 * a whole prefix next to thousands of puts).
 */
import type { Etcd3, IRequestOp, ITxnResponse } from 'etcd3';

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

/** An unconditional transaction: all of `ops` or none, at one revision. */
export function atomically(etcd: Etcd3, ops: IRequestOp[]): Promise<ITxnResponse> {
  return etcd.kv.txn({ compare: [], success: ops, failure: [] });
}
