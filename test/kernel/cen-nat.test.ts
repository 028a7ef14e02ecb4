/**
 * `default_route` reaches the outside: a CPool container whose default route
 * is its CIN's gateway pings an address in an "outside" namespace joined to
 * the host namespace by a veth; the outside has no route back to the CIN, so
 * the ping only works if the host masquerades, and the outside counts the
 * echo requests it sees by source: all from the host's address, none from
 * the CIN. Destroying the CIN removes the NAT table.
 *
 * Every name carries a random prefix; teardown removes every namespace with
 * it even when a test fails (the veth and nft tables go with them).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { pino } from 'pino';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { NAT_TABLE, startTopology, type RunningTopology } from '../../packages/agent/src/leviathan/index.js';
import { callOk, testCoordinator } from '../helpers/coordinator.js';
import { deleteNamespaces, namespacesWithPrefix, sh } from '../helpers/netns.js';

const P = `n${randomBytes(2).toString('hex')}`;
const HOST = `${P}-host1`;
const OUT = `${P}-out`;
const CEN = `${P}cen`;
const CIN = `${P}cin`;
const POOL = `${P}pool`;
const CONT = `${POOL}-1`;
const HOST_ADDR = '192.168.252.1';
const OUT_ADDR = '192.168.252.2';

const ping = (from: string, to: string) => {
  try {
    sh('ip', ['netns', 'exec', from, 'ping', '-c', '2', '-W', '2', to]);
    return true;
  } catch {
    return false;
  }
};
/** Echo requests the outside saw from `src` (its counting table, below). */
const seenFrom = (which: 'host' | 'cin') => {
  const text = sh('ip', ['netns', 'exec', OUT, 'nft', 'list', 'chain', 'inet', `${P}count`, 'input']);
  const line = text.split('\n').find((l) => l.includes(`comment "${which}"`)) ?? '';
  return Number(/packets (\d+)/.exec(line)?.[1] ?? NaN);
};
const natTable = () => {
  try {
    return sh('ip', ['netns', 'exec', HOST, 'nft', 'list', 'table', 'ip', NAT_TABLE]);
  } catch {
    return undefined;
  }
};

let c: Coordinator;
let agent: RunningTopology | undefined;
const log = pino({ level: 'silent' });
const call = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, payload?: unknown) => callOk(c, method, url, payload);

beforeAll(async () => {
  deleteNamespaces(P);
  for (const ns of [HOST, OUT]) {
    sh('ip', ['netns', 'add', ns]);
    sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  }
  sh('ip', ['link', 'add', 'name', `${P}up`, 'netns', HOST, 'type', 'veth', 'peer', 'name', `${P}out`, 'netns', OUT]);
  sh('ip', ['-n', HOST, 'addr', 'add', `${HOST_ADDR}/24`, 'dev', `${P}up`]);
  sh('ip', ['-n', OUT, 'addr', 'add', `${OUT_ADDR}/24`, 'dev', `${P}out`]);
  sh('ip', ['-n', HOST, 'link', 'set', `${P}up`, 'up']);
  sh('ip', ['-n', OUT, 'link', 'set', `${P}out`, 'up']);
  // The host routes (as any container host must); the agent does not switch forwarding on.
  sh('ip', ['netns', 'exec', HOST, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
  // The outside counts echo requests by source.
  execFileSync('ip', ['netns', 'exec', OUT, 'nft', '-f', '-'], {
    input: [
      `table inet ${P}count {`,
      '  chain input {',
      '    type filter hook input priority filter; policy accept;',
      `    ip saddr ${HOST_ADDR} icmp type echo-request counter comment "host"`,
      '    ip saddr 10.0.0.0/8 icmp type echo-request counter comment "cin"',
      '  }',
      '}',
      '',
    ].join('\n'),
  });
  c = await testCoordinator('cen-nat');
  agent = await startTopology({ etcd: c.ctx.etcd, keys: c.ctx.keys, hostId: 'host1', netns: HOST, log, resyncMs: 600_000 });
});

afterAll(async () => {
  await agent?.stop();
  await c?.close();
  deleteNamespaces(P);
  expect(namespacesWithPrefix(P)).toEqual([]);
});

it('a container with default_route reaches the outside, which sees the host as the source', async () => {
  await call('POST', '/cpool', { cpoolList: [{ cpoolID: POOL, type: 'netns', start_with: 1, cins: [{ cinID: CEN, default_route: true }] }] });
  await call('POST', '/cin/import', { [CIN]: [CEN] });
  const made = await call('POST', '/cin/make', [CIN]);
  await agent?.waitApplied(made.revision);

  expect(natTable()).toContain('masquerade');
  const route = JSON.parse(sh('ip', ['-n', CONT, '-j', 'route', 'show', 'default'])) as { gateway: string; dev: string }[];
  expect(route).toEqual([expect.objectContaining({ gateway: (await call('GET', `/cin/${CIN}`)).body.gateway, dev: CEN })]);

  expect(ping(CONT, OUT_ADDR)).toBe(true);
  expect(seenFrom('host')).toBeGreaterThanOrEqual(2);
  expect(seenFrom('cin')).toBe(0);
});

it('destroying the CIN takes the default route and prunes the NAT table', async () => {
  const d = await call('POST', '/cin/destroy', [CIN]);
  await agent?.waitApplied(d.revision);
  expect(natTable()).toBeUndefined();
  expect(JSON.parse(sh('ip', ['-n', CONT, '-j', 'route', 'show', 'default']))).toEqual([]);
  expect(ping(CONT, OUT_ADDR)).toBe(false);
});
