/**
 * Progress on stderr, so stdout stays the command's JSON answer. On a
 * terminal a moving figure is redrawn in place; elsewhere (logs, CI, tests)
 * it is written as plain lines, at most one per quarter of the way.
 */
import type { Host } from '@switchyard/shared';
import { formatDuration } from '@switchyard/shared';
import { ApiError, print, type ApiClient } from './client.js';
import type { FlagSpec, FlagValues } from './flags.js';

export class Progress {
  private drawn = false;
  private quarter = -1;

  constructor(private readonly out: NodeJS.WriteStream = process.stderr) {}

  private get tty(): boolean {
    return this.out.isTTY === true;
  }

  /** A line that stays. */
  line(text: string): void {
    if (this.drawn) this.out.write('\r\x1b[K');
    this.drawn = false;
    this.out.write(`${text}\n`);
  }

  /** `label: 40% (320 KiB of 812 KiB)`. */
  fraction(label: string, done: number, total: number, unit: (n: number) => string = String): void {
    const pct = total > 0 ? Math.floor((100 * done) / total) : 100;
    const text = `${label}: ${pct}% (${unit(done)} of ${unit(total)})`;
    if (this.tty) {
      this.out.write(`\r\x1b[K${text}`);
      this.drawn = true;
      if (done >= total) this.line(text);
      return;
    }
    const q = Math.floor(pct / 25);
    if (q > this.quarter) {
      this.quarter = q;
      this.line(text);
    }
  }

  /** While `work` runs, says how long it has been running (every second on a terminal, every 5 s elsewhere). */
  async during<T>(label: string, work: Promise<T>): Promise<T> {
    const started = Date.now();
    const every = this.tty ? 1000 : 5000;
    const timer = setInterval(() => {
      const text = `${label}… ${formatDuration(Math.round((Date.now() - started) / 1000) * 1000)}`;
      if (this.tty) {
        this.out.write(`\r\x1b[K${text}`);
        this.drawn = true;
      } else this.line(text);
    }, every);
    try {
      return await work;
    } finally {
      clearInterval(timer);
      if (this.drawn) this.out.write('\r\x1b[K');
      this.drawn = false;
    }
  }
}

export const kib = (n: number) => `${Math.ceil(n / 1024)} KiB`;

/** Flags of every command that changes what agents apply. */
export const writeFlags: FlagSpec[] = [
  { name: 'wait', kind: 'bool', default: 'false', help: 'after a write, wait until every live agent has applied it (progress per host on stderr)' },
  { name: 'wait-timeout', kind: 'duration', default: '30s', help: 'how long --wait waits before failing with the hosts that lag' },
];

function hostState(h: Host, revision: number): string {
  const lag = revision - h.appliedRevision;
  const issues = [h.errors.length ? `${h.errors.length} error${h.errors.length > 1 ? 's' : ''}` : '', h.warnings.length ? `${h.warnings.length} warning${h.warnings.length > 1 ? 's' : ''}` : '']
    .filter(Boolean)
    .join(', ');
  return `${lag <= 0 ? 'applied' : `at ${h.appliedRevision}, ${lag} behind`}${issues ? ` (${issues})` : ''}`;
}

/**
 * Waits until every live agent has applied `revision` (GET /hosts), writing a
 * line per host whenever its state changes. Rejects after `timeoutMs`, naming
 * the hosts that lag.
 */
export async function waitApplied(api: ApiClient, revision: number, timeoutMs: number, progress = new Progress()): Promise<Host[]> {
  const deadline = Date.now() + timeoutMs;
  const seen = new Map<string, string>();
  progress.line(`waiting for every live host to apply revision ${revision} (up to ${formatDuration(timeoutMs)})`);
  for (;;) {
    const { data } = await api.request<Host[]>('GET', '/hosts');
    const live = data.filter((h) => h.alive);
    for (const h of live) {
      const state = hostState(h, revision);
      if (seen.get(h.id) !== state) progress.line(`  ${h.id}: ${state}`);
      seen.set(h.id, state);
    }
    const behind = live.filter((h) => h.appliedRevision < revision);
    if (behind.length === 0) {
      progress.line(live.length ? `revision ${revision} applied on every live host (${live.length})` : 'no live host to wait for');
      return data;
    }
    if (Date.now() > deadline) {
      throw new ApiError(0, `timed out after ${formatDuration(timeoutMs)} waiting for revision ${revision} on: ${behind.map((h) => `${h.id} (${hostState(h, revision)})`).join(', ')}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Prints a write's answer, then waits for the agents if asked. */
export async function finishWrite(api: ApiClient, values: FlagValues, data: unknown, revision?: number): Promise<void> {
  print(values, data);
  if (values.wait && revision !== undefined) await waitApplied(api, revision, values['wait-timeout'] as number);
}
