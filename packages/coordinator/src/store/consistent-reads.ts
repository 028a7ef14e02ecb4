/**
 * Read-your-writes over watch-fed mirrors, shared by every repository.
 *
 * Reads are served from PrefixMirrors. Two rules keep them honest:
 *  - no answer from a mirror that is not listed yet or whose watch is down
 *    (it could be stale by any amount): 503 instead;
 *  - before answering, the mirror has caught up with the last write this
 *    coordinator acknowledged, so a client never reads older state than a
 *    write it was told succeeded.
 */
import { membersOf, newestUnder, SwitchyardError, type PrefixMirror } from '@switchyard/shared';
import type { CoordinatorContext } from '../context.js';

/** What a write answers: the value and the etcd revision that holds it. */
export interface Written<T> {
  value: T;
  revision: number;
}

export class ConsistentReads {
  private lastWrite = 0;
  private readonly primary: PrefixMirror<unknown>;
  private readonly newest: () => Promise<number>;

  /**
   * `mirrors[0]` is the one writes land in; all must be healthy to read.
   * `newest` finds the revision of the last write under its prefix; by
   * default a scan of the prefix (newestUnder), which a feature that bumps
   * one key on every write can replace with a read of that key.
   */
  constructor(
    private readonly ctx: CoordinatorContext,
    private readonly what: string,
    private readonly mirrors: PrefixMirror<unknown>[],
    opts: { newest?: () => Promise<number> } = {},
  ) {
    this.primary = mirrors[0];
    this.newest = opts.newest ?? (() => newestUnder(this.ctx.etcd, this.primary.prefix));
  }

  /**
   * Every mirror is listed and its watch connected. A watch that is moving
   * to another member (the one it was on stopped answering) is waited for,
   * within the request deadline; with no member answering, 503 at once.
   */
  async ready(): Promise<void> {
    for (const m of this.mirrors) {
      if (m.healthy) continue;
      if (membersOf(this.ctx.etcd)?.allDown) throw new SwitchyardError('ETCD_UNAVAILABLE', 'etcd is unavailable: no member answers; watch disconnected');
      await m.healthyWithin(this.ctx.config.etcdTimeoutMs);
    }
  }

  /** ready(), and the primary mirror reflects every write this coordinator acknowledged. */
  async fresh(): Promise<void> {
    await this.ready();
    // Own writes are under the primary prefix, so the watch is sure to bring them.
    if (this.primary.revision < this.lastWrite) await this.primary.waitFor(this.lastWrite, this.ctx.config.etcdTimeoutMs);
  }

  /**
   * The primary mirror has reached `revision` — a revision seen elsewhere (a
   * failed transaction's header, another coordinator's answer) — or, if that
   * is older, the newest write under its prefix. A watch only moves with its
   * own prefix's events: waiting for a cluster revision that writes elsewhere
   * produced would wait until some unrelated write here came along.
   */
  async caughtUp(revision: number): Promise<void> {
    if (this.primary.revision >= revision) return;
    const newest = await this.ctx.call(() => this.newest(), `reading the newest write to ${this.what}`);
    const target = Math.min(revision, newest);
    if (this.primary.revision < target) await this.primary.waitFor(target, this.ctx.config.etcdTimeoutMs);
  }

  /**
   * The primary mirror shows every write made under its prefix until now, by
   * any coordinator (a deletion newer than every live key excepted — see
   * newestUnder). For answers that must not rest on a lagging mirror, such as
   * "not found" before a write.
   */
  latest(): Promise<void> {
    return this.caughtUp(Number.MAX_SAFE_INTEGER);
  }

  /**
   * Runs `fn` against the mirror; if it answers "not found", once more after
   * latest(). A 404 is then true as of now, not only as of this coordinator's
   * view: what another coordinator made a moment ago is found. `fn` must throw
   * before it writes (or after a write etcd refused), so running it twice is safe.
   */
  async confirm<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (!(e instanceof SwitchyardError) || e.status !== 404) throw e;
      await this.latest();
      return fn();
    }
  }

  /** Records an acknowledged write; returns its revision. */
  noteWrite(revision: number): number {
    if (revision > this.lastWrite) this.lastWrite = revision;
    return revision;
  }
}
