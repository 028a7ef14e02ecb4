/**
 * The `bridge` (iproute2) adapter: the only module that builds `bridge`
 * argv and batch lines — the forwarding database of VXLAN devices, which
 * floods to each remote VTEP through an all-zero MAC entry. Names and
 * addresses are checked as the `ip` adapter checks them.
 */
import type { Runner } from '../exec/runner.js';
import { checkIfname, checkIp, nsArgs } from './ip.js';

/** Lines for `bridge [-n NS] -batch -` (one command per line, without the leading `bridge`). */
export const bridgeLines = {
  /** Flood to a remote VTEP. */
  fdbAppend: (vxlan: string, dst: string) => `fdb append 00:00:00:00:00:00 dev ${checkIfname(vxlan)} dst ${checkIp(dst)}`,
  fdbDel: (vxlan: string, dst: string) => `fdb del 00:00:00:00:00:00 dev ${checkIfname(vxlan)} dst ${checkIp(dst)}`,
};

/** Remote VTEPs each device floods to (`bridge fdb` all-zero entries), for all devices in one process. */
export async function observeFloodLists(runner: Runner, ns?: string): Promise<Map<string, string[]>> {
  const res = await runner.run('bridge', [...nsArgs(ns), '-j', 'fdb', 'show'], { allowFail: true });
  const out = new Map<string, string[]>();
  if (res.exitCode !== 0 || !res.stdout.trim()) return out;
  for (const e of JSON.parse(res.stdout) as { mac: string; ifname?: string; dst?: string }[]) {
    if (e.mac === '00:00:00:00:00:00' && e.dst && e.ifname) out.set(e.ifname, [...(out.get(e.ifname) ?? []), e.dst]);
  }
  return out;
}
