/**
 * The nftables dataplane's connection feedback against the real kernel, with
 * real TCP: the agent counts connections through conntrack in its namespace
 * and moves new connections where IPVS would send them.
 *
 *   sylfc-<r> (client 10.98.0.2) ── sylflb-<r> (the agent's netns)
 *                                     └─ bridge ── sylfb1-<r> 10.98.1.11:8080 (A)
 *                                               └─ sylfb2-<r> 10.98.1.12:8080 (B)
 *
 * Held connections are real HTTP/1.1 keep-alive connections
 * (test/fixtures/agent/http-hold.py); short ones are one GET each. The
 * balancer's conntrack timeouts for closing states are 1 s (per-namespace
 * sysctls), so a closed connection stops counting within a second instead of
 * TIME_WAIT's 120 s — IPVS's own TIME_WAIT is 120 s too; only the test is in
 * a hurry. Everything is named sylf* and removed in afterAll.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '../../packages/agent/src/index.js';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { testCoordinator } from '../helpers/coordinator.js';
import { sharedEtcdUrl } from '../helpers/etcd.js';
import { agentApplied, B1, B2, count, inNs, L4Lab, request, restWrite, VIP, waitFor } from '../helpers/l4-topology.js';

const HOLD = fileURLToPath(new URL('../fixtures/agent/http-hold.py', import.meta.url));
const lab = new L4Lab('sylf');
const NS = lab.ns;
const TABLE = `sylft${lab.r}`;
const SID = `tcp-${VIP.replace(/\./g, '_')}-80`;
const FEEDBACK_MS = 200;

let coord: Coordinator;
let agent: RunningAgent | undefined;
const holders: ChildProcess[] = [];

interface Held {
  /** The backend each held connection went to, in order. */
  names: string[];
  close(name: string, k: number): Promise<void>;
  end(): Promise<void>;
}

/** Opens `n` connections from the client and keeps them open. */
async function hold(n: number): Promise<Held> {
  const child = spawn('ip', ['netns', 'exec', NS.c, '/usr/bin/python3', HOLD, VIP, '80', String(n)], { stdio: ['pipe', 'pipe', 'inherit'] });
  holders.push(child);
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  const queue: string[] = [];
  let wake: (() => void) | undefined;
  lines.on('line', (l) => {
    queue.push(l);
    wake?.();
  });
  const next = async (): Promise<string> => {
    while (queue.length === 0) await new Promise<void>((r) => (wake = r));
    return queue.shift() as string;
  };
  const names: string[] = [];
  for (let l = await next(); l !== 'held'; l = await next()) names.push(l);
  return {
    names,
    async close(name, k) {
      child.stdin?.write(`${name} ${k}\n`);
      expect(await next()).toBe('closed');
    },
    async end() {
      const exited = new Promise((r) => child.once('exit', r));
      child.stdin?.end();
      await exited;
    },
  };
}

const write = (method: 'POST' | 'PUT' | 'DELETE', url: string, payload?: unknown) => restWrite(coord, method, url, payload);
const applied = (rev: number) => agentApplied(() => agent, rev);

/** The real servers the VIP's slots name right now (what the next new connection can reach). */
async function slots(): Promise<string[]> {
  const out = (await inNs(NS.lb, 'nft', ['-j', 'list', 'map', 'inet', TABLE, 'backends4_tcp'])).stdout;
  const doc = JSON.parse(out) as { nftables: { map?: { elem?: [{ concat: unknown[] }, { concat: unknown[] }][] } }[] };
  const found = new Set<string>();
  for (const item of doc.nftables) for (const [k, v] of item.map?.elem ?? []) if (k.concat[0] === VIP) found.add(String(v.concat[0]));
  return [...found].sort();
}

async function serviceVerdict(): Promise<string> {
  return (await inNs(NS.lb, 'nft', ['list', 'map', 'inet', TABLE, 'services4'])).stdout;
}

const server = (host: string, extra: object = {}) => ({ host, port: 8080, forwarder: 'm', weight: 1, ...extra });
const name = (host: string) => (host === B1 ? 'b1' : 'b2');

describe('nftables connection feedback with real TCP', () => {
  beforeAll(async () => {
    coord = await testCoordinator('l4-nft-feedback');
    try {
      await lab.setup();
      // Closed connections stop counting after 1 s (see the header).
      for (const state of ['time_wait', 'close', 'fin_wait', 'last_ack', 'close_wait']) {
        await inNs(NS.lb, 'sysctl', ['-qw', `net.netfilter.nf_conntrack_tcp_timeout_${state}=1`]);
      }
    } catch (e) {
      await lab.teardown();
      throw e;
    }
    agent = await startAgent({
      hostId: `sylf-${lab.r}`,
      etcd: [sharedEtcdUrl()],
      prefix: coord.ctx.keys.prefix,
      dataplane: 'nftables',
      netns: NS.lb,
      nftTable: TABLE,
      nftFeedbackIntervalMs: FEEDBACK_MS,
      logLevel: 'silent',
    });
  });

  afterAll(async () => {
    for (const h of holders) if (h.exitCode === null) h.kill('SIGKILL');
    await agent?.stop().catch(() => undefined);
    await lab.teardown();
    await coord?.close();
  });

  for (const scheduler of ['wlc', 'lc'] as const) {
    it(`${scheduler}: with 20 connections held on A, a joining B gets the next short connections`, async () => {
      await applied(await write(scheduler === 'wlc' ? 'POST' : 'PUT', scheduler === 'wlc' ? '/services' : `/services/${SID}`, { host: VIP, port: 80, scheduler, servers: [server(B1)] }));
      const held = await hold(20);
      expect(count(held.names)).toEqual({ b1: 20 });
      // Two feedback rounds: the agent has counted them.
      await new Promise((r) => setTimeout(r, 3 * FEEDBACK_MS));
      await applied(await write('PUT', `/services/${SID}/servers`, [server(B1), server(B2)]));
      await waitFor('B in the pick', async () => (await slots()).includes(B2));
      const answers = count(await request(NS.c, VIP, 80, 30));
      expect(answers.b2 ?? 0, JSON.stringify(answers)).toBeGreaterThanOrEqual(27);
      await held.end();
    });
  }

  it('wlc follows the weights between loaded servers', async () => {
    // Closed connections gone from conntrack (1 s), then A (weight 3) holds 3 and B (weight 1) holds 3: B's 3/1 > A's 3/3.
    await new Promise((r) => setTimeout(r, 1500));
    await applied(await write('PUT', `/services/${SID}`, { host: VIP, port: 80, scheduler: 'wlc', servers: [server(B1, { weight: 3 }), server(B2, { weight: 0 })] }));
    const onA = await hold(3);
    await applied(await write('PUT', `/services/${SID}/servers`, [server(B1, { weight: 0 }), server(B2)]));
    const onB = await hold(3);
    expect([count(onA.names), count(onB.names)]).toEqual([{ b1: 3 }, { b2: 3 }]);
    await applied(await write('PUT', `/services/${SID}/servers`, [server(B1, { weight: 3 }), server(B2)]));
    await waitFor('only A in the pick', async () => JSON.stringify(await slots()) === JSON.stringify([B1]));
    expect(count(await request(NS.c, VIP, 80, 5))).toEqual({ b1: 5 });
    await onA.end();
    await onB.end();
  });

  it('thresholds: A stops taking connections at upper_threshold and resumes only below lower_threshold; all overloaded is refused', async () => {
    await new Promise((r) => setTimeout(r, 1500));
    const a = server(B1, { upper_threshold: 3, lower_threshold: 1 });
    await applied(await write('PUT', `/services/${SID}`, { host: VIP, port: 80, scheduler: 'rr', servers: [a, server(B2)] }));
    expect((await slots()).sort()).toEqual([B1, B2]);
    // rr alternates: six held connections put three on each.
    const held = await hold(6);
    expect(count(held.names)).toEqual({ b1: 3, b2: 3 });
    await waitFor('A out of the pick', async () => JSON.stringify(await slots()) === JSON.stringify([B2]));
    expect(count(await request(NS.c, VIP, 80, 10))).toEqual({ b2: 10 });

    // B at its own threshold too: no server left, new connections are refused (IPVS: ICMP port unreachable).
    await applied(await write('PUT', `/services/${SID}/servers`, [a, server(B2, { upper_threshold: 3 })]));
    await waitFor('the VIP to reject', async () => (await serviceVerdict()).includes('goto grp.reject'));
    expect(count(await request(NS.c, VIP, 80, 2))).toEqual({ 'ERR ConnectionRefusedError': 2 });
    await applied(await write('PUT', `/services/${SID}/servers`, [a, server(B2)]));
    await waitFor('B back in the pick', async () => JSON.stringify(await slots()) === JSON.stringify([B2]));

    // One of A's closes: 2 left, not below lower_threshold 1 — A stays out.
    await held.close(name(B1), 1);
    await new Promise((r) => setTimeout(r, 1500 + 2 * FEEDBACK_MS));
    expect(await slots()).toEqual([B2]);
    expect(count(await request(NS.c, VIP, 80, 6))).toEqual({ b2: 6 });

    // The other two close: 0 < 1, A takes connections again.
    await held.close(name(B1), 2);
    await waitFor('A back in the pick', async () => (await slots()).includes(B1), 5000);
    const back = count(await request(NS.c, VIP, 80, 10));
    expect(back.b1 ?? 0, JSON.stringify(back)).toBeGreaterThanOrEqual(4);
    await held.end();
  });
});
