/**
 * `switchyard etcd-auth` against a real etcd of its own (turning auth on in
 * the shared one would lock every other test out): the users and password
 * files it makes, a coordinator and a dry-run agent each on their own
 * credentials working end to end, and the refusals etcd itself gives an
 * agent's credentials outside its role.
 */
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Etcd3 } from 'etcd3';
import { INITIAL_GENERATION, keyspace, readPasswordFile } from '@switchyard/shared';
import { startAgent, type RunningAgent } from '../../packages/agent/src/index.js';
import { buildCoordinator, type Coordinator } from '../../packages/coordinator/src/index.js';
import { runCli } from '../helpers/cli.js';
import { startPrivateEtcd, uniquePrefix } from '../helpers/etcd.js';

const prefix = uniquePrefix('etcd-auth');
const keys = keyspace(prefix);
let etcd: Awaited<ReturnType<typeof startPrivateEtcd>>;
let out: string;
const cleanups: (() => Promise<void> | void)[] = [];

const file = (user: string) => join(out, `${user}.password`);
const as = (user: string) => new Etcd3({ hosts: etcd.url, auth: { username: user, password: readPasswordFile(user, file(user)) } });

beforeAll(async () => {
  etcd = await startPrivateEtcd();
  out = mkdtempSync(join(tmpdir(), 'sy-etcd-auth-'));
  const r = await runCli(['etcd-auth', '--etcd', etcd.url, '--hosts', 'h1,h2', '--out', out, '--prefix', prefix]);
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout).toMatch(/etcd authentication enabled/);
});

afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
  await etcd?.cleanup();
  if (out) rmSync(out, { recursive: true, force: true });
});

describe('switchyard etcd-auth', () => {
  it('writes one 0600 password file per user and turns auth on', async () => {
    for (const user of ['root', 'switchyard-coordinator', 'switchyard-agent-h1', 'switchyard-agent-h2']) {
      expect(statSync(file(user)).mode & 0o777, user).toBe(0o600);
    }
    const anonymous = new Etcd3({ hosts: etcd.url });
    cleanups.push(() => anonymous.close());
    await expect(anonymous.get(keys.l4.current).string()).rejects.toThrow(/user name is empty/);
    const root = as('root');
    cleanups.push(() => root.close());
    expect((await root.getUsers()).map((u) => u.name).sort()).toEqual(['root', 'switchyard-agent-h1', 'switchyard-agent-h2', 'switchyard-coordinator']);
  });

  it('runs again with root.password: adds a host, keeps the passwords it has', async () => {
    const before = readPasswordFile('h1', file('switchyard-agent-h1'));
    const r = await runCli(['etcd-auth', '--etcd', etcd.url, '--hosts', 'h1,h3', '--out', out, '--prefix', prefix]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/already on/);
    expect(r.stdout).toMatch(/switchyard-agent-h3 .*\(new password\)/);
    expect(readPasswordFile('h1', file('switchyard-agent-h1'))).toBe(before);
    const h3 = as('switchyard-agent-h3');
    cleanups.push(() => h3.close());
    await h3.put(keys.hosts.status('h3')).value('{}');
    await expect(h3.put(keys.hosts.status('h1')).value('{}')).rejects.toThrow(/permission denied/);
  });

  it('a coordinator and an agent on their own credentials: a service reaches the agent and its status comes back', async () => {
    const logs: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => void logs.push(line) });
    const c: Coordinator = await buildCoordinator({
      etcd: [etcd.url],
      prefix,
      etcdUser: 'switchyard-coordinator',
      etcdPasswordFile: file('switchyard-coordinator'),
      listen: { host: '127.0.0.1', port: 0 },
      logLevel: 'silent',
    });
    cleanups.push(() => c.close());
    const agent: RunningAgent = await startAgent(
      { hostId: 'h1', etcd: [etcd.url], prefix, dataplane: 'dry-run', etcdUser: 'switchyard-agent-h1', etcdPasswordFile: file('switchyard-agent-h1'), leaseTtlSeconds: 2 },
      { logger },
    );
    cleanups.push(() => agent.stop());

    const post = await c.app.inject({ method: 'POST', url: '/services', payload: { host: '10.1.0.1', port: 80, servers: [{ host: '10.2.0.1', port: 80 }] } });
    expect(post.statusCode, post.body).toBe(200);
    const rev = Number(post.headers['x-switchyard-revision']);
    await expect
      .poll(async () => (await c.app.inject({ method: 'GET', url: '/hosts/h1' })).json(), { timeout: 10_000 })
      .toMatchObject({ id: 'h1', alive: true, services: 1, appliedRevision: expect.toSatisfy((r: number) => r >= rev) });

    // The topology role reported too (lev-status/<id>), and nothing was refused on the way.
    const coordinator = as('switchyard-coordinator');
    cleanups.push(() => coordinator.close());
    await expect.poll(() => coordinator.get(keys.lev.status('h1')).string(), { timeout: 10_000 }).toBeTruthy();
    expect(logs.join('')).not.toMatch(/permission denied|user name is empty|authentication failed/i);
  });

  it("etcd refuses the agent's credentials another host's keys, desired state and Portmaster", async () => {
    const root = as('root');
    cleanups.push(() => root.close());
    await root.put(keys.pm.ranges).value('[]');
    await root.put(keys.pm.offer('web', 'secret-1')).value('{}');

    const h1 = as('switchyard-agent-h1');
    cleanups.push(() => h1.close());
    // What it may do.
    await h1.put(keys.hosts.status('h1')).value('{}');
    await h1.put(keys.lev.created('h1', 'ns1')).value('{}');
    await h1.delete().key(keys.lev.created('h1', 'ns1'));
    // Its underlay address goes on a lease, as the topology role writes it.
    const lease = h1.lease(5, { autoKeepAlive: false });
    await lease.put(keys.lev.underlay('h1')).value('{"hostId":"h1","address":"10.0.0.1"}');
    await lease.revoke();
    await h1.getAll().prefix(keys.l4.root).keys();
    await h1.getAll().prefix(keys.lev.hosts).keys();
    // What it may not.
    await expect(h1.put(keys.hosts.status('h2')).value('{}')).rejects.toThrow(/permission denied/);
    await expect(h1.put(keys.hosts.agent('h2')).value('{}')).rejects.toThrow(/permission denied/);
    await expect(h1.put(keys.lev.status('h2')).value('{}')).rejects.toThrow(/permission denied/);
    await expect(h1.put(keys.lev.underlay('h2')).value('{}')).rejects.toThrow(/permission denied/);
    await expect(h1.put(keys.l4.service(INITIAL_GENERATION, 'tcp-10_9_9_9-80')).value('{}')).rejects.toThrow(/permission denied/);
    await expect(h1.put(keys.l4.current).value('7')).rejects.toThrow(/permission denied/);
    await expect(h1.put(keys.lev.cen('c1')).value('{}')).rejects.toThrow(/permission denied/);
    await expect(h1.put(keys.disco.lbOwned('s', 'r')).value('')).rejects.toThrow(/permission denied/);
    await expect(h1.get(keys.pm.ranges).string()).rejects.toThrow(/permission denied/);
    await expect(h1.getAll().prefix(keys.pm.all).keys()).rejects.toThrow(/permission denied/);
    await expect(h1.get(keys.pm.offer('web', 'secret-1')).string()).rejects.toThrow(/permission denied/);
  });

  it('fails the start clearly on a wrong password or an unreadable password file', async () => {
    const wrong = join(out, 'wrong.password');
    writeFileSync(wrong, 'not-the-password\n', { mode: 0o600 });
    await expect(
      startAgent({ hostId: 'h2', etcd: [etcd.url], prefix, dataplane: 'dry-run', logLevel: 'silent', etcdUser: 'switchyard-agent-h2', etcdPasswordFile: wrong }),
    ).rejects.toThrow(/refused access .*authentication failed.*--etcd-user, --etcd-password-file/);
    await expect(
      buildCoordinator({ etcd: [etcd.url], prefix, logLevel: 'silent', etcdUser: 'switchyard-coordinator', etcdPasswordFile: join(out, 'missing.password') }),
    ).rejects.toThrow(/--etcd-password-file: cannot read .*missing\.password: ENOENT/);
    await expect(buildCoordinator({ etcd: [etcd.url], prefix, logLevel: 'silent', etcdUser: 'switchyard-coordinator' })).rejects.toThrow(
      /--etcd-user and --etcd-password-file go together/,
    );
  });
});
