/**
 * The agent daemon. (Being written: the P2 reconciler replaces this file.)
 */
import type { AgentConfigInput } from './config.js';

export interface RunningAgent {
  /** The dataplane actually in use (auto resolved). */
  dataplane: 'ipvs' | 'nftables' | 'dry-run';
  stop(): Promise<void>;
}

export async function startAgent(_config: AgentConfigInput): Promise<RunningAgent> {
  throw new Error('the agent daemon is not built yet');
}
