/**
 * The thin IPVS executor: reads the kernel (`ipvsadm -Sn`, `ipvsadm -Ln`,
 * the addresses on the agent's device) and applies planned ops — the
 * service/destination changes in ONE `ipvsadm -R` batch, the addresses with
 * `ip -batch -` around it (added before the services that need them,
 * removed after the last service using them is gone).
 */
import { Ipvsadm } from '../../adapters/ipvsadm.js';
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
  private readonly ipvsadm: Ipvsadm;

  constructor(runner: Runner, opts: IpvsExecutorOptions = {}) {
    this.device = opts.device ?? DEFAULT_IPVS_DEVICE;
    this.addresses = new DeviceAddresses(runner, this.device, opts.netns);
    this.ipvsadm = new Ipvsadm(runner, opts.netns);
  }

  /** True when this kernel has IPVS. */
  available(): Promise<boolean> {
    return this.ipvsadm.available();
  }

  async observe(): Promise<IpvsObserved> {
    const [rules, limits, addresses] = await Promise.all([this.ipvsadm.save(), this.ipvsadm.listThresholds(), this.addresses.observe()]);
    const virtuals = parseIpvsRules(rules);
    const thresholds = parseIpvsThresholds(limits);
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
    return parseIpvsConnections(await this.ipvsadm.list());
  }

  async apply(ops: IpvsOp[]): Promise<void> {
    const lines = ops.map(ipvsadmLine).filter((l): l is string => l !== undefined);
    await this.addresses.apply(ops, 'add-address');
    await this.ipvsadm.restore(lines);
    await this.addresses.apply(ops, 'delete-address');
  }

  /** Removes the agent's device and with it every service address (--flush-on-exit, after its services are gone). */
  async removeDevice(): Promise<void> {
    await this.addresses.remove();
  }
}
