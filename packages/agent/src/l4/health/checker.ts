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
 * - Servers that several services check the same way (same address, port,
 *   probe and rule: a pool of backends behind many VIPs is the common case)
 *   share ONE probe and one state: 10,000 services over 1,000 distinct
 *   backends cost 1,000 probes per interval, not 50,000.
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

/** One (service, server) pair that is checked: it follows a shared probe. */
interface Target {
  serviceId: string;
  serverId: string;
  probe: Probe;
}

/** One check of one endpoint, shared by every target that checks it the same way. */
interface Probe {
  key: string;
  spec: ProbeSpec;
  rule: HealthRule;
  health: TargetHealth;
  /** Target keys following this probe. */
  targets: Set<string>;
  /** Bumped when the probe is dropped: stale heap entries and results are ignored. */
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

/** Targets with equal keys share one probe: everything that decides what is probed, how often, and how results count. */
const probeKey = (spec: ProbeSpec, rule: HealthRule) =>
  `${spec.type} ${spec.host} ${spec.port} ${spec.path ?? ''} ${spec.expect ?? ''} ${spec.timeoutMs} ${rule.intervalMs} ${rule.rise} ${rule.fall}`;

/** What the L4 role needs of health checks, in this thread or in a worker. */
export interface HealthChecks {
  /** The servers to check for this service now (none: it is gone, unchecked, or not applied here). */
  setService(serviceId: string, targets: CheckTarget[]): void;
  state(serviceId: string, serverId: string): HealthState | undefined;
  summary(): { counts: Omit<CheckerStats, 'checks'>; notHealthy: ServerHealthView[] };
  /** Servers checked (service, server pairs). */
  readonly size: number;
  /** Distinct probes those need (pairs that check the same endpoint the same way share one). */
  readonly probes: number;
  readonly stats: CheckerStats['checks'];
  /** How late checks start behind their schedule (ms; the worst in the last second): above 0 for long, the checker cannot keep up. */
  readonly delayMs: number;
  stop(): Promise<void>;
}

export class HealthChecker implements HealthChecks {
  private readonly targets = new Map<string, Target>();
  private readonly probesByKey = new Map<string, Probe>();
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
      const pkey = probeKey(t.spec, t.rule);
      const cur = this.targets.get(key);
      if (cur?.probe.key === pkey) continue;
      let probe = this.probesByKey.get(pkey);
      if (!probe) {
        probe = {
          key: pkey,
          spec: t.spec,
          rule: t.rule,
          // A changed rule keeps what was learnt about the server if it still probes the same thing.
          health: cur && sameSpec(cur.probe.spec, t.spec) ? cur.probe.health : initialHealth(this.now()),
          targets: new Set(),
          gen: 0,
          running: false,
        };
        this.probesByKey.set(pkey, probe);
        this.schedule(probe, this.now() + Math.floor(this.random() * t.rule.intervalMs));
      }
      if (cur) this.detach(key, cur);
      probe.targets.add(key);
      this.targets.set(key, { serviceId, serverId: t.serverId, probe });
      this.opts.onUpdate?.(serviceId, t.serverId, probe.health);
    }
    for (const key of old) {
      if (keep.has(key)) continue;
      const t = this.targets.get(key);
      if (!t) continue;
      this.detach(key, t);
      this.targets.delete(key);
      this.opts.onUpdate?.(t.serviceId, t.serverId, undefined);
    }
    if (keep.size > 0) this.byService.set(serviceId, keep);
    else this.byService.delete(serviceId);
  }

  /** The target stops following its probe; a probe nobody follows is dropped. */
  private detach(key: string, t: Target): void {
    t.probe.targets.delete(key);
    if (t.probe.targets.size > 0) return;
    t.probe.gen++;
    this.probesByKey.delete(t.probe.key);
  }

  state(serviceId: string, serverId: string): HealthState | undefined {
    return this.targets.get(targetKey(serviceId, serverId))?.probe.health.state;
  }

  summary(): { counts: Omit<CheckerStats, 'checks'>; notHealthy: ServerHealthView[] } {
    const counts = { healthy: 0, unhealthy: 0, unknown: 0 };
    const notHealthy: ServerHealthView[] = [];
    for (const t of this.targets.values()) {
      const h = t.probe.health;
      counts[h.state]++;
      if (h.state !== 'healthy') {
        notHealthy.push({ serviceId: t.serviceId, serverId: t.serverId, state: h.state, since: h.since, ...(h.lastError ? { lastError: h.lastError } : {}) });
      }
    }
    return { counts, notHealthy };
  }

  get size(): number {
    return this.targets.size;
  }

  get probes(): number {
    return this.probesByKey.size;
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

  private schedule(p: Probe, at: number): void {
    this.push({ at, key: p.key, gen: p.gen });
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
      const p = this.probesByKey.get(due.key);
      if (!p || p.gen !== due.gen || p.running) continue;
      this.rollLateness(now);
      this.late.current = Math.max(this.late.current, now - due.at);
      this.start(p);
    }
    this.arm();
  }

  private start(p: Probe): void {
    const gen = p.gen;
    const startedAt = this.now();
    p.running = true;
    this.inFlight++;
    void this.opts.prober.probe(p.spec).then((result) => {
      this.inFlight--;
      p.running = false;
      if (this.stopped) return;
      if (this.probesByKey.get(p.key) === p && p.gen === gen) {
        if (result === undefined) this.stats.inconclusive++;
        else {
          this.stats[result.ok ? 'ok' : 'failed']++;
          const before = p.health.state;
          p.health = observe(p.health, result, this.now(), p.rule);
          const changed = p.health.state !== before;
          for (const key of p.targets) {
            const t = this.targets.get(key)!;
            this.opts.onUpdate?.(t.serviceId, t.serverId, p.health);
            if (changed) this.opts.onChange(t.serviceId, inPick(before) !== inPick(p.health.state));
          }
        }
        // Keep the probe's phase; a little jitter keeps phases from lining up again.
        const jitter = (this.random() - 0.5) * 0.1 * p.rule.intervalMs;
        this.schedule(p, Math.max(this.now(), startedAt + p.rule.intervalMs + jitter));
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
