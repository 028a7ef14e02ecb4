/**
 * The thin nftables executor: reads the agent's table as JSON and applies a
 * planned script as ONE transaction (it all applies or nothing does): small
 * scripts through a persistent `nft -i` (adapters/nft-session.ts), large ones with one
 * `nft -f -` — across both of its tables: `inet <table>` and, for direct
 * routing, `netdev <table>`. It names only its own tables; foreign tables
 * are never listed, flushed or deleted. With a runner that can start long-lived commands it
 * also follows the kernel's nftables events (adapters/nft-monitor.ts), knowing its own transactions by
 * the pids of the nft processes it started.
 */
import { NftTable } from '../../adapters/nft.js';
import { NftMonitor } from '../../adapters/nft-monitor.js';
import { NftSession, SESSION_MAX_SCRIPT } from '../../adapters/nft-session.js';
import type { Runner } from '../../exec/runner.js';
import { emptyObserved, parseNftJson, type NftObserved } from './observe.js';
import type { NftFamily } from './model.js';
import { drBase, NFT_BASE, renderNftScript, type NftBase, type NftOp } from './plan.js';

export interface NftExecutorOptions {
  table: string;
  netns?: string;
  /** Apply small scripts through a persistent `nft -i` and follow the kernel's events (default: when the runner can). */
  persistent?: boolean;
  /** What follows the kernel's events (adapters/nft-monitor.ts; default: the netlink program when python3 is there). */
  monitorSource?: 'netlink' | 'nft';
}

/** How many of the agent's recent nft pids are remembered as its own. */
const OWN_PIDS = 64;

export class NftExecutor {
  private readonly session?: NftSession;
  /** Foreign changes to the table (undefined: the runner cannot follow the kernel's events). */
  readonly monitor?: NftMonitor;
  private readonly ownPids: number[] = [];
  private arming?: Promise<void>;
  private readonly nft: NftTable;

  constructor(
    runner: Runner,
    private readonly opts: NftExecutorOptions,
  ) {
    this.nft = new NftTable(runner, opts.table, { ...(opts.netns ? { netns: opts.netns } : {}), onSpawn: (pid) => this.own(pid) });
    const spawn = runner.spawn?.bind(runner);
    if (spawn && opts.persistent !== false) {
      const netns = opts.netns ? { netns: opts.netns } : {};
      this.session = new NftSession({ spawn }, netns);
      const program = runner.program?.bind(runner);
      this.monitor = new NftMonitor({ spawn, ...(program ? { program } : {}) }, { table: opts.table, ...netns, ...(opts.monitorSource ? { source: opts.monitorSource } : {}), isOwn: (pid) => pid === this.session?.pid || this.ownPids.includes(pid) });
    }
  }

  private own(pid: number | undefined): void {
    if (pid === undefined) return;
    this.ownPids.push(pid);
    if (this.ownPids.length > OWN_PIDS) this.ownPids.shift();
  }

  /** True when nft runs and the kernel accepts a nat chain (checked without changing anything: `nft -c`). */
  async available(): Promise<boolean> {
    const probe = `add table inet ${this.opts.table}\nadd chain inet ${this.opts.table} sy-probe { type nat hook prerouting priority dstnat ; }\n`;
    return this.nft.accepts(probe);
  }

  /** The inet table, or with `netdev` the direct-routing table of the same name (`base`: its skeleton). */
  async observe(family: NftFamily = 'inet', base: NftBase = family === 'inet' ? NFT_BASE : drBase('')): Promise<NftObserved> {
    const json = await this.nft.listJson(family);
    if (json === undefined) return emptyObserved();
    return parseNftJson(json, base.chains.map((c) => c.name), base.maps.map((m) => m.name));
  }

  script(ops: NftOp[]): string {
    return renderNftScript(this.opts.table, ops);
  }

  async apply(ops: NftOp[]): Promise<void> {
    if (ops.length === 0) return;
    const script = this.script(ops);
    if (this.session && script.length <= SESSION_MAX_SCRIPT) {
      const pid = this.session.pid;
      // A session that died takes a new pid: remember the old one for its late generations.
      await this.session.apply(script).finally(() => this.own(pid));
      return;
    }
    await this.nft.apply(script);
  }

  /** Starts the event monitor if it is not running. */
  startMonitor(): void {
    this.monitor?.start();
  }

  /**
   * Makes transactions of our own on the table — a set added and deleted —
   * until one shows up in the monitor, proving it is subscribed (it cannot
   * say so itself). In the background, 0.1, 0.2, 0.4 … 3.2 s apart: each one
   * restarts the monitor's start-up read of the ruleset, which takes seconds
   * at 10,000 services. Harmless to repeat.
   */
  armMonitor(): void {
    const { monitor, session } = this;
    if (!monitor || !session || this.arming) return;
    monitor.start();
    session.warm();
    const t = `inet ${this.opts.table}`;
    this.arming = (async () => {
      for (let wait = 100; wait <= 3200 && !monitor.armed; wait *= 2) {
        await session.apply(`add set ${t} sy_monitor_probe { type ipv4_addr ; }\ndelete set ${t} sy_monitor_probe\n`);
        await new Promise((res) => setTimeout(res, wait));
      }
    })()
      .catch(() => undefined)
      .finally(() => (this.arming = undefined));
  }

  /** Ends the persistent nft processes (agent stop). */
  close(): void {
    this.session?.close();
    this.monitor?.stop();
  }

  /** Removes one of the agent's tables and everything in it (--flush-on-exit); one already gone is fine. */
  async deleteTable(family: NftFamily = 'inet'): Promise<void> {
    await this.nft.delete(family);
  }
}
