/**
 * One real server's health as one agent sees it: a pure state machine fed
 * with probe results (no clock, no I/O — the caller passes `now`).
 *
 *   unknown ──ok──────────────► healthy        (it was in the pick already)
 *   unknown ──fall failures───► unhealthy
 *   healthy ──fall failures───► unhealthy      (out of the pick on this host)
 *   unhealthy ──rise successes► healthy
 *
 * A change of pick (in ↔ out) is rate-limited to one per `rise × interval`,
 * so a flapping server does not churn the dataplane: a transition that is due
 * earlier waits until the limit allows it and the run still holds.
 */
export type HealthState = 'healthy' | 'unhealthy' | 'unknown';

export interface HealthRule {
  rise: number;
  fall: number;
  intervalMs: number;
}

export interface TargetHealth {
  state: HealthState;
  /** When `state` began (ms since the epoch). */
  since: number;
  /** Consecutive successes / failures up to now. */
  okRun: number;
  failRun: number;
  lastError?: string;
  /** When the pick last changed (in ↔ out), for the rate limit. */
  lastFlip: number;
}

export function initialHealth(now: number): TargetHealth {
  return { state: 'unknown', since: now, okRun: 0, failRun: 0, lastFlip: Number.NEGATIVE_INFINITY };
}

/** Is the server in the pick? Unknown counts as in: a checker that has not decided yet must not black-hole anything. */
export const inPick = (state: HealthState): boolean => state !== 'unhealthy';

/**
 * The health after one probe result. Returns the same object when nothing
 * but the runs changed (callers compare `state` to see a transition).
 */
export function observe(h: TargetHealth, result: { ok: true } | { ok: false; error: string }, now: number, rule: HealthRule): TargetHealth {
  const flipAllowed = now - h.lastFlip >= rule.rise * rule.intervalMs;
  if (result.ok) {
    const okRun = h.okRun + 1;
    if (h.state === 'unknown') return { ...h, state: 'healthy', since: now, okRun, failRun: 0 };
    if (h.state === 'unhealthy' && okRun >= rule.rise && flipAllowed) {
      return { state: 'healthy', since: now, okRun, failRun: 0, lastFlip: now, ...(h.lastError ? { lastError: h.lastError } : {}) };
    }
    h.okRun = okRun;
    h.failRun = 0;
    return h;
  }
  const failRun = h.failRun + 1;
  if (h.state !== 'unhealthy' && failRun >= rule.fall && flipAllowed) {
    return { state: 'unhealthy', since: now, okRun: 0, failRun, lastError: result.error, lastFlip: now };
  }
  h.failRun = failRun;
  h.okRun = 0;
  h.lastError = result.error;
  return h;
}
