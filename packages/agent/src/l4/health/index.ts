/**
 * Health checks of real servers, decided locally on each host: probes
 * (`probe.ts`, `netns-prober.ts`), one state machine per server (`state.ts`),
 * the scheduler (`checker.ts`) and the pure overlay that turns states into
 * effective weights (`overlay.ts`). `HostHealthView` packs what the host
 * reports in its status.
 */
import type { HostHealth, ServerHealth } from '@switchyard/shared';
import type { Logger } from 'pino';
import type { HealthChecker } from './checker.js';
import { NetnsProber } from './netns-prober.js';
import { LocalProber, type Prober } from './probe.js';

export { HealthChecker, targetFor } from './checker.js';
export { effectiveService } from './overlay.js';
export { LocalProber, runProbe, type Prober, type ProbeSpec, type ProbeResult } from './probe.js';
export { NetnsProber } from './netns-prober.js';
export * from './state.js';

/** Probes leave from the host's network: the agent's own, or `--netns`'s through a worker. */
export function proberFor(netns: string | undefined, log: Logger): Prober {
  return netns ? new NetnsProber(netns, log) : new LocalProber();
}

/** At most this many not-healthy servers are listed in the status (the counts cover all). */
export const MAX_LISTED = 500;

export function hostHealth(checker: HealthChecker): HostHealth {
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
