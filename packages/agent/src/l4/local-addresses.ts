/**
 * Service addresses made local on a dummy device the agent owns — shared by
 * the ipvs dataplane (IPVS only sees packets to local addresses) and by the
 * nftables dataplane's `--nft-local-vips` (a process on the balancer reaches
 * a VIP only if the kernel has a route to it: `connect()` looks the route up
 * before any netfilter hook runs, and fails with ENETUNREACH without one).
 *
 * The planner is pure (wanted addresses + addresses on the device → ops);
 * the executor reads and writes the one device through the `ip` adapter. The
 * device is the agent's own, so every address on it that is not wanted goes.
 */
import { IpAdapter, hostCidr } from '../adapters/ip.js';
import type { Runner } from '../exec/runner.js';

export type AddressOp = { kind: 'add-address'; address: string } | { kind: 'delete-address'; address: string };

/** Adds for wanted addresses the device lacks, deletes for those it has and nobody wants (sorted, adds first). */
export function planAddresses(wanted: Iterable<string>, observed: Iterable<string>): AddressOp[] {
  const want = new Set(wanted);
  const have = new Set(observed);
  const ops: AddressOp[] = [];
  for (const a of [...want].sort()) if (!have.has(a)) ops.push({ kind: 'add-address', address: a });
  for (const a of [...have].sort()) if (!want.has(a)) ops.push({ kind: 'delete-address', address: a });
  return ops;
}

/** The kernel gives every interface an fe80:: address of its own; only the addresses the agent put there are its business. */
const isLinkLocal = (a: string) => /^fe[89ab][0-9a-f]:/i.test(a);

export class DeviceAddresses {
  private readonly ip: IpAdapter;

  constructor(
    runner: Runner,
    /** The dummy interface (≤ 15 characters), created on the first add. */
    readonly device: string,
    netns?: string,
  ) {
    this.ip = new IpAdapter(runner, netns);
  }

  /** Addresses on the device ([] when it does not exist). */
  async observe(): Promise<string[]> {
    return (await this.ip.addresses(this.device)).map((a) => a.address).filter((a) => !isLinkLocal(a));
  }

  /** Applies address ops; `only` picks the adds or the deletes (callers order them around other changes). */
  async apply(ops: readonly { kind: string; address?: string }[], only?: AddressOp['kind']): Promise<void> {
    const pick = (kind: AddressOp['kind']) => (only === undefined || only === kind ? ops.flatMap((o) => (o.kind === kind && o.address ? [hostCidr(o.address)] : [])) : []);
    const adds = pick('add-address');
    const dels = pick('delete-address');
    if (adds.length > 0) {
      await this.ip.ensureDummy(this.device);
      await this.ip.addAddresses(this.device, adds);
    }
    if (dels.length > 0) await this.ip.deleteAddresses(this.device, dels);
  }

  /** Removes the device and every address on it (a device already gone is fine). */
  async remove(): Promise<void> {
    await this.ip.deleteLink(this.device);
  }
}
