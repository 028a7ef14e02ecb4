export { AgentConfig, DATAPLANE_CHOICES, type AgentConfigInput } from './config.js';
export { startAgent, type RunningAgent } from './agent.js';
