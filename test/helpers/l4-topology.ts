/**
 * The L4 kernel tests' lab, in network namespaces named `<prefix>{c,lb,b1,b2}-<r>`:
 *
 *   client 10.98.0.2 ── lb (the agent's netns, forwarding)
 *                         └─ bridge ── b1 10.98.1.11:8080
 *                                   └─ b2 10.98.1.12:8080
 *
 * The VIP 10.98.2.100 is outside the client's subnet: the client routes it
 * to the balancer, whose prerouting DNAT picks a backend. Each backend runs
 * a real HTTP server (test/fixtures/agent/http-backend.py) answering its
 * name. `teardown()` removes everything, also after a failed setup.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { expect } from 'vitest';
import type { RunningAgent } from '../../packages/agent/src/index.js';
import type { Coordinator } from '../../packages/coordinator/src/index.js';

export const VIP = '10.98.2.100';
export const B1 = '10.98.1.11';
export const B2 = '10.98.1.12';
const BACKEND = fileURLToPath(new URL('../fixtures/agent/http-backend.py', import.meta.url));
const CLIENT = fileURLToPath(new URL('../fixtures/agent/http-client.py', import.meta.url));

export const sh = (cmd: string, args: string[]) => execa(cmd, args, { reject: true });
export const inNs = (ns: string, cmd: string, args: string[]) => sh('ip', ['netns', 'exec', ns, cmd, ...args]);

export async function waitFor(what: string, fn: () => Promise<boolean | undefined>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

/** A REST write through the coordinator (no socket): its X-Switchyard-Revision; anything but 200 fails the test. */
export async function restWrite(coord: Coordinator, method: 'POST' | 'PUT' | 'DELETE', url: string, payload?: unknown): Promise<number> {
  const res = await coord.app.inject({ method, url, ...(payload !== undefined ? { payload: payload as object } : {}) });
  expect(res.statusCode, res.body).toBe(200);
  return Number(res.headers['x-switchyard-revision']);
}

/** Waits until the agent (read anew each time: tests restart it) says it applied `rev`. */
export async function agentApplied(agent: () => RunningAgent | undefined, rev: number): Promise<void> {
  await waitFor(`agent to apply revision ${rev}`, async () => (agent()?.status.written?.appliedRevision ?? 0) >= rev);
}

/** `n` new connections from `ns` to addr:port; the backend name (or ERR …) of each. */
export async function request(ns: string, addr: string, port: number, n: number): Promise<string[]> {
  const res = await execa('ip', ['netns', 'exec', ns, '/usr/bin/python3', CLIENT, addr, String(port), String(n)], { reject: false });
  return res.stdout.split('\n').filter(Boolean);
}

export function count(answers: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const a of answers) out[a] = (out[a] ?? 0) + 1;
  return out;
}

export class L4Lab {
  readonly r = randomBytes(2).toString('hex');
  readonly ns: { c: string; lb: string; b1: string; b2: string };
  private readonly backends = new Map<1 | 2, ChildProcess>();
  readonly clientScript = CLIENT;

  constructor(prefix: string) {
    this.ns = { c: `${prefix}c-${this.r}`, lb: `${prefix}lb-${this.r}`, b1: `${prefix}b1-${this.r}`, b2: `${prefix}b2-${this.r}` };
  }

  backendAddress(i: 1 | 2): string {
    return i === 1 ? B1 : B2;
  }

  async setup(): Promise<void> {
    const { ns } = this;
    for (const n of Object.values(ns)) {
      await sh('ip', ['netns', 'add', n]);
      await sh('ip', ['-n', n, 'link', 'set', 'lo', 'up']);
    }
    await sh('ip', ['link', 'add', 'c0', 'netns', ns.c, 'type', 'veth', 'peer', 'name', 'lbc', 'netns', ns.lb]);
    await sh('ip', ['-n', ns.c, 'addr', 'add', '10.98.0.2/24', 'dev', 'c0']);
    await sh('ip', ['-n', ns.c, 'link', 'set', 'c0', 'up']);
    await sh('ip', ['-n', ns.c, 'route', 'add', 'default', 'via', '10.98.0.1']);
    await sh('ip', ['-n', ns.lb, 'addr', 'add', '10.98.0.1/24', 'dev', 'lbc']);
    await sh('ip', ['-n', ns.lb, 'link', 'set', 'lbc', 'up']);
    await sh('ip', ['-n', ns.lb, 'link', 'add', 'br0', 'type', 'bridge']);
    await sh('ip', ['-n', ns.lb, 'addr', 'add', '10.98.1.1/24', 'dev', 'br0']);
    await sh('ip', ['-n', ns.lb, 'link', 'set', 'br0', 'up']);
    for (const i of [1, 2] as const) {
      const bns = i === 1 ? ns.b1 : ns.b2;
      await sh('ip', ['link', 'add', 'e0', 'netns', bns, 'type', 'veth', 'peer', 'name', `lbb${i}`, 'netns', ns.lb]);
      await sh('ip', ['-n', ns.lb, 'link', 'set', `lbb${i}`, 'master', 'br0', 'up']);
      await sh('ip', ['-n', bns, 'addr', 'add', `${this.backendAddress(i)}/24`, 'dev', 'e0']);
      await sh('ip', ['-n', bns, 'link', 'set', 'e0', 'up']);
      await sh('ip', ['-n', bns, 'route', 'add', 'default', 'via', '10.98.1.1']);
      await this.startBackend(i);
    }
    await inNs(ns.lb, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  }

  /** Starts backend i's HTTP server and waits until it answers from the balancer. */
  async startBackend(i: 1 | 2): Promise<void> {
    const addr = this.backendAddress(i);
    this.backends.set(i, spawn('ip', ['netns', 'exec', i === 1 ? this.ns.b1 : this.ns.b2, '/usr/bin/python3', BACKEND, `b${i}`, addr, '8080'], { stdio: 'ignore' }));
    await waitFor(`backend ${addr}`, async () => (await request(this.ns.lb, addr, 8080, 1))[0]?.startsWith('b'));
  }

  /** Kills backend i's server (its address stays: connections are refused). */
  async stopBackend(i: 1 | 2): Promise<void> {
    const child = this.backends.get(i);
    this.backends.delete(i);
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((res) => child.once('exit', res));
    child.kill('SIGKILL');
    await exited;
  }

  async teardown(): Promise<void> {
    for (const i of [...this.backends.keys()]) await this.stopBackend(i);
    for (const n of Object.values(this.ns)) await execa('ip', ['netns', 'del', n], { reject: false });
  }
}
