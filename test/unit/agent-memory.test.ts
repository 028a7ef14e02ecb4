/** The heap compactor: one major GC after full passes, only when the heap holds much more than is live. */
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
