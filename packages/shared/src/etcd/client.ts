/**
 * One way to build an etcd client, for the coordinator and the agent alike.
 *
 * etcd3's defaults suit a long-lived batch client, not a request path: a call
 * to a dead cluster waits for the dial timeout (30 s) and is retried three
 * times, and a broken watch backs off up to 30 s. Here every unary call has a
 * deadline, a dead host trips a circuit breaker quickly (so requests fail fast
 * with a 503 instead of hanging), and watches reconnect within a second or two
 * of etcd returning.
 */
import { circuitBreaker, ConsecutiveBreaker, ExponentialBackoff, handleWhen, isBrokenCircuitError, retry } from 'cockatiel';
import {
  ClientClosedError,
  Etcd3,
  GRPCCancelledError,
  GRPCDeadlineExceededError,
  GRPCGenericError,
  GRPCUnavailableError,
  isRecoverableError,
} from 'etcd3';
import { SwitchyardError } from '../errors.js';

export interface EtcdClientOptions {
  /** `http://host:port` URLs of the cluster members. */
  hosts: string[];
  /** Deadline of one unary call (default 2 s). */
  callTimeoutMs?: number;
}

export function parseEtcdHosts(list: string | string[]): string[] {
  const items = (Array.isArray(list) ? list : list.split(','))
    .map((h) => h.trim())
    .filter(Boolean)
    .map((h) => (/^https?:\/\//.test(h) ? h : `http://${h}`));
  if (items.length === 0) throw new Error('no etcd endpoint given');
  for (const h of items) new URL(h); // throws on garbage
  return items;
}

export function createEtcdClient(opts: EtcdClientOptions): Etcd3 {
  const timeout = opts.callTimeoutMs ?? 2000;
  return new Etcd3({
    hosts: opts.hosts,
    dialTimeout: timeout,
    // One watch response carries every event of one revision: a transaction
    // touching 40,000 keys is several MiB, over gRPC's 4 MiB default.
    grpcOptions: { 'grpc.max_receive_message_length': 64 * 1024 * 1024 },
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeout }),
    faultHandling: {
      host: () =>
        circuitBreaker(handleWhen(isRecoverableError), {
          halfOpenAfter: 500,
          breaker: new ConsecutiveBreaker(2),
        }),
      global: retry(handleWhen(isRecoverableError), { maxAttempts: Math.max(1, opts.hosts.length - 1) }),
      // etcd3 wants a first backoff step (it calls `.next()` on it), not a factory.
      watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 1500 }).next(),
    },
  });
}

/** Rejects after `ms` with a 503 SwitchyardError (a safety net over etcd3's own deadlines). */
export function withTimeout<T>(p: Promise<T>, ms: number, what = 'etcd call'): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new SwitchyardError('ETCD_UNAVAILABLE', `${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/**
 * Maps an etcd client error to the registry: unreachable cluster → 503,
 * a request etcd refuses as too large (too many ops, too many bytes) → 413
 * with etcd's words.
 */
export function toSwitchyardError(e: unknown): SwitchyardError {
  if (e instanceof SwitchyardError) return e;
  const err = e as Error;
  const msg = String(err?.message ?? err);
  // Too big for etcd (its limits, or gRPC's RESOURCE_EXHAUSTED for a message
  // over the server's receive limit): the request's fault, never an outage.
  if (/too many operations|request is too large|request too large|exceeds|RESOURCE_EXHAUSTED|larger than max/i.test(msg)) {
    return new SwitchyardError('TOO_LARGE', `etcd refused the write as too large: ${msg}`, { cause: e });
  }
  // Unreachable, timed out, circuit open, client closed: the cluster is not answering.
  if (
    isRecoverableError(err) ||
    isBrokenCircuitError(err) ||
    err instanceof GRPCUnavailableError ||
    err instanceof GRPCDeadlineExceededError ||
    err instanceof GRPCCancelledError ||
    err instanceof ClientClosedError
  ) {
    return new SwitchyardError('ETCD_UNAVAILABLE', `etcd is unavailable: ${msg}`, { cause: e });
  }
  // etcd answered and said no, or our own code failed: a bug, not an outage.
  return new SwitchyardError('INTERNAL', `${err instanceof GRPCGenericError ? 'etcd refused the request' : 'internal error'}: ${msg}`, { cause: e });
}

/** Runs an etcd operation with a total deadline; every failure becomes a SwitchyardError. */
export async function etcdCall<T>(fn: () => Promise<T>, ms = 3000, what?: string): Promise<T> {
  try {
    return await withTimeout(fn(), ms, what);
  } catch (e) {
    throw toSwitchyardError(e);
  }
}
