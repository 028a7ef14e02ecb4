/**
 * Parsers of ipvsadm's output: `ipvsadm -Sn` (the rules, in the same syntax
 * `ipvsadm -R` reads) and the connection counters of `ipvsadm -Ln`.
 * Firewall-mark services (`-f`) are not Switchyard's and are skipped.
 */
import { FORWARDERS, SCHEDULERS, canonicalIp, type Forwarder, type Protocol, type Scheduler } from '@switchyard/shared';
import { destKey, endpoint, type IpvsVirtual } from './model.js';

function splitEndpoint(text: string): { address: string; port: number } | undefined {
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(text) ?? /^([0-9.]+):(\d+)$/.exec(text);
  const address = m && canonicalIp(m[1]);
  return m && address ? { address, port: Number(m[2]) } : undefined;
}

function flagValue(tokens: string[], flag: string): string | undefined {
  const i = tokens.indexOf(flag);
  return i >= 0 ? tokens[i + 1] : undefined;
}

function protocolOf(tokens: string[]): { protocol: Protocol; ep: string } | undefined {
  const t = flagValue(tokens, '-t');
  if (t !== undefined) return { protocol: 'tcp', ep: t };
  const u = flagValue(tokens, '-u');
  if (u !== undefined) return { protocol: 'udp', ep: u };
  return undefined;
}

/** Parses `ipvsadm -Sn` (also `-S -n`) output into virtual services with their destinations. */
export function parseIpvsRules(text: string): IpvsVirtual[] {
  const byKey = new Map<string, IpvsVirtual>();
  for (const raw of text.split('\n')) {
    const tokens = raw.trim().split(/\s+/).filter(Boolean);
    if (tokens.length === 0) continue;
    const svc = protocolOf(tokens);
    const vip = svc && splitEndpoint(svc.ep);
    if (!svc || !vip) continue; // -f (fwmark) services and anything unknown
    const key = `${svc.protocol} ${endpoint(vip.address, vip.port)}`;
    if (tokens[0] === '-A') {
      const scheduler = flagValue(tokens, '-s') ?? 'wlc';
      byKey.set(key, {
        protocol: svc.protocol,
        address: vip.address,
        port: vip.port,
        scheduler: ((SCHEDULERS as readonly string[]).includes(scheduler) ? scheduler : 'wlc') as Scheduler,
        persistence: tokens.includes('-p') ? Number(flagValue(tokens, '-p') ?? 300) : 0,
        netmask: flagValue(tokens, '-M') ?? '',
        dests: [],
      });
    } else if (tokens[0] === '-a') {
      const v = byKey.get(key);
      const real = splitEndpoint(flagValue(tokens, '-r') ?? '');
      if (!v || !real) continue;
      const fwd = (['-g', '-i', '-m'].find((f) => tokens.includes(f)) ?? '-g').slice(1);
      v.dests.push({
        address: real.address,
        port: real.port,
        forwarder: ((FORWARDERS as readonly string[]).includes(fwd) ? fwd : 'g') as Forwarder,
        weight: Number(flagValue(tokens, '-w') ?? 1),
        upperThreshold: Number(flagValue(tokens, '-x') ?? 0),
        lowerThreshold: Number(flagValue(tokens, '-y') ?? 0),
      });
    }
  }
  return [...byKey.values()];
}

/**
 * Walks the destination rows of `ipvsadm -Ln` output, calling `row` with the
 * destination key and the numeric columns after the forwarding method (or,
 * with `--thresholds`, after the address):
 *
 *   TCP  10.1.0.1:80 wlc
 *     -> 10.1.0.5:8080                Masq    3      1          4
 */
function eachDestination(text: string, row: (key: string, numbers: number[]) => void): void {
  let current: { protocol: Protocol; address: string; port: number } | undefined;
  for (const line of text.split('\n')) {
    const svc = /^(TCP|UDP)\s+(\S+)/.exec(line);
    if (svc) {
      const ep = splitEndpoint(svc[2]);
      current = ep ? { protocol: svc[1].toLowerCase() as Protocol, ...ep } : undefined;
      continue;
    }
    if (/^FWM\s/.test(line)) {
      current = undefined;
      continue;
    }
    const dest = /^\s+->\s+(\S+)\s+(.*)$/.exec(line);
    const ep = dest && splitEndpoint(dest[1]);
    if (!current || !dest || !ep) continue;
    const numbers = dest[2].split(/\s+/).filter((t) => /^\d+$/.test(t)).map(Number);
    row(destKey(current, ep), numbers);
  }
}

/** Active + inactive connections per destination, from `ipvsadm -Ln`. */
export function parseIpvsConnections(text: string): Map<string, number> {
  const counts = new Map<string, number>();
  // Columns: Weight ActiveConn InActConn.
  eachDestination(text, (key, n) => n.length >= 3 && counts.set(key, n[1] + n[2]));
  return counts;
}

/**
 * Upper and lower thresholds per destination, from `ipvsadm -Ln --thresholds`.
 * `ipvsadm -Sn` (1.31) never prints `-x`/`-y`, so this is the only way to read
 * them back.
 */
export function parseIpvsThresholds(text: string): Map<string, { upper: number; lower: number }> {
  const out = new Map<string, { upper: number; lower: number }>();
  // Columns: Uthreshold Lthreshold ActiveConn InActConn.
  eachDestination(text, (key, n) => n.length >= 2 && out.set(key, { upper: n[0], lower: n[1] }));
  return out;
}
