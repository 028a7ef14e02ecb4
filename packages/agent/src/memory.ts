/**
 * Gives memory back after big sync passes. A full pass over 10,000 services
 * allocates ~60 MiB that is garbage once it ends (parsed etcd values, plans,
 * scripts); an idle agent allocates too little for V8 to collect it soon, so
 * the process kept ~170 MiB resident for minutes with ~34 MiB live
 * (bench/agent-memory.ts). After a full pass, when the heap holds more than
 * `wasteBytes` beyond what is live, one major GC runs once full passes have
 * been quiet for `quietMs`. It costs a pause of tens of ms, after full passes
 * only (the first sync and the periodic resync).
 */
import { getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Logger } from 'pino';
import type { SyncObserver } from './loop.js';

export interface HeapCompactorOptions {
  /** Run a GC when the heap's size exceeds its live objects by this much (bytes; default 24 MiB). */
  wasteBytes?: number;
  /** How long after the last full pass (ms; default 2 s): passes of several roles that end together get one GC. */
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
  private timer?: NodeJS.Timeout;
  private readonly wasteBytes: number;
  private readonly quietMs: number;

  constructor(
    private readonly log: Logger,
    opts: HeapCompactorOptions = {},
  ) {
    this.wasteBytes = opts.wasteBytes ?? 24 * 1024 * 1024;
    this.quietMs = opts.quietMs ?? 2000;
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

  /** Checks the heap `quietMs` after the last full pass (a later pass pushes the check back). */
  afterFullPass(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.compactIfWasteful(), this.quietMs);
    this.timer.unref();
  }

  /** One major GC if the heap holds more than `wasteBytes` beyond its live objects; true if it ran. */
  compactIfWasteful(): boolean {
    const h = getHeapStatistics();
    if (h.total_heap_size - h.used_heap_size < this.wasteBytes) return false;
    const t0 = performance.now();
    majorGc()();
    const after = getHeapStatistics();
    this.log.debug({ ms: Math.round(performance.now() - t0), heapMiB: Math.round(h.total_heap_size / 2 ** 20), afterMiB: Math.round(after.total_heap_size / 2 ** 20) }, 'heap compacted after a full pass');
    return true;
  }

  stop(): void {
    clearTimeout(this.timer);
  }
}
