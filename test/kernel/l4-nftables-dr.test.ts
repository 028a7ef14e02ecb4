/**
 * Direct routing (forwarder g) on the nftables dataplane, against the real
 * kernel with real TCP. The classic one-arm LVS-DR layout: the balancer and
 * the real servers share one L2 segment behind a router, and the servers
 * answer the client through the router, never through the balancer.
 *
 *   sydrc-<r> client 10.97.0.2, fd97::2
 *       │
 *   sydrr-<r> router 10.97.0.1 ─ bridge 10.97.1.1, fd97:1::1
 *       │      routes the VIPs to the balancer; the servers' default gateway
 *       ├─ sydrlb-<r> balancer e0 10.97.1.2, fd97:1::2 (the agent, --nft-dr-device e0)
 *       │      and lbc 10.96.0.1 ── client c1 10.96.0.2 (the two-arm case: VIP
 *       │      traffic arriving on lbc, --nft-dr-ingress lbc)
 *       ├─ sydrb1-<r> real server 10.97.1.11, fd97:1::11; the VIPs on lo
 *       └─ sydrb2-<r> real server 10.97.1.12, fd97:1::12; the VIPs on lo
 *
 * The servers hold the VIPs on lo with arp_ignore=1/arp_announce=2 (what
 * IPVS-DR real servers do) and answer "<name> <client> <address reached>":
 * the client's own address and the VIP prove no NAT happened. A netdev table
 * of the test's own in the balancer counts packets from the VIP: zero means
 * the answers never came back through it. Everything is named sydr* and
 * removed in afterAll, even on failure.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '../../packages/agent/src/index.js';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { testCoordinator } from '../helpers/coordinator.js';
import { sharedEtcdUrl } from '../helpers/etcd.js';
import { agentApplied, inNs, request, restWrite, sh, waitFor } from '../helpers/l4-topology.js';

const BACKEND = fileURLToPath(new URL('../fixtures/agent/http-backend-dr.py', import.meta.url));
const r = randomBytes(2).toString('hex');
const NS = { c: `sydrc-${r}`, r: `sydrr-${r}`, lb: `sydrlb-${r}`, b1: `sydrb1-${r}`, b2: `sydrb2-${r}` };
const TABLE = `sydrt${r}`;
const WATCH = `sydrwatch${r}`;
const VIP = '10.97.2.100';
const VIP6 = 'fd97:2::100';
const CLIENT = '10.97.0.2';
const CLIENT6 = 'fd97::2';
const SID = `tcp-${VIP.replace(/\./g, '_')}-80`;
const backends: ChildProcess[] = [];

let coord: Coordinator;
let agent: RunningAgent | undefined;

async function setup(): Promise<void> {
  for (const n of Object.values(NS)) {
    await sh('ip', ['netns', 'add', n]);
    await sh('ip', ['-n', n, 'link', 'set', 'lo', 'up']);
  }
  await sh('ip', ['link', 'add', 'c0', 'netns', NS.c, 'type', 'veth', 'peer', 'name', 'rc', 'netns', NS.r]);
  await sh('ip', ['-n', NS.c, 'addr', 'add', `${CLIENT}/24`, 'dev', 'c0']);
  await sh('ip', ['-n', NS.c, 'addr', 'add', `${CLIENT6}/64`, 'dev', 'c0', 'nodad']);
  await sh('ip', ['-n', NS.c, 'link', 'set', 'c0', 'up']);
  await sh('ip', ['-n', NS.c, 'route', 'add', 'default', 'via', '10.97.0.1']);
  await sh('ip', ['-n', NS.c, '-6', 'route', 'add', 'default', 'via', 'fd97::1']);
  await sh('ip', ['-n', NS.r, 'addr', 'add', '10.97.0.1/24', 'dev', 'rc']);
  await sh('ip', ['-n', NS.r, 'addr', 'add', 'fd97::1/64', 'dev', 'rc', 'nodad']);
  await sh('ip', ['-n', NS.r, 'link', 'set', 'rc', 'up']);
  await sh('ip', ['-n', NS.r, 'link', 'add', 'br0', 'type', 'bridge']);
  await sh('ip', ['-n', NS.r, 'addr', 'add', '10.97.1.1/24', 'dev', 'br0']);
  await sh('ip', ['-n', NS.r, 'addr', 'add', 'fd97:1::1/64', 'dev', 'br0', 'nodad']);
  await sh('ip', ['-n', NS.r, 'link', 'set', 'br0', 'up']);
  await inNs(NS.r, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
  const attach = async (ns: string, port: string, v4: string, v6: string) => {
    await sh('ip', ['link', 'add', 'e0', 'netns', ns, 'type', 'veth', 'peer', 'name', port, 'netns', NS.r]);
    await sh('ip', ['-n', NS.r, 'link', 'set', port, 'master', 'br0', 'up']);
    await sh('ip', ['-n', ns, 'addr', 'add', `${v4}/24`, 'dev', 'e0']);
    await sh('ip', ['-n', ns, 'addr', 'add', `${v6}/64`, 'dev', 'e0', 'nodad']);
    await sh('ip', ['-n', ns, 'link', 'set', 'e0', 'up']);
    await sh('ip', ['-n', ns, 'route', 'add', 'default', 'via', '10.97.1.1']);
    await sh('ip', ['-n', ns, '-6', 'route', 'add', 'default', 'via', 'fd97:1::1']);
  };
  await attach(NS.lb, 'rlb', '10.97.1.2', 'fd97:1::2');
  // The client's second arm, straight to the balancer (used by the two-arm test only; rp_filter off
  // because the answers come back on the other arm).
  await sh('ip', ['link', 'add', 'c1', 'netns', NS.c, 'type', 'veth', 'peer', 'name', 'lbc', 'netns', NS.lb]);
  await sh('ip', ['-n', NS.c, 'addr', 'add', '10.96.0.2/24', 'dev', 'c1']);
  await sh('ip', ['-n', NS.c, 'link', 'set', 'c1', 'up']);
  await inNs(NS.c, 'sysctl', ['-qw', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.c0.rp_filter=0', 'net.ipv4.conf.c1.rp_filter=0']);
  await sh('ip', ['-n', NS.lb, 'addr', 'add', '10.96.0.1/24', 'dev', 'lbc']);
  await sh('ip', ['-n', NS.lb, 'link', 'set', 'lbc', 'up']);
  for (const i of [1, 2] as const) {
    const ns = i === 1 ? NS.b1 : NS.b2;
    await attach(ns, `rb${i}`, `10.97.1.1${i}`, `fd97:1::1${i}`);
    await sh('ip', ['-n', ns, 'addr', 'add', `${VIP}/32`, 'dev', 'lo']);
    await sh('ip', ['-n', ns, 'addr', 'add', `${VIP6}/128`, 'dev', 'lo']);
    await inNs(ns, 'sysctl', ['-qw', 'net.ipv4.conf.all.arp_ignore=1', 'net.ipv4.conf.all.arp_announce=2', 'net.ipv4.conf.e0.arp_ignore=1', 'net.ipv4.conf.e0.arp_announce=2']);
    backends.push(spawn('ip', ['netns', 'exec', ns, '/usr/bin/python3', BACKEND, `b${i}`, '80'], { stdio: 'ignore' }));
    // Reached on its own address from the router (the VIP is the balancer's business).
    await waitFor(`real server b${i}`, async () => (await request(NS.r, `10.97.1.1${i}`, 80, 1))[0]?.startsWith(`b${i} `));
  }
  // The router sends the VIPs to the balancer; nothing else knows them.
  await sh('ip', ['-n', NS.r, 'route', 'add', `${VIP}/32`, 'via', '10.97.1.2']);
  await sh('ip', ['-n', NS.r, '-6', 'route', 'add', `${VIP6}/128`, 'via', 'fd97:1::2']);
  // The test's own watch on the balancer's interface, before anything of the agent's (priority -100).
  await sh('ip', ['netns', 'exec', NS.lb, 'nft', `add table netdev ${WATCH}`]);
  await sh('ip', ['netns', 'exec', NS.lb, 'nft', `add chain netdev ${WATCH} seen { type filter hook ingress device "e0" priority -100 ; policy accept ; }`]);
  await sh('ip', ['netns', 'exec', NS.lb, 'nft', `add rule netdev ${WATCH} seen ip saddr { ${VIP} } counter`]);
  await sh('ip', ['netns', 'exec', NS.lb, 'nft', `add rule netdev ${WATCH} seen ip6 saddr { ${VIP6} } counter`]);
  await sh('ip', ['netns', 'exec', NS.lb, 'nft', `add rule netdev ${WATCH} seen ip daddr { ${VIP} } counter`]);
}

async function teardown(): Promise<void> {
  await agent?.stop().catch(() => undefined);
  for (const b of backends) b.kill('SIGKILL');
  for (const n of Object.values(NS)) await sh('ip', ['netns', 'del', n]).catch(() => undefined);
}

/** The watch's counters: packets from the VIPs (answers) and to the IPv4 VIP (requests) seen by the balancer. */
async function seen(): Promise<{ fromVip: number; toVip: number }> {
  const text = (await inNs(NS.lb, 'nft', ['list', 'chain', 'netdev', WATCH, 'seen'])).stdout;
  const n = (re: RegExp) => [...text.matchAll(re)].reduce((a, m) => a + Number(m[1]), 0);
  return { fromVip: n(/saddr .* counter packets (\d+)/g), toVip: n(/daddr .* counter packets (\d+)/g) };
}

const write = (method: 'POST' | 'PUT' | 'DELETE', url: string, payload?: unknown) => restWrite(coord, method, url, payload);
const applied = (rev: number) => agentApplied(() => agent, rev);

async function start(flushOnExit = false, ingress?: string[]): Promise<void> {
  agent = await startAgent({
    ...(ingress ? { nftDrIngress: ingress } : {}),
    hostId: `sydr-${r}`,
    etcd: [sharedEtcdUrl()],
    prefix: coord.ctx.keys.prefix,
    dataplane: 'nftables',
    netns: NS.lb,
    nftTable: TABLE,
    nftDrDevice: 'e0',
    flushOnExit,
    logLevel: 'silent',
  });
}

const dr = (host: string, weight = 1) => ({ host, port: 80, forwarder: 'g', weight });

/** Answers by server name; every answer must show the client's own address and the VIP. */
function byServer(answers: string[], client: string, vip: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const a of answers) {
    const [name, from, to] = a.split(' ');
    expect(`${from} → ${to}`, a).toBe(`${client} → ${vip}`);
    out[name] = (out[name] ?? 0) + 1;
  }
  return out;
}

describe('nftables direct routing (forwarder g, --nft-dr-device)', () => {
  beforeAll(async () => {
    coord = await testCoordinator('l4-nft-dr');
    try {
      await setup();
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

  it('connections reach both real servers unchanged (client address, VIP as destination), and no answer passes the balancer', async () => {
    const before = await seen();
    await applied(await write('POST', '/services', { host: VIP, port: 80, scheduler: 'rr', servers: [dr('10.97.1.11'), dr('10.97.1.12')] }));
    const counts = byServer(await request(NS.c, VIP, 80, 30), CLIENT, VIP);
    expect(Object.keys(counts).sort()).toEqual(['b1', 'b2']);
    expect(counts.b1 + counts.b2).toBe(30);
    const after = await seen();
    // 30 connections of at least 5 client packets each came through; not one packet from the VIP did.
    expect(after.toVip - before.toVip).toBeGreaterThanOrEqual(150);
    expect(after.fromVip).toBe(0);
    // No warning: direct routing is what the service asked for.
    const listing = (await inNs(NS.lb, 'nft', ['list', 'table', 'netdev', TABLE])).stdout;
    expect(listing).toContain('fwd ip to ip daddr . tcp dport . jhash ip saddr . tcp sport mod 2 seed 0x5359 map @fwd4_tcp device "e0"');
  });

  it('a process on the balancer itself reaches the VIP through the inet table (output DNAT), which ingress never sees', async () => {
    // The balancer's default route covers the VIP; the servers answer its own address directly on the L2.
    const answers = await request(NS.lb, VIP, 80, 20);
    expect(new Set(answers)).toEqual(new Set(['b1 10.97.1.2 10.97.1.11', 'b2 10.97.1.2 10.97.1.12']));
  });

  it('persistence keeps a client on one server (the slot hashes the client address)', async () => {
    await applied(await write('PUT', `/services/${SID}`, { host: VIP, port: 80, scheduler: 'rr', persistence: 300, servers: [dr('10.97.1.11'), dr('10.97.1.12')] }));
    expect(Object.values(byServer(await request(NS.c, VIP, 80, 12), CLIENT, VIP))).toEqual([12]);
  });

  it('weight 0 takes a server out', async () => {
    await applied(await write('PUT', `/services/${SID}/servers`, [dr('10.97.1.11', 0), dr('10.97.1.12')]));
    expect(byServer(await request(NS.c, VIP, 80, 10), CLIENT, VIP)).toEqual({ b2: 10 });
    await applied(await write('PUT', `/services/${SID}/servers`, [dr('10.97.1.11'), dr('10.97.1.12', 0)]));
    expect(byServer(await request(NS.c, VIP, 80, 10), CLIENT, VIP)).toEqual({ b1: 10 });
  });

  it('IPv6: fwd ip6 to the real server, the client address and the VIP kept', async () => {
    await applied(await write('POST', '/services', { host: VIP6, port: 80, scheduler: 'wrr', servers: [dr('fd97:1::11'), dr('fd97:1::12')] }));
    const counts = byServer(await request(NS.c, VIP6, 80, 30), CLIENT6, VIP6);
    expect(Object.keys(counts).sort()).toEqual(['b1', 'b2']);
    expect((await seen()).fromVip).toBe(0);
  });

  it('g mixed with m: the g server is reached directly, the m server through masquerading DNAT; a service without g leaves the netdev table', async () => {
    // DNAT needs the balancer to forward (direct routing does not: fwd sends from ingress).
    await inNs(NS.lb, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    try {
      await applied(await write('PUT', `/services/${SID}`, { host: VIP, port: 80, scheduler: 'rr', servers: [dr('10.97.1.11'), { host: '10.97.1.12', port: 80, forwarder: 'm' }] }));
      const answers = await request(NS.c, VIP, 80, 30);
      const kinds = new Set(answers);
      // Masqueraded: b2 sees the balancer's address and its own; b1 the client's and the VIP.
      expect([...kinds].sort()).toEqual([`b1 ${CLIENT} ${VIP}`, 'b2 10.97.1.2 10.97.1.12']);

      await applied(await write('PUT', `/services/${SID}`, { host: VIP, port: 80, scheduler: 'rr', servers: [{ host: '10.97.1.11', port: 80, forwarder: 'm' }] }));
      expect(await request(NS.c, VIP, 80, 4)).toEqual(Array(4).fill('b1 10.97.1.2 10.97.1.11'));
      const netdev = (await inNs(NS.lb, 'nft', ['list', 'map', 'netdev', TABLE, 'services4'])).stdout;
      expect(netdev).not.toContain(VIP);
    } finally {
      await inNs(NS.lb, 'sysctl', ['-qw', 'net.ipv4.ip_forward=0']);
    }
    await applied(await write('PUT', `/services/${SID}`, { host: VIP, port: 80, scheduler: 'rr', servers: [dr('10.97.1.12')] }));
    expect(byServer(await request(NS.c, VIP, 80, 4), CLIENT, VIP)).toEqual({ b2: 4 });
  });

  it('deleting the service stops direct routing; --flush-on-exit removes both tables and never the foreign one', async () => {
    await applied(await write('DELETE', `/services/${SID}`));
    expect((await request(NS.c, VIP, 80, 1))[0]).toMatch(/^ERR /);
    await agent?.stop();
    await start(true);
    await agent?.stop();
    agent = undefined;
    const tables = (await inNs(NS.lb, 'nft', ['list', 'tables'])).stdout;
    expect(tables).toContain(`table netdev ${WATCH}`);
    expect(tables).not.toContain(TABLE);
    // Nothing of the agent's left: the IPv6 VIP is no longer routed to a server.
    expect((await request(NS.c, VIP6, 80, 1))[0]).toMatch(/^ERR /);
  });

  it('two arms (--nft-dr-ingress lbc): VIP traffic arriving on the client side goes out e0 to the real servers; the one-arm table of an earlier run is replaced', async () => {
    await start();
    await applied(await write('POST', '/services', { host: VIP, port: 80, scheduler: 'rr', servers: [dr('10.97.1.11'), dr('10.97.1.12')] }));
    await agent?.stop();
    expect((await inNs(NS.lb, 'nft', ['list', 'table', 'netdev', TABLE])).stdout).toContain('chain ingress.e0 {');
    await start(true, ['lbc']);
    await waitFor('the two-arm table', async () => (await inNs(NS.lb, 'nft', ['list', 'table', 'netdev', TABLE])).stdout.includes('chain ingress.e0/lbc {'));
    // The client sends to the VIP over its arm to the balancer, from its address on the router's side.
    await inNs(NS.c, 'ip', ['route', 'add', `${VIP}/32`, 'via', '10.96.0.1', 'dev', 'c1', 'src', CLIENT]);
    const before = await seen();
    const counts = byServer(await request(NS.c, VIP, 80, 30), CLIENT, VIP);
    expect(Object.keys(counts).sort()).toEqual(['b1', 'b2']);
    const after = await seen();
    // Neither the requests (they arrive on lbc, not e0) nor the answers (they go through the router) crossed e0's ingress.
    expect(after.toVip - before.toVip).toBe(0);
    expect(after.fromVip).toBe(0);
    expect((await inNs(NS.lb, 'nft', ['list', 'chain', 'netdev', TABLE, 'ingress.e0/lbc'])).stdout).toContain('type filter hook ingress device "lbc"');
  });
});
