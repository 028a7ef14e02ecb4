/**
 * The persistent `nft -i` session, the `nft monitor` follower and the sync
 * loop's token bucket, against scripted processes: what nft 1.0.6 prints
 * (captured from a real `nft -i` and `nft monitor`), split at awkward
 * places the way pipes deliver it.
 */
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { SpawnOptions, Spawned } from '../../packages/agent/src/exec/runner.js';
import { NftMonitor } from '../../packages/agent/src/adapters/nft-monitor.js';
import { NftSession } from '../../packages/agent/src/adapters/nft-session.js';
import { SyncLoop } from '../../packages/agent/src/loop.js';

/** A fake `nft -i`: answers each line it is written; a line naming `bad` fails like nft does. */
class FakeNftI {
  readonly started: { args: string[]; opts: SpawnOptions }[] = [];
  readonly lines: string[] = [];
  private nextPid = 100;
  dead = false;

  spawn = (_cmd: string, args: string[], opts: SpawnOptions): Spawned => {
    this.started.push({ args, opts });
    const pid = this.nextPid++;
    return {
      pid,
      write: (text) => {
        let out = '';
        for (const line of text.split('\n').filter(Boolean)) {
          this.lines.push(line);
          if (this.dead) continue;
          out += line.startsWith('list table inet sy_batch_done_')
            ? `Error: No such file or directory\n${line}\n${' '.repeat(16)}${'^'.repeat(line.length - 16)}\n`
            : line.includes('bad')
              ? `Error: Could not process rule: No such file or directory\n${line}\n      ^^^^\n`
              : '';
        }
        // Delivered in two pieces, split inside a line.
        if (out) setImmediate(() => (opts.onStderr?.(out.slice(0, 7)), setImmediate(() => opts.onStderr?.(out.slice(7)))));
      },
      end: () => undefined,
      kill: () => setImmediate(() => opts.onExit?.(undefined)),
    };
  };
}

describe('nft -i session', () => {
  it('applies each script as one line, in order, and tells a rejected batch by its error', async () => {
    const nft = new FakeNftI();
    const s = new NftSession(nft, { netns: 'ns1' });
    await Promise.all([s.apply('add table inet t\nadd chain inet t c\n'), s.apply('add element inet t m { 1 }\n')]);
    await expect(s.apply('delete element inet t m { bad }\n')).rejects.toThrow(/nft rejected the batch: Error: Could not process rule: No such file or directory\ndelete element inet t m \{ bad \}/);
    await s.apply('add element inet t m { 2 }\n');
    expect(nft.started).toHaveLength(1);
    expect(nft.started[0].args).toEqual(['-i']);
    expect(nft.started[0].opts.netns).toBe('ns1');
    expect(nft.lines).toEqual([
      'add table inet t; add chain inet t c',
      'list table inet sy_batch_done_1',
      'add element inet t m { 1 }',
      'list table inet sy_batch_done_2',
      'delete element inet t m { bad }',
      'list table inet sy_batch_done_3',
      'add element inet t m { 2 }',
      'list table inet sy_batch_done_4',
    ]);
    s.close();
  });

  it('fails a batch whose process dies or does not answer, and starts a new process for the next', async () => {
    const nft = new FakeNftI();
    const s = new NftSession(nft, { timeoutMs: 50 });
    nft.dead = true;
    await expect(s.apply('add table inet t\n')).rejects.toThrow(/did not answer within 50 ms/);
    nft.dead = false;
    await s.apply('add table inet t\n');
    expect(nft.started).toHaveLength(2);
    s.close();
  });

  it('replaces the process after maxBatches (nft keeps every line in its history)', async () => {
    const nft = new FakeNftI();
    const s = new NftSession(nft, { maxBatches: 2 });
    for (let i = 0; i < 5; i++) await s.apply(`add element inet t m { ${i} }\n`);
    expect(nft.started).toHaveLength(3);
    s.close();
  });
});

function monitorWith(own: number[]) {
  let opts: SpawnOptions | undefined;
  const m = new NftMonitor(
    {
      spawn: (_c, _a, o) => {
        opts = o;
        return { pid: 1, write: () => undefined, end: () => undefined, kill: () => undefined };
      },
    },
    { table: 'sy', isOwn: (pid) => own.includes(pid) },
  );
  m.start();
  return { m, print: (text: string) => opts?.onStdout?.(text), exit: () => opts?.onExit?.(1) };
}

describe('nft monitor', () => {
  it('is armed by a generation of our own; a foreign generation touching our table moves the epoch, one elsewhere does not', () => {
    const { m, print } = monitorWith([7]);
    expect(m.armed).toBe(false);
    print('add table inet other\n# new generation 2 by process 9 (nft)\n');
    expect(m.armed).toBe(false);
    print('add set inet sy sy_monitor_probe { type ipv4_addr; }\ndelete set inet sy sy_monitor_probe\n# new generation 3 by pro');
    print('cess 7 (nft)\n');
    expect(m.armed).toBe(true);
    const e = m.epoch;
    print('add element inet sy services4 { 10.0.0.1 . tcp . 80 : goto grp.x }\n# new generation 4 by process 7 (nft)\n');
    print('add element inet syx m { 1.1.1.1 }\n# new generation 5 by process 9 (nft)\n');
    expect(m.epoch).toBe(e);
    print('delete element inet sy services4 { 10.0.0.1 . tcp . 80 }\n# new generation 6 by process 9 (nft)\n');
    expect(m.epoch).toBe(e + 1);
    expect(m.foreign).toBe(1);
  });

  it('lost events and a dead monitor move the epoch and disarm it', () => {
    const { m, print, exit } = monitorWith([7]);
    print('delete set inet sy p\n# new generation 3 by process 7 (nft)\n');
    const e = m.epoch;
    print('# ERROR: We lost some netlink events!\n');
    expect(m.epoch).toBe(e + 1);
    exit();
    expect(m.epoch).toBe(e + 2);
    expect(m.armed).toBe(false);
  });
});

describe('sync loop rate limit', () => {
  it('runs the first passes at once, then at most one per interval, coalescing the triggers in between', async () => {
    const starts: number[] = [];
    const loop = new SyncLoop({
      sync: async () => {
        starts.push(performance.now());
      },
      minIntervalMs: 40,
      burst: 2,
      resyncMs: 60_000,
      log: pino({ level: 'silent' }),
    });
    loop.start();
    await loop.idle();
    await new Promise((r) => setTimeout(r, 100)); // the bucket refills
    starts.length = 0;
    const t0 = performance.now();
    for (let i = 0; i < 10; i++) {
      loop.trigger();
      await new Promise((r) => setTimeout(r, 5));
    }
    await new Promise((r) => setTimeout(r, 150));
    await loop.stop();
    // The first trigger did not wait; after the burst, at most one pass per interval.
    expect(starts[0] - t0).toBeLessThan(15);
    expect(starts.length).toBeGreaterThanOrEqual(3);
    const span = (starts.at(-1) as number) - starts[0];
    expect(starts.length).toBeLessThanOrEqual(2 + Math.floor(span / 40) + 1);
    expect(starts.length).toBeLessThan(10);
  });
});
