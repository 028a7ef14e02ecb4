/**
 * A CIN over several CENs: containers on different CENs of one CIN ping each
 * other's CIN addresses (the host routes between the CEN bridges: /32 routes,
 * proxy ARP, and the isolation table letting the CIN through), while a
 * second CIN stays unreachable. A converged host plans nothing; destroying
 * the CIN removes the routes, proxy ARP and the pass.
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

const P = `s${randomBytes(2).toString('hex')}`;
const HOST = `${P}-host1`;
const [CA, CB, CC] = [`${P}ca`, `${P}cb`, `${P}cc`];
const [XA, XB, XC, XD] = [`${P}xa`, `${P}xb`, `${P}xc`, `${P}xd`];
const [CIN, OTHER] = [`${P}cin`, `${P}oth`];

const ping = (from: string, to: string) => {
  try {
    sh('ip', ['netns', 'exec', from, 'ping', '-c', '1', '-W', '2', to]);
    return true;
  } catch {
    return false;
  }
};
/** /32 routes through the role's bridges in the host namespace. */
const hostRoutes = () => (JSON.parse(sh('ip', ['-n', HOST, '-j', 'route', 'show'])) as { dst: string; dev: string }[]).filter((r) => r.dev.startsWith('syb') && !r.dst.includes('/'));
const proxyArp = (bridge: string) => sh('ip', ['netns', 'exec', HOST, 'sysctl', '-n', `net/ipv4/conf/${bridge}/proxy_arp`]).trim();

let c: Coordinator;
let agent: RunningTopology | undefined;
const log = pino({ level: 'silent' });
const runner = new ExecaRunner();
const call = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, payload?: unknown) => callOk(c, method, url, payload);

/** The plan the kernel's current state would need: [] when converged. */
async function residualPlan() {
  const { cens, cins, containers } = await storedLeviathan(c);
  const d = desiredFor({ hostId: 'host1', underlays: new Map(), cens, cins, containers });
  const o = await observeTopology(runner, HOST, d.namespaces);
  return plan(d, o, { created: new Set(d.namespaces), knownCens: new Set(cens.map((x) => x.cenID)) });
}

beforeAll(async () => {
  deleteNamespaces(P);
  sh('ip', ['netns', 'add', HOST]);
  sh('ip', ['-n', HOST, 'link', 'set', 'lo', 'up']);
  // Routing between bridges needs a forwarding host; the agent does not switch it on.
  sh('ip', ['netns', 'exec', HOST, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
  c = await testCoordinator('cen-cin-span');
  agent = await startTopology({ etcd: c.ctx.etcd, keys: c.ctx.keys, hostId: 'host1', netns: HOST, log, resyncMs: 600_000 });
});

afterAll(async () => {
  await agent?.stop();
  await c?.close();
  deleteNamespaces(P);
  expect(namespacesWithPrefix(P)).toEqual([]);
});

let ips: Record<string, string> = {};

it('containers on different CENs of one CIN reach each other; another CIN stays apart', async () => {
  for (const [x, cen] of [
    [XA, CA],
    [XB, CA],
    [XC, CB],
    [XD, CC],
  ]) {
    await call('PUT', `/cen/${cen}`);
    await call('PUT', `/host/host1/${x}/${cen}`);
  }
  await call('POST', '/cen/make', [CA, CB, CC]);
  await call('POST', '/cin/import', { [CIN]: [CA, CB], [OTHER]: [CC] });
  const made = await call('POST', '/cin/make', [CIN, OTHER]);
  await agent?.waitApplied(made.revision);

  const cin = (await call('GET', `/cin/${CIN}`)).body as { addresses: { containerID: string; ipaddress: string }[]; gateway: string };
  const other = (await call('GET', `/cin/${OTHER}`)).body as { addresses: { containerID: string; ipaddress: string }[] };
  ips = Object.fromEntries([...cin.addresses, ...other.addresses].map((a) => [a.containerID, a.ipaddress]));

  expect(ping(XA, ips[XC])).toBe(true);
  expect(ping(XC, ips[XB])).toBe(true);
  expect(ping(XA, ips[XB])).toBe(true);
  // The host reaches containers behind either bridge (its gateway address is on both).
  expect(ping(XC, cin.gateway)).toBe(true);
  expect(ping(XA, cin.gateway)).toBe(true);
  expect(ping(XA, ips[XD])).toBe(false);
  expect(ping(XD, ips[XC])).toBe(false);

  expect(hostRoutes().map((r) => r.dst).sort()).toEqual([ips[XA], ips[XB], ips[XC]].sort());
  expect(await residualPlan()).toEqual([]);
});

it('destroying the CIN removes its routes, proxy ARP and its pass through the isolation table', async () => {
  const d = await call('POST', '/cin/destroy', [CIN]);
  await agent?.waitApplied(d.revision);
  expect(hostRoutes()).toEqual([]);
  const bridges = (JSON.parse(sh('ip', ['-n', HOST, '-j', 'link', 'show', 'type', 'bridge'])) as { ifname: string }[]).map((l) => l.ifname);
  expect(bridges).toHaveLength(3);
  for (const b of bridges) expect(proxyArp(b), b).toBe('0');
  expect(sh('ip', ['netns', 'exec', HOST, 'nft', 'list', 'table', 'inet', 'switchyard_lev'])).not.toContain('daddr');
  expect(await residualPlan()).toEqual([]);
});
