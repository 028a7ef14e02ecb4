/**
 * The thin IPVS executor: reads the kernel (`ipvsadm -Sn`, `ipvsadm -Ln`,
 * the addresses on the agent's device) and applies planned ops — the
 * service/destination changes in ONE `ipvsadm -R` batch, the addresses with
 * `ip -batch -` around it (added before the services that need them,
 * removed after the last service using them is gone).
 */
import { IpAdapter, hostCidr } from '../../adapters/ip.js';
import type { Runner } from '../../exec/runner.js';
import { destKey, type IpvsVirtual } from './model.js';
import { parseIpvsConnections, parseIpvsRules, parseIpvsThresholds } from './parse.js';
import { ipvsadmLine, type IpvsOp } from './plan.js';

export interface IpvsExecutorOptions {
  /** Network namespace every command runs in. */
  netns?: string;
  /** The dummy interface that holds the service addresses (created on demand). Default `sy-ipvs0`. */
  device?: string;
}

export interface IpvsObserved {
  virtuals: IpvsVirtual[];
  /** Addresses on the agent's device. */
  addresses: string[];
}

export const DEFAULT_IPVS_DEVICE = 'sy-ipvs0';

export class IpvsExecutor {
  readonly device: string;
  private readonly ip: IpAdapter;

  constructor(
    private readonly runner: Runner,
    private readonly opts: IpvsExecutorOptions = {},
  ) {
    this.device = opts.device ?? DEFAULT_IPVS_DEVICE;
    this.ip = new IpAdapter(runner, opts.netns);
  }

  private ipvsadm(args: string[], input?: string) {
    return this.runner.run('ipvsadm', args, { ...(input !== undefined ? { input } : {}), ...(this.opts.netns ? { netns: this.opts.netns } : {}) });
  }

  /** True when this kernel has IPVS (`ipvsadm -Ln` answers). */
  async available(): Promise<boolean> {
    const res = await this.runner.run('ipvsadm', ['-Ln'], { allowFail: true, ...(this.opts.netns ? { netns: this.opts.netns } : {}) }).catch(() => undefined);
    return res !== undefined && res.exitCode === 0;
  }

  async observe(): Promise<IpvsObserved> {
    const [rules, limits, addrs] = await Promise.all([this.ipvsadm(['-Sn']), this.ipvsadm(['-Ln', '--thresholds']), this.ip.addresses(this.device)]);
    const virtuals = parseIpvsRules(rules.stdout);
    const thresholds = parseIpvsThresholds(limits.stdout);
    for (const v of virtuals) {
      for (const d of v.dests) {
        const t = thresholds.get(destKey(v, d));
        if (t) {
          d.upperThreshold = t.upper;
          d.lowerThreshold = t.lower;
        }
      }
    }
    // The kernel gives every interface an fe80:: address of its own; only the
    // service addresses the agent put there are its business.
    return { virtuals, addresses: addrs.map((a) => a.address).filter((a) => !/^fe[89ab][0-9a-f]:/i.test(a)) };
  }

  /** Connections per destination key; only worth reading while something drains. */
  async connections(): Promise<Map<string, number>> {
    return parseIpvsConnections((await this.ipvsadm(['-Ln'])).stdout);
  }

  async apply(ops: IpvsOp[]): Promise<void> {
    const adds = ops.flatMap((o) => (o.kind === 'add-address' ? [hostCidr(o.address)] : []));
    const dels = ops.flatMap((o) => (o.kind === 'delete-address' ? [hostCidr(o.address)] : []));
    const lines = ops.map(ipvsadmLine).filter((l): l is string => l !== undefined);
    if (adds.length > 0) {
      await this.ip.ensureDummy(this.device);
      await this.ip.addAddresses(this.device, adds);
    }
    if (lines.length > 0) {
      // `ipvsadm -R` goes on past a failing line and exits 0 unless the last
      // line failed: its stderr is the only sign of a rule the kernel refused.
      const res = await this.ipvsadm(['-R'], `${lines.join('\n')}\n`);
      if (res.stderr.trim() !== '') throw new Error(`ipvsadm -R refused part of the batch: ${res.stderr.trim()}`);
    }
    if (dels.length > 0) await this.ip.deleteAddresses(this.device, dels);
  }

  /** Removes the agent's device and with it every service address (--flush-on-exit, after its services are gone). */
  async removeDevice(): Promise<void> {
    await this.ip.deleteLink(this.device);
  }
}
