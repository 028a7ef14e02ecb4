/**
 * The thin IPVS executor: reads the kernel (`ipvsadm -Sn`, `ipvsadm -Ln`,
 * the addresses on the agent's device) and applies planned ops — the
 * service/destination changes in ONE `ipvsadm -R` batch, the addresses with
 * `ip -batch -` around it (added before the services that need them,
 * removed after the last service using them is gone).
 */
import type { Runner } from '../../exec/runner.js';
import { DeviceAddresses } from '../local-addresses.js';
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
  private readonly addresses: DeviceAddresses;

  constructor(
    private readonly runner: Runner,
    private readonly opts: IpvsExecutorOptions = {},
  ) {
    this.device = opts.device ?? DEFAULT_IPVS_DEVICE;
    this.addresses = new DeviceAddresses(runner, this.device, opts.netns);
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
    const [rules, limits, addresses] = await Promise.all([this.ipvsadm(['-Sn']), this.ipvsadm(['-Ln', '--thresholds']), this.addresses.observe()]);
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
    return { virtuals, addresses };
  }

  /** Connections per destination key; only worth reading while something drains. */
  async connections(): Promise<Map<string, number>> {
    return parseIpvsConnections((await this.ipvsadm(['-Ln'])).stdout);
  }

  async apply(ops: IpvsOp[]): Promise<void> {
    const lines = ops.map(ipvsadmLine).filter((l): l is string => l !== undefined);
    await this.addresses.apply(ops, 'add-address');
    if (lines.length > 0) {
      // `ipvsadm -R` goes on past a failing line and exits 0 unless the last
      // line failed: its stderr is the only sign of a rule the kernel refused.
      const res = await this.ipvsadm(['-R'], `${lines.join('\n')}\n`);
      if (res.stderr.trim() !== '') throw new Error(`ipvsadm -R refused part of the batch: ${res.stderr.trim()}`);
    }
    await this.addresses.apply(ops, 'delete-address');
  }

  /** Removes the agent's device and with it every service address (--flush-on-exit, after its services are gone). */
  async removeDevice(): Promise<void> {
    await this.addresses.remove();
  }
}
