/**
 * The agent's default way of reading and changing container namespaces (one
 * netns-helper process over rtnetlink for all of them) on a real kernel:
 * it reads exactly what one `ip` per namespace reads; drift made by hand
 * inside containers (a veth deleted, an address flushed, a link down, and
 * the default routes that go with them) and a bridge left in the delete group are undone by
 * the next full resync; removing the containers leaves the kernel holding
 * none of it (namespaces deleted in one batch, their veths going with them).
 *
 * Every name carries a random prefix; teardown removes every namespace with
 * it even when a test fails.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { pino } from 'pino';
import { levNames } from '../../packages/shared/src/index.js';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { DELETE_GROUP, desiredFor, observeTopology, startTopology, type RunningTopology } from '../../packages/agent/src/leviathan/index.js';
import { ExecaRunner } from '../../packages/agent/src/exec/runner.js';
import { callOk, storedLeviathan, testCoordinator } from '../helpers/coordinator.js';
import { deleteNamespaces, namespacesWithPrefix, sh } from '../helpers/netns.js';

const P = `d${randomBytes(2).toString('hex')}`;
const HOST = `${P}-host1`;
const CEN = `${P}cen`;
const CIN = `${P}cin`;
const POOL = `${P}pool`;
const CONTS = [`${POOL}-1`, `${POOL}-2`, `${POOL}-3`];

const ping = (from: string, to: string) => {
  try {
    sh('ip', ['netns', 'exec', from, 'ping', '-c', '1', '-W', '1', to]);
    return true;
  } catch {
    return false;
  }
};
const inside = (ns: string) => JSON.parse(sh('ip', ['-n', ns, '-j', 'addr', 'show', 'dev', CEN])) as { flags: string[]; addr_info: { family: string; local: string }[] }[];
const defaultRoute = (ns: string) => JSON.parse(sh('ip', ['-n', ns, '-j', 'route', 'show', 'default'])) as { gateway?: string; dev?: string }[];
const hostLinks = () => (JSON.parse(sh('ip', ['-n', HOST, '-j', 'link', 'show'])) as { ifname: string; group?: string }[]).filter((l) => l.ifname !== 'lo');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, f: () => T | undefined | false, timeoutMs = 15_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    let v: T | undefined | false;
    try {
      v = f();
    } catch {
      v = undefined;
    }
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

let c: Coordinator;
let agent: RunningTopology | undefined;
// The agent's way: commands from the spawn helper.
const runner = new ExecaRunner({ helper: true });
let addrs: Map<string, string>;
let gateway: string;
const log = pino({ level: 'silent' });
const call = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, payload?: unknown) => callOk(c, method, url, payload);

beforeAll(async () => {
  deleteNamespaces(P);
  sh('ip', ['netns', 'add', HOST]);
  sh('ip', ['-n', HOST, 'link', 'set', 'lo', 'up']);
  c = await testCoordinator('cen-drift');
  // A full resync (kernel read again) every second: drift is undone without any write.
  agent = await startTopology({ etcd: c.ctx.etcd, keys: c.ctx.keys, hostId: 'host1', netns: HOST, log, resyncMs: 1000, runner });
});

afterAll(async () => {
  await agent?.stop();
  runner.close();
  await c?.close();
  deleteNamespaces(P);
  expect(namespacesWithPrefix(P)).toEqual([]);
});

it('makes a CEN of three containers with addresses and default routes; the helper reads what `ip` reads', async () => {
  await call('POST', '/cpool', { cpoolList: [{ cpoolID: POOL, type: 'netns', start_with: 3, cins: [{ cinID: CEN, default_route: true }] }] });
  await call('POST', '/cin/import', { [CIN]: [CEN] });
  const made = await call('POST', '/cin/make', [CIN]);
  await agent?.waitApplied(made.revision);
  const cin = (await call('GET', `/cin/${CIN}`)).body as { gateway: string; addresses: { containerID: string; ipaddress: string }[] };
  gateway = cin.gateway;
  addrs = new Map(cin.addresses.map((a) => [a.containerID, a.ipaddress]));
  expect([...addrs.keys()].sort()).toEqual(CONTS);
  for (const ns of CONTS) expect(inside(ns)[0].addr_info.filter((a) => a.family === 'inet').map((a) => a.local)).toEqual([addrs.get(ns)]);
  expect(ping(CONTS[0], addrs.get(CONTS[2]) as string)).toBe(true);

  // Both readers see the same kernel.
  const { cens, cins, containers } = await storedLeviathan(c);
  const d = desiredFor({ hostId: 'host1', underlays: new Map(), cens, cins, containers });
  const viaHelper = await observeTopology(runner, HOST, d.namespaces, 'netlink');
  const viaIp = await observeTopology(runner, HOST, d.namespaces, 'ip');
  expect(viaHelper.nsLinks.get(CONTS[0])?.get(CEN)).toMatchObject({ kind: 'veth', up: true, addrs: [`${addrs.get(CONTS[0])}/16`] });
  expect(viaHelper).toEqual(viaIp);
});

it('a container veth deleted by hand, an address flushed, a link down (and with them the default routes): all back at the next resync', async () => {
  const [c1, c2, c3] = CONTS;
  const hostEnd = levNames.vethHost(c1, CEN);
  sh('ip', ['-n', c1, 'link', 'del', CEN]);
  expect(hostLinks().map((l) => l.ifname)).not.toContain(hostEnd);
  sh('ip', ['-n', c2, 'addr', 'flush', 'dev', CEN]);
  sh('ip', ['-n', c3, 'link', 'set', CEN, 'down']);
  // Each of these takes the container's default route with it (the kernel flushes routes through a link that goes down or loses its address).
  expect(defaultRoute(c2)).toEqual([]);

  await until('the drift undone', () =>
    CONTS.every((ns) => {
      const l = inside(ns)[0];
      return l.flags.includes('UP') && l.addr_info.some((a) => a.local === addrs.get(ns)) && defaultRoute(ns)[0]?.gateway === gateway;
    }),
  );
  expect(hostLinks().map((l) => l.ifname)).toContain(hostEnd);
  expect(ping(c1, addrs.get(c2) as string)).toBe(true);
  expect(ping(c3, addrs.get(c1) as string)).toBe(true);
});

it('a bridge left in the delete group (its deletion cut short) is deleted and made again, not kept', async () => {
  const bridge = levNames.bridge(CEN);
  const ifindex = () => (JSON.parse(sh('ip', ['-n', HOST, '-j', 'link', 'show', 'dev', bridge])) as { ifindex: number }[])[0]?.ifindex;
  const before = ifindex();
  sh('ip', ['-n', HOST, 'link', 'set', 'dev', bridge, 'group', String(DELETE_GROUP)]);
  await until('a new bridge in the default group', () => {
    const b = hostLinks().find((l) => l.ifname === bridge);
    return b && b.group === 'default' && ifindex() !== before;
  });
  await until('the containers reachable again', () => ping(CONTS[0], addrs.get(CONTS[1]) as string));
  expect(ping(CONTS[2], gateway)).toBe(true);
});

it('removing the containers (CEN still made) leaves the kernel holding none of it: no namespace, no veth, no bridge', async () => {
  let last = 0;
  for (const ns of CONTS) last = (await call('DELETE', `/host/host1/${ns}`)).revision;
  await agent?.waitApplied(last);
  expect(namespacesWithPrefix(P)).toEqual([HOST]);
  // A deleted namespace's veths go in the kernel's own cleanup, shortly after.
  await until('no link left in the host namespace', () => hostLinks().length === 0, 5000);
  expect(Object.keys(await c.ctx.etcd.getAll().prefix(c.ctx.keys.lev.createdAll('host1')).strings())).toEqual([]);
});
