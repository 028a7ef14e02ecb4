/**
 * A persistent `nft -i` that applies small scripts (the incremental passes).
 *
 * Why: one `nft -f -` at 10,000 services costs 20–40 ms, nearly all of it
 * starting the process (`ip netns exec` alone measured 27 ms on a loaded
 * machine) and reloading nft's cache; the same batch written to a running
 * `nft -i` took 1–2 ms. Each line nft reads in interactive mode is parsed
 * and sent as ONE netlink batch (`nft_run_cmd_from_buffer`), so a script
 * joined into one line with `;` applies all or nothing, as with `nft -f`.
 *
 * nft -i acknowledges nothing on success, so every batch is followed by a
 * marker: `list table inet <marker>` of a table that does not exist, whose
 * error nft prints on stderr after anything the batch printed there (both
 * go through one pipe, in order). Whatever stderr holds before the marker's
 * error is the batch's error.
 *
 * nft's line editor keeps every line in its history, so the process is
 * replaced every `maxBatches` batches (its successor starts at once, in the
 * background). A process that dies or times out fails its batch; the next
 * batch starts a new one.
 */
import type { Runner, Spawned } from '../exec/runner.js';

export interface NftSessionOptions {
  netns?: string;
  /** A batch that has not answered after this long fails and the process is killed (default 30 s). */
  timeoutMs?: number;
  /** Batches per process before it is replaced (default 2,000). */
  maxBatches?: number;
}

interface Waiting {
  marker: RegExp;
  done: (err?: Error) => void;
}

/** The longest script sent as one line; longer ones go through `nft -f -` (full passes). */
export const SESSION_MAX_SCRIPT = 64 * 1024;

export class NftSession {
  private proc?: Spawned;
  private stderr = '';
  private batches = 0;
  private seq = 0;
  private waiting?: Waiting;
  private tail: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly runner: Required<Pick<Runner, 'spawn'>>,
    private readonly opts: NftSessionOptions = {},
  ) {}

  /** The pid of the running `nft -i` (the pid the kernel reports for its generations). */
  get pid(): number | undefined {
    return this.proc?.pid;
  }

  /** Starts the process ahead of the first batch (so that batch does not pay for it). */
  warm(): void {
    if (!this.closed) this.proc ??= this.start();
  }

  /** Applies `script` (nft commands, one a line) as one transaction. Batches run one at a time, in order. */
  apply(script: string): Promise<void> {
    const run = this.tail.then(() => this.applyNow(script));
    this.tail = run.catch(() => undefined);
    return run;
  }

  close(): void {
    this.closed = true;
    this.proc?.end();
    this.proc = undefined;
  }

  private start(): Spawned {
    this.stderr = '';
    this.batches = 0;
    const proc: Spawned = this.runner.spawn('nft', ['-i'], {
      ...(this.opts.netns ? { netns: this.opts.netns } : {}),
      onStderr: (d) => {
        if (this.proc !== proc) return;
        this.stderr += d;
        this.check();
      },
      onExit: (code) => {
        if (this.proc !== proc) return;
        this.proc = undefined;
        this.waiting?.done(new Error(`nft -i exited (${code ?? 'killed'}) during a batch: ${this.stderr.trim() || 'no output'}`));
      },
    });
    return proc;
  }

  private applyNow(script: string): Promise<void> {
    if (this.closed) return Promise.reject(new Error('nft session closed'));
    const proc = (this.proc ??= this.start());
    const marker = `sy_batch_done_${++this.seq}`;
    const line = script
      .split('\n')
      .filter((l) => l.trim() !== '')
      .join('; ');
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        proc.kill();
        if (this.proc === proc) this.proc = undefined;
        this.waiting?.done(new Error(`nft -i did not answer within ${this.opts.timeoutMs ?? 30_000} ms`));
      }, this.opts.timeoutMs ?? 30_000);
      this.waiting = {
        // The marker's error: `Error: …`, the command, a line of carets.
        marker: new RegExp(`(?:^|\\n)Error:[^\\n]*\\nlist table inet ${marker}\\n[^\\n]*\\n`),
        done: (err) => {
          clearTimeout(timer);
          this.waiting = undefined;
          if (err) reject(err);
          else resolve();
        },
      };
      proc.write(`${line}\nlist table inet ${marker}\n`);
    }).finally(() => {
      if (++this.batches >= (this.opts.maxBatches ?? 2000) && this.proc === proc) {
        proc.end();
        this.proc = this.closed ? undefined : this.start();
      }
    });
  }

  private check(): void {
    const w = this.waiting;
    if (!w) return;
    const m = w.marker.exec(this.stderr);
    if (!m) return;
    const batchErr = this.stderr.slice(0, m.index).trim();
    this.stderr = this.stderr.slice(m.index + m[0].length);
    w.done(batchErr ? new Error(`nft rejected the batch: ${batchErr}`) : undefined);
  }
}
