/**
 * Health checks in a worker thread (`checker-worker.ts`), seen from the
 * agent's main thread: the L4 role hands over each service's targets and
 * reads states from a mirror that the worker keeps current.
 *
 * Why a thread: at 10,000 services × 5 servers every 2 s the probes are
 * 25,000 TCP connects a second — a whole core of event-loop time. In the
 * role's thread every change to apply would queue behind them; here the sync
 * loop only sees state changes.
 *
 * - The thread starts with the first checked service; an agent without
 *   health checks runs none.
 * - Targets go over in batches (one message per tick), states come back only
 *   when they change.
 * - If the thread dies, it is started again with every current target; until
 *   it reports, what the mirror holds stays (a broken checker must not pull
 *   servers out of the pick).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { CheckerStats, HealthChecks, ServerHealthView } from './checker.js';
import { inPick, type HealthState } from './state.js';
import type { CheckTarget } from './targets.js';

export interface CheckerWorkerData {
  concurrency: number;
  netns?: string;
}

/** `[serviceId, serverId, state, since, lastError]`; state null: the target was removed. */
export type Update = [string, string, HealthState | null, number, string?];

export type ToWorker = { t: 'set'; services: [string, CheckTarget[]][] } | { t: 'stop' };
export type FromWorker =
  | { t: 'updates'; items: Update[]; stats: CheckerStats['checks']; delayMs: number; probes: number }
  | { t: 'log'; level: 'warn'; obj: Record<string, unknown>; msg: string }
  | { t: 'stopped' };

export interface ThreadedOptions extends CheckerWorkerData {
  onChange: (serviceId: string, pickChanged: boolean) => void;
  log: { warn(obj: object, msg: string): void; error(obj: object, msg: string): void };
}

/**
 * Starts the worker: the built `checker-worker.js`, or — running from
 * TypeScript sources (tests, benches) — the `.ts` through tsx's loader,
 * registered inside the new thread (loader flags in `execArgv` do not reach a
 * worker's own imports on Node 20).
 */
function newWorker(workerData: CheckerWorkerData): Worker {
  if (!import.meta.url.endsWith('.ts')) return new Worker(new URL('./checker-worker.js', import.meta.url), { workerData });
  const entry = new URL('./checker-worker.ts', import.meta.url).href;
  const tsx = tsxEsmApi();
  const boot = `import(${JSON.stringify(tsx)}).then(({ register }) => { register(); return import(${JSON.stringify(entry)}); })`;
  return new Worker(boot, { eval: true, workerData });
}

/** tsx's ESM API module as a file URL, as its package's exports name it for `import`. */
function tsxEsmApi(): string {
  const pkgPath = createRequire(import.meta.url).resolve('tsx/package.json');
  const pkg = JSON.parse(readFileSync(pkgPath, 'utf8')) as { exports: Record<string, { import: { default: string } }> };
  return pathToFileURL(join(dirname(pkgPath), pkg.exports['./esm/api'].import.default)).href;
}

/** After the thread died, wait this long before starting it again (doubling up to the max). */
const RESTART_MS = 1000;
const RESTART_MAX_MS = 30_000;

const STOP_TIMEOUT_MS = 2000;

export class ThreadedHealthChecker implements HealthChecks {
  private worker?: Worker;
  /** What the worker should be checking: serviceId → targets (to restart it with). */
  private readonly targets = new Map<string, CheckTarget[]>();
  private targetCount = 0;
  private pending = new Map<string, CheckTarget[]>();
  private posting = false;
  private stopping = false;
  private restartMs = RESTART_MS;
  private restartTimer?: NodeJS.Timeout;
  private readonly views = new Map<string, ServerHealthView>();
  private readonly counts = { healthy: 0, unhealthy: 0, unknown: 0 };
  readonly stats: CheckerStats['checks'] = { ok: 0, failed: 0, inconclusive: 0 };
  delayMs = 0;
  /** Distinct probes, as the worker last reported. */
  probes = 0;

  constructor(private readonly opts: ThreadedOptions) {}

  get size(): number {
    return this.targetCount;
  }

  setService(serviceId: string, targets: CheckTarget[]): void {
    const had = this.targets.get(serviceId);
    if (!had && targets.length === 0) return;
    this.targetCount += targets.length - (had?.length ?? 0);
    if (targets.length > 0) this.targets.set(serviceId, targets);
    else this.targets.delete(serviceId);
    this.pending.set(serviceId, targets);
    if (this.posting || this.stopping) return;
    this.posting = true;
    setImmediate(() => this.post());
  }

  state(serviceId: string, serverId: string): HealthState | undefined {
    return this.views.get(`${serviceId}/${serverId}`)?.state;
  }

  summary(): { counts: Omit<CheckerStats, 'checks'>; notHealthy: ServerHealthView[] } {
    const notHealthy: ServerHealthView[] = [];
    for (const v of this.views.values()) if (v.state !== 'healthy') notHealthy.push({ ...v });
    return { counts: { ...this.counts }, notHealthy };
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    const w = this.worker;
    this.worker = undefined;
    if (!w) return;
    const exited = new Promise<void>((resolve) => w.once('exit', () => resolve()));
    w.postMessage({ t: 'stop' } satisfies ToWorker);
    const timer = setTimeout(() => void w.terminate(), STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
  }

  private post(): void {
    this.posting = false;
    if (this.stopping || this.pending.size === 0) return;
    const services = [...this.pending];
    this.pending = new Map();
    if (!this.worker) {
      // Started now with everything current, which includes this batch (or, while a restart waits, then).
      if (!this.restartTimer) this.start();
      return;
    }
    this.worker.postMessage({ t: 'set', services } satisfies ToWorker);
  }

  private start(): void {
    const w = newWorker({ concurrency: this.opts.concurrency, ...(this.opts.netns ? { netns: this.opts.netns } : {}) });
    this.worker = w;
    w.on('message', (m: FromWorker) => this.onMessage(m));
    w.on('error', (err) => this.opts.log.error({ err: err.message }, 'health checker thread failed'));
    w.on('exit', (code) => {
      if (this.worker !== w) return;
      this.worker = undefined;
      if (this.stopping) return;
      this.opts.log.warn({ code, restartInMs: this.restartMs }, 'health checker thread exited; starting it again');
      this.restartTimer = setTimeout(() => {
        this.restartTimer = undefined;
        if (!this.stopping) this.start();
      }, this.restartMs);
      this.restartTimer.unref();
      this.restartMs = Math.min(RESTART_MAX_MS, this.restartMs * 2);
    });
    w.postMessage({ t: 'set', services: [...this.targets] } satisfies ToWorker);
  }

  private onMessage(m: FromWorker): void {
    if (m.t === 'log') return this.opts.log.warn(m.obj, m.msg);
    if (m.t !== 'updates') return;
    // It works: a later crash starts over from the shortest wait.
    this.restartMs = RESTART_MS;
    Object.assign(this.stats, m.stats);
    this.delayMs = m.delayMs;
    this.probes = m.probes;
    for (const [serviceId, serverId, state, since, lastError] of m.items) {
      const key = `${serviceId}/${serverId}`;
      const before = this.views.get(key);
      if (before) this.counts[before.state]--;
      if (state === null) {
        this.views.delete(key);
        continue;
      }
      this.counts[state]++;
      this.views.set(key, { serviceId, serverId, state, since, ...(lastError ? { lastError } : {}) });
      const was = before?.state ?? 'unknown';
      if (was !== state) this.opts.onChange(serviceId, inPick(was) !== inPick(state));
    }
  }
}
