/**
 * What the ipvs dataplane works with: virtual services and their real
 * servers ("destinations") in exactly the form `ipvsadm -Sn` prints them, so
 * desired state, observed state and golden tests compare field by field.
 */
import { ipFamily, maskOfPrefix, netmaskBits, type Forwarder, type Protocol, type Scheduler, type Service, type ServiceReport } from '@switchyard/shared';

export interface IpvsServiceSpec {
  protocol: Protocol;
  /** Canonical IP text. */
  address: string;
  port: number;
  scheduler: Scheduler;
  /** Persistence timeout in seconds; 0 = not persistent. */
  persistence: number;
  /**
   * Persistence granularity as ipvsadm prints it: a dotted mask for IPv4, a
   * prefix length for IPv6; '' for a single client address (or no persistence).
   */
  netmask: string;
}

export interface IpvsDest {
  address: string;
  port: number;
  forwarder: Forwarder;
  weight: number;
  upperThreshold: number;
  lowerThreshold: number;
}

export interface IpvsVirtual extends IpvsServiceSpec {
  dests: IpvsDest[];
}

/** `ipvsadm`'s notation of an endpoint: `1.2.3.4:80` or `[2001:db8::1]:80`. */
export function endpoint(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/** Identity of a virtual service: `tcp 10.0.0.1:80`. */
export function virtualKey(s: Pick<IpvsServiceSpec, 'protocol' | 'address' | 'port'>): string {
  return `${s.protocol} ${endpoint(s.address, s.port)}`;
}

/** Identity of a destination within the whole table: `tcp 10.0.0.1:80 -> 10.1.0.5:8080`. */
export function destKey(v: Pick<IpvsServiceSpec, 'protocol' | 'address' | 'port'>, d: Pick<IpvsDest, 'address' | 'port'>): string {
  return `${virtualKey(v)} -> ${endpoint(d.address, d.port)}`;
}

/**
 * The netmask as `ipvsadm -Sn` prints it for this service, or an error text.
 * ipvsadm prints `-M` only for persistent services and only when it is not a
 * single address (/32, /128).
 */
export function canonicalNetmask(family: 4 | 6, persistence: number, netmask: string): { netmask: string } | { error: string } {
  if (persistence === 0 || netmask === '') return { netmask: '' };
  const bits = netmaskBits(netmask) ?? 0;
  if (family === 4) {
    if (bits > 32) return { error: `netmask /${bits} is longer than an IPv4 address` };
    return { netmask: bits === 32 ? '' : maskOfPrefix(4, bits) };
  }
  return { netmask: bits === 128 ? '' : String(bits) };
}

/**
 * Desired IPVS state of a set of services, with a report for whatever the
 * kernel would refuse or silently change:
 *  - gatewaying (g) and tunnelling (i) keep the service's port: ipvsadm
 *    overwrites the real server's port with it, so two such servers on one
 *    address would collide (the second is dropped with an error);
 *  - the kernel rejects a lower threshold above a non-zero upper threshold
 *    (ip_vs_ctl.c, -ERANGE): the lower threshold is dropped with a warning.
 */
export function desiredVirtuals(services: Service[]): { virtuals: IpvsVirtual[]; reports: ServiceReport[] } {
  const reports: ServiceReport[] = [];
  const virtuals: IpvsVirtual[] = [];
  for (const s of services) {
    const family = ipFamily(s.host);
    const mask = canonicalNetmask(family, s.persistence, s.netmask);
    if ('error' in mask) reports.push({ serviceId: s.id, level: 'warning', message: `${mask.error}; persistence applies per client address` });
    const dests: IpvsDest[] = [];
    const seen = new Set<string>();
    for (const srv of s.servers) {
      const port = srv.forwarder === 'm' ? srv.port : s.port;
      if (port !== srv.port) {
        reports.push({ serviceId: s.id, level: 'warning', message: `server ${srv.id}: forwarder ${srv.forwarder} keeps the service port ${s.port}; port ${srv.port} is ignored` });
      }
      const ep = endpoint(srv.host, port);
      if (seen.has(ep)) {
        reports.push({ serviceId: s.id, level: 'error', message: `server ${srv.id}: ${ep} is already a real server of this service` });
        continue;
      }
      seen.add(ep);
      let lower = srv.lower_threshold;
      // The kernel refuses l_threshold > u_threshold even when the upper one is
      // 0 ("no limit"): `ipvsadm -a … -y 50` alone fails with ERANGE.
      if (lower > srv.upper_threshold) {
        reports.push({ serviceId: s.id, level: 'warning', message: `server ${srv.id}: lower threshold ${lower} is above the upper threshold ${srv.upper_threshold}; ignored` });
        lower = 0;
      }
      dests.push({ address: srv.host, port, forwarder: srv.forwarder, weight: srv.weight, upperThreshold: srv.upper_threshold, lowerThreshold: lower });
    }
    virtuals.push({
      protocol: s.type,
      address: s.host,
      port: s.port,
      scheduler: s.scheduler,
      persistence: s.persistence,
      netmask: 'error' in mask ? '' : mask.netmask,
      dests,
    });
  }
  return { virtuals, reports };
}
