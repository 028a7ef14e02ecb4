/**
 * `--wait`'s pieces without a coordinator: the one waiting loop (lines per
 * host on change, failure at once, timeout naming the laggards) and how a
 * Leviathan host report reads against a write's revision.
 */
import { describe, expect, it } from 'vitest';
import type { LevHostView } from '@switchyard/shared';
import { Progress, waitHosts, type HostWait } from '../../packages/cli/src/progress.js';
import { levHostWait, objectsLabel } from '../../packages/cli/src/commands/leviathan-wait.js';

function captured(): { progress: Progress; text: () => string } {
  let out = '';
  const stream = { isTTY: false, write: (s: string) => ((out += s), true) } as unknown as NodeJS.WriteStream;
  return { progress: new Progress(stream), text: () => out };
}

const report = (over: Partial<LevHostView>): LevHostView => ({
  hostId: 'h1',
  appliedRevision: 10,
  failedRevision: null,
  lastSync: new Date().toISOString(),
  cens: 1,
  cins: 0,
  containers: 2,
  errors: [],
  ...over,
});

describe('a Leviathan host report against revision 20', () => {
  it('is applied at or past it, lagging below it, and lagging without a report', () => {
    expect(levHostWait('h1', report({ appliedRevision: 20 }), 20, 'CEN c1')).toEqual({ id: 'h1', state: 'applied', applied: true });
    expect(levHostWait('h1', report({ appliedRevision: 17 }), 20, 'CEN c1')).toEqual({ id: 'h1', state: 'at 17, 3 behind', applied: false });
    expect(levHostWait('h1', undefined, 20, 'CEN c1')).toMatchObject({ state: 'no report from its agent yet', applied: false });
  });

  it('fails on an error of a pass that tried revision 20 or later, naming host and objects', () => {
    const w = levHostWait('h1', report({ failedRevision: 20, errors: [{ object: 'host/h1', message: 'ip -batch - failed: RTNETLINK answers: File exists\n(input: link add …)\n' }] }), 20, 'CEN c1');
    expect(w.applied).toBe(false);
    expect(w.failure).toBe('CEN c1 failed on h1: ip -batch - failed: RTNETLINK answers: File exists\n(input: link add …)');
    // The progress line keeps to one line.
    expect(w.state).toBe('error: ip -batch - failed: RTNETLINK answers: File exists');
  });

  it('keeps waiting on an older error, which the agent is retrying', () => {
    const old = levHostWait('h1', report({ failedRevision: 12, errors: [{ object: 'host/h1', message: 'busy' }] }), 20, 'CEN c1');
    expect(old.failure).toBeUndefined();
    expect(old.state).toBe('at 10, 10 behind; error at revision 12, retrying: busy');
    // An agent that does not say which revision failed: never taken for this write's failure.
    expect(levHostWait('h1', report({ errors: [{ object: 'host/h1', message: 'busy' }] }), 20, 'CEN c1').failure).toBeUndefined();
    // Applied, with a later pass failing: this write is done.
    expect(levHostWait('h1', report({ appliedRevision: 21, failedRevision: 25, errors: [{ object: 'host/h1', message: 'x' }] }), 20, 'CEN c1').applied).toBe(true);
  });

  it('names objects briefly', () => {
    expect(objectsLabel('cen', ['c1'])).toBe('CEN c1');
    expect(objectsLabel('cin', ['n1', 'n2'])).toBe('CINs n1, n2');
    expect(objectsLabel('cen', Array.from({ length: 400 }, (_, i) => `c${i}`))).toBe('400 CENs (c0, c1, c2, …)');
  });
});

describe('waitHosts', () => {
  const base = { revision: 20, hosts: 'every host of CEN c1', none: 'nothing to wait for' };

  it('writes a line per host when its state changes, then the end', async () => {
    const rounds: HostWait[][] = [
      [{ id: 'a', state: 'at 18, 2 behind', applied: false }, { id: 'b', state: 'applied', applied: true }],
      [{ id: 'a', state: 'at 18, 2 behind', applied: false }, { id: 'b', state: 'applied', applied: true }],
      [{ id: 'a', state: 'applied', applied: true }, { id: 'b', state: 'applied', applied: true }],
    ];
    const { progress, text } = captured();
    await waitHosts({ ...base, timeoutMs: 10_000, poll: async () => rounds.shift() as HostWait[] }, progress);
    expect(text()).toBe(
      'waiting for every host of CEN c1 to apply revision 20 (up to 10s)\n  a: at 18, 2 behind\n  b: applied\n  a: applied\nrevision 20 applied on every host of CEN c1 (2)\n',
    );
  });

  it('says so when there is no host to wait for', async () => {
    const { progress, text } = captured();
    await waitHosts({ ...base, timeoutMs: 1000, poll: async () => [] }, progress);
    expect(text()).toMatch(/nothing to wait for\n$/);
  });

  it('ends at once on a host that failed', async () => {
    const { progress } = captured();
    const started = Date.now();
    const failed = { id: 'a', state: 'error: boom', applied: false, failure: 'CEN c1 failed on a: boom' };
    await expect(waitHosts({ ...base, timeoutMs: 10_000, poll: async () => [failed] }, progress)).rejects.toThrow('CEN c1 failed on a: boom');
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('times out naming the hosts that lag, with what explain adds', async () => {
    const { progress } = captured();
    const poll = async () => [
      { id: 'a', state: 'applied', applied: true },
      { id: 'b', state: 'at 3, 17 behind', applied: false },
    ];
    const explain = async (lagging: HostWait[]) => new Map(lagging.map((h) => [h.id, 'no agent running; CEN c1']));
    await expect(waitHosts({ ...base, timeoutMs: 200, poll, explain }, progress)).rejects.toThrow(
      'timed out after 200ms waiting for revision 20 on: b (at 3, 17 behind; no agent running; CEN c1)',
    );
  });
});
