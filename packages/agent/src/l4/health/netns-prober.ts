/**
 * Probes from inside a named network namespace (`--netns`): requests go to
 * one long-lived worker process started with `ip netns exec` (argv, no
 * shell). If the worker dies, its pending probes resolve without a verdict
 * (they count neither way) and the next probe starts a new worker.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Prober, ProbeResult, ProbeSpec } from './probe.js';

/** The worker process: stdin and stdout piped, stderr the agent's. */
type Worker = ChildProcessByStdio<Writable, Readable, null>;

type Pending = (r: ProbeResult | undefined) => void;

/** All it logs: the worker process exiting (it may run in the checker's thread, which has no pino). */
export interface ProberLog {
  warn(obj: Record<string, unknown>, msg: string): void;
}

/** The worker's entry point; from TypeScript sources (tests, benches) node needs tsx to run it. */
function workerArgv(): string[] {
  const url = new URL(import.meta.url.endsWith('.ts') ? './prober-worker.ts' : './prober-worker.js', import.meta.url);
  return [...(url.pathname.endsWith('.ts') ? ['--import', 'tsx'] : []), fileURLToPath(url)];
}

export class NetnsProber implements Prober {
  private worker?: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private buffer: string[] = [];
  private flushing = false;
  private closed = false;

  constructor(
    private readonly netns: string,
    private readonly log: ProberLog,
  ) {}

  private start(): Worker {
    const child = spawn('ip', ['netns', 'exec', this.netns, process.execPath, ...workerArgv()], { stdio: ['pipe', 'pipe', 'inherit'] });
    let ended = false;
    const onEnd = (exitCode: number | null) => {
      if (ended) return;
      ended = true;
      if (this.worker === child) this.worker = undefined;
      if (!this.closed) this.log.warn({ exitCode, netns: this.netns }, 'health probe worker exited; restarting on the next probe');
      for (const done of this.pending.values()) done(undefined);
      this.pending.clear();
    };
    child.on('error', () => onEnd(null));
    child.on('close', (code) => onEnd(code));
    // A write after the worker died: 'close' settles its probes.
    child.stdin.on('error', () => undefined);
    createInterface({ input: child.stdout }).on('line', (line) => {
      try {
        const { id, result } = JSON.parse(line) as { id: number; result: ProbeResult };
        const done = this.pending.get(id);
        this.pending.delete(id);
        done?.(result);
      } catch {
        /* a torn line: its probe resolves when the worker goes */
      }
    });
    return child;
  }

  probe(spec: ProbeSpec): Promise<ProbeResult | undefined> {
    if (this.closed) return Promise.resolve(undefined);
    this.worker ??= this.start();
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.buffer.push(`${JSON.stringify({ id, spec })}\n`);
      if (!this.flushing) {
        this.flushing = true;
        setImmediate(() => {
          this.flushing = false;
          const text = this.buffer.join('');
          this.buffer = [];
          this.worker?.stdin.write(text);
        });
      }
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    const w = this.worker;
    this.worker = undefined;
    if (w) {
      w.stdin.end();
      if (w.exitCode === null && w.signalCode === null) await Promise.race([new Promise((r) => w.once('close', r)), new Promise((r) => setTimeout(r, 1000))]);
      w.kill('SIGKILL');
    }
    for (const done of this.pending.values()) done(undefined);
    this.pending.clear();
  }
}
