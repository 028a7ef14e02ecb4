/** `switchyard agent`: the per-host daemon that applies etcd's desired state to the kernel. */
import { parseEtcdHosts, parseListen } from '@switchyard/shared';
import type { AgentConfigInput } from '@switchyard/agent';
import { helpText, parseFlags, type FlagSpec, type FlagValues } from '../flags.js';
import { onShutdown } from '../lifecycle.js';
import { hostname } from 'node:os';

export const agentFlags: FlagSpec[] = [
  { name: 'host-id', kind: 'string', default: hostname(), help: 'this host\'s id (the hostname by default)' },
  { name: 'etcd', kind: 'string', default: 'http://127.0.0.1:2379', help: 'etcd endpoints, comma-separated' },
  { name: 'prefix', kind: 'string', default: '/switchyard', help: 'etcd key prefix' },
  { name: 'dataplane', kind: 'string', default: 'auto', help: 'auto|ipvs|nftables|dry-run' },
  { name: 'netns', kind: 'string', help: "treat this network namespace as the host's network" },
  { name: 'resync', kind: 'duration', default: '60s', help: 'period of the full resync that undoes drift' },
  { name: 'drain-timeout', kind: 'duration', default: '30s', help: 'how long a deleted server drains before removal' },
  { name: 'nft-table', kind: 'string', default: 'switchyard', help: 'the one nft table (family inet) the nftables dataplane owns' },
  { name: 'ipvs-device', kind: 'string', default: 'sy-ipvs0', help: 'dummy interface that holds IPVS service addresses (created and owned by the agent)' },
  { name: 'flush-on-exit', kind: 'bool', default: 'false', help: 'remove what the agent owns on SIGTERM (default: leave traffic flowing)' },
  { name: 'metrics-listen', kind: 'string', help: 'HOST:PORT to serve GET /metrics (Prometheus) on; off when unset' },
  { name: 'log-level', kind: 'string', default: 'info', help: 'fatal|error|warn|info|debug|trace|silent' },
];

export function agentConfigFrom(values: FlagValues): AgentConfigInput {
  return {
    hostId: String(values['host-id']),
    etcd: parseEtcdHosts(String(values.etcd)),
    prefix: String(values.prefix),
    dataplane: values.dataplane as AgentConfigInput['dataplane'],
    netns: values.netns as string | undefined,
    resyncMs: values.resync as number,
    drainTimeoutMs: values['drain-timeout'] as number,
    flushOnExit: Boolean(values['flush-on-exit']),
    ...(values['nft-table'] !== undefined ? { nftTable: String(values['nft-table']) } : {}),
    ...(values['ipvs-device'] !== undefined ? { ipvsDevice: String(values['ipvs-device']) } : {}),
    ...(values['metrics-listen'] ? { metricsListen: parseListen(String(values['metrics-listen'])) } : {}),
    logLevel: values['log-level'] as AgentConfigInput['logLevel'],
  };
}

export async function agentCommand(argv: string[]): Promise<void> {
  const { values, help } = parseFlags(argv, agentFlags);
  if (help) {
    process.stdout.write(helpText('switchyard agent [flags]', "Follow etcd and reconcile this host's kernel (IPVS, nftables, namespaces).", agentFlags));
    return;
  }
  const { startAgent } = await import('@switchyard/agent');
  const agent = await startAgent(agentConfigFrom(values));
  onShutdown(() => agent.stop());
  process.stderr.write(`switchyard: agent "${values['host-id']}" running (dataplane ${agent.dataplane})\n`);
  if (agent.metricsUrl) process.stderr.write(`switchyard: agent metrics at ${agent.metricsUrl}\n`);
}
