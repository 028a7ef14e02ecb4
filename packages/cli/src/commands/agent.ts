/** `switchyard agent`: the per-host daemon that applies etcd's desired state to the kernel. */
import { AgentConfig, type AgentConfigInput } from '@switchyard/agent/config';
import { configFrom, flagsFromSchema, helpText, parseFlags, type FlagValues } from '../flags.js';
import { onShutdown } from '../lifecycle.js';

/** Every flag, default and help line comes from the schema the agent validates. */
export const agentFlags = flagsFromSchema(AgentConfig);

export function agentConfigFrom(values: FlagValues): AgentConfigInput {
  return configFrom(agentFlags, values) as AgentConfigInput;
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
