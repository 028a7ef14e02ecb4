/**
 * The agent's nftables dataplane against the real kernel, with real HTTP:
 *
 *   syl4c-<r> (client 10.98.0.2) ── syl4lb-<r> (the agent's netns, forwarding)
 *                                     └─ bridge ── syl4b1-<r> 10.98.1.11:8080
 *                                               └─ syl4b2-<r> 10.98.1.12:8080
 *
 * The VIP 10.98.2.100:80 is outside the client's subnet: the client routes
 * it to the balancer, whose prerouting DNAT picks a backend. Desired state
 * goes through the coordinator (inject); the agent runs in-process with
 * `netns`. Everything the test creates is named syl4* and removed in
 * afterAll, even on failure.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '../../packages/agent/src/index.js';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { testCoordinator } from '../helpers/coordinator.js';
import { sharedEtcdUrl } from '../helpers/etcd.js';
import { agentApplied, B1, B2, count, inNs, L4Lab, request, restWrite, VIP, waitFor } from '../helpers/l4-topology.js';

const lab = new L4Lab('syl4');
const r = lab.r;
const NS = lab.ns;
const CLIENT = lab.clientScript;
const TABLE = `syl4t${r}`;
const FOREIGN = `syl4foreign${r}`;
const SID = `tcp-${VIP.replace(/\./g, '_')}-80`;

let coord: Coordinator;
let agent: RunningAgent | undefined;

async function setupTopology(): Promise<void> {
  await lab.setup();
  // A table someone else owns, in the agent's namespace: it must survive everything.
  await inNs(NS.lb, 'nft', ['add', 'table', 'inet', FOREIGN]);
  await inNs(NS.lb, 'nft', ['add', 'chain', 'inet', FOREIGN, 'keep', '{ type filter hook input priority 0 ; }']);
}

async function teardown(): Promise<void> {
  await agent?.stop().catch(() => undefined);
  await lab.teardown();
}

const write = (method: 'POST' | 'PUT' | 'DELETE', url: string, payload?: unknown) => restWrite(coord, method, url, payload);
const applied = (rev: number) => agentApplied(() => agent, rev);

async function start(flushOnExit = false, resyncMs?: number): Promise<RunningAgent> {
  agent = await startAgent({
    ...(resyncMs !== undefined ? { resyncMs } : {}),
    hostId: `syl4-${r}`,
    etcd: [sharedEtcdUrl()],
    prefix: coord.ctx.keys.prefix,
    dataplane: 'nftables',
    netns: NS.lb,
    nftTable: TABLE,
    flushOnExit,
    logLevel: 'silent',
  });
  return agent;
}

async function tables(): Promise<string[]> {
  return (await inNs(NS.lb, 'nft', ['list', 'tables'])).stdout.split('\n').filter(Boolean);
}

const server = (host: string, weight = 1) => ({ host, port: 8080, forwarder: 'm', weight });

describe('nftables dataplane with real traffic', () => {
  beforeAll(async () => {
    coord = await testCoordinator('l4-nft');
    try {
      await setupTopology();
    } catch (e) {
      await teardown();
      throw e;
    }
    await start();
  });

  afterAll(async () => {
    await teardown();
    await coord?.close();
  });

  it('rr spreads new connections over both servers', async () => {
    await applied(await write('POST', '/services', { host: VIP, port: 80, scheduler: 'rr', servers: [server(B1), server(B2)] }));
    expect(count(await request(NS.c, VIP, 80, 20))).toEqual({ b1: 10, b2: 10 });
  });

  it('wrr follows the weights', async () => {
    await applied(await write('PUT', `/services/${SID}`, { host: VIP, port: 80, scheduler: 'wrr', servers: [server(B1, 3), server(B2, 1)] }));
    expect(count(await request(NS.c, VIP, 80, 40))).toEqual({ b1: 30, b2: 10 });
  });

  it('weight 0 takes a server out of new connections; an established connection keeps its backend across the change', async () => {
    await applied(await write('PUT', `/services/${SID}`, { host: VIP, port: 80, scheduler: 'rr', servers: [server(B1), server(B2)] }));
    // Hold connections open until one lands on b2.
    let held: { child: ChildProcess; first: string } | undefined;
    for (let i = 0; i < 4 && !held; i++) {
      const child = spawn('ip', ['netns', 'exec', NS.c, '/usr/bin/python3', CLIENT, VIP, '80', '1', '--keep'], { stdio: ['pipe', 'pipe', 'ignore'] });
      const first = await new Promise<string>((res) => child.stdout?.once('data', (d) => res(String(d).trim())));
      if (first === 'b2') held = { child, first };
      else {
        child.stdin?.end('\n');
        await new Promise((res) => child.once('exit', res));
      }
    }
    expect(held?.first).toBe('b2');
    await applied(await write('PUT', `/services/${SID}/servers`, [server(B1), server(B2, 0)]));
    expect(count(await request(NS.c, VIP, 80, 10))).toEqual({ b1: 10 });
    const again = new Promise<string>((res) => held?.child.stdout?.once('data', (d) => res(String(d).trim())));
    held?.child.stdin?.end('\n');
    expect(await again).toBe('b2');
  });

  it('deleting a server stops new traffic to it', async () => {
    await applied(await write('PUT', `/services/${SID}/servers`, [server(B1), server(B2)]));
    expect(count(await request(NS.c, VIP, 80, 4))).toEqual({ b1: 2, b2: 2 });
    await applied(await write('DELETE', `/services/${SID}/servers/${B1.replace(/\./g, '_')}-8080`));
    expect(count(await request(NS.c, VIP, 80, 10))).toEqual({ b2: 10 });
  });

  it('traffic keeps flowing while the agent is stopped, and a change made meanwhile is applied on restart', async () => {
    await agent?.stop();
    expect(count(await request(NS.c, VIP, 80, 6))).toEqual({ b2: 6 });
    const rev = await write('PUT', `/services/${SID}/servers`, [server(B1)]);
    expect(count(await request(NS.c, VIP, 80, 4))).toEqual({ b2: 4 });
    await start();
    await applied(rev);
    expect(count(await request(NS.c, VIP, 80, 6))).toEqual({ b1: 6 });
  });

  it('the periodic full resync undoes drift: an element deleted and a stray one added behind its back', async () => {
    const rev = await write('PUT', `/services/${SID}/servers`, [server(B1)]);
    await agent?.stop();
    await start(false, 2000);
    await applied(rev);
    expect(count(await request(NS.c, VIP, 80, 2))).toEqual({ b1: 2 });
    // Right after a resync, so the next one (2 s later) comes after the checks below. Resyncs
    // against the model (nothing foreign seen by nft monitor) still stamp lastFullSync.
    const last = agent?.status.written?.lastFullSync;
    await waitFor('a resync', async () => agent?.status.written?.lastFullSync !== last);
    await inNs(NS.lb, 'nft', ['delete', 'element', 'inet', TABLE, 'services4', `{ ${VIP} . tcp . 80 }`]);
    await inNs(NS.lb, 'nft', ['add', 'element', 'inet', TABLE, 'services4', '{ 10.98.2.201 . tcp . 80 : accept }']);
    expect((await request(NS.c, VIP, 80, 1))[0]).toMatch(/^ERR /);
    await waitFor('the resync to restore the VIP', async () => (await request(NS.c, VIP, 80, 1))[0] === 'b1');
    const map = (await inNs(NS.lb, 'nft', ['list', 'map', 'inet', TABLE, 'services4'])).stdout;
    expect(map).toContain(VIP);
    expect(map).not.toContain('10.98.2.201');
    // Changes still apply with a resync every second.
    await applied(await write('PUT', `/services/${SID}/servers`, [server(B1), server(B2)]));
    expect(count(await request(NS.c, VIP, 80, 4))).toEqual({ b1: 2, b2: 2 });
  });

  // A process on the balancer itself. connect() looks the route up before any
  // netfilter hook runs: without a route to the VIP it fails there
  // (ENETUNREACH, which the client prints as a plain OSError) and the output
  // chain never sees a packet. With any route — a default route, or the VIP
  // made local — the output chain DNATs the connection like prerouting does
  // for forwarded traffic, and the kernel re-routes it to the real server.
  it('a process on the balancer reaches the VIP through the output hook once the VIP routes; without a route connect fails first', async () => {
    expect(count(await request(NS.lb, VIP, 80, 2))).toEqual({ 'ERR OSError': 2 });
    // A default route (any real host has one): balanced like forwarded traffic.
    await inNs(NS.lb, 'ip', ['route', 'add', 'default', 'via', '10.98.0.2']);
    try {
      expect(count(await request(NS.lb, VIP, 80, 20))).toEqual({ b1: 10, b2: 10 });
    } finally {
      await inNs(NS.lb, 'ip', ['route', 'del', 'default']);
    }
    expect(count(await request(NS.lb, VIP, 80, 1))).toEqual({ 'ERR OSError': 1 });
    // The VIP local (what --nft-local-vips does on its dummy device; this
    // kernel has no dummy driver, so lo stands in — test/vm covers the flag):
    // the source is the VIP itself, and the output DNAT still balances.
    await inNs(NS.lb, 'ip', ['addr', 'add', `${VIP}/32`, 'dev', 'lo']);
    try {
      expect(count(await request(NS.lb, VIP, 80, 20))).toEqual({ b1: 10, b2: 10 });
      // Forwarded traffic is unaffected by the VIP being local (prerouting DNATs before routing).
      expect(count(await request(NS.c, VIP, 80, 4))).toEqual({ b1: 2, b2: 2 });
    } finally {
      await inNs(NS.lb, 'ip', ['addr', 'del', `${VIP}/32`, 'dev', 'lo']);
    }
  });

  it('deleting the service closes the VIP', async () => {
    await applied(await write('DELETE', `/services/${SID}`));
    const answers = await request(NS.c, VIP, 80, 2);
    expect(answers).toHaveLength(2);
    for (const a of answers) expect(a).toMatch(/^ERR /);
  });

  it('--flush-on-exit removes its own table and never a foreign one', async () => {
    await applied(await write('POST', '/services', { host: VIP, port: 80, scheduler: 'rr', servers: [server(B1)] }));
    expect(await tables()).toEqual(expect.arrayContaining([`table inet ${TABLE}`, `table inet ${FOREIGN}`]));
    await agent?.stop();
    await start(true);
    await agent?.stop();
    agent = undefined;
    const left = await tables();
    expect(left).toContain(`table inet ${FOREIGN}`);
    expect(left).not.toContain(`table inet ${TABLE}`);
  });
});
