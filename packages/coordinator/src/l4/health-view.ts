/**
 * How every live host that applies a checked service sees each of its
 * servers — pure, from the hosts' reported status.
 *
 * A host lists only the servers it does not find healthy, so a server it
 * does not list is up — provided the host has applied the service's
 * revision (before that it has not started checking) and its list was not
 * cut short. Anything else is unknown, never guessed up.
 */
import { serviceAppliesTo, type Host, type Service, type ServerHealthSummary } from '@switchyard/shared';

export function serverHealthSummaries(service: Service, modRevision: number, hosts: Host[]): Map<string, ServerHealthSummary> {
  const out = new Map<string, ServerHealthSummary>();
  if (!service.health || service.health.type === 'none') return out;
  const applying = hosts.filter((h) => h.alive && serviceAppliesTo(service, h.id));
  for (const server of service.servers) {
    let up = 0;
    let down = 0;
    for (const h of applying) {
      const listed = h.health?.servers.find((s) => s.serviceId === service.id && s.serverId === server.id);
      if (listed?.state === 'unhealthy') down++;
      else if (!listed && h.health && h.health.truncated === 0 && h.appliedRevision >= modRevision) up++;
    }
    const n = applying.length;
    out.set(server.id, { up, down, unknown: n - up - down, hosts: n, summary: `${up}/${n} host${n === 1 ? '' : 's'} see it up` });
  }
  return out;
}
