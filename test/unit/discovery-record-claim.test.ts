/** How provider records are claimed and removed in etcd: the guards and what a failed guard leads to, without etcd. */
import type { IResponseOp } from 'etcd3';
import { describe, expect, it } from 'vitest';
import { chunkRecordOps, classify, firstFree, guardedOp, nextStep, opBytes, outcome, suffixedKey, type RecordOp } from '../../packages/coordinator/src/discovery/record-claim.js';

const text = (b: Buffer | undefined) => b?.toString();

describe('suffixes', () => {
  it('numbers keys as skyapi ids: the id itself, then -2, -3, …', () => {
    expect([1, 2, 3, 10].map((n) => suffixedKey('/skydns/x/abc', n))).toEqual(['/skydns/x/abc', '/skydns/x/abc-2', '/skydns/x/abc-3', '/skydns/x/abc-10']);
  });

  it('finds the first key no connection here holds, from a given suffix on', () => {
    const held = new Set(['k', 'k-2', 'k-4']);
    expect(firstFree('k', 1, (key) => held.has(key))).toEqual({ n: 3, key: 'k-3' });
    expect(firstFree('k', 4, (key) => held.has(key))).toEqual({ n: 5, key: 'k-5' });
    expect(firstFree('free', 1, (key) => held.has(key))).toEqual({ n: 1, key: 'free' });
  });
});

describe('guardedOp', () => {
  it('a new record: created only if the key does not exist, else the key read back (no value)', () => {
    const t = guardedOp({ key: '/k', value: 'v', expect: null, lease: '77' }).request_txn!;
    expect(t.compare).toEqual([{ key: Buffer.from('/k'), target: 'Create', result: 'Equal', create_revision: 0 }]);
    expect(t.success).toHaveLength(1);
    expect(text(t.success![0].request_put?.key)).toBe('/k');
    expect(text(t.success![0].request_put?.value)).toBe('v');
    expect(t.success![0].request_put?.lease).toBe('77');
    expect(t.failure).toEqual([{ request_range: { key: Buffer.from('/k'), keys_only: true } }]);
  });

  it('a record of ours: replaced only while on the lease we believe it is on', () => {
    const t = guardedOp({ key: '/k', value: 'v', expect: '55', lease: '77' }).request_txn!;
    expect(t.compare).toEqual([{ key: Buffer.from('/k'), target: 'Lease', result: 'Equal', lease: '55' }]);
    expect(t.success![0].request_put?.lease).toBe('77');
  });

  it('a delete: only while the key is on our lease', () => {
    const t = guardedOp({ key: '/k', value: null, expect: '55' }).request_txn!;
    expect(t.compare).toEqual([{ key: Buffer.from('/k'), target: 'Lease', result: 'Equal', lease: '55' }]);
    expect(t.success).toEqual([{ request_delete_range: { key: Buffer.from('/k') } }]);
  });

  it('refuses to build an unguarded delete', () => {
    expect(() => guardedOp({ key: '/k', value: null, expect: null })).toThrow(/needs the lease/);
  });
});

describe('reading a failed guard', () => {
  const ours = new Set(['55', '56']);
  it('tells absent, ours (on which lease) and foreign apart; a key on no lease is not ours', () => {
    expect(classify(undefined, ours)).toEqual({ kind: 'absent' });
    expect(classify({ lease: '56' }, ours)).toEqual({ kind: 'ours', lease: '56' });
    expect(classify({ lease: '99' }, ours)).toEqual({ kind: 'foreign' });
    expect(classify({ lease: '0' }, new Set(['0']))).toEqual({ kind: 'foreign' });
  });

  it('reads the nested reply: applied, or what the read-back saw', () => {
    const reply = (succeeded: boolean, kvs: { lease: string }[] = []) =>
      ({ response_txn: { succeeded, responses: succeeded ? [] : [{ response_range: { kvs } }] } }) as unknown as IResponseOp;
    expect(outcome(reply(true), ours)).toBeUndefined();
    expect(outcome(reply(false), ours)).toEqual({ kind: 'absent' });
    expect(outcome(reply(false, [{ lease: '55' }]), ours)).toEqual({ kind: 'ours', lease: '55' });
    expect(outcome(reply(false, [{ lease: '12' }]), ours)).toEqual({ kind: 'foreign' });
  });

  it('a put retries on a free key or one of ours and moves off a foreign one; a delete never touches what is not ours', () => {
    const put = { value: 'v' };
    const del = { value: null };
    expect(nextStep(put, { kind: 'absent' })).toEqual({ kind: 'retry', expect: null });
    expect(nextStep(put, { kind: 'ours', lease: '56' })).toEqual({ kind: 'retry', expect: '56' });
    expect(nextStep(put, { kind: 'foreign' })).toEqual({ kind: 'move' });
    expect(nextStep(del, { kind: 'absent' })).toEqual({ kind: 'done' });
    expect(nextStep(del, { kind: 'ours', lease: '56' })).toEqual({ kind: 'retry', expect: '56' });
    expect(nextStep(del, { kind: 'foreign' })).toEqual({ kind: 'done' });
  });
});

describe('chunkRecordOps', () => {
  const ops: RecordOp[] = Array.from({ length: 1000 }, (_, i) => ({ key: `/skydns/local/r${i}`, value: 'v', expect: null, lease: '1' }));

  it('puts at most maxTxnOps − 1 records in a transaction (etcd counts the outer op list and each nested one against one budget)', () => {
    const chunks = chunkRecordOps(ops, 128, 1 << 20);
    expect(chunks.map((c) => c.length)).toEqual([127, 127, 127, 127, 127, 127, 127, 111]);
    expect(chunks.flat()).toEqual(ops);
  });

  it('keeps under the byte limit, counting the key three times (compare, write, read-back)', () => {
    const per = opBytes(ops[0]);
    expect(per).toBe(3 * ops[0].key.length + 1 + 64);
    const chunks = chunkRecordOps(ops, 10_000, per * 100);
    expect(chunks.every((c) => c.reduce((n, o) => n + opBytes(o), 0) <= per * 100)).toBe(true);
    expect(chunks.flat()).toHaveLength(1000);
  });
});
