/**
 * What a service looks like to the dataplane once this host's health checks
 * are taken into account — pure, so both dataplanes get it the same way.
 *
 * An unhealthy server gets effective weight 0 (IPVS: existing connections
 * drain; nftables: out of the pick). Its configured weight in etcd is never
 * touched. When every server that would take traffic is unhealthy, all are
 * kept in: a dead pool serves nothing either way, and a broken checker (a
 * firewall in front of the probes, a wrong path) must not black-hole a
 * healthy pool.
 */
import type { Service } from '@switchyard/shared';
import { inPick, type HealthState } from './state.js';

export interface Effective {
  service: Service;
  /** Every server that would take traffic fails its checks (all were kept in). */
  allDown: boolean;
}

export function effectiveService(service: Service, stateOf: (serverId: string) => HealthState | undefined): Effective {
  if (!service.health || service.health.type === 'none') return { service, allDown: false };
  const serving = service.servers.filter((s) => s.weight > 0);
  const down = new Set(serving.filter((s) => !inPick(stateOf(s.id) ?? 'unknown')).map((s) => s.id));
  if (down.size === 0) return { service, allDown: false };
  if (down.size === serving.length) return { service, allDown: true };
  return { service: { ...service, servers: service.servers.map((s) => (down.has(s.id) ? { ...s, weight: 0 } : s)) }, allDown: false };
}
