/**
 * The one retry helper and the write-outcome rules behind 503 vs 504.
 */
import { describe, expect, it } from 'vitest';
import { GRPCDeadlineExceededError, GRPCUnavailableError, GRPCUnknownError } from 'etcd3';
import { AGAIN, MemberUnavailableError, retryCas, retryUnapplied, SwitchyardError, writeError, writeOutcome } from '@switchyard/shared';

describe('writeOutcome', () => {
  it('tells unsent and unapplied writes from sent ones', () => {
    expect(writeOutcome(new MemberUnavailableError('no member answers'))).toBe('not-sent');
    expect(writeOutcome(new SwitchyardError('ETCD_UNAVAILABLE', 'waited in the queue'))).toBe('not-sent');
    expect(writeOutcome(new GRPCUnknownError('raft proposal dropped'))).toBe('not-applied');
    expect(writeOutcome(new GRPCUnavailableError('etcdserver: no leader'))).toBe('not-applied');
    expect(writeOutcome(new GRPCUnavailableError('14 UNAVAILABLE: No connection established. Last error: connect ECONNREFUSED'))).toBe('not-applied');
    expect(writeOutcome(new GRPCDeadlineExceededError('Deadline exceeded'))).toBe('unknown');
    expect(writeOutcome(new GRPCUnavailableError('etcdserver: request timed out'))).toBe('unknown');
    expect(writeOutcome(new GRPCUnavailableError('etcd member http://x stopped answering'))).toBe('unknown');
    expect(writeOutcome(new Error('etcdserver: too many operations in txn request'))).toBe('refused');
  });

  it('answers 503 for what was not applied and 504 OUTCOME_UNKNOWN for what may have been', () => {
    expect(writeError(new MemberUnavailableError('x')).status).toBe(503);
    const e = writeError(new GRPCDeadlineExceededError('Deadline exceeded'), 'creating a service');
    expect(e.status).toBe(504);
    expect(e.code).toBe('OUTCOME_UNKNOWN');
    expect(e.message).toMatch(/creating a service: .*may have been applied.*Repeating the same request is safe/);
  });
});

describe('retryCas', () => {
  it('runs the attempt again while it returns AGAIN, then answers its result', async () => {
    const seen: number[] = [];
    const r = await retryCas(async (n) => {
      seen.push(n);
      return n < 2 ? AGAIN : 'done';
    });
    expect(r).toBe('done');
    expect(seen).toEqual([0, 1, 2]);
  });

  it('answers 409 CONFLICT after the last attempt lost, and never retries a thrown error', async () => {
    let runs = 0;
    await expect(retryCas(async () => (runs++, AGAIN), { attempts: 3, what: 'service x' })).rejects.toMatchObject({ code: 'CONFLICT', message: /service x is being changed concurrently/ });
    expect(runs).toBe(3);
    runs = 0;
    await expect(retryCas(async () => (runs++, Promise.reject(new SwitchyardError('SERVICE_NOT_FOUND'))))).rejects.toMatchObject({ code: 'SERVICE_NOT_FOUND' });
    expect(runs).toBe(1);
  });
});

describe('retryUnapplied', () => {
  it('sends again only what was not applied, and stops at the deadline', async () => {
    let runs = 0;
    const ok = await retryUnapplied(async () => (++runs < 3 ? Promise.reject(new GRPCUnknownError('raft proposal dropped')) : 'ok'), (e) => writeOutcome(e) === 'not-applied', {
      deadline: performance.now() + 1000,
      delayMs: 5,
    });
    expect(ok).toBe('ok');
    expect(runs).toBe(3);

    runs = 0;
    await expect(retryUnapplied(async () => (runs++, Promise.reject(new GRPCDeadlineExceededError('x'))), (e) => writeOutcome(e) === 'not-applied', { deadline: performance.now() + 1000 })).rejects.toBeInstanceOf(GRPCDeadlineExceededError);
    expect(runs).toBe(1);

    const t0 = performance.now();
    await expect(retryUnapplied(() => Promise.reject(new GRPCUnknownError('raft proposal dropped')), () => true, { deadline: performance.now() + 200, delayMs: 20 })).rejects.toThrow(/dropped/);
    expect(performance.now() - t0).toBeLessThan(400);
  });
});
