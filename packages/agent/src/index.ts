export { AgentConfig, DATAPLANE_CHOICES, type AgentConfigInput } from './config.js';
export { startAgent, type RunningAgent, type AgentDeps } from './agent.js';
export type { AgentRole, RoleContext } from './role.js';
export { ExecaRunner, FakeRunner, CommandError, type Runner, type RunOptions, type RunResult, type RecordedCall } from './exec/runner.js';
export { IpAdapter, hostCidr } from './adapters/ip.js';
export * as ipvs from './l4/ipvs/index.js';
export * as nftables from './l4/nftables/index.js';
