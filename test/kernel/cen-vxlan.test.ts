/**
 * Two hosts, one CEN: two topology agents, each with its own --netns as its
 * host network, joined by an underlay veth pair. The CEN's bridges on both
 * are joined by VXLAN (each agent publishes its underlay address in etcd),
 * and a container on host1 pings one on host2. Destroy removes the VXLAN
 * devices and bridges on both. Every name has a random prefix; teardown
 * removes every namespace with it.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { pino } from 'pino';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { observeTopology, startTopology, type RunningTopology } from '../../packages/agent/src/leviathan/index.js';
import { ExecaRunner } from '../../packages/agent/src/exec/runner.js';
import { callOk, testCoordinator } from '../helpers/coordinator.js';
import { deleteNamespaces, namespacesWithPrefix, sh } from '../helpers/netns.js';

const P = `v${randomBytes(2).toString('hex')}`;
const H1 = `${P}-h1`;
const H2 = `${P}-h2`;
const CEN = `${P}cen`;
const [XA, XB, XC] = [`${P}xa`, `${P}xb`, `${P}xc`];

const namespaces = () => namespacesWithPrefix(P);
const owned = (ns: string) => (JSON.parse(sh('ip', ['-n', ns, '-j', 'link', 'show'])) as { ifname: string }[]).map((l) => l.ifname).filter((n) => n.startsWith('sy'));
const mtu = (ns: string, dev: string) => (JSON.parse(sh('ip', ['-n', ns, '-j', '-d', 'link', 'show', 'dev', dev])) as { mtu: number }[])[0].mtu;
/** `size`: ICMP payload sent with DF (no fragmentation anywhere). */
const ping = (from: string, to: string, size?: number) => {
  try {
    sh('ip', ['netns', 'exec', from, 'ping', '-c', '2', '-W', '2', ...(size ? ['-s', String(size), '-M', 'do'] : []), to]);
    return true;
  } catch {
    return false;
  }
};

let c: Coordinator;
const agents: RunningTopology[] = [];
const log = pino({ level: 'silent' });

const call = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, payload?: unknown) => callOk(c, method, url, payload);

function cleanup() {
  deleteNamespaces(P);
}

beforeAll(async () => {
  cleanup();
  for (const [ns, addr] of [
    [H1, '192.168.251.1/24'],
    [H2, '192.168.251.2/24'],
  ]) {
    sh('ip', ['netns', 'add', ns]);
    sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    void addr;
  }
  // Decoys listed before the underlay (made first: lower ifindex) with a global address and
  // another MTU: detection would pick them; the agents are told better.
  for (const ns of [H1, H2]) {
    sh('ip', ['-n', ns, 'link', 'add', 'name', `${P}dec`, 'type', 'bridge']);
    sh('ip', ['-n', ns, 'addr', 'add', '10.250.0.1/24', 'dev', `${P}dec`]);
    sh('ip', ['-n', ns, 'link', 'set', `${P}dec`, 'up']);
  }
  // The underlay: one veth pair between the two host namespaces.
  sh('ip', ['link', 'add', 'name', `${P}u1`, 'netns', H1, 'type', 'veth', 'peer', 'name', `${P}u2`, 'netns', H2]);
  sh('ip', ['-n', H1, 'addr', 'add', '192.168.251.1/24', 'dev', `${P}u1`]);
  sh('ip', ['-n', H2, 'addr', 'add', '192.168.251.2/24', 'dev', `${P}u2`]);
  // Not the kernel's 1500, so VXLAN MTUs are visibly derived from it (1400 − 50).
  sh('ip', ['-n', H1, 'link', 'set', `${P}u1`, 'mtu', '1400', 'up']);
  sh('ip', ['-n', H2, 'link', 'set', `${P}u2`, 'mtu', '1400', 'up']);
  c = await testCoordinator('cen-vxlan');
  const base = { etcd: c.ctx.etcd, keys: c.ctx.keys, log, resyncMs: 600_000 };
  // host1 is told its underlay interface (--underlay-interface), host2 its address (--underlay-address).
  agents.push(await startTopology({ ...base, hostId: 'host1', netns: H1, underlayInterface: `${P}u1` }));
  agents.push(await startTopology({ ...base, hostId: 'host2', netns: H2, underlay: '192.168.251.2' }));
});

afterAll(async () => {
  for (const a of agents) await a.stop();
  await c?.close();
  cleanup();
  expect(namespaces()).toEqual([]);
});

it('publishes underlays, joins the CEN across hosts with VXLAN, and pings across', async () => {
  expect(agents.map((a) => a.underlay)).toEqual(['192.168.251.1', '192.168.251.2']);
  await call('PUT', `/cen/${CEN}`);
  await call('PUT', `/host/host1/${XA}/${CEN}`);
  await call('PUT', `/host/host2/${XB}/${CEN}`);
  await call('PUT', `/host/host2/${XC}/${CEN}`);
  await call('POST', '/cen/make', [CEN]);
  await call('POST', '/cin/import', { [`${P}cin`]: [CEN] });
  const made = await call('POST', '/cin/make', [`${P}cin`]);
  await Promise.all(agents.map((a) => a.waitApplied(made.revision)));

  for (const ns of [H1, H2]) {
    const vx = JSON.parse(sh('ip', ['-n', ns, '-j', '-d', 'link', 'show', 'type', 'vxlan'])) as { ifname: string; master: string; linkinfo: { info_data: { id: number } } }[];
    expect(vx).toHaveLength(1);
    expect(vx[0].master.startsWith('syb')).toBe(true);
    expect(mtu(ns, vx[0].ifname)).toBe(1350);
  }
  // The container ends on the VXLAN-backed CEN send no frame the VXLAN cannot carry.
  for (const x of [XA, XB, XC]) expect(mtu(x, CEN), x).toBe(1350);
  const cin = (await call('GET', `/cin/${P}cin`)).body as { addresses: { containerID: string; ipaddress: string }[]; status: string; hosts: Record<string, string> };
  expect(cin.hosts).toEqual({ host1: 'ready', host2: 'ready' });
  const ip = (x: string) => cin.addresses.find((a) => a.containerID === x)?.ipaddress as string;
  expect(ping(XA, ip(XB))).toBe(true);
  expect(ping(XC, ip(XA))).toBe(true);
  expect(ping(XB, ip(XC))).toBe(true);
  // The largest packet the container MTU allows crosses the underlay whole (1350 − 28 bytes of IP + ICMP).
  expect(ping(XA, ip(XB), 1322)).toBe(true);
  // The netns helper reads the VXLAN device (id, master, MTU, flood list) as `ip` and `bridge` do.
  const runner = new ExecaRunner();
  const viaHelper = await observeTopology(runner, H2, [XB, XC], 'netlink');
  expect([...viaHelper.hostLinks.values()].find((l) => l.kind === 'vxlan')).toMatchObject({ vni: expect.any(Number), master: expect.stringMatching(/^syb/), mtu: 1350 });
  expect([...viaHelper.flood.values()]).toEqual([['192.168.251.1']]);
  expect(viaHelper).toEqual(await observeTopology(runner, H2, [XB, XC], 'ip'));
});

it('destroy removes the VXLAN devices and bridges on both hosts', async () => {
  await call('POST', '/cin/destroy', [`${P}cin`]);
  const d = await call('POST', '/cen/destroy', [CEN]);
  await Promise.all(agents.map((a) => a.waitApplied(d.revision)));
  expect(owned(H1)).toEqual([]);
  expect(owned(H2)).toEqual([]);
});
