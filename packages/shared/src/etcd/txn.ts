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
  /** Reads the key's metadata (lease, revisions) without its value. */
  head(key: string): IRequestOp {
    return { request_range: { key: Buffer.from(key), keys_only: true } };
  },
};

export const cmp = {
  /** The key does not exist. */
  absent(key: string): ICompare {
    return { key: Buffer.from(key), target: 'Create', result: 'Equal', create_revision: 0 };
  },
  /** The key exists. */
  present(key: string): ICompare {
    return { key: Buffer.from(key), target: 'Version', result: 'Greater', version: 0 };
  },
  /** The key exists and is attached to `lease` (a missing key has lease 0, so never matches a real lease). */
  leaseIs(key: string, lease: string): ICompare {
    return { key: Buffer.from(key), target: 'Lease', result: 'Equal', lease };
  },
  /** The key was last changed at `revision` (compare-and-swap). */
  modIs(key: string, revision: number): ICompare {
    return { key: Buffer.from(key), target: 'Mod', result: 'Equal', mod_revision: revision };
  },
  /** No key in [from, to). */
  noneIn(from: string, to: Buffer): ICompare {
    return { key: Buffer.from(from), range_end: to, target: 'Create', result: 'Equal', create_revision: 0 };
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

/**
 * Keys (no values) under a prefix, as of `revision`, and `newest`: the highest
 * mod revision among them (0 when there are none).
 */
export async function keysAt(etcd: Etcd3, prefix: string): Promise<{ keys: string[]; newest: number; revision: number }> {
  const res = await etcd.kv.range({ key: Buffer.from(prefix), range_end: prefixEnd(prefix), keys_only: true });
  let newest = 0;
  for (const kv of res.kvs) newest = Math.max(newest, Number(kv.mod_revision));
  return { keys: res.kvs.map((kv) => kv.key.toString()), newest, revision: Number(res.header.revision) };
}

/**
 * The highest mod revision of any key now under `prefix` (0 when empty): the
 * last write a watch of the prefix is sure to deliver. The cluster's revision
 * is no such thing — writes elsewhere move it, and a prefix watch never sees
 * them. A deletion leaves no key behind, so one newer than every live key is
 * not counted.
 */
export async function newestUnder(etcd: Etcd3, prefix: string): Promise<number> {
  const res = await etcd.kv.range({
    key: Buffer.from(prefix),
    range_end: prefixEnd(prefix),
    keys_only: true,
    limit: 1,
    sort_target: 'Mod',
    sort_order: 'Descend',
  });
  return Number(res.kvs[0]?.mod_revision ?? 0);
}

/**
 * Operations that make everything under `prefix` exactly `entries`: a put per
 * entry and a range delete for each gap between consecutive wanted keys (etcd
 * refuses a delete that overlaps a put of the same transaction, so one range
 * delete of the prefix cannot be used). At most 2n + 1 operations whatever is
 * stored now — replacing 10 keys costs the same next to 10 or 100,000 old ones.
 *
 * `existing`, the keys stored under the prefix as of a revision the
 * transaction is guarded on (nothing created since), lets gaps that hold no
 * key be skipped. Without it every gap is deleted, which is always correct.
 */
export function replacePrefix(prefix: string, entries: [key: string, value: string][], existing?: Iterable<string>): IRequestOp[] {
  const byBytes = (a: Buffer, b: Buffer) => Buffer.compare(a, b);
  const sorted = entries.map(([k, v]) => [Buffer.from(k), v] as const).sort((a, b) => byBytes(a[0], b[0]));
  const present = existing ? [...existing].map((k) => Buffer.from(k)).sort(byBytes) : undefined;
  let j = 0;
  /** Whether [from, to) may hold a stored key (to undefined: the end of the prefix). */
  const occupied = (from: Buffer, to: Buffer | undefined): boolean => {
    if (!present) return true;
    while (j < present.length && Buffer.compare(present[j], from) < 0) j++;
    return j < present.length && (to === undefined || Buffer.compare(present[j], to) < 0);
  };
  const ops: IRequestOp[] = [];
  let from = Buffer.from(prefix);
  for (const [key, value] of sorted) {
    if (!key.toString().startsWith(prefix)) throw new Error(`replacePrefix: ${key.toString()} is not under ${prefix}`);
    if (Buffer.compare(from, key) < 0 && occupied(from, key)) ops.push({ request_delete_range: { key: from, range_end: key } });
    ops.push({ request_put: { key, value: Buffer.from(value) } });
    from = Buffer.concat([key, Buffer.from([0])]); // the key right after `key`
  }
  if (occupied(from, undefined)) ops.push({ request_delete_range: { key: from, range_end: prefixEnd(prefix) } });
  return ops;
}

/** An unconditional transaction: all of `ops` or none, at one revision. */
export function atomically(etcd: Etcd3, ops: IRequestOp[]): Promise<ITxnResponse> {
  return etcd.kv.txn({ compare: [], success: ops, failure: [] });
}
