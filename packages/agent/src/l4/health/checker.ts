/**
 * Runs the health checks of every real server of the services this host
 * applies, and keeps each one's state (`state.ts`).
 *
 * - One timer and a min-heap of due times, so 50,000 targets cost one timer,
 *   not 50,000. Each target's first check lands at a random point of its
 *   interval and later ones keep that phase (plus a little jitter), so
 *   10,000 services × 5 servers do not fire at once.
 * - At most `concurrency` probes in flight; a due check waits for a slot.
 * - A probe whose prober failed (no verdict) counts neither way.
 *
 * `onChange(serviceId, pickChanged)` is called when a server of that service
 * changes state; `pickChanged` when it entered or left the pick. `onUpdate`
 * sees every target's health after each change to it (added, probed,
 * removed), for a checker that runs in a worker thread (`threaded.ts`).
 *
 * No import here may need more than Node itself: this file is loaded into the
 * checker's worker thread.
 */
import { inPick, initialHealth, observe, type HealthRule, type HealthState, type TargetHealth } from './state.js';
import type { Prober, ProbeSpec } from './probe.js';
import type { CheckTarget } from './targets.js';

export interface HealthCheckerOptions {
  prober: Prober;
  /** Probes in flight at most. */
  concurrency: number;
  onChange: (serviceId: string, pickChanged: boolean) => void;
  /** Every target's health after it was added or probed; `health` undefined when it was removed. */
  onUpdate?: (serviceId: string, serverId: string, health: TargetHealth | undefined) => void;
  now?: () => number;
  random?: () => number;
}

interface Target {
  key: string;
  serviceId: string;
  serverId: string;
  spec: ProbeSpec;
  rule: HealthRule;
  health: TargetHealth;
  /** Bumped when the target is replaced or removed: stale heap entries and results are ignored. */
  gen: number;
  running: boolean;
}

interface Due {
  at: number;
  key: string;
  gen: number;
}

export interface ServerHealthView {
  serviceId: string;
  serverId: string;
  state: HealthState;
  since: number;
  lastError?: string;
}

export interface CheckerStats {
  checks: { ok: number; failed: number; inconclusive: number };
  healthy: number;
  unhealthy: number;
  unknown: number;
}

const targetKey = (serviceId: string, serverId: string) => `${serviceId}/${serverId}`;

const sameSpec = (a: ProbeSpec, b: ProbeSpec) =>
  a.type === b.type && a.host === b.host && a.port === b.port && a.path === b.path && a.expect === b.expect && a.timeoutMs === b.timeoutMs;

/** What the L4 role needs of health checks, in this thread or in a worker. */
export interface HealthChecks {
  /** The servers to check for this service now (none: it is gone, unchecked, or not applied here). */
  setService(serviceId: string, targets: CheckTarget[]): void;
  state(serviceId: string, serverId: string): HealthState | undefined;
  summary(): { counts: Omit<CheckerStats, 'checks'>; notHealthy: ServerHealthView[] };
  /** Servers checked. */
  readonly size: number;
  readonly stats: CheckerStats['checks'];
  /** How late checks start behind their schedule (ms; the worst in the last second): above 0 for long, the checker cannot keep up. */
  readonly delayMs: number;
  stop(): Promise<void>;
}

export class HealthChecker implements HealthChecks {
  private readonly targets = new Map<string, Target>();
  /** Target keys per service, to replace a service's targets in O(its servers). */
  private readonly byService = new Map<string, Set<string>>();
  private readonly heap: Due[] = [];
  private timer?: NodeJS.Timeout;
  private timerAt = Number.POSITIVE_INFINITY;
  private inFlight = 0;
  private stopped = false;
  private readonly now: () => number;
  private readonly random: () => number;
  readonly stats: CheckerStats['checks'] = { ok: 0, failed: 0, inconclusive: 0 };
  /** Worst lateness in the current and the last whole second. */
  private late = { windowStart: 0, current: 0, last: 0 };

  constructor(private readonly opts: HealthCheckerOptions) {
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
  }

  setService(serviceId: string, targets: CheckTarget[]): void {
    const old = this.byService.get(serviceId) ?? new Set<string>();
    const keep = new Set<string>();
    for (const t of targets) {
      const key = targetKey(serviceId, t.serverId);
      keep.add(key);
      const cur = this.targets.get(key);
      if (cur && sameSpec(cur.spec, t.spec) && cur.rule.intervalMs === t.rule.intervalMs) {
        cur.rule = t.rule;
        continue;
      }
      const target: Target = {
        key,
        serviceId,
        serverId: t.serverId,
        spec: t.spec,
        rule: t.rule,
        // A changed probe keeps what was learnt about the server only if it still probes the same thing.
        health: cur && sameSpec(cur.spec, t.spec) ? cur.health : initialHealth(this.now()),
        gen: (cur?.gen ?? 0) + 1,
        running: false,
      };
      this.targets.set(key, target);
      this.opts.onUpdate?.(serviceId, t.serverId, target.health);
      this.schedule(target, this.now() + Math.floor(this.random() * t.rule.intervalMs));
    }
    for (const key of old) {
      if (keep.has(key)) continue;
      const t = this.targets.get(key);
      if (!t) continue;
      t.gen++;
      this.targets.delete(key);
      this.opts.onUpdate?.(t.serviceId, t.serverId, undefined);
    }
    if (keep.size > 0) this.byService.set(serviceId, keep);
    else this.byService.delete(serviceId);
  }

  state(serviceId: string, serverId: string): HealthState | undefined {
    return this.targets.get(targetKey(serviceId, serverId))?.health.state;
  }

  summary(): { counts: Omit<CheckerStats, 'checks'>; notHealthy: ServerHealthView[] } {
    const counts = { healthy: 0, unhealthy: 0, unknown: 0 };
    const notHealthy: ServerHealthView[] = [];
    for (const t of this.targets.values()) {
      counts[t.health.state]++;
      if (t.health.state !== 'healthy') {
        notHealthy.push({
          serviceId: t.serviceId,
          serverId: t.serverId,
          state: t.health.state,
          since: t.health.since,
          ...(t.health.lastError ? { lastError: t.health.lastError } : {}),
        });
      }
    }
    return { counts, notHealthy };
  }

  get size(): number {
    return this.targets.size;
  }

  get delayMs(): number {
    this.rollLateness(this.now());
    return this.late.last;
  }

  private rollLateness(now: number): void {
    if (now - this.late.windowStart < 1000) return;
    // A whole second (or more) passed: what was current is the last window, unless nothing ran since.
    this.late = { windowStart: now, current: 0, last: now - this.late.windowStart < 2000 ? this.late.current : 0 };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.opts.prober.close();
  }

  // ---- scheduling ----

  private schedule(t: Target, at: number): void {
    this.push({ at, key: t.key, gen: t.gen });
    this.arm();
  }

  private arm(): void {
    if (this.stopped || this.heap.length === 0 || this.inFlight >= this.opts.concurrency) return;
    const at = this.heap[0].at;
    if (this.timer && at >= this.timerAt) return;
    clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAt = Number.POSITIVE_INFINITY;
      this.runDue();
    }, Math.max(0, at - this.now()));
  }

  private runDue(): void {
    const now = this.now();
    while (!this.stopped && this.heap.length > 0 && this.heap[0].at <= now && this.inFlight < this.opts.concurrency) {
      const due = this.pop()!;
      const t = this.targets.get(due.key);
      if (!t || t.gen !== due.gen || t.running) continue;
      this.rollLateness(now);
      this.late.current = Math.max(this.late.current, now - due.at);
      this.start(t);
    }
    this.arm();
  }

  private start(t: Target): void {
    const gen = t.gen;
    const startedAt = this.now();
    t.running = true;
    this.inFlight++;
    void this.opts.prober.probe(t.spec).then((result) => {
      this.inFlight--;
      t.running = false;
      if (this.stopped) return;
      const current = this.targets.get(t.key);
      if (current === t && t.gen === gen) {
        if (result === undefined) this.stats.inconclusive++;
        else {
          this.stats[result.ok ? 'ok' : 'failed']++;
          const before = t.health.state;
          t.health = observe(t.health, result, this.now(), t.rule);
          this.opts.onUpdate?.(t.serviceId, t.serverId, t.health);
          if (t.health.state !== before) this.opts.onChange(t.serviceId, inPick(before) !== inPick(t.health.state));
        }
        // Keep the target's phase; a little jitter keeps phases from lining up again.
        const jitter = (this.random() - 0.5) * 0.1 * t.rule.intervalMs;
        this.schedule(t, Math.max(this.now(), startedAt + t.rule.intervalMs + jitter));
      }
      this.runDue();
    });
  }

  // ---- a binary min-heap on `at` ----

  private push(d: Due): void {
    const h = this.heap;
    h.push(d);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p].at <= h[i].at) break;
      [h[p], h[i]] = [h[i], h[p]];
      i = p;
    }
  }

  private pop(): Due | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && h[l].at < h[m].at) m = l;
        if (r < h.length && h[r].at < h[m].at) m = r;
        if (m === i) break;
        [h[m], h[i]] = [h[i], h[m]];
        i = m;
      }
    }
    return top;
  }
}
