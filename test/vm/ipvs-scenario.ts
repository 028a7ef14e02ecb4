/**
 * What the real-IPVS VM test applies, and what the kernel must show for it.
 *
 * Shared by the guest script (which applies the phases with the agent's ipvs
 * dataplane and reports what the kernel says) and the vitest file (which
 * asserts). The expected `ipvsadm -Sn` text is computed here independently
 * of the dataplane's own renderer, from ipvsadm's documented behaviour, so the
 * test does not grade the agent with its own code:
 *  - `-g`/`-i` real servers take the service's port (ip_vs_ctl.c copies it);
 *  - `-M` is printed only for persistent services and not for /32 or /128;
 *  - `-w` is always printed; `-x`/`-y` never are (ipvsadm 1.31 `-S` omits
 *    thresholds — they are read from `ipvsadm -Ln --thresholds` instead);
 *  - a tunnelling (`-i`) real server is printed with `--tun-type ipip`
 *    (ipvsadm 1.31 on kernels ≥ 5.3, which report the tunnel type);
 *  - the kernel refuses a lower threshold above the upper one, including
 *    "lower set, upper 0" (ip_vs_add_dest: l_threshold > u_threshold →
 *    -ERANGE), so such a lower threshold must be dropped, not sent.
 */
import type { z } from 'zod';
import type { ServiceInput } from '../../packages/shared/src/schemas/l4.js';

export type ServiceSpec = z.input<typeof ServiceInput>;

/** The agent's service-address device (the dataplane's default). */
export const DEVICE = 'sy-ipvs0';

/** A service the agent does not own: created with raw ipvsadm before the agent runs; it must survive every phase. */
export const FOREIGN_RULES = ['-A -t 10.250.0.1:80 -s rr', '-a -t 10.250.0.1:80 -r 10.250.0.2:80 -m -w 1'];

/** Real traffic: client netns → VIP → two backend netns, masquerading (see the network setup in ipvs.test.ts). */
export const TRAFFIC = {
  vip: '10.200.0.100',
  backends: [
    { ns: 'sy-b1', address: '10.211.1.2', name: 'backend-1' },
    { ns: 'sy-b2', address: '10.211.2.2', name: 'backend-2' },
  ],
  clientNs: 'sy-c',
  port: 8080,
} as const;

const traffic = (weights: [number, number]): ServiceSpec => ({
  host: TRAFFIC.vip,
  port: 80,
  type: 'tcp',
  scheduler: 'rr',
  servers: TRAFFIC.backends.map((b, i) => ({ host: b.address, port: TRAFFIC.port, forwarder: 'm', weight: weights[i] })),
});

/**
 * Phase "full": every scheduler, every forwarder, tcp and udp, persistence
 * without and with a netmask (IPv4 dotted and IPv6 prefix), weights 0, 1, 2,
 * 3, 5 and 65535, thresholds none / upper only / both / lower only, and two
 * services sharing one VIP.
 */
export const FULL: ServiceSpec[] = [
  {
    host: '10.200.0.1', port: 80, type: 'tcp', scheduler: 'rr',
    servers: [
      { host: '10.201.0.1', port: 8080, forwarder: 'm', weight: 1 },
      { host: '10.201.0.2', port: 8080, forwarder: 'm', weight: 0 },
    ],
  },
  {
    host: '10.200.0.2', port: 80, type: 'tcp', scheduler: 'wrr',
    servers: [
      { host: '10.201.0.3', port: 8080, forwarder: 'm', weight: 5, upper_threshold: 100 },
      { host: '10.201.0.4', port: 8080, forwarder: 'm', weight: 65535, upper_threshold: 1000, lower_threshold: 10 },
      { host: '10.201.0.5', port: 8080, forwarder: 'm', weight: 3 },
    ],
  },
  {
    host: '10.200.0.3', port: 53, type: 'udp', scheduler: 'lc',
    servers: [
      { host: '10.201.0.6', port: 53, forwarder: 'g', weight: 1 },
      { host: '10.201.0.7', port: 53, forwarder: 'i', weight: 2 },
    ],
  },
  {
    host: '10.200.0.3', port: 53, type: 'tcp', scheduler: 'wlc', persistence: 300,
    servers: [{ host: '10.201.0.6', port: 53, forwarder: 'g' }],
  },
  {
    host: '10.200.0.5', port: 5353, type: 'udp', scheduler: 'lblc', persistence: 60, netmask: '255.255.255.0',
    servers: [{ host: '10.201.0.8', port: 5353, forwarder: 'i' }],
  },
  {
    host: '10.200.0.6', port: 80, type: 'tcp', scheduler: 'lblcr',
    servers: [{ host: '10.201.0.9', port: 80, forwarder: 'g', upper_threshold: 50 }],
  },
  {
    host: '10.200.0.7', port: 80, type: 'tcp', scheduler: 'dh',
    servers: [
      { host: '10.201.0.10', port: 8080, forwarder: 'm' },
      // Lower threshold without an upper one: the kernel refuses it (-ERANGE).
      { host: '10.201.0.14', port: 8080, forwarder: 'm', lower_threshold: 20 },
    ],
  },
  {
    host: '10.200.0.8', port: 123, type: 'udp', scheduler: 'sh', persistence: 120, netmask: '255.255.0.0',
    servers: [{ host: '10.201.0.11', port: 123, forwarder: 'm' }],
  },
  {
    host: '10.200.0.9', port: 80, type: 'tcp', scheduler: 'sed',
    servers: [{ host: '10.201.0.12', port: 80, forwarder: 'm' }],
  },
  {
    host: '10.200.0.10', port: 80, type: 'tcp', scheduler: 'nq',
    servers: [{ host: '10.201.0.13', port: 80, forwarder: 'm' }],
  },
  {
    host: '2001:db8:200::1', port: 80, type: 'tcp', scheduler: 'wlc', persistence: 30, netmask: '64',
    servers: [
      { host: '2001:db8:201::1', port: 8080, forwarder: 'm' },
      { host: '2001:db8:201::2', port: 80, forwarder: 'g' },
    ],
  },
  traffic([1, 1]),
];

const byHost = (host: string, type = 'tcp') => (s: ServiceSpec) => s.host === host && (s.type ?? 'tcp') === type;

function edit(list: ServiceSpec[], match: (s: ServiceSpec) => boolean, f: (s: ServiceSpec) => ServiceSpec): ServiceSpec[] {
  if (!list.some(match)) throw new Error('scenario: edit matched no service');
  return list.map((s) => (match(s) ? f(s) : s));
}

/**
 * Phase "incremental", from FULL: one server added (10.200.0.1), one removed
 * (10.200.0.2), one modified (10.200.0.3 udp: weight 2 → 7), one service
 * modified (10.200.0.9: sed → wrr, persistent 600 s), one removed whose VIP
 * another service still uses (tcp 10.200.0.3:53), one removed whose VIP goes
 * with it (10.200.0.10), one added (10.200.0.13).
 */
export const INCREMENTAL: ServiceSpec[] = (() => {
  let l = FULL;
  l = edit(l, byHost('10.200.0.1'), (s) => ({ ...s, servers: [...(s.servers ?? []), { host: '10.201.0.15', port: 8080, forwarder: 'm', weight: 2 }] }));
  l = edit(l, byHost('10.200.0.2'), (s) => ({ ...s, servers: (s.servers ?? []).filter((r) => r.host !== '10.201.0.5') }));
  l = edit(l, byHost('10.200.0.3', 'udp'), (s) => ({ ...s, servers: (s.servers ?? []).map((r) => (r.host === '10.201.0.7' ? { ...r, weight: 7 } : r)) }));
  l = edit(l, byHost('10.200.0.9'), (s) => ({ ...s, scheduler: 'wrr', persistence: 600 }));
  l = l.filter((s) => !byHost('10.200.0.3', 'tcp')(s) && !byHost('10.200.0.10')(s));
  return [...l, { host: '10.200.0.13', port: 8000, type: 'tcp', scheduler: 'rr', servers: [{ host: '10.201.0.16', port: 8000, forwarder: 'm' }] }];
})();

/** Phase "weight0", from INCREMENTAL: backend-2 of the traffic service gets weight 0 (no new connections). */
export const WEIGHT0: ServiceSpec[] = edit(INCREMENTAL, byHost(TRAFFIC.vip), () => traffic([1, 0]));

/**
 * Phase "health", from INCREMENTAL: the traffic service checked over HTTP
 * every second (fall 2, rise 2). The guest kills backend-1's server, waits
 * for the checks to take it out, starts it again, waits for it to come back.
 * The timeout is a whole second because the guest's CPU is emulated: a
 * shorter one lets a healthy backend's probe time out, and with both
 * "failing" the all-down rule rightly puts the dead one back in.
 */
export const HEALTH_CHECK = { type: 'http', path: '/', interval: '1s', timeout: '1s', rise: 2, fall: 2 } as const;
export const HEALTH: ServiceSpec[] = edit(INCREMENTAL, byHost(TRAFFIC.vip), () => ({ ...traffic([1, 1]), health: { ...HEALTH_CHECK } }));

/** Phase "empty": the agent's desired state is empty; only the foreign service may remain. */
export const EMPTY: ServiceSpec[] = [];

// ---------- the independent oracle ----------

const ep = (address: string, port: number) => (address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`);

function maskText(host: string, persistence: number, netmask: string): string {
  if (persistence === 0 || netmask === '') return '';
  if (host.includes(':')) return netmask === '128' ? '' : netmask;
  return netmask === '255.255.255.255' ? '' : netmask;
}

/** The lines `ipvsadm -Sn` must print for these services, sorted (the kernel's order is its hash order). */
export function expectedRules(services: ServiceSpec[]): string[] {
  const lines: string[] = [];
  for (const s of services) {
    const proto = (s.type ?? 'tcp') === 'udp' ? '-u' : '-t';
    const vip = ep(s.host, s.port);
    const persistence = s.persistence ?? 0;
    const mask = maskText(s.host, persistence, s.netmask ?? '');
    lines.push(`-A ${proto} ${vip} -s ${s.scheduler ?? 'wlc'}${persistence ? ` -p ${persistence}` : ''}${mask ? ` -M ${mask}` : ''}`);
    for (const r of s.servers ?? []) {
      const fwd = r.forwarder ?? 'g';
      const tun = fwd === 'i' ? ' --tun-type ipip' : '';
      lines.push(`-a ${proto} ${vip} -r ${ep(r.host, fwd === 'm' ? r.port : s.port)} -${fwd} -w ${r.weight ?? 1}${tun}`);
    }
  }
  return lines.sort();
}

/** `tcp 10.200.0.2:80 -> 10.201.0.4:8080` → [upper, lower] as `ipvsadm -Ln --thresholds` must show them. */
export function expectedThresholds(services: ServiceSpec[]): Record<string, [number, number]> {
  const out: Record<string, [number, number]> = {};
  for (const s of services) {
    for (const r of s.servers ?? []) {
      const upper = r.upper_threshold ?? 0;
      const lower = r.lower_threshold ?? 0;
      const port = (r.forwarder ?? 'g') === 'm' ? r.port : s.port;
      out[`${s.type ?? 'tcp'} ${ep(s.host, s.port)} -> ${ep(r.host, port)}`] = [upper, lower > upper ? 0 : lower];
    }
  }
  return out;
}

/** Addresses that must be local on the agent's device: one per distinct service host. */
export function expectedAddresses(services: ServiceSpec[]): string[] {
  return [...new Set(services.map((s) => s.host))].sort();
}

/** Parses `ipvsadm -Ln --thresholds` into the shape of `expectedThresholds`. */
export function parseThresholds(text: string): Record<string, [number, number]> {
  const out: Record<string, [number, number]> = {};
  let svc: string | undefined;
  for (const line of text.split('\n')) {
    const head = /^(TCP|UDP)\s+(\S+)/.exec(line);
    if (head) {
      svc = `${head[1].toLowerCase()} ${head[2]}`;
      continue;
    }
    if (/^FWM\s/.test(line)) svc = undefined;
    const dest = /^\s+->\s+(\S+)\s+(\d+)\s+(\d+)\s/.exec(line);
    if (svc && dest) out[`${svc} -> ${dest[1]}`] = [Number(dest[2]), Number(dest[3])];
  }
  return out;
}

/** Sorted, trimmed, non-empty lines. */
export const ruleLines = (text: string) =>
  text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .sort();
