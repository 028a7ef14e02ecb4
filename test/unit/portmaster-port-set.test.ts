/**
 * The lowest-free-port structure and the per-service view, against a plain
 * reference model (a sorted scan), including ranges that end mid-word.
 */
import { describe, expect, it } from 'vitest';
import { PortSet } from '../../packages/coordinator/src/portmaster/port-set.js';
import { ServiceView } from '../../packages/coordinator/src/portmaster/service-view.js';

/** Deterministic PRNG so a failure reproduces. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

describe('PortSet', () => {
  it('hands out ports lowest first until full', () => {
    const s = new PortSet(5000, 5002);
    const got: number[] = [];
    for (let p = s.lowestFree(); p !== undefined; p = s.lowestFree()) {
      expect(s.take(p)).toBe(true);
      got.push(p);
    }
    expect(got).toEqual([5000, 5001, 5002]);
    expect(s.count).toBe(3);
    expect(s.free(5001)).toBe(true);
    expect(s.lowestFree()).toBe(5001);
  });

  it('ignores ports outside the range and double takes/frees', () => {
    const s = new PortSet(100, 131);
    expect(s.take(99)).toBe(false);
    expect(s.take(132)).toBe(false);
    expect(s.take(100)).toBe(true);
    expect(s.take(100)).toBe(false);
    expect(s.free(101)).toBe(false);
    expect(s.count).toBe(1);
    expect(s.has(132)).toBe(false);
  });

  it('never offers the padding past the end of a range', () => {
    for (const size of [1, 2, 31, 32, 33, 1023, 1024, 1025, 48128]) {
      const s = new PortSet(1024, 1024 + size - 1);
      for (let p = 1024; p < 1024 + size; p++) s.take(p);
      expect(s.lowestFree()).toBeUndefined();
      expect(s.count).toBe(size);
      s.free(1024 + size - 1);
      expect(s.lowestFree()).toBe(1024 + size - 1);
    }
  });

  it('agrees with a scan under random takes and frees', () => {
    const start = 1024;
    const size = 5000;
    const s = new PortSet(start, start + size - 1);
    const taken = new Set<number>();
    const rnd = prng(42);
    let mismatches = 0;
    for (let i = 0; i < 20_000; i++) {
      const p = start + Math.floor(rnd() * size);
      if (rnd() < 0.6) {
        if (s.take(p) === taken.has(p)) mismatches++;
        taken.add(p);
      } else {
        if (s.free(p) !== taken.has(p)) mismatches++;
        taken.delete(p);
      }
      if (i % 211 === 0) {
        let lowest: number | undefined;
        for (let q = start; q < start + size; q++) {
          if (!taken.has(q)) {
            lowest = q;
            break;
          }
        }
        expect(s.lowestFree()).toBe(lowest);
        expect(s.count).toBe(taken.size);
      }
    }
    expect(mismatches).toBe(0);
  });

  it('rejects an inverted range', () => {
    expect(() => new PortSet(10, 9)).toThrow(RangeError);
  });
});

describe('ServiceView', () => {
  const record = { name: 'x', created: '2024-01-01T00:00:00.000Z' };

  it('a reserved port is not offered; a held one stays taken when its reservation ends', () => {
    const v = new ServiceView('svc');
    v.setService({ name: 'svc', description: null, start: 2000, end: 2002 }, 7);
    v.reserve(2000);
    expect(v.lowestFree()).toBe(2001);
    v.hold({ port: 2000, record, modRevision: 8 });
    v.unreserve(2000);
    expect(v.lowestFree()).toBe(2001);
    v.unhold(2000);
    expect(v.lowestFree()).toBe(2000);
  });

  it('a released port stays taken while reserved by a local offer', () => {
    const v = new ServiceView('svc');
    v.setService({ name: 'svc', description: null, start: 2000, end: 2001 }, 7);
    v.hold({ port: 2000, record, modRevision: 8 });
    v.reserve(2000);
    v.unhold(2000);
    expect(v.lowestFree()).toBe(2001);
  });

  it('a range change keeps what is held and reserved, and wakes waiters', async () => {
    const v = new ServiceView('svc');
    v.hold({ port: 3000, record, modRevision: 5 });
    v.setService({ name: 'svc', description: null, start: 3000, end: 3001 }, 6);
    v.reserve(3001);
    expect(v.lowestFree()).toBeUndefined();
    const woken = v.changed(1000);
    v.setService({ name: 'svc', description: null, start: 3000, end: 3003 }, 9);
    expect(await woken).toBe(true);
    expect(v.modRevision).toBe(9);
    expect(v.lowestFree()).toBe(3002);
  });

  it('changed() times out when nothing happens', async () => {
    const v = new ServiceView('svc');
    expect(await v.changed(20)).toBe(false);
    expect(await v.changed(0)).toBe(false);
    expect(v.empty).toBe(true);
  });
});
