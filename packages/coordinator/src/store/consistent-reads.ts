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
import { SwitchyardError, type PrefixMirror } from '@switchyard/shared';
import type { CoordinatorContext } from '../context.js';

/** What a write answers: the value and the etcd revision that holds it. */
export interface Written<T> {
  value: T;
  revision: number;
}

export class ConsistentReads {
  private lastWrite = 0;
  private readonly primary: PrefixMirror<unknown>;

  /** `mirrors[0]` is the one writes land in; all must be healthy to read. */
  constructor(
    private readonly ctx: CoordinatorContext,
    private readonly what: string,
    private readonly mirrors: PrefixMirror<unknown>[],
  ) {
    this.primary = mirrors[0];
  }

  /** Every mirror is listed and its watch connected. */
  async ready(): Promise<void> {
    for (const m of this.mirrors) {
      if (m.healthy) continue;
      await this.ctx.call(() => m.start(), `initial list of ${this.what}`);
      if (!m.healthy) throw new SwitchyardError('ETCD_UNAVAILABLE', 'etcd is unavailable: watch disconnected');
    }
  }

  /** ready(), and the primary mirror reflects every write this coordinator acknowledged. */
  async fresh(): Promise<void> {
    await this.ready();
    await this.caughtUp(this.lastWrite);
  }

  /** The primary mirror has reached `revision`. */
  caughtUp(revision: number): Promise<void> {
    if (this.primary.revision >= revision) return Promise.resolve();
    return this.primary.waitFor(revision, this.ctx.config.etcdTimeoutMs);
  }

  /** Records an acknowledged write; returns its revision. */
  noteWrite(revision: number): number {
    if (revision > this.lastWrite) this.lastWrite = revision;
    return revision;
  }
}
