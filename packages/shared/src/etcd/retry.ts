/**
 * The one retry helper for etcd work, on cockatiel's retry policy.
 *
 * Two kinds of "again" exist, and nothing else is ever retried:
 *  - a compare-and-swap lost its race (another coordinator changed what the
 *    attempt read): `retryCas` runs the whole read-modify-write again after a
 *    short jittered pause, a bounded number of times, then answers 409;
 *  - etcd provably did not apply a request (refused before proposing it, a
 *    member that cannot be reached, an election in progress): `retryUnapplied`
 *    sends it again until a deadline. A request whose outcome is unknown is
 *    never sent again here — that is the client's call (see client.ts).
 */
import { ConstantBackoff, ExponentialBackoff, handleWhen, handleWhenResult, retry } from 'cockatiel';
import { SwitchyardError } from '../errors.js';

/** Returned by a compare-and-swap attempt whose compare failed: run it again. */
export const AGAIN: unique symbol = Symbol('cas-again');
export type Again = typeof AGAIN;

export interface CasOptions {
  /** Attempts in all (default 8). */
  attempts?: number;
  /** The error once every attempt lost (default: 409 CONFLICT "<what> is being changed concurrently"). */
  exhausted?: () => Error;
  /** What is being changed, for the default message. */
  what?: string;
  /**
   * Pause between attempts (default true). Off for callers that already wait
   * for their mirror to show what won before looking again.
   */
  pause?: boolean;
}

/** Jittered, growing pauses between attempts that lost to another writer (5 ms … 200 ms). */
const casBackoff = new ExponentialBackoff({ initialDelay: 5, maxDelay: 200 });

/**
 * Runs `attempt(n)` (n from 0) until it returns something other than AGAIN.
 * Errors it throws are not retried: they are answers (404, 400, 503, 504).
 */
export async function retryCas<T>(attempt: (n: number) => Promise<T | Again>, opts: CasOptions = {}): Promise<T> {
  const attempts = opts.attempts ?? 8;
  const policy = retry(handleWhenResult((r) => r === AGAIN), { maxAttempts: attempts - 1, backoff: opts.pause === false ? new ConstantBackoff(0) : casBackoff });
  const result = await policy.execute((ctx) => attempt(ctx.attempt));
  if (result !== AGAIN) return result as T;
  throw opts.exhausted?.() ?? new SwitchyardError('CONFLICT', `${opts.what ?? 'the object'} is being changed concurrently; try again`);
}

export interface UnappliedOptions {
  /** performance.now() after which no attempt starts. */
  deadline: number;
  /** Pause between attempts (default 25 ms: an etcd election is ~1–2 s; a retry a few ms after it ends is what bounds the write stall). */
  delayMs?: number;
}

/**
 * Runs `fn` again while it fails with an error `notApplied` accepts and the
 * next attempt can still start before the deadline; the last error otherwise.
 */
export function retryUnapplied<T>(fn: () => Promise<T>, notApplied: (e: unknown) => boolean, opts: UnappliedOptions): Promise<T> {
  const delay = opts.delayMs ?? 25;
  const policy = retry(
    handleWhen((e) => notApplied(e) && performance.now() + delay < opts.deadline),
    { maxAttempts: Number.MAX_SAFE_INTEGER, backoff: new ConstantBackoff(delay) },
  );
  return policy.execute(() => fn());
}
