/**
 * The `nft` adapter for the topology role: the only place it builds `nft`
 * argv. A script always goes through ONE `nft -f -` (one netlink
 * transaction); a table is read back by name, never the whole ruleset.
 * nft has no `-n NS`, so a namespace goes through the runner's per-call
 * `ip netns exec`. (The L4 dataplane has its own executor,
 * l4/nftables/executor.ts, reading its table as JSON.)
 */
import type { Runner } from '../exec/runner.js';

const checkName = (what: string, name: string) => {
  if (!/^[A-Za-z][A-Za-z0-9_]{0,31}$/.test(name)) throw new Error(`not a valid nft ${what}: ${JSON.stringify(name)}`);
  return name;
};

/** The call that applies an nft script (`nft -f -` with the script on stdin). */
export function nftScript(input: string, netns?: string): { cmd: 'nft'; args: string[]; input: string; netns?: string } {
  return { cmd: 'nft', args: ['-f', '-'], input, ...(netns ? { netns } : {}) };
}

/** `nft list table FAMILY NAME` as text, or undefined when there is no such table. */
export async function listTable(runner: Runner, family: 'inet' | 'ip' | 'ip6', table: string, netns?: string): Promise<string | undefined> {
  const res = await runner.run('nft', ['list', 'table', family, checkName('table', table)], { allowFail: true, ...(netns ? { netns } : {}) });
  return res.exitCode === 0 ? res.stdout : undefined;
}
