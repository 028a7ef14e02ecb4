/**
 * What to check for a service: one probe and rule per real server. Pure;
 * computed where the desired state lives (the sync loop's thread), so the
 * checker — which may run in a worker thread — needs nothing of the schemas.
 */
import { parseDuration, type Service } from '@switchyard/shared';
import type { HealthRule } from './state.js';
import type { ProbeSpec } from './probe.js';

export interface CheckTarget {
  serverId: string;
  spec: ProbeSpec;
  rule: HealthRule;
}

/** The probe and rule for one server of a checked service, or undefined when it is not probed. */
export function targetFor(service: Service, server: Service['servers'][number]): Omit<CheckTarget, 'serverId'> | undefined {
  const h = service.health;
  if (!h || h.type === 'none') return undefined;
  const intervalMs = parseDuration(h.interval);
  return {
    spec: {
      type: h.type,
      host: server.host,
      port: h.port ?? server.port,
      ...(h.type === 'http' ? { path: h.path ?? '/healthz', expect: h.expect ?? 200 } : {}),
      timeoutMs: parseDuration(h.timeout),
    },
    rule: { rise: h.rise, fall: h.fall, intervalMs },
  };
}

/**
 * Every server of `service` to probe (none when it is gone or not checked).
 * Servers that `/provide?lb=` providers hold (`held`) are healthy while
 * connected: they are never probed.
 */
export function targetsOf(service: Service | undefined, held: (serverId: string) => boolean): CheckTarget[] {
  const out: CheckTarget[] = [];
  for (const server of service?.servers ?? []) {
    if (held(server.id)) continue;
    const t = targetFor(service as Service, server);
    if (t) out.push({ serverId: server.id, ...t });
  }
  return out;
}
