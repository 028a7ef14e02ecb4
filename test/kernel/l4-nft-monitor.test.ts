/**
 * The nftables dataplane's full resync against the real kernel, in a
 * namespace of its own (synm<r>): with the monitor following the table, a
 * resync compares against the model and reads nothing back while only the
 * agent changes the table (its persistent `nft -i` included); a change by
 * another process is seen, and the next resync reads the table back and
 * undoes it. The namespace is removed in afterAll, even on failure.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { execa } from 'execa';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServiceInput, toService, type Service } from '@switchyard/shared';
import { ExecaRunner } from '../../packages/agent/src/exec/runner.js';
import { NftExecutor } from '../../packages/agent/src/l4/nftables/executor.js';
import { NftDataplane } from '../../packages/agent/src/l4/nftables/dataplane.js';

const r = randomBytes(2).toString('hex');
const NS = `synm${r}`;
const TABLE = `synmt${r}`;
const silent = pino({ level: 'silent' });

const svc = (i: number, servers = 2): Service =>
  toService(
    ServiceInput.parse({
      host: `10.77.0.${i}`,
      port: 80,
      scheduler: 'wrr',
      servers: Array.from({ length: servers }, (_, k) => ({ host: `10.78.0.${k + 1}`, port: 8080, forwarder: 'm', weight: 1 })),
    }),
  );

const nft = (...args: string[]) => execa('ip', ['netns', 'exec', NS, 'nft', ...args]);

async function until(what: string, fn: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((res) => setTimeout(res, 10));
  }
}

/** This process's children running the netlink program as a process of their own. */
function monitorProcesses(): number {
  const children = readFileSync(`/proc/${process.pid}/task/${process.pid}/children`, 'utf8').split(' ').filter(Boolean);
  return children.filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('NFNLGRP_NFTABLES');
    } catch {
      return false;
    }
  }).length;
}

// Every way of following the kernel's events: the netlink program in a thread of the spawn helper (the agent's
// default), the same program as a process of its own (a runner without the helper), and `nft monitor` (no python3).
describe.each([
  { how: 'netlink program in the spawn helper', source: 'netlink', helper: true, processes: 0 },
  { how: 'netlink program, its own process', source: 'netlink', helper: false, processes: 1 },
  { how: 'nft monitor', source: 'nft', helper: true, processes: 0 },
] as const)('nftables full resync with the monitor ($how)', ({ source, helper, processes }) => {
  let dp: NftDataplane | undefined;
  // The agent's way: short-lived commands from the spawn helper (the monitor tells the agent's own transactions apart by the pid it reports).
  const runner = new ExecaRunner({ netns: NS, helper });

  beforeAll(async () => {
    await execa('ip', ['netns', 'add', NS]);
  });

  afterAll(async () => {
    dp?.close();
    runner.close();
    await execa('ip', ['netns', 'del', NS], { reject: false });
  });

  it('reads the table back only after another process touched it, and then undoes what it did', async () => {
    const exec = new NftExecutor(runner, { table: TABLE, netns: NS, monitorSource: source });
    const d = new NftDataplane(exec, TABLE, silent);
    dp = d;
    let desired = new Map([1, 2, 3].map((i) => [svc(i).id, svc(i)]));
    const full = async () => {
      await d.prepareFull(desired);
      expect(await d.sync(desired)).toMatchObject({ failed: false });
    };

    await full();
    expect(d.fullPasses).toEqual({ read: 1, model: 0 });
    await until('the monitor to prove it is subscribed', () => exec.monitor?.armed === true);
    expect(monitorProcesses()).toBe(processes);
    // Started right after that pass: the kernel holds the model, no read needed.
    await full();
    expect(d.fullPasses).toEqual({ read: 1, model: 1 });

    // The agent's own changes (through its persistent nft -i) are not drift.
    const changed = svc(2, 1);
    desired = new Map(desired).set(changed.id, changed);
    await d.sync(desired, new Set([changed.id]));
    expect((await nft('list', 'map', 'inet', TABLE, 'backends4_tcp')).stdout).not.toContain('10.77.0.2 . 80 . 1');
    await new Promise((res) => setTimeout(res, 200));
    await full();
    expect(d.fullPasses).toEqual({ read: 1, model: 2 });
    expect(exec.monitor?.foreign).toBe(0);

    // Another process deletes an element and adds a stray one.
    await nft('delete', 'element', 'inet', TABLE, 'services4', '{ 10.77.0.1 . tcp . 80 }');
    await nft('add', 'element', 'inet', TABLE, 'services4', '{ 10.77.9.9 . tcp . 80 : accept }');
    await until('the monitor to see both', () => exec.monitor?.foreign === 2);
    await full();
    expect(d.fullPasses).toEqual({ read: 2, model: 2 });
    const map = (await nft('list', 'map', 'inet', TABLE, 'services4')).stdout;
    expect(map).toContain('10.77.0.1 . tcp . 80');
    expect(map).not.toContain('10.77.9.9');
    // That read was armed: the kernel equals the model again, and the next resync reads nothing.
    await full();
    expect(d.fullPasses).toEqual({ read: 2, model: 3 });

    // A change to another table in the namespace is not ours to undo.
    await nft('add', 'table', 'inet', `${TABLE}x`);
    await new Promise((res) => setTimeout(res, 200));
    await full();
    expect(d.fullPasses).toEqual({ read: 2, model: 4 });
  });
});
