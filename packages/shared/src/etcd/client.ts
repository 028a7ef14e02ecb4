/**
 * One way to build an etcd client, for the coordinator and the agent alike,
 * and the rules that make a request's answer honest.
 *
 * etcd3's defaults suit a long-lived batch client, not a request path: a call
 * to a dead cluster waits for the dial timeout (30 s) and is retried on
 * another member — a write too, even when the first one may have been applied.
 * Here every unary call has a deadline, nothing is retried by etcd3 itself,
 * and calls are routed by ClusterMembers' probes (members.ts): to the leader,
 * never to a member that stopped answering.
 *
 * What an answer means (README "Failures"):
 *  - 503 ETCD_UNAVAILABLE: the request was not applied — refused before it was
 *    sent (no member answers, no leader within the deadline), or etcd refused
 *    it before proposing it. A write etcd provably did not apply is sent again
 *    within the deadline first (an election in progress), so a client sees 503
 *    only when etcd stays away.
 *  - 504 OUTCOME_UNKNOWN: the write was sent and no answer came in time; it may
 *    have been applied, or may still be. Every write route is safe to repeat.
 */
import { ConstantBackoff, isBrokenCircuitError, NoopPolicy } from 'cockatiel';
import {
  ClientClosedError,
  Etcd3,
  GRPCCancelledError,
  GRPCDeadlineExceededError,
  GRPCGenericError,
  GRPCUnavailableError,
  isRecoverableError,
  type IOptions,
} from 'etcd3';
import { SwitchyardError } from '../errors.js';
import type { EtcdAccess } from './access.js';
import { ClusterMembers, MemberUnavailableError, type MemberProbeOptions } from './members.js';
import { retryUnapplied } from './retry.js';

/** Where a daemon looks for etcd unless told: the embedded etcd of `switchyard up`. */
export const DEFAULT_ETCD_ENDPOINTS: readonly string[] = ['http://127.0.0.1:2379'];

export interface EtcdClientOptions extends MemberProbeOptions {
  /** `http://host:port` URLs of the cluster members. */
  hosts: string[];
  /** Deadline of one unary call (default 2 s). */
  callTimeoutMs?: number;
  /** TLS client certificate and etcd user (loadEtcdAccess); the member probes use them too. */
  access?: EtcdAccess;
}

/** An etcd3 client that knows which members answer (see members.ts). */
export class EtcdClient extends Etcd3 {
  constructor(
    options: IOptions,
    readonly members: ClusterMembers,
  ) {
    super(options);
    dropOrphanWatchResponses(this);
  }

  override close(): void {
    this.members.stop();
    super.close();
  }
}

/** What dropOrphanWatchResponses needs of etcd3's (internal) WatchManager. */
interface WatchManagerInternals {
  watchers: { id: string | null }[];
  handleResponse(res: { watch_id: string }): void;
}

/**
 * etcd3 1.1.2 throws ("Failed to find watcher for IWatchResponse") from its
 * watch stream's data handler when a response names a watch it no longer
 * has. That happens after a compaction: a watch resumed at a compacted
 * revision is cancelled by etcd while its PrefixMirror, relisting, cancels it
 * too, and etcd confirms both. The throw escapes into grpc-js before it asks
 * for the next message, so the client's one watch stream stops for good and
 * every watch on it hangs (an agent stuck at its old revision). A response
 * for a watch nobody holds any more carries nothing anyone waits for: drop it.
 */
function dropOrphanWatchResponses(client: Etcd3): void {
  const manager = (client as unknown as { watchManager?: WatchManagerInternals }).watchManager;
  if (!manager || typeof manager.handleResponse !== 'function' || !Array.isArray(manager.watchers)) return;
  const handle = manager.handleResponse.bind(manager);
  manager.handleResponse = (res) => {
    if (manager.watchers.some((w) => w.id === res.watch_id)) handle(res);
  };
}

/** The member probes behind a client, when it was made by createEtcdClient. */
export function membersOf(etcd: Etcd3): ClusterMembers | undefined {
  return etcd instanceof EtcdClient ? etcd.members : undefined;
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

export function createEtcdClient(opts: EtcdClientOptions): EtcdClient {
  const timeout = opts.callTimeoutMs ?? 2000;
  const access = opts.access ?? {};
  const members = new ClusterMembers(opts.hosts, { ...opts, probeClientOptions: { ...access } });
  const client = new EtcdClient(
    {
      hosts: opts.hosts,
      ...access,
      dialTimeout: timeout,
      grpcOptions: {
        // One watch response carries every event of one revision: a transaction
        // touching 40,000 keys is several MiB, over gRPC's 4 MiB default.
        'grpc.max_receive_message_length': 64 * 1024 * 1024,
        interceptors: [members.interceptor],
      } as IOptions['grpcOptions'],
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeout }),
      faultHandling: {
        // Routing, not a circuit breaker: a breaker opened by the errors of an
        // election stays open after the new leader serves (it answered 503 for
        // ~0.5 s more); the probes follow the cluster as it is.
        host: (h) => members.policyFor(h),
        // No blind retry: a write that timed out may have been applied.
        global: new NoopPolicy(),
        // etcd3 wants a first backoff step (it calls `.next()` on it), not a factory.
        watchBackoff: new ConstantBackoff(100).next(),
      },
    },
    members,
  );
  members.start();
  return client;
}

/**
 * Maps an etcd client error to the registry: unreachable cluster → 503,
 * a request etcd refuses as too large (too many ops, too many bytes) → 413
 * with etcd's words. Right for reads; writes go through writeError(), which
 * tells "not applied" from "unknown".
 */
export function toSwitchyardError(e: unknown): SwitchyardError {
  if (e instanceof SwitchyardError) return e;
  const err = e as Error;
  const msg = String(err?.message ?? err);
  // Too big for etcd (its limits, or gRPC's RESOURCE_EXHAUSTED for a message
  // over the server's receive limit): the request's fault, never an outage.
  if (refusedPattern.test(msg)) {
    return new SwitchyardError('TOO_LARGE', `etcd refused the write as too large: ${msg}`, { cause: e });
  }
  // Unreachable, timed out, refused up front, client closed: the cluster is not answering.
  if (
    e instanceof MemberUnavailableError ||
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

const refusedPattern = /too many operations|request is too large|request too large|exceeds|RESOURCE_EXHAUSTED|larger than max/i;

/**
 * etcd did not apply it, provably: refused before proposing (no leader, the
 * raft proposal dropped during an election, too many pending requests), or
 * the connection was never made.
 */
const notAppliedPattern =
  /raft proposal dropped|etcdserver: no leader|etcdserver: not capable|etcdserver: too many requests|No connection established|ECONNREFUSED|Failed to connect|Name resolution failed/i;

/** How a failed write stands. */
export type WriteOutcome = 'not-sent' | 'not-applied' | 'unknown' | 'refused';

export function writeOutcome(e: unknown): WriteOutcome {
  if (e instanceof MemberUnavailableError || e instanceof ClientClosedError || isBrokenCircuitError(e)) return 'not-sent';
  if (e instanceof WriteDeadline) return 'unknown';
  if (e instanceof SwitchyardError) return e.code === 'ETCD_UNAVAILABLE' ? 'not-sent' : e.code === 'OUTCOME_UNKNOWN' ? 'unknown' : 'refused';
  const msg = String((e as Error)?.message ?? e);
  if (refusedPattern.test(msg)) return 'refused';
  if (notAppliedPattern.test(msg)) return 'not-applied';
  // Sent, and then: a deadline, a dropped connection, a member cancelled
  // because it stopped answering, "request timed out" — applied or not.
  if (isRecoverableError(e as Error) || e instanceof GRPCGenericError) return 'unknown';
  return 'refused';
}

/** Our own deadline passed while a write was on the wire. */
class WriteDeadline extends Error {}

/** The registry error a failed write answers with. */
export function writeError(e: unknown, what = 'etcd write'): SwitchyardError {
  const msg = String((e as Error)?.message ?? e);
  switch (writeOutcome(e)) {
    case 'not-sent':
    case 'not-applied':
      if (e instanceof SwitchyardError) return e;
      return new SwitchyardError('ETCD_UNAVAILABLE', `etcd is unavailable: ${msg}; ${what} was not applied`, { cause: e });
    case 'unknown':
      if (e instanceof SwitchyardError) return e;
      return new SwitchyardError(
        'OUTCOME_UNKNOWN',
        `${what}: etcd did not answer in time (${msg}); the write may have been applied. Repeating the same request is safe`,
        { cause: e },
      );
    default:
      return toSwitchyardError(e);
  }
}

function deadlineRace<T>(p: Promise<T>, ms: number, err: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(err()), Math.max(0, ms));
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

export interface EtcdCallOptions {
  /** Total deadline (default 3 s). */
  ms?: number;
  what?: string;
  /** The client's member probes (membersOf): fail at once when none answers, wait for a leader. */
  members?: ClusterMembers;
}

/**
 * A read with a total deadline; every failure becomes a SwitchyardError (503
 * when etcd is away). Reads change nothing, so one that failed for any reason
 * etcd may recover from is tried again within the deadline.
 */
export async function etcdCall<T>(fn: () => Promise<T>, ms = 3000, what?: string, members?: ClusterMembers): Promise<T> {
  const deadline = performance.now() + ms;
  const attempt = async () => {
    await members?.leaderKnown(deadline);
    return deadlineRace(fn(), deadline - performance.now(), () => new SwitchyardError('ETCD_UNAVAILABLE', `${what ?? 'etcd call'} timed out after ${ms} ms`));
  };
  try {
    return await retryUnapplied(attempt, (e) => !members?.allDown && writeOutcome(e) !== 'refused' && !(e instanceof SwitchyardError) && !(e instanceof MemberUnavailableError), { deadline });
  } catch (e) {
    throw toSwitchyardError(e);
  }
}

/**
 * A write with a total deadline. Refused at once (503) when no member answers;
 * held while an election runs; sent again while etcd provably did not apply it;
 * 504 OUTCOME_UNKNOWN when it was sent and no answer came in time.
 */
export async function etcdWrite<T>(fn: () => Promise<T>, opts: EtcdCallOptions = {}): Promise<T> {
  const ms = opts.ms ?? 3000;
  const deadline = performance.now() + ms;
  const attempt = async () => {
    await opts.members?.leaderKnown(deadline);
    return deadlineRace(fn(), deadline - performance.now(), () => new WriteDeadline(`no answer within ${ms} ms`));
  };
  try {
    return await retryUnapplied(attempt, (e) => !opts.members?.allDown && writeOutcome(e) === 'not-applied', { deadline });
  } catch (e) {
    throw writeError(e, opts.what);
  }
}

/** Rejects after `ms` with a 503 SwitchyardError (for reads: a safety net over etcd3's own deadlines). */
export function withTimeout<T>(p: Promise<T>, ms: number, what = 'etcd call'): Promise<T> {
  return deadlineRace(p, ms, () => new SwitchyardError('ETCD_UNAVAILABLE', `${what} timed out after ${ms} ms`));
}
