/**
 * A watch-fed, in-memory mirror of every key under one etcd prefix.
 *
 * The etcd way to follow a prefix: list it at revision R, then watch from
 * R+1, applying events in order. If the watch is cancelled or its start
 * revision was compacted away, list again (level-triggered: what matters is
 * the state, not the events). `waitFor(rev)` lets a reader see every write
 * acknowledged up to `rev` (read-your-writes for the coordinator, "applied
 * revision" for the agent).
 *
 * Values are parsed once, on arrival; a value that fails to parse is kept out
 * of the mirror and reported through `onInvalid`.
 */
import { EventEmitter } from 'node:events';
import type { Etcd3, IKeyValue, Watcher } from 'etcd3';
import { SwitchyardError } from '../errors.js';
import { membersOf } from './client.js';
import { prefixEnd } from './txn.js';

export interface MirrorEntry<T> {
  key: string;
  value: T;
  modRevision: number;
  createRevision: number;
  lease: string;
}

export interface PrefixMirrorOptions<T> {
  prefix: string;
  /** Parse one value; return undefined (or throw) to drop it. */
  parse: (key: string, value: Buffer) => T | undefined;
  onInvalid?: (key: string, error: unknown) => void;
  /**
   * A list (or the watch after it) failed and is tried again after `retryMs`.
   * etcd refusing access (a role without this prefix) only shows here.
   */
  onListError?: (error: unknown) => void;
  /** How long to wait before listing again after a failed list (ms). */
  retryMs?: number;
  /** Keys per page of the initial list (default 5,000). */
  pageSize?: number;
}

export type MirrorChange<T> =
  | { type: 'put'; key: string; entry: MirrorEntry<T>; previous?: MirrorEntry<T> }
  | { type: 'delete'; key: string; previous?: MirrorEntry<T> };

/**
 * Events: `change` (MirrorChange, for each applied event), `resync` (after
 * every full list), `revision` (number), `connected`, `disconnected`.
 */
export class PrefixMirror<T> extends EventEmitter {
  readonly entries = new Map<string, MirrorEntry<T>>();
  /** The revision this mirror reflects. */
  revision = 0;
  /** True while the watch stream is connected and the mirror is current. */
  healthy = false;
  private watcher?: Watcher;
  private waiters: { rev: number; resolve: () => void }[] = [];
  private stopped = false;
  private listing?: Promise<void>;
  private readonly retryMs: number;
  private readonly pageSize: number;
  private firstSync?: Promise<void>;

  constructor(
    readonly client: Etcd3,
    private readonly opts: PrefixMirrorOptions<T>,
  ) {
    super();
    this.retryMs = opts.retryMs ?? 200;
    this.pageSize = opts.pageSize ?? 5000;
  }

  /** Resolves after the first complete list; keeps following until `stop()`. */
  start(): Promise<void> {
    this.firstSync ??= new Promise<void>((resolve) => {
      this.once('resync', () => resolve());
      void this.relist();
    });
    return this.firstSync;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.healthy = false;
    const w = this.watcher;
    this.watcher = undefined;
    if (w) await w.cancel().catch(() => undefined);
  }

  get prefix(): string {
    return this.opts.prefix;
  }

  get(key: string): MirrorEntry<T> | undefined {
    return this.entries.get(key);
  }

  values(): T[] {
    return [...this.entries.values()].map((e) => e.value);
  }

  /**
   * Resolves once the mirror reflects revision `rev` (or later). With a
   * timeout, rejects after it and forgets the waiter (so waiters do not pile
   * up while etcd is away).
   */
  waitFor(rev: number, timeoutMs?: number): Promise<void> {
    if (this.revision >= rev) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = { rev, resolve };
      this.waiters.push(waiter);
      if (timeoutMs === undefined) return;
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new SwitchyardError('ETCD_UNAVAILABLE', `the watch did not reach revision ${rev} within ${timeoutMs} ms`));
      }, timeoutMs);
      waiter.resolve = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  /**
   * Resolves once the mirror is listed and its watch connected — at once when
   * it is; a watch that moves to another member (one stopped answering) is
   * back within a second. Rejects (503) after `timeoutMs`.
   */
  healthyWithin(timeoutMs: number): Promise<void> {
    if (this.healthy) return Promise.resolve();
    void this.start();
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.off('resync', done);
        reject(new SwitchyardError('ETCD_UNAVAILABLE', `etcd is unavailable: the watch of ${this.opts.prefix} did not reconnect within ${timeoutMs} ms`));
      }, timeoutMs);
      this.once('resync', done);
    });
  }

  private advance(rev: number): void {
    if (rev <= this.revision) return;
    this.revision = rev;
    if (this.waiters.length > 0) {
      const ready = this.waiters.filter((w) => w.rev <= rev);
      this.waiters = this.waiters.filter((w) => w.rev > rev);
      for (const w of ready) w.resolve();
    }
    this.emit('revision', rev);
  }

  private toEntry(kv: IKeyValue): MirrorEntry<T> | undefined {
    const key = kv.key.toString();
    try {
      const value = this.opts.parse(key, kv.value);
      if (value === undefined) return undefined;
      return {
        key,
        value,
        modRevision: Number(kv.mod_revision),
        createRevision: Number(kv.create_revision),
        lease: String(kv.lease ?? '0'),
      };
    } catch (e) {
      this.opts.onInvalid?.(key, e);
      return undefined;
    }
  }

  /** Full list at one revision, then a watch from the next one. */
  private relist(): Promise<void> {
    this.listing ??= (async () => {
      while (!this.stopped) {
        try {
          const old = this.watcher;
          this.watcher = undefined;
          if (old) await old.cancel().catch(() => undefined);
          // A list needs a leader (it is a linearizable read): during an
          // election, wait for one rather than fail and sleep retryMs.
          await membersOf(this.client)?.leaderKnown(performance.now() + 10_000);
          const next = new Map<string, MirrorEntry<T>>();
          const rev = await this.listPaged((kv) => {
            const e = this.toEntry(kv);
            if (e) next.set(e.key, e);
          });
          this.diffInto(next);
          this.advance(rev);
          await this.watchFrom(rev + 1);
          this.healthy = true;
          this.emit('resync');
          return;
        } catch (e) {
          this.healthy = false;
          if (!this.stopped) this.opts.onListError?.(e);
          await new Promise((r) => setTimeout(r, this.retryMs));
        }
      }
    })().finally(() => {
      this.listing = undefined;
    });
    return this.listing;
  }

  /**
   * Lists the prefix in pages, all at the revision of the first page, so a
   * large prefix neither exceeds a message limit nor one call's deadline.
   */
  private async listPaged(each: (kv: IKeyValue) => void): Promise<number> {
    const end = prefixEnd(this.opts.prefix);
    let from = Buffer.from(this.opts.prefix);
    let revision = 0;
    for (;;) {
      const res = await this.client.kv.range({ key: from, range_end: end, limit: this.pageSize, ...(revision ? { revision } : {}) });
      if (!revision) revision = Number(res.header.revision);
      for (const kv of res.kvs) each(kv);
      if (!res.more || res.kvs.length === 0) return revision;
      from = Buffer.concat([res.kvs[res.kvs.length - 1].key, Buffer.from([0])]);
    }
  }

  /** Replace the map with `next`, emitting the differences as changes. */
  private diffInto(next: Map<string, MirrorEntry<T>>): void {
    for (const [key, previous] of this.entries) {
      if (!next.has(key)) {
        this.entries.delete(key);
        this.emit('change', { type: 'delete', key, previous } satisfies MirrorChange<T>);
      }
    }
    for (const [key, entry] of next) {
      const previous = this.entries.get(key);
      if (previous && previous.modRevision === entry.modRevision) continue;
      this.entries.set(key, entry);
      this.emit('change', { type: 'put', key, entry, previous } satisfies MirrorChange<T>);
    }
  }

  private async watchFrom(rev: number): Promise<void> {
    const w = await this.client
      .watch()
      .prefix(this.opts.prefix)
      .startRevision(String(rev))
      .create();
    if (this.stopped) {
      await w.cancel().catch(() => undefined);
      return;
    }
    this.watcher = w;
    w.on('data', (res) => {
      // A cancelled watcher's late responses predate the list that replaced it.
      if (this.watcher !== w) return;
      for (const ev of res.events) {
        const key = ev.kv.key.toString();
        const previous = this.entries.get(key);
        if (ev.type === 'Put') {
          const entry = this.toEntry(ev.kv);
          if (entry) {
            this.entries.set(key, entry);
            this.emit('change', { type: 'put', key, entry, previous } satisfies MirrorChange<T>);
          } else if (previous) {
            this.entries.delete(key);
            this.emit('change', { type: 'delete', key, previous } satisfies MirrorChange<T>);
          }
        } else if (previous) {
          this.entries.delete(key);
          this.emit('change', { type: 'delete', key, previous } satisfies MirrorChange<T>);
        }
      }
      this.advance(Number(res.header.revision));
    });
    let lost = false;
    w.on('disconnected', () => {
      lost = true;
      this.healthy = false;
      this.emit('disconnected');
    });
    w.on('connected', () => {
      if (!lost) return;
      // etcd3 resumes the stream by itself, but until its first response the
      // mirror cannot tell how far behind it is. Level-triggered and simple:
      // list again, then watch from the new revision; healthy after that.
      this.emit('connected');
      if (!this.stopped && this.watcher === w) void this.relist();
    });
    w.on('error', () => {
      // Cancelled by the server or compacted: the events in between are lost,
      // so the only correct move is a fresh list.
      this.healthy = false;
      if (!this.stopped && this.watcher === w) void this.relist();
    });
  }
}
