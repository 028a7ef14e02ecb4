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
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '../../packages/agent/src/index.js';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { testCoordinator } from '../helpers/coordinator.js';
import { sharedEtcdUrl } from '../helpers/etcd.js';

const r = randomBytes(2).toString('hex');
const NS = { c: `syl4c-${r}`, lb: `syl4lb-${r}`, b1: `syl4b1-${r}`, b2: `syl4b2-${r}` };
const TABLE = `syl4t${r}`;
const FOREIGN = `syl4foreign${r}`;
const VIP = '10.98.2.100';
const B1 = '10.98.1.11';
const B2 = '10.98.1.12';
const BACKEND = fileURLToPath(new URL('../fixtures/agent/http-backend.py', import.meta.url));
const CLIENT = fileURLToPath(new URL('../fixtures/agent/http-client.py', import.meta.url));
const SID = `tcp-${VIP.replace(/\./g, '_')}-80`;

const sh = (cmd: string, args: string[]) => execa(cmd, args, { reject: true });
const inNs = (ns: string, cmd: string, args: string[]) => sh('ip', ['netns', 'exec', ns, cmd, ...args]);

const servers: ChildProcess[] = [];
let coord: Coordinator;
let agent: RunningAgent | undefined;

async function setupTopology(): Promise<void> {
  for (const ns of Object.values(NS)) {
    await sh('ip', ['netns', 'add', ns]);
    await sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  }
  await sh('ip', ['link', 'add', 'c0', 'netns', NS.c, 'type', 'veth', 'peer', 'name', 'lbc', 'netns', NS.lb]);
  await sh('ip', ['-n', NS.c, 'addr', 'add', '10.98.0.2/24', 'dev', 'c0']);
  await sh('ip', ['-n', NS.c, 'link', 'set', 'c0', 'up']);
  await sh('ip', ['-n', NS.c, 'route', 'add', 'default', 'via', '10.98.0.1']);
  await sh('ip', ['-n', NS.lb, 'addr', 'add', '10.98.0.1/24', 'dev', 'lbc']);
  await sh('ip', ['-n', NS.lb, 'link', 'set', 'lbc', 'up']);
  await sh('ip', ['-n', NS.lb, 'link', 'add', 'br0', 'type', 'bridge']);
  await sh('ip', ['-n', NS.lb, 'addr', 'add', '10.98.1.1/24', 'dev', 'br0']);
  await sh('ip', ['-n', NS.lb, 'link', 'set', 'br0', 'up']);
  for (const [i, ns, addr] of [[1, NS.b1, B1], [2, NS.b2, B2]] as const) {
    await sh('ip', ['link', 'add', 'e0', 'netns', ns, 'type', 'veth', 'peer', 'name', `lbb${i}`, 'netns', NS.lb]);
    await sh('ip', ['-n', NS.lb, 'link', 'set', `lbb${i}`, 'master', 'br0', 'up']);
    await sh('ip', ['-n', ns, 'addr', 'add', `${addr}/24`, 'dev', 'e0']);
    await sh('ip', ['-n', ns, 'link', 'set', 'e0', 'up']);
    await sh('ip', ['-n', ns, 'route', 'add', 'default', 'via', '10.98.1.1']);
    servers.push(spawn('ip', ['netns', 'exec', ns, '/usr/bin/python3', BACKEND, `b${i}`, addr, '8080'], { stdio: 'ignore' }));
  }
  await inNs(NS.lb, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  // A table someone else owns, in the agent's namespace: it must survive everything.
  await inNs(NS.lb, 'nft', ['add', 'table', 'inet', FOREIGN]);
  await inNs(NS.lb, 'nft', ['add', 'chain', 'inet', FOREIGN, 'keep', '{ type filter hook input priority 0 ; }']);
  for (const addr of [B1, B2]) await waitFor(`backend ${addr}`, async () => (await request(NS.lb, addr, 8080, 1))[0]?.startsWith('b'));
}

async function teardown(): Promise<void> {
  await agent?.stop().catch(() => undefined);
  for (const s of servers) s.kill('SIGKILL');
  for (const ns of Object.values(NS)) await execa('ip', ['netns', 'del', ns], { reject: false });
}

/** `n` new connections from `ns` to addr:port; the backend name (or ERR …) of each. */
async function request(ns: string, addr: string, port: number, n: number): Promise<string[]> {
  const res = await execa('ip', ['netns', 'exec', ns, '/usr/bin/python3', CLIENT, addr, String(port), String(n)], { reject: false });
  return res.stdout.split('\n').filter(Boolean);
}

function count(answers: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const a of answers) out[a] = (out[a] ?? 0) + 1;
  return out;
}

async function waitFor(what: string, fn: () => Promise<boolean | undefined>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

async function write(method: 'POST' | 'PUT' | 'DELETE', url: string, payload?: unknown): Promise<number> {
  const res = await coord.app.inject({ method, url, ...(payload !== undefined ? { payload: payload as object } : {}) });
  expect(res.statusCode, res.body).toBe(200);
  return Number(res.headers['x-switchyard-revision']);
}

async function applied(rev: number): Promise<void> {
  await waitFor(`agent to apply revision ${rev}`, async () => (agent?.status.written?.appliedRevision ?? 0) >= rev);
}

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
    await start(false, 1000);
    await applied(rev);
    expect(count(await request(NS.c, VIP, 80, 2))).toEqual({ b1: 2 });
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
