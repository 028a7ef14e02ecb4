/**
 * Gives memory back after big sync passes. A full pass over 10,000 services
 * allocates ~60 MiB that is garbage once it ends (parsed etcd values, plans,
 * scripts); an idle agent allocates too little for V8 to collect it soon, so
 * the process kept ~170 MiB resident for minutes with ~34 MiB live
 * (bench/agent-memory.ts). After a full pass, once full passes have been
 * quiet for a while, one major GC runs if the heap is big enough to be worth
 * it (and once more a little later, for the output that follows a first
 * load). It costs a pause of tens of ms, after full passes only (the first
 * sync and the periodic resync).
 *
 * An idle agent allocates too: its etcd member probes (several a second) and
 * keep-alives leave garbage that V8 promotes, ~80 KiB/s, and collects only
 * every minute or two, by then a few MiB more resident (BENCHMARKS.md, issue
 * 14). So, when no sync pass has ended for a while and the heap has grown a
 * little since it was last collected, one major GC (~15 ms at an idle
 * agent's heap) every half minute or so.
 */
import { getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Logger } from 'pino';
import type { SyncObserver } from './loop.js';

export interface HeapCompactorOptions {
  /** Collect only when the heap holds at least this much, live or not (bytes; default 32 MiB). */
  minHeapBytes?: number;
  /**
   * ...and at least this much more than right after the last collection
   * (bytes; default 24 MiB): a resync that found nothing to do left little
   * garbage, and a pause for nothing is a pause every change waits out.
   */
  minGrowthBytes?: number;
  /**
   * When to look after the last full pass (ms; default 2 s and 15 s): passes of
   * several roles that end together get one GC, and the output that follows a
   * first load (the event monitor reads its 60,000 elements for seconds) a second.
   */
  delaysMs?: number[];
  /** How often an idle agent looks at its heap (ms; default 15 s; 0: never). */
  idleCheckMs?: number;
  /** ...and collects when it holds this much more than after the last collection (bytes; default 2 MiB). */
  idleGrowthBytes?: number;
  /** Idle: no sync pass has ended for this long (ms; default 10 s). */
  quietMs?: number;
}

let gcFn: (() => void) | undefined;

/** V8's full GC, made reachable without starting node with --expose-gc. */
function majorGc(): () => void {
  if (gcFn) return gcFn;
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (typeof exposed === 'function') return (gcFn = exposed);
  setFlagsFromString('--expose-gc');
  gcFn = runInNewContext('gc') as () => void;
  return gcFn;
}

export class HeapCompactor {
  private timers: NodeJS.Timeout[] = [];
  private readonly minHeapBytes: number;
  private readonly minGrowthBytes: number;
  /** The heap right after the last collection this ran (none yet: only minHeapBytes counts). */
  private lastAfter?: number;
  private readonly delaysMs: number[];
  private readonly idleCheckMs: number;
  private readonly idleGrowthBytes: number;
  private readonly quietMs: number;
  private idleTimer?: NodeJS.Timeout;
  /** performance.now() when the last sync pass ended (the start counts as one). */
  private lastPassAt = performance.now();
  /** The least the heap held at an idle look or after a collection: about what is live. */
  private idleFloor?: number;

  constructor(
    private readonly log: Logger,
    opts: HeapCompactorOptions = {},
  ) {
    this.minHeapBytes = opts.minHeapBytes ?? 32 * 1024 * 1024;
    this.minGrowthBytes = opts.minGrowthBytes ?? 24 * 1024 * 1024;
    this.delaysMs = opts.delaysMs ?? [2000, 15_000];
    this.idleCheckMs = opts.idleCheckMs ?? 15_000;
    this.idleGrowthBytes = opts.idleGrowthBytes ?? 2 * 1024 * 1024;
    this.quietMs = opts.quietMs ?? 10_000;
  }

  /** Starts the idle looks (the agent calls it once its roles run). */
  start(): void {
    if (this.idleCheckMs <= 0 || this.idleTimer) return;
    this.idleTimer = setInterval(() => this.collectIfIdle(), this.idleCheckMs);
    this.idleTimer.unref();
  }

  /** `inner`, plus a check after every full pass. */
  wrap(inner: SyncObserver): SyncObserver {
    return {
      synced: (full, seconds) => {
        inner.synced(full, seconds);
        this.lastPassAt = performance.now();
        if (full) this.afterFullPass();
      },
      failed: () => inner.failed(),
    };
  }

  /** Checks the heap `delaysMs` after the last full pass (a later pass starts the checks over). */
  afterFullPass(): void {
    this.clearPassTimers();
    this.timers = this.delaysMs.map((ms) => {
      const t = setTimeout(() => this.compactIfWorthIt(), ms);
      t.unref();
      return t;
    });
  }

  /**
   * One major GC when the heap holds at least `minHeapBytes`, and
   * `minGrowthBytes` more than after the last one (V8 counts
   * garbage as used until it collects it, so the size says how much there is
   * to win, not what is live); true if it ran.
   */
  compactIfWorthIt(): boolean {
    const h = getHeapStatistics();
    const floor = this.lastAfter === undefined ? this.minHeapBytes : Math.max(this.minHeapBytes, this.lastAfter + this.minGrowthBytes);
    if (h.used_heap_size < floor) return false;
    this.lastAfter = this.collect(h.used_heap_size, 'heap compacted after a full pass');
    return true;
  }

  /**
   * One major GC when no sync pass has ended for `quietMs` and the heap holds
   * `idleGrowthBytes` more than the least it held at an earlier look or after
   * a collection (V8's own collections lower that floor too); true if it ran.
   */
  collectIfIdle(now = performance.now()): boolean {
    if (now - this.lastPassAt < this.quietMs) return false;
    const used = getHeapStatistics().used_heap_size;
    if (this.idleFloor === undefined || used < this.idleFloor) this.idleFloor = used;
    if (used < this.idleFloor + this.idleGrowthBytes) return false;
    this.collect(used, 'heap collected while idle');
    return true;
  }

  stop(): void {
    this.clearPassTimers();
    clearInterval(this.idleTimer);
    this.idleTimer = undefined;
  }

  /** One major GC, logged; the heap it left, which becomes the idle floor. */
  private collect(usedBefore: number, msg: string): number {
    const t0 = performance.now();
    majorGc()();
    const after = getHeapStatistics().used_heap_size;
    this.idleFloor = after;
    this.log.debug({ ms: Math.round(performance.now() - t0), usedMiB: Math.round(usedBefore / 2 ** 20), afterMiB: Math.round(after / 2 ** 20) }, msg);
    return after;
  }

  private clearPassTimers(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers = [];
  }
}
