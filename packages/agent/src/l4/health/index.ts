/**
 * Health checks of real servers, decided locally on each host: what to check
 * (`targets.ts`), probes (`probe.ts`, `netns-prober.ts`), one state machine
 * per server (`state.ts`), the scheduler (`checker.ts`) — run in a worker
 * thread by `threaded.ts` — and the pure overlay that turns states into
 * effective weights (`overlay.ts`). `hostHealth` packs what the host reports
 * in its status.
 */
import type { HostHealth, ServerHealth } from '@switchyard/shared';
import type { Logger } from 'pino';
import { HealthChecker, type HealthChecks } from './checker.js';
import type { Prober } from './probe.js';
import { ThreadedHealthChecker } from './threaded.js';

export { HealthChecker, type HealthChecks } from './checker.js';
export { targetFor, targetsOf, type CheckTarget } from './targets.js';
export { ThreadedHealthChecker } from './threaded.js';
export { effectiveService } from './overlay.js';
export { LocalProber, runProbe, type Prober, type ProbeSpec, type ProbeResult } from './probe.js';
export { NetnsProber } from './netns-prober.js';
export * from './state.js';

export interface HealthChecksOptions {
  concurrency: number;
  onChange: (serviceId: string, pickChanged: boolean) => void;
}

/** Makes the L4 role's health checks once it knows how to report changes. */
export type HealthChecksFactory = (opts: HealthChecksOptions) => HealthChecks;

/**
 * The agent's checks: in a worker thread, probing from the host's network —
 * the agent's own, or `--netns`'s through a probe process.
 */
export function threadedHealthChecks(netns: string | undefined, log: Logger): HealthChecksFactory {
  return (opts) => new ThreadedHealthChecker({ ...opts, ...(netns ? { netns } : {}), log });
}

/** Checks in the caller's own thread with a given prober (tests with a fake, the VM guest). */
export function inThreadHealthChecks(prober: Prober): HealthChecksFactory {
  return (opts) => new HealthChecker({ ...opts, prober });
}

/** At most this many not-healthy servers are listed in the status (the counts cover all). */
export const MAX_LISTED = 500;

export function hostHealth(checker: HealthChecks): HostHealth {
  const { counts, notHealthy } = checker.summary();
  notHealthy.sort((a, b) => (a.serviceId === b.serviceId ? a.serverId.localeCompare(b.serverId) : a.serviceId.localeCompare(b.serviceId)));
  const listed: ServerHealth[] = notHealthy.slice(0, MAX_LISTED).map((v) => ({
    serviceId: v.serviceId,
    serverId: v.serverId,
    state: v.state,
    since: new Date(v.since).toISOString(),
    ...(v.lastError ? { lastError: v.lastError } : {}),
  }));
  return { ...counts, servers: listed, truncated: notHealthy.length - listed.length };
}
