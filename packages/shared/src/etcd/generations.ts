/**
 * Replacing a large set of records atomically on an etcd with its default
 * limits (128 operations and 1.5 MiB per request, 2 MiB per gRPC message),
 * by generations. Key layout: GenerationKeys (keys.ts).
 *
 *  1. register: one transaction puts `gens/<G>` and `pending/<G>` (the latter
 *     on a lease the writer keeps alive) for a fresh random generation G;
 *  2. write: the records go under `sets/<G>/` in chunks under the limits, each
 *     chunk a transaction that requires `pending/<G>` — no reader looks there;
 *  3. switch: ONE small transaction — `current` still at the mod revision the
 *     writer read and `pending/<G>` still there (plus the caller's compares) —
 *     puts `current = G`, deletes the markers and range-deletes the old
 *     generation's records (one operation however many).
 *
 * Why readers never see half a set: they follow the whole root with one watch
 * (or one read at one revision) and show only the records of the generation
 * `current` names. Before the switch that is the old generation, untouched;
 * at the switch's revision every record of G is already stored (etcd applies
 * transactions in order, a watch delivers them in order), and the old ones
 * go in that same revision.
 *
 * Why a crash leaves the old set whole: until step 3 nothing a reader uses
 * has changed; step 3 is one transaction. What a dead writer leaves (a
 * registered generation whose lease expired) is garbage: it can never become
 * current (the switch requires the marker, and generation ids are never
 * reused), and collectGenerations deletes it. A writer that outlives its
 * marker (a pause longer than the lease) fails its next chunk or its switch.
 *
 * Invariant the collector rests on: every `sets/<G>/` is either current or
 * registered — registration comes before any chunk, and registration and
 * records are deleted together.
 */
import { randomBytes } from 'node:crypto';
import type { Etcd3, ICompare, IKeyValue, IRequestOp, Lease } from 'etcd3';
import { SwitchyardError } from '../errors.js';
import { INITIAL_GENERATION, type GenerationKeys } from '../keys.js';
import type { PrefixMirror } from './prefix-mirror.js';
import { cmp, op, prefixEnd } from './txn.js';

/** etcd's default --max-txn-ops: every etcd takes this many operations in one transaction. */
export const ETCD_DEFAULT_MAX_TXN_OPS = 128;
/** etcd's default --max-request-bytes (1.5 MiB). */
export const ETCD_DEFAULT_MAX_REQUEST_BYTES = 1.5 * 1024 * 1024;
/** The largest value Switchyard writes: one default request, with room left for its key and the transaction around it. */
export const MAX_VALUE_BYTES = ETCD_DEFAULT_MAX_REQUEST_BYTES - 64 * 1024;

/** A generation as read: its id and the mod revision of `current` that named it (0: never written). */
export interface Generation {
  id: string;
  revision: number;
}

/** A record of a generational root as a mirror holds it. */
export type GenerationRecord<T> = { kind: 'current'; gen: string } | { kind: 'record'; gen: string; rel: string; value: T };

/** Parses a key under `keys.root` for a mirror: `current`, a record (via `parse`), or undefined (markers, foreign keys). */
export function parseGenerationRecord<T>(keys: GenerationKeys, key: string, raw: Buffer, parse: (rel: string, raw: Buffer) => T | undefined): GenerationRecord<T> | undefined {
  const k = keys.parse(key);
  if (k?.kind === 'current') return { kind: 'current', gen: raw.toString() };
  if (k?.kind !== 'record') return undefined;
  const value = parse(k.rel, raw);
  return value === undefined ? undefined : { kind: 'record', gen: k.gen, rel: k.rel, value };
}

/** The generation a mirror of `keys.root` shows now. */
export function mirroredGeneration(mirror: PrefixMirror<GenerationRecord<unknown>>, keys: GenerationKeys): Generation {
  const e = mirror.get(keys.current);
  return e && e.value.kind === 'current' ? { id: e.value.gen, revision: e.modRevision } : { id: INITIAL_GENERATION, revision: 0 };
}

/** The generation named by a `current` key-value as etcd returned it (absent: the initial one). */
export function generationOf(kv: IKeyValue | undefined): Generation {
  return kv ? { id: kv.value.toString(), revision: Number(kv.mod_revision) } : { id: INITIAL_GENERATION, revision: 0 };
}

/** The current generation, read from etcd, and the cluster revision of the read. */
export async function readGeneration(etcd: Etcd3, keys: GenerationKeys): Promise<Generation & { readAt: number }> {
  const res = await etcd.kv.range({ key: Buffer.from(keys.current) });
  return { ...generationOf(res.kvs[0]), readAt: Number(res.header.revision) };
}

/** Compare: `current` still names `gen` (its mod revision has not moved). */
export function generationIs(keys: GenerationKeys, gen: Generation): ICompare {
  return cmp.modIs(keys.current, gen.revision);
}

export interface ChunkLimits {
  /** Operations per transaction (default 128, etcd's default). */
  maxOps?: number;
  /** Approximate bytes per transaction (default 1 MiB, under etcd's default 1.5 MiB). */
  maxBytes?: number;
}

/**
 * Throws a 413 when one key and value cannot fit in any request to an etcd
 * with default limits (etcd would refuse it; gRPC would call that
 * RESOURCE_EXHAUSTED, which looks like an outage). Returns the size counted.
 */
export function assertFits(key: string, value: string): number {
  const size = Buffer.byteLength(key) + Buffer.byteLength(value) + 16;
  if (size > MAX_VALUE_BYTES) {
    throw new SwitchyardError('TOO_LARGE', `${key} would be ${size} bytes stored; etcd takes at most ${MAX_VALUE_BYTES} bytes in one request`);
  }
  return size;
}

/** A fresh generation id: random, so never reused (the collector relies on it). */
export function newGenerationId(): string {
  return randomBytes(8).toString('hex');
}

/**
 * Puts grouped into transactions under the limits, in order. A single record
 * too large for any request is a 413 before anything is written.
 */
export function chunkPuts(records: Iterable<[key: string, value: string]>, limits: ChunkLimits = {}): IRequestOp[][] {
  return chunkBySize([...records].map(([key, value]) => ({ op: op.put(key, value), size: assertFits(key, value) })), (x) => x.size, limits).map((c) => c.map((x) => x.op));
}

/** The bytes an operation adds to a request (key, value, range end, framing). */
export function opSize(o: IRequestOp): number {
  const put = o.request_put;
  const del = o.request_delete_range;
  const len = (b: unknown) => (b === undefined || b === null ? 0 : Buffer.byteLength(b as Buffer | string));
  return 16 + (put ? len(put.key) + len(put.value) : del ? len(del.key) + len(del.range_end) : 0);
}

/** Operations grouped into transactions under the limits, in order. */
export function chunkOps(ops: Iterable<IRequestOp>, limits: ChunkLimits = {}): IRequestOp[][] {
  return chunkBySize(ops, opSize, limits);
}

/** Items cut, in order, into chunks of at most `maxOps` items and about `maxBytes` bytes (at least one item each). */
export function chunkBySize<T>(items: Iterable<T>, sizeOf: (item: T) => number, limits: ChunkLimits = {}): T[][] {
  const maxOps = limits.maxOps ?? ETCD_DEFAULT_MAX_TXN_OPS;
  const maxBytes = limits.maxBytes ?? 1024 * 1024;
  const chunks: T[][] = [];
  let chunk: T[] = [];
  let bytes = 0;
  for (const item of items) {
    const size = sizeOf(item);
    if (chunk.length > 0 && (chunk.length >= maxOps || bytes + size > maxBytes)) {
      chunks.push(chunk);
      chunk = [];
      bytes = 0;
    }
    chunk.push(item);
    bytes += size;
  }
  if (chunk.length > 0) chunks.push(chunk);
  return chunks;
}

/** A generation written but not yet switched to. */
export interface PendingGeneration {
  id: string;
  /** Keeps `pending/<id>` alive while the writer is; revoked by switchGeneration/abandonGeneration. */
  lease: Lease;
}

export interface WriteGenerationOptions extends ChunkLimits {
  /** The generation's id (default newGenerationId()), for a caller that names its keys ahead. */
  id?: string;
  /** TTL of the writer's marker: how long after a crash its records become collectable (default 10 s). */
  ttlSeconds?: number;
  /** Chunk transactions in flight at once (default 4). */
  parallel?: number;
  /**
   * Give up (and abandon the generation) once this long has passed (default
   * 60 s). Checked between chunks, each of which has the client's own call
   * deadline, so the writer never outlives its caller with its lease alive.
   */
  timeoutMs?: number;
}

/**
 * Steps 1 and 2: registers a fresh generation and writes `records` (keys
 * relative to the generation's set) under it. Nothing a reader shows changes.
 * On failure the generation is abandoned (best effort; else collected).
 */
export async function writeGeneration(
  etcd: Etcd3,
  keys: GenerationKeys,
  records: Iterable<[rel: string, value: string]>,
  opts: WriteGenerationOptions = {},
): Promise<PendingGeneration> {
  const id = opts.id ?? newGenerationId();
  const set = keys.set(id);
  // Chunk first: a record too large is refused before anything is written.
  const chunks = chunkPuts((function* () {
    for (const [rel, value] of records) yield [`${set}${rel}`, value] as [string, string];
  })(), opts);
  const lease = etcd.lease(opts.ttlSeconds ?? 10);
  try {
    const leaseId = await lease.grant();
    // No compare: the id is fresh and random, so the keys can only be ours,
    // and a client retry of this transaction after a lost answer is harmless.
    await etcd.kv.txn({ compare: [], success: [op.put(keys.registered(id), ''), op.put(keys.pending(id), '', leaseId)], failure: [] });
    const alive = [cmp.present(keys.pending(id))];
    const deadline = performance.now() + (opts.timeoutMs ?? 60_000);
    let next = 0;
    let failed = false;
    const worker = async () => {
      while (next < chunks.length && !failed) {
        if (performance.now() > deadline) throw new SwitchyardError('ETCD_UNAVAILABLE', `etcd is unavailable: writing ${chunks.length} chunks took over ${opts.timeoutMs ?? 60_000} ms`);
        const chunk = chunks[next++];
        const res = await etcd.kv.txn({ compare: alive, success: chunk, failure: [] });
        if (!res.succeeded) throw new SwitchyardError('CONFLICT', 'the replacement was collected while it was being written (its writer stalled past its lease); try again');
      }
    };
    // Every worker stops before the generation is abandoned: a chunk still
    // in flight must not land after the abandoning delete.
    const results = await Promise.allSettled(
      Array.from({ length: Math.min(opts.parallel ?? 4, chunks.length) }, () =>
        worker().catch((e: unknown) => {
          failed = true;
          throw e;
        }),
      ),
    );
    const rejected = results.find((r) => r.status === 'rejected');
    if (rejected) throw rejected.reason;
    return { id, lease };
  } catch (e) {
    await abandonGeneration(etcd, keys, { id, lease }).catch(() => undefined);
    throw e;
  }
}

/**
 * Step 3: makes `pending` current if `current` still names `from` and every
 * compare in `also` holds; deletes `from`'s records in the same transaction.
 * On failure nothing changed: the caller abandons `pending` or tries again.
 */
export async function switchGeneration(
  etcd: Etcd3,
  keys: GenerationKeys,
  pending: PendingGeneration,
  from: Generation,
  also: ICompare[] = [],
): Promise<{ succeeded: boolean; revision: number }> {
  const res = await etcd.kv.txn({
    compare: [generationIs(keys, from), cmp.present(keys.pending(pending.id)), ...also],
    success: [op.put(keys.current, pending.id), op.del(keys.pending(pending.id)), op.del(keys.registered(pending.id)), op.delPrefix(keys.set(from.id))],
    failure: [],
  });
  if (res.succeeded) await pending.lease.revoke().catch(() => undefined);
  return { succeeded: res.succeeded, revision: Number(res.header.revision) };
}

/** Deletes a generation that will not be switched to: its records and markers, in one transaction. */
export async function abandonGeneration(etcd: Etcd3, keys: GenerationKeys, pending: PendingGeneration): Promise<void> {
  try {
    await etcd.kv.txn({
      // The marker goes with a successful switch: without it the generation
      // may be current (a switch whose answer was lost) — or garbage, which
      // collectGenerations takes once it is sure.
      compare: [cmp.present(keys.pending(pending.id))],
      success: [op.del(keys.pending(pending.id)), op.del(keys.registered(pending.id)), op.delPrefix(keys.set(pending.id))],
      failure: [],
    });
  } finally {
    await pending.lease.revoke().catch(() => undefined);
  }
}

/**
 * Deletes every registered generation whose writer is gone (marker expired
 * or deleted) and that is not current: what crashed writers left. Reads the
 * three small prefixes at one revision; each deletion re-checks its
 * conditions. Returns the ids collected.
 */
export async function collectGenerations(etcd: Etcd3, keys: GenerationKeys): Promise<string[]> {
  const range = (prefix: string): IRequestOp => ({ request_range: { key: Buffer.from(prefix), range_end: prefixEnd(prefix), keys_only: true } });
  const res = await etcd.kv.txn({ compare: [], success: [op.get(keys.current), range(keys.registry), range(keys.pendings)], failure: [] });
  const [cur, reg, pend] = res.responses.map((r) => r.response_range?.kvs ?? []);
  const current = generationOf(cur[0]);
  const alive = new Set(pend.map((kv) => keys.parse(kv.key.toString())).map((k) => (k && k.kind === 'pending' ? k.gen : '')));
  const dead: string[] = [];
  for (const kv of reg) {
    const k = keys.parse(kv.key.toString());
    if (k?.kind === 'registered' && !alive.has(k.gen) && k.gen !== current.id) dead.push(k.gen);
  }
  const collected: string[] = [];
  for (const gen of dead) {
    const del = await etcd.kv.txn({
      compare: [cmp.absent(keys.pending(gen)), generationIs(keys, current)],
      success: [op.del(keys.registered(gen)), op.delPrefix(keys.set(gen))],
      failure: [],
    });
    if (del.succeeded) collected.push(gen);
  }
  return collected;
}
