/**
 * The member probes judge etcd, not this process: a probe whose deadline
 * fired late because this process's event loop was blocked (a big JSON
 * body, 10,000 watch events handled in one go) must not mark a healthy
 * member down — on a single-member etcd that would cancel every watch and
 * turn reads into 503s while etcd is fine.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEtcdClient, membersOf } from '@switchyard/shared';
import { sharedEtcdUrl } from '../helpers/etcd.js';

let client: ReturnType<typeof createEtcdClient>;

beforeAll(() => {
  client = createEtcdClient({ hosts: [sharedEtcdUrl()] });
});
afterAll(() => client?.close());

/** Keeps the event loop busy for `ms`. */
function block(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    /* busy */
  }
}

describe('member probes', () => {
  it('keep a member up through stalls of this process, and still see it answer', async () => {
    const members = membersOf(client)!;
    await client.get('warm-up').string();
    await new Promise((r) => setTimeout(r, 500));
    expect(members.allDown).toBe(false);
    const downs: string[] = [];
    members.on('member-down', (url: string) => downs.push(url));
    // Stall after stall, with only a moment in between: each probe in flight times out "late".
    for (let i = 0; i < 6; i++) {
      block(700);
      await new Promise((r) => setImmediate(r));
    }
    await new Promise((r) => setTimeout(r, 400));
    expect(downs).toEqual([]);
    // The stalls were seen as such (the test did exercise them).
    expect(members.stalls).toBeGreaterThan(0);
    expect(members.allDown).toBe(false);
  });
});
