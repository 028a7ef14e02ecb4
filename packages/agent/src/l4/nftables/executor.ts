/**
 * The thin nftables executor: reads the agent's table as JSON and applies a
 * planned script with ONE `nft -f -` (one netlink transaction: it all
 * applies or nothing does, across both of its tables: `inet <table>` and,
 * for direct routing, `netdev <table>`). It names only its own tables;
 * foreign tables are never listed, flushed or deleted.
 */
import type { Runner } from '../../exec/runner.js';
import { emptyObserved, parseNftJson, type NftObserved } from './observe.js';
import type { NftFamily } from './model.js';
import { drBase, NFT_BASE, renderNftScript, type NftBase, type NftOp } from './plan.js';

export interface NftExecutorOptions {
  table: string;
  netns?: string;
}

export class NftExecutor {
  constructor(
    private readonly runner: Runner,
    private readonly opts: NftExecutorOptions,
  ) {}

  private nft(args: string[], opts: { input?: string; allowFail?: boolean } = {}) {
    return this.runner.run('nft', args, { ...opts, ...(this.opts.netns ? { netns: this.opts.netns } : {}) });
  }

  /** True when nft runs and the kernel accepts a nat chain (checked without changing anything: `nft -c`). */
  async available(): Promise<boolean> {
    const probe = `add table inet ${this.opts.table}\nadd chain inet ${this.opts.table} sy-probe { type nat hook prerouting priority dstnat ; }\n`;
    const res = await this.nft(['-c', '-f', '-'], { input: probe, allowFail: true }).catch(() => undefined);
    return res !== undefined && res.exitCode === 0;
  }

  /** The inet table, or with `netdev` the direct-routing table of the same name (`base`: its skeleton). */
  async observe(family: NftFamily = 'inet', base: NftBase = family === 'inet' ? NFT_BASE : drBase('')): Promise<NftObserved> {
    const res = await this.nft(['-j', 'list', 'table', family, this.opts.table], { allowFail: true });
    if (res.exitCode !== 0) {
      if (/No such file or directory|does not exist/i.test(res.stderr)) return emptyObserved();
      throw new Error(`nft -j list table ${family} ${this.opts.table} failed (exit ${res.exitCode}): ${res.stderr.trim()}`);
    }
    return parseNftJson(res.stdout, base.chains.map((c) => c.name), base.maps.map((m) => m.name));
  }

  script(ops: NftOp[]): string {
    return renderNftScript(this.opts.table, ops);
  }

  async apply(ops: NftOp[]): Promise<void> {
    if (ops.length === 0) return;
    await this.nft(['-f', '-'], { input: this.script(ops) });
  }

  /** Removes one of the agent's tables and everything in it (--flush-on-exit); one already gone is fine. */
  async deleteTable(family: NftFamily = 'inet'): Promise<void> {
    const res = await this.nft(['delete', 'table', family, this.opts.table], { allowFail: true });
    if (res.exitCode !== 0 && !/No such file or directory/i.test(res.stderr)) {
      throw new Error(`nft delete table ${family} ${this.opts.table} failed: ${res.stderr.trim()}`);
    }
  }
}
