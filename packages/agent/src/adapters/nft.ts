/**
 * The `nft` adapter: the only place that builds `nft` argv, for both the L4
 * dataplane and container networks (with `nft-session.ts`, a persistent
 * `nft -i`, and `nft-monitor.ts`, `nft monitor`). A script always goes
 * through ONE transaction (`nft -f -`, or one `nft -i` batch); a table is
 * read back by name, never the whole ruleset, and only tables the caller
 * names are ever touched. nft has no `-n NS`, so a namespace goes through
 * the runner's per-call `ip netns exec`.
 */
import type { Runner, RunResult } from '../exec/runner.js';

export type NftTableFamily = 'inet' | 'ip' | 'ip6' | 'netdev';

const checkName = (what: string, name: string) => {
  if (!/^[A-Za-z][A-Za-z0-9_]{0,31}$/.test(name)) throw new Error(`not a valid nft ${what}: ${JSON.stringify(name)}`);
  return name;
};

/** A table that is not there (deleting or listing it is then no error). */
export const NO_TABLE = /No such file or directory|does not exist/i;

/** The call that applies an nft script (`nft -f -` with the script on stdin), for callers that batch commands. */
export function nftScript(input: string, netns?: string): { cmd: 'nft'; args: string[]; input: string; netns?: string } {
  return { cmd: 'nft', args: ['-f', '-'], input, ...(netns ? { netns } : {}) };
}

/** `nft list table FAMILY NAME` as text, or undefined when there is no such table. */
export async function listTable(runner: Runner, family: NftTableFamily, table: string, netns?: string): Promise<string | undefined> {
  const res = await runner.run('nft', ['list', 'table', family, checkName('table', table)], { allowFail: true, ...(netns ? { netns } : {}) });
  return res.exitCode === 0 ? res.stdout : undefined;
}

/** One table's nft calls, in a namespace; `onSpawn` learns each nft process's pid (the monitor tells ours from others by it). */
export class NftTable {
  readonly table: string;

  constructor(
    private readonly runner: Runner,
    table: string,
    private readonly opts: { netns?: string; onSpawn?: (pid: number | undefined) => void } = {},
  ) {
    this.table = checkName('table', table);
  }

  private run(args: string[], opts: { input?: string; allowFail?: boolean } = {}): Promise<RunResult> {
    return this.runner.run('nft', args, { ...opts, ...(this.opts.netns ? { netns: this.opts.netns } : {}), ...(this.opts.onSpawn ? { onSpawn: this.opts.onSpawn } : {}) });
  }

  /** True when the kernel would take `script` (`nft -c -f -`: checked, nothing changed). */
  async accepts(script: string): Promise<boolean> {
    const res = await this.run(['-c', '-f', '-'], { input: script, allowFail: true }).catch(() => undefined);
    return res !== undefined && res.exitCode === 0;
  }

  /** `nft -j list table FAMILY <table>`: the JSON text, or undefined when there is no such table. */
  async listJson(family: NftTableFamily): Promise<string | undefined> {
    const res = await this.run(['-j', 'list', 'table', family, this.table], { allowFail: true });
    if (res.exitCode === 0) return res.stdout;
    if (NO_TABLE.test(res.stderr)) return undefined;
    throw new Error(`nft -j list table ${family} ${this.table} failed (exit ${res.exitCode}): ${res.stderr.trim()}`);
  }

  /** Applies a script as one transaction (`nft -f -`). */
  async apply(script: string): Promise<void> {
    await this.run(['-f', '-'], { input: script });
  }

  /** Deletes the table and everything in it; one already gone is fine. */
  async delete(family: NftTableFamily): Promise<void> {
    const res = await this.run(['delete', 'table', family, this.table], { allowFail: true });
    if (res.exitCode !== 0 && !NO_TABLE.test(res.stderr)) throw new Error(`nft delete table ${family} ${this.table} failed: ${res.stderr.trim()}`);
  }
}
