/**
 * `--dataplane auto`: ipvs if this kernel has it, else nftables, else
 * dry-run — the choice is logged and registered, never silent.
 */
import type { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';
import type { Keyspace } from '@switchyard/shared';
import type { AgentConfig } from '../config.js';
import { IpvsExecutor } from './ipvs/executor.js';
import { DeviceAddresses } from './local-addresses.js';
import { NftExecutor } from './nftables/executor.js';
import type { Runner } from '../exec/runner.js';
import type { L4Dataplane } from './dataplane.js';
import { IpvsDataplane, type OwnershipStore } from './ipvs/dataplane.js';
import { NftDataplane } from './nftables/dataplane.js';

/** IPVS ownership at `<p>/hosts/<id>/owned/ipvs`. */
export function etcdOwnership(etcd: Etcd3, keys: Keyspace, hostId: string): OwnershipStore {
  const key = keys.hosts.owned(hostId, 'ipvs');
  return {
    async load() {
      const text = await etcd.get(key).string();
      return new Set(text ? (JSON.parse(text) as string[]) : []);
    },
    async save(owned) {
      await etcd.put(key).value(JSON.stringify([...owned].sort()));
    },
  };
}

export async function selectDataplane(config: AgentConfig, runner: Runner, etcd: Etcd3, keys: Keyspace, log: Logger): Promise<L4Dataplane> {
  const netns = config.netns ? { netns: config.netns } : {};
  const dr = config.nftDrDevice !== undefined ? { drDevice: config.nftDrDevice, ...(config.nftDrIngress ? { drIngress: config.nftDrIngress } : {}) } : {};
  const ipvs = () => new IpvsDataplane(new IpvsExecutor(runner, { ...netns, device: config.ipvsDevice }), etcdOwnership(etcd, keys, config.hostId), config.drainTimeoutMs, log.child({ component: 'ipvs' }));
  const nft = () =>
    new NftDataplane(new NftExecutor(runner, { ...netns, table: config.nftTable, persistent: config.nftPersistent }), config.nftTable, log.child({ component: 'nftables' }), {
      localVips: { device: new DeviceAddresses(runner, config.nftDevice, config.netns), enabled: config.nftLocalVips },
      ...dr,
      feedback: config.nftFeedbackIntervalMs > 0,
    });
  const dry = () => new NftDataplane(undefined, config.nftTable, log.child({ component: 'dry-run' }), dr);
  switch (config.dataplane) {
    case 'ipvs':
      return ipvs();
    case 'nftables':
      return nft();
    case 'dry-run':
      return dry();
    case 'auto': {
      if (await new IpvsExecutor(runner, netns).available()) {
        log.info({ dataplane: 'ipvs' }, 'auto: kernel has IPVS');
        return ipvs();
      }
      if (await new NftExecutor(runner, { ...netns, table: config.nftTable }).available()) {
        log.info({ dataplane: 'nftables' }, 'auto: no IPVS in this kernel; using nftables');
        return nft();
      }
      log.warn({ dataplane: 'dry-run' }, 'auto: neither IPVS nor nftables NAT available; dry-run (nothing is applied)');
      return dry();
    }
  }
}
