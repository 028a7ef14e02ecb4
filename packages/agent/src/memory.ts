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

  constructor(
    private readonly log: Logger,
    opts: HeapCompactorOptions = {},
  ) {
    this.minHeapBytes = opts.minHeapBytes ?? 32 * 1024 * 1024;
    this.minGrowthBytes = opts.minGrowthBytes ?? 24 * 1024 * 1024;
    this.delaysMs = opts.delaysMs ?? [2000, 15_000];
  }

  /** `inner`, plus a check after every full pass. */
  wrap(inner: SyncObserver): SyncObserver {
    return {
      synced: (full, seconds) => {
        inner.synced(full, seconds);
        if (full) this.afterFullPass();
      },
      failed: () => inner.failed(),
    };
  }

  /** Checks the heap `delaysMs` after the last full pass (a later pass starts the checks over). */
  afterFullPass(): void {
    this.stop();
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
    const t0 = performance.now();
    majorGc()();
    const after = getHeapStatistics();
    this.lastAfter = after.used_heap_size;
    this.log.debug({ ms: Math.round(performance.now() - t0), usedMiB: Math.round(h.used_heap_size / 2 ** 20), afterMiB: Math.round(after.used_heap_size / 2 ** 20) }, 'heap compacted after a full pass');
    return true;
  }

  stop(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers = [];
  }
}
