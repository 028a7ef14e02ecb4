/**
 * The seed's example CEN file on a real kernel: imported through the API,
 * made by the topology role (host objects in a --netns "host" namespace,
 * containers as named namespaces), addressed by two CINs. Pings inside a CIN
 * work, across CINs fail; make twice and an agent restart plan nothing;
 * destroy removes every link the agent made and, with the containers, the
 * namespaces it created, but not the one it adopted.
 *
 * Every name carries a random prefix; teardown removes every namespace with
 * it even when a test fails.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { pino } from 'pino';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { desiredFor, observeTopology, plan, startTopology, type RunningTopology } from '../../packages/agent/src/leviathan/index.js';
import { ExecaRunner } from '../../packages/agent/src/exec/runner.js';
import { callOk, storedLeviathan, testCoordinator } from '../helpers/coordinator.js';
import { deleteNamespaces, namespacesWithPrefix, sh } from '../helpers/netns.js';
import { SEED_CEN_FILE } from '../fixtures/leviathan/seed.js';

const P = `t${randomBytes(2).toString('hex')}`; // 5 characters: CEN ids stay ≤ 15
const HOST_NS = `${P}-host1`;
const id = (x: string) => `${P}${x}`;
const SEED = {
  cenList: SEED_CEN_FILE.cenList.map((c) => ({ cenID: id(c.cenID), containerIDs: c.containerIDs.map(id) })),
};
const ALL_CONTAINERS = [...new Set(SEED.cenList.flatMap((c) => c.containerIDs))];

const namespaces = () => namespacesWithPrefix(P);
const hostLinks = () => (JSON.parse(sh('ip', ['-n', HOST_NS, '-j', 'link', 'show'])) as { ifname: string }[]).map((l) => l.ifname).filter((n) => n !== 'lo');
const ping = (from: string, to: string) => {
  try {
    sh('ip', ['netns', 'exec', from, 'ping', '-c', '1', '-W', '1', to]);
    return true;
  } catch {
    return false;
  }
};

let c: Coordinator;
let agent: RunningTopology | undefined;
const log = pino({ level: 'silent' });
const runner = new ExecaRunner();

const call = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, payload?: unknown) => callOk(c, method, url, payload);

const start = () => startTopology({ etcd: c.ctx.etcd, keys: c.ctx.keys, hostId: 'host1', netns: HOST_NS, log, resyncMs: 600_000 });

/** The plan the kernel's current state would need: [] when converged. */
async function residualPlan() {
  const { cens, cins, containers } = await storedLeviathan(c);
  const created = new Set(Object.keys(await c.ctx.etcd.getAll().prefix(c.ctx.keys.lev.createdAll('host1')).strings()).map((k) => k.split('/').pop() as string));
  const d = desiredFor({ hostId: 'host1', underlays: new Map(), cens, cins, containers });
  const o = await observeTopology(runner, HOST_NS, [...d.namespaces, ...created]);
  return plan(d, o, { created, knownCens: new Set(cens.map((x) => x.cenID)) });
}

function cleanup() {
  deleteNamespaces(P);
}

beforeAll(async () => {
  cleanup();
  sh('ip', ['netns', 'add', HOST_NS]);
  sh('ip', ['-n', HOST_NS, 'link', 'set', 'lo', 'up']);
  // c3 exists before the agent: adopted, never deleted by it.
  sh('ip', ['netns', 'add', id('c3')]);
  c = await testCoordinator('cen-seed');
  agent = await start();
});

afterAll(async () => {
  await agent?.stop();
  await c?.close();
  cleanup();
  expect(namespaces()).toEqual([]);
});

it('imports, makes and addresses the seed: ping inside a CIN works, across CINs fails', async () => {
  await call('POST', '/cen/import', SEED);
  const made = await call('POST', '/cen/make', SEED.cenList.map((x) => x.cenID));
  await call('POST', '/cin/import', { [id('cin1')]: [id('cen1')], [id('cin2')]: [id('cen2')] });
  const cins = await call('POST', '/cin/make', [id('cin1'), id('cin2')]);
  expect(cins.revision).toBeGreaterThan(made.revision);
  await agent?.waitApplied(cins.revision);

  expect(namespaces().sort()).toEqual([HOST_NS, ...ALL_CONTAINERS].sort());
  // One bridge per CEN and one veth host end per membership (17) in the host namespace.
  const links = hostLinks();
  expect(links.filter((l) => l.startsWith('syb'))).toHaveLength(5);
  expect(links.filter((l) => l.startsWith('syv'))).toHaveLength(17);
  // Inside a container the interface is named after the CEN (Leviathan).
  const c2 = JSON.parse(sh('ip', ['-n', id('c2'), '-j', 'addr', 'show'])) as { ifname: string; addr_info: { local: string }[] }[];
  expect(c2.map((l) => l.ifname).sort()).toEqual([id('cen1'), id('cen5'), 'lo'].sort());

  const cin1 = (await call('GET', `/cin/${id('cin1')}`)).body;
  const cin2 = (await call('GET', `/cin/${id('cin2')}`)).body;
  expect(cin1.status).toBe('ready');
  expect((await call('GET', `/cen/${id('cen1')}`)).body).toMatchObject({ status: 'ready', hosts: { host1: 'ready' } });
  const ip = (cin: { addresses: { containerID: string; ipaddress: string }[] }, cont: string) => cin.addresses.find((a) => a.containerID === id(cont))?.ipaddress as string;
  expect(ip(cin1, 'c1')).toBe('10.10.0.10');

  expect(ping(id('c1'), ip(cin1, 'c14'))).toBe(true);
  expect(ping(id('c13'), ip(cin1, 'c2'))).toBe(true);
  expect(ping(id('c4'), ip(cin2, 'c7'))).toBe(true);
  expect(ping(id('c1'), ip(cin2, 'c4'))).toBe(false);
  expect(ping(id('c4'), ip(cin1, 'c1'))).toBe(false);
  expect(ping(id('c1'), cin1.gateway)).toBe(true);
});

it('make twice changes nothing; a restarted agent reconverges without duplicates', async () => {
  const again = await call('POST', '/cen/make', SEED.cenList.map((x) => x.cenID));
  await agent?.waitApplied(again.revision);
  expect(await residualPlan()).toEqual([]);
  const before = hostLinks().sort();

  await agent?.stop();
  agent = await start();
  await agent.waitApplied(again.revision);
  expect(hostLinks().sort()).toEqual(before);
  expect(await residualPlan()).toEqual([]);
});

it('destroy removes exactly what make made; removing containers removes only created namespaces', async () => {
  await call('POST', '/cin/destroy', [id('cin1'), id('cin2')]);
  const d = await call('POST', '/cen/destroy', SEED.cenList.map((x) => x.cenID));
  await agent?.waitApplied(d.revision);
  expect(hostLinks()).toEqual([]);
  for (const ns of ALL_CONTAINERS) {
    const links = (JSON.parse(sh('ip', ['-n', ns, '-j', 'link', 'show'])) as { ifname: string }[]).map((l) => l.ifname);
    expect(links, ns).toEqual(['lo']);
  }
  expect((await call('GET', `/cen/${id('cen1')}`)).body.status).toBe('pending');

  let last = 0;
  for (const x of ALL_CONTAINERS) last = (await call('DELETE', `/host/host1/${x}`)).revision;
  await agent?.waitApplied(last);
  // The adopted c3 stays; every namespace the agent created is gone.
  expect(namespaces().sort()).toEqual([HOST_NS, id('c3')].sort());
  expect(Object.keys(await c.ctx.etcd.getAll().prefix(c.ctx.keys.lev.createdAll('host1')).strings())).toEqual([]);
});
