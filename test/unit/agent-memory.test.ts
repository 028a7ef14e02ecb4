/** The heap compactor: one major GC after full passes, only when the heap holds much more than is live; and now and then while idle. */
import { getHeapStatistics } from 'node:v8';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { HeapCompactor } from '../../packages/agent/src/memory.js';

const log = pino({ level: 'silent' });

describe('heap compactor', () => {
  it('collects the garbage a big pass left, and only when the heap is big enough', () => {
    let junk: { i: number; s: string }[] | undefined = Array.from({ length: 300_000 }, (_, i) => ({ i, s: `value ${i}` }));
    expect(junk.length).toBe(300_000);
    junk = undefined;
    const before = getHeapStatistics().used_heap_size;
    expect(new HeapCompactor(log, { minHeapBytes: 2 ** 40 }).compactIfWorthIt()).toBe(false);
    expect(new HeapCompactor(log, { minHeapBytes: 1 }).compactIfWorthIt()).toBe(true);
    expect(getHeapStatistics().used_heap_size).toBeLessThan(before - 10 * 2 ** 20);
  });

  it('does not collect again until the heap has grown by minGrowthBytes since the last collection', () => {
    const c = new HeapCompactor(log, { minHeapBytes: 1, minGrowthBytes: 20 * 2 ** 20 });
    expect(c.compactIfWorthIt()).toBe(true);
    // A resync that found nothing to do leaves little garbage: no pause for it.
    expect(c.compactIfWorthIt()).toBe(false);
    let junk: { i: number; s: string }[] | undefined = Array.from({ length: 600_000 }, (_, i) => ({ i, s: `value ${i}` }));
    expect(junk.length).toBe(600_000);
    junk = undefined;
    expect(c.compactIfWorthIt()).toBe(true);
  });

  it('while idle, collects once the heap has grown by idleGrowthBytes over the least it held', () => {
    const c = new HeapCompactor(log, { idleGrowthBytes: 8 * 2 ** 20, quietMs: 0 });
    // The first look only notes the heap; little garbage since: nothing to do.
    c.collectIfIdle();
    expect(c.collectIfIdle()).toBe(false);
    let junk: { i: number; s: string }[] | undefined = Array.from({ length: 300_000 }, (_, i) => ({ i, s: `value ${i}` }));
    expect(junk.length).toBe(300_000);
    junk = undefined;
    const before = getHeapStatistics().used_heap_size;
    expect(c.collectIfIdle()).toBe(true);
    expect(getHeapStatistics().used_heap_size).toBeLessThan(before - 8 * 2 ** 20);
    expect(c.collectIfIdle()).toBe(false);
  });

  it('does not collect while sync passes run (a pause would hold up a change)', () => {
    const c = new HeapCompactor(log, { idleGrowthBytes: 1, quietMs: 10_000 });
    const observer = c.wrap({ synced: () => undefined, failed: () => undefined });
    c.collectIfIdle(performance.now() + 20_000);
    observer.synced(false, 0.01);
    let junk: { i: number; s: string }[] | undefined = Array.from({ length: 100_000 }, (_, i) => ({ i, s: `value ${i}` }));
    expect(junk.length).toBe(100_000);
    junk = undefined;
    expect(c.collectIfIdle(performance.now() + 5_000)).toBe(false);
    expect(c.collectIfIdle(performance.now() + 11_000)).toBe(true);
  });

  it('looks at the heap every idleCheckMs once started, and not after stop', async () => {
    const c = new HeapCompactor(log, { idleCheckMs: 20 });
    let looks = 0;
    c.collectIfIdle = () => (looks++, false);
    await new Promise((r) => setTimeout(r, 50));
    expect(looks).toBe(0);
    c.start();
    await new Promise((r) => setTimeout(r, 110));
    expect(looks).toBeGreaterThanOrEqual(3);
    c.stop();
    const at = looks;
    await new Promise((r) => setTimeout(r, 60));
    expect(looks).toBe(at);
  });

  it('checks once, after the last of several full passes', async () => {
    const c = new HeapCompactor(log, { minHeapBytes: 2 ** 40, delaysMs: [50] });
    let checks = 0;
    c.compactIfWorthIt = () => (checks++, false);
    const observer = c.wrap({ synced: () => undefined, failed: () => undefined });
    observer.synced(true, 1);
    observer.synced(false, 0.01);
    await new Promise((r) => setTimeout(r, 20));
    observer.synced(true, 1);
    await new Promise((r) => setTimeout(r, 120));
    expect(checks).toBe(1);
    observer.synced(false, 0.01);
    await new Promise((r) => setTimeout(r, 80));
    expect(checks).toBe(1);
    c.stop();
  });
});
