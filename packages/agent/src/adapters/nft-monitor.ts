/**
 * Tells whether anything but the agent changed its table, so a periodic
 * full resync can skip reading 10,000 services back (`nft -j list table`:
 * 1.3–2 s of nft's CPU, restarted by every change applied meanwhile) when
 * nothing foreign happened — the drift it exists to undo.
 *
 * It follows `nft monitor`. The kernel sends every committed transaction's
 * objects, then one NEWGEN message, which nft prints as
 * `# new generation N by process PID (comm)` (nf_tables_commit →
 * nf_tables_gen_notify). A generation whose events name `inet <table>` and
 * whose PID is not one of the agent's own nft processes is drift. So is
 * anything the monitor cannot vouch for: it was not running, it has not yet
 * shown it is subscribed (it prints nothing until an event comes; `arm()`
 * makes one), the socket overflowed (`# ERROR: We lost some netlink
 * events!`), or it died. Any of these bumps `epoch`; a resync may skip the
 * read only when `epoch` is what it was when the kernel was last known to
 * equal the model.
 *
 * PIDs are compared as the kernel reports them (the initial PID namespace):
 * an agent in a container of its own PID namespace never recognises its own
 * transactions, and every resync reads the table back as before.
 */
import type { Runner, Spawned } from '../exec/runner.js';

export interface NftMonitorOptions {
  table: string;
  netns?: string;
  /** True for the PIDs of the agent's own nft processes. */
  isOwn: (pid: number) => boolean;
}

export class NftMonitor {
  private proc?: Spawned;
  private buf = '';
  /** The current generation's events named our table. */
  private touched = false;
  private armedProc?: Spawned;
  private stopped = false;
  /** Bumped on every foreign change to the table and on every gap in what was seen. */
  epoch = 0;
  /** Foreign generations that touched the table (for logs and tests). */
  foreign = 0;
  /** Processes started so far (tells one monitor process from the next). */
  starts = 0;
  /** `epoch` when the running process proved it is subscribed. */
  armedEpoch?: number;
  /** `epoch` just after the running process was started, and when. */
  startEpoch = 0;
  startedAt = 0;
  private readonly tableRe: RegExp;

  constructor(
    private readonly runner: Required<Pick<Runner, 'spawn'>>,
    private readonly opts: NftMonitorOptions,
  ) {
    this.tableRe = new RegExp(`\\b(?:inet|netdev) ${opts.table}(?:\\s|$)`);
  }

  /** Subscribed (proved by an event seen since it started) and running: `epoch` can be trusted from now on. */
  get armed(): boolean {
    return this.proc !== undefined && this.armedProc === this.proc;
  }

  start(): void {
    if (this.stopped || this.proc) return;
    this.buf = '';
    this.touched = false;
    const proc: Spawned = this.runner.spawn('nft', ['monitor'], {
      ...(this.opts.netns ? { netns: this.opts.netns } : {}),
      onStdout: (d) => {
        if (this.proc === proc) this.feed(d);
      },
      onExit: () => {
        if (this.proc !== proc) return;
        this.proc = undefined;
        this.epoch++;
      },
    });
    this.proc = proc;
    this.starts++;
    this.epoch++;
    this.startEpoch = this.epoch;
    this.startedAt = performance.now();
  }

  stop(): void {
    this.stopped = true;
    this.proc?.kill();
    this.proc = undefined;
  }

  private feed(chunk: string): void {
    // One split per chunk: a first load prints ~60,000 lines, and slicing the rest of the buffer
    // after every line made that quadratic (seconds of this process's CPU).
    const lines = (this.buf + chunk).split('\n');
    this.buf = lines.pop() ?? '';
    for (const l of lines) this.line(l);
  }

  private line(l: string): void {
    const gen = /^# new generation \d+ by process (\d+)/.exec(l);
    if (gen) {
      const own = this.opts.isOwn(Number(gen[1]));
      if (own && !this.armed) {
        this.armedProc = this.proc;
        this.armedEpoch = this.epoch;
      }
      else if (!own && this.touched) {
        this.foreign++;
        this.epoch++;
      }
      this.touched = false;
    } else if (/lost some netlink events/i.test(l)) {
      this.epoch++;
    } else if (this.tableRe.test(l)) this.touched = true;
  }
}
