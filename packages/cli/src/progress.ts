/**
 * Progress on stderr, so stdout stays the command's JSON answer. On a
 * terminal a moving figure is redrawn in place; elsewhere (logs, CI, tests)
 * it is written as plain lines, at most one per quarter of the way.
 */
import type { Host } from '@switchyard/shared';
import { formatDuration } from '@switchyard/shared';
import { ApiError, print, type ApiClient, type ApiResponse } from './client.js';
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
  {
    name: 'wait',
    kind: 'bool',
    default: 'false',
    help: 'after a write, wait until the agents it concerns have applied it (L4: every live agent; cen/cin: the hosts of the objects), with progress per host on stderr',
  },
  { name: 'wait-timeout', kind: 'duration', default: '30s', help: 'how long --wait waits before failing with the hosts that lag' },
];

/** Waits for a write, given its answer (prepared before the write when it needs to read something first). */
export type Waiter = (answer: ApiResponse) => Promise<void>;

/** One host as a wait sees it at one poll. */
export interface HostWait {
  id: string;
  /** What a progress line and the timeout message say of it: `applied`, `at 120, 3 behind`. */
  state: string;
  applied: boolean;
  /** The write failed on this host: the wait ends at once with this message. */
  failure?: string;
}

export interface HostsWait {
  revision: number;
  timeoutMs: number;
  /** The hosts waited for, as the lines say it: `every live host`, `every host of CEN c1`. */
  hosts: string;
  /** The line when there is no host at all to wait for. */
  none: string;
  /** Each host's state now; polled every 100 ms. */
  poll(): Promise<HostWait[]>;
  /** More words for each lagging host in the timeout message (asked once, at the timeout). */
  explain?(lagging: HostWait[]): Promise<Map<string, string>>;
}

/**
 * Waits until every host `poll` returns has applied the write, writing a line
 * per host whenever its state changes. Rejects at once when a host reports
 * the write failed, and after the timeout naming the hosts that lag.
 */
export async function waitHosts(w: HostsWait, progress = new Progress()): Promise<void> {
  const deadline = Date.now() + w.timeoutMs;
  const seen = new Map<string, string>();
  progress.line(`waiting for ${w.hosts} to apply revision ${w.revision} (up to ${formatDuration(w.timeoutMs)})`);
  for (;;) {
    const hosts = await w.poll();
    for (const h of hosts) {
      if (seen.get(h.id) !== h.state) progress.line(`  ${h.id}: ${h.state}`);
      seen.set(h.id, h.state);
    }
    const failed = hosts.find((h) => h.failure);
    if (failed) throw new ApiError(0, failed.failure as string);
    const behind = hosts.filter((h) => !h.applied);
    if (behind.length === 0) {
      progress.line(hosts.length ? `revision ${w.revision} applied on ${w.hosts} (${hosts.length})` : w.none);
      return;
    }
    if (Date.now() > deadline) {
      const more = (await w.explain?.(behind).catch(() => undefined)) ?? new Map<string, string>();
      const named = behind.map((h) => `${h.id} (${[h.state, more.get(h.id)].filter(Boolean).join('; ')})`);
      throw new ApiError(0, `timed out after ${formatDuration(w.timeoutMs)} waiting for revision ${w.revision} on: ${named.join(', ')}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** `3 errors, 1 warning`, or '' for none. */
function issues(errors: number, warnings = 0): string {
  const n = (k: number, word: string) => (k ? `${k} ${word}${k > 1 ? 's' : ''}` : '');
  return [n(errors, 'error'), n(warnings, 'warning')].filter(Boolean).join(', ');
}

/** `applied` or `at 120, 3 behind`. */
export function lagState(applied: number, revision: number): string {
  return applied >= revision ? 'applied' : `at ${applied}, ${revision - applied} behind`;
}

function hostState(h: Host, revision: number): string {
  const i = issues(h.errors.length, h.warnings.length);
  return `${lagState(h.appliedRevision, revision)}${i ? ` (${i})` : ''}`;
}

/** L4: waits until every live agent has applied `revision` (GET /hosts). */
export async function waitApplied(api: ApiClient, revision: number, timeoutMs: number, progress = new Progress()): Promise<void> {
  await waitHosts(
    {
      revision,
      timeoutMs,
      hosts: 'every live host',
      none: 'no live host to wait for',
      poll: async () =>
        (await api.request<Host[]>('GET', '/hosts')).data
          .filter((h) => h.alive)
          .map((h) => ({ id: h.id, state: hostState(h, revision), applied: h.appliedRevision >= revision })),
    },
    progress,
  );
}

/** L4's Waiter: every live agent (nothing to read before the write). */
export function l4Waiter(api: ApiClient, values: FlagValues): Waiter {
  return async ({ revision }) => {
    if (revision !== undefined) await waitApplied(api, revision, values['wait-timeout'] as number);
  };
}

/** Prints a write's answer, then, with --wait, waits for the agents (L4's unless told). */
export async function finishWrite(api: ApiClient, values: FlagValues, answer: ApiResponse, wait: Waiter = l4Waiter(api, values)): Promise<void> {
  print(values, answer.data);
  if (values.wait) await wait(answer);
}
