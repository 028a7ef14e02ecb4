/**
 * Which etcd members answer, and which one leads: a probe (Maintenance.Status,
 * a few bytes) of every member every `intervalMs`, each with a deadline of
 * `timeoutMs`.
 *
 * Why our own probe: a frozen member (SIGSTOP, a stalled disk, a VM pause)
 * keeps its TCP connections open, so neither gRPC nor etcd3 notice anything —
 * calls and the shared watch stream on it simply wait. gRPC keepalive could
 * notice, but etcd enforces `--grpc-keepalive-min-time` (5 s by default) and
 * closes connections that ping more often ("too_many_pings"), so it cannot
 * detect a freeze within a second. A probe can.
 *
 * What the client does with it (see client.ts):
 *  - every call goes to the leader when one is known and answers (a frozen or
 *    lagging follower then carries nothing), else to any member that answers;
 *  - a member that stops answering has its streams cancelled (the watch
 *    stream and lease keep-alives then reconnect to a member that answers,
 *    within ~interval + timeout);
 *  - when no member answers, writes are refused before they are sent (503),
 *    at once, until a probe succeeds again.
 */
import { lookup } from 'node:dns/promises';
import { EventEmitter } from 'node:events';
import { InterceptingCall, status as GrpcStatus, type Interceptor } from '@grpc/grpc-js';
import { NoopPolicy, type IDefaultPolicyContext, type IPolicy } from 'cockatiel';
import { Etcd3 } from 'etcd3';

/** A call refused before it was sent: this member (or every member) is not answering. */
/**
 * A failed probe whose deadline fired this much later than due failed because
 * this process stalled: gRPC's deadline timer fires on time (within a few ms)
 * for a member that does not answer, however busy the machine.
 */
const STALL_SLACK_MS = 100;

export class MemberUnavailableError extends Error {
  override readonly name = 'MemberUnavailableError';
}

export interface MemberProbeOptions {
  /** Time between probes of one member (default 150 ms; a third of it while no leader is known). */
  intervalMs?: number;
  /**
   * A probe not answered within this long fails (default 300 ms); two failed
   * in a row mark the member down (one, if the connection was refused). The
   * first probe of a member may take the dial timeout: connecting is slow.
   */
  timeoutMs?: number;
}

interface Member {
  url: string;
  /** host:port as gRPC dials it. */
  host: string;
  port: string;
  /** Addresses the host name resolves to (gRPC reports a call's peer by address). */
  addresses: Set<string>;
  /** undefined until the first probe settles. */
  up?: boolean;
  id?: string;
  /** The leader this member believes in ('0': none). */
  leader?: string;
  probe: Etcd3;
  timer?: NodeJS.Timeout;
  /** Probes failed in a row. */
  failures: number;
  /** performance.now() of the last answer any call of the main client got from it. */
  lastAnswer: number;
}

function hostOf(url: string): string {
  return url.replace(/^https?:\/\//, '').replace(/\/.*$/, '');
}

/** "127.0.0.1:2379" / "[::1]:2379" / "ipv4:127.0.0.1:2379" → [address, port]. */
function splitPeer(peer: string): [string, string] {
  const p = peer.replace(/^ipv[46]:/, '');
  const i = p.lastIndexOf(':');
  return [p.slice(0, i).replace(/^\[|\]$/g, ''), p.slice(i + 1)];
}

function peerOf(call: InterceptingCall): string | undefined {
  try {
    return call.getPeer();
  } catch {
    return undefined;
  }
}

/** etcd3's per-member policy: a call runs only if ClusterMembers admits it. */
class MemberPolicy extends NoopPolicy {
  constructor(
    private readonly host: string,
    private readonly admit: (host: string) => Promise<void>,
  ) {
    super();
  }

  override async execute<T>(fn: (context: IDefaultPolicyContext) => PromiseLike<T> | T, signal?: AbortSignal): Promise<T> {
    await this.admit(this.host);
    return super.execute(fn, signal);
  }
}

/**
 * Events: 'member-down' (url), 'member-up' (url), 'leader' (url | undefined),
 * 'cluster-down' (no member answers any more), 'cluster-up' (one answers again).
 */
export class ClusterMembers extends EventEmitter {
  private readonly members: Member[];
  private readonly intervalMs: number;
  private readonly timeoutMs: number;
  /** Probes not counted because this process stalled past their deadline (for tests and logs). */
  stalls = 0;
  /** Streams open on the main client, so a member that stops answering can have its own cancelled. */
  private readonly active = new Set<InterceptingCall>();
  private readonly firstRound: Promise<void>;
  private settleFirst!: () => void;
  private stopped = false;
  private leaderUrl?: string;
  /** Some answering member names a leader that is not known to be gone. */
  private elected = false;

  constructor(urls: string[], opts: MemberProbeOptions & { probeClientOptions?: Record<string, unknown> } = {}) {
    super();
    this.intervalMs = opts.intervalMs ?? 150;
    this.timeoutMs = opts.timeoutMs ?? 300;
    this.members = urls.map((url) => {
      const host = hostOf(url);
      const [address, port] = splitPeer(host);
      return {
        url,
        host,
        port,
        addresses: new Set([address]),
        failures: 0,
        lastAnswer: 0,
        probe: new Etcd3({
          ...(opts.probeClientOptions ?? {}),
          hosts: [url],
          dialTimeout: 2000,
          faultHandling: { host: () => new NoopPolicy(), global: new NoopPolicy() },
        }),
      };
    });
    this.firstRound = new Promise((resolve) => (this.settleFirst = resolve));
  }

  start(): void {
    for (const m of this.members) {
      void lookup(splitPeer(m.host)[0], { all: true }).then(
        (list) => list.forEach((a) => m.addresses.add(a.address)),
        () => undefined,
      );
      void this.probeLoop(m);
    }
    // A member that never answers must not hold the first calls back for long.
    setTimeout(() => this.settleFirst(), this.timeoutMs).unref();
  }

  stop(): void {
    this.stopped = true;
    this.settleFirst();
    for (const m of this.members) {
      clearTimeout(m.timer);
      m.probe.close();
    }
  }

  /** Every member failed its last probe: a write now would only wait and time out. */
  get allDown(): boolean {
    return this.members.every((m) => m.up === false);
  }

  /** The URL of the member that leads, as far as the probes know. */
  get leader(): string | undefined {
    return this.leaderUrl;
  }

  /**
   * Resolves once a leader is known (at once when one is). Rejects, without
   * waiting, when no member answers, and at `deadline` (performance.now()).
   *
   * Why wait: after the leader dies its followers keep forwarding proposals to
   * it until they notice (etcd's election timeout); such a write is lost in
   * transit and would only come back as "outcome unknown" seconds later. Held
   * here instead, it is sent the moment a probe sees the new leader.
   */
  async leaderKnown(deadline: number): Promise<void> {
    await this.firstRound;
    for (;;) {
      if (this.elected) return;
      if (this.allDown) throw new MemberUnavailableError('no etcd member answered its last probe; the request was not sent');
      const left = deadline - performance.now();
      if (left <= 0) throw new MemberUnavailableError('etcd has no leader (an election did not finish in time); the request was not sent');
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.off('leader', done);
          this.off('member-down', done);
          resolve();
        };
        const timer = setTimeout(done, left);
        this.on('leader', done);
        this.on('member-down', done);
      });
    }
  }

  /**
   * gRPC interceptor of the main client. It notes every answer per member (a
   * member busy with a burst answers its probe late, but it answers calls: it
   * is not frozen), and tracks streaming calls (the watch stream, lease
   * keep-alives) so a stopped member's can be cancelled and reopened
   * elsewhere. Unary calls are left to their deadline: cancelling one would
   * not make its outcome any less unknown.
   */
  readonly interceptor: Interceptor = (options, nextCall) => {
    const def = options.method_definition;
    const streaming = def.requestStream || def.responseStream;
    const answered = () => {
      const m = this.memberAt(peerOf(call));
      if (m) m.lastAnswer = performance.now();
    };
    const call: InterceptingCall = new InterceptingCall(nextCall(options), {
      start: (metadata, listener, next) => {
        next(metadata, {
          onReceiveMessage: (message, nextMessage) => {
            answered();
            nextMessage(message);
          },
          onReceiveStatus: (status, nextStatus) => {
            if (streaming) this.active.delete(call);
            if (status.code !== GrpcStatus.DEADLINE_EXCEEDED && status.code !== GrpcStatus.UNAVAILABLE && status.code !== GrpcStatus.CANCELLED) answered();
            nextStatus(status);
          },
        });
      },
    });
    if (streaming) this.active.add(call);
    return call;
  };

  private memberAt(peer: string | undefined): Member | undefined {
    if (!peer) return undefined;
    const [address, port] = splitPeer(peer);
    return this.members.find((m) => m.port === port && m.addresses.has(address));
  }

  /**
   * The fault-handling policy etcd3 runs each call on member `url` through.
   * Refusing (MemberUnavailableError, nothing sent) makes etcd3's pool try the
   * next member; when every member refuses, the call fails unsent.
   */
  policyFor(url: string): IPolicy<IDefaultPolicyContext> {
    return new MemberPolicy(hostOf(url), (host) => this.admit(host));
  }

  /** Resolves when a call may go to `host`; rejects (unsent) when it must not. */
  private async admit(host: string): Promise<void> {
    await this.firstRound;
    const m = this.members.find((x) => x.host === host);
    if (m?.up === false) throw new MemberUnavailableError(`etcd member ${m.url} did not answer its last probe`);
    const leader = this.leaderUrl;
    if (m && leader && leader !== m.url) throw new MemberUnavailableError(`etcd member ${m.url} is not the leader (${leader} is)`);
  }

  private async probeLoop(m: Member): Promise<void> {
    while (!this.stopped) {
      const started = performance.now();
      let failed = false;
      // Until a member has answered once, its probe may take a connect's time.
      const deadlineMs = m.up === undefined ? 2000 : this.timeoutMs;
      try {
        const res = await m.probe.maintenance.status({ deadline: Date.now() + deadlineMs });
        m.id = String(res.header.member_id);
        m.leader = String(res.leader);
        m.failures = 0;
        this.mark(m, true);
      } catch (e) {
        failed = true;
        // A deadline that fired well after it was due says this process's
        // event loop was blocked (a large body parsed, thousands of watch
        // events handled at once): the answer may be waiting in the socket
        // behind the timer. That judges us, not the member — probe again.
        if (performance.now() - started > deadlineMs + STALL_SLACK_MS) {
          this.stalls++;
          continue;
        }
        m.failures++;
        // One slow answer on a busy machine is not a frozen member; a second
        // in a row, or a refused connection, is.
        const refused = /ECONNREFUSED|No connection established|Failed to connect/i.test(String((e as Error)?.message));
        const answeredLately = performance.now() - m.lastAnswer < 2 * this.timeoutMs;
        if (refused || ((m.failures >= 2 || m.up === undefined) && !answeredLately)) {
          m.leader = undefined;
          this.mark(m, false);
        }
      }
      if (this.leaderUrl || this.members.every((x) => x.up !== undefined)) this.settleFirst();
      if (this.stopped) return;
      // While no leader is known (an election), look three times as often: a
      // write held for the leader goes out as soon as one is seen.
      // After a failure, at once: the second probe decides.
      const interval = failed ? 0 : this.leaderUrl ? this.intervalMs : this.intervalMs / 3;
      const wait = Math.max(0, interval - (performance.now() - started));
      await new Promise<void>((r) => {
        m.timer = setTimeout(r, wait);
        m.timer.unref();
      });
    }
  }

  private mark(m: Member, up: boolean): void {
    const was = m.up;
    const wasAllDown = this.allDown;
    m.up = up;
    if (!wasAllDown && this.allDown) this.emit('cluster-down');
    else if (wasAllDown && up) this.emit('cluster-up');
    if (was !== false && !up) {
      this.cancelCallsOn(m);
      this.emit('member-down', m.url);
    } else if (was === false && up) {
      this.emit('member-up', m.url);
    }
    this.electLeader();
  }

  /**
   * The leader: the member that answers and that an answering member names as
   * leader. A leader named that is not among our URLs (a client given only
   * some members) still counts as elected; one of ours that does not answer
   * does not (its followers name it until they notice it is gone).
   */
  private electLeader(): void {
    let next: string | undefined;
    let elected = false;
    for (const m of this.members) {
      if (m.up !== true || !m.leader || m.leader === '0') continue;
      const l = this.members.find((x) => x.id === m.leader);
      if (!l) {
        elected = true;
        continue;
      }
      if (l.up === true) {
        next = l.url;
        elected = true;
        break;
      }
    }
    this.elected = elected;
    if (next !== this.leaderUrl) {
      this.leaderUrl = next;
      this.emit('leader', next);
    } else if (elected && !next) {
      this.emit('leader', undefined);
    }
  }

  private cancelCallsOn(m: Member): void {
    for (const call of this.active) {
      if (this.memberAt(peerOf(call)) === m) {
        this.active.delete(call);
        call.cancelWithStatus(GrpcStatus.UNAVAILABLE, `etcd member ${m.url} stopped answering`);
      }
    }
  }
}
