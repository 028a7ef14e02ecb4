/**
 * The real `switchyard` CLI, as a child process: the coordinator command
 * configured from the environment, and the Portal-style client commands
 * against it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, sharedEtcdUrl, uniquePrefix } from '../helpers/etcd.js';
import { runCli, startCli } from '../helpers/cli.js';
import type { ChildProcess } from 'node:child_process';

let api: string;
let coordinator: ChildProcess;

beforeAll(async () => {
  const port = await freePort();
  // Configured through SWITCHYARD_* variables only, to prove every flag has one.
  const started = startCli(['coordinator'], /Server listening at (\S+)/, {
    SWITCHYARD_ETCD: sharedEtcdUrl(),
    SWITCHYARD_LISTEN: `127.0.0.1:${port}`,
    SWITCHYARD_PREFIX: uniquePrefix('cli'),
    SWITCHYARD_TOKEN: 'tok',
  });
  coordinator = started.child;
  await started.ready;
  api = `http://127.0.0.1:${port}`;
});

afterAll(async () => {
  coordinator.kill('SIGTERM');
  await new Promise((r) => coordinator.once('exit', r));
});

const sy = (...args: string[]) => runCli([...args, '--api', api], { SWITCHYARD_TOKEN: 'tok' });

describe('switchyard service/server', () => {
  it('--health sets the checks; service set changes one detail and keeps the rest; bad values are refused', async () => {
    const add = await sy('service', 'add', '--host', '10.5.0.9', '--port', '80', '--health', 'http:/ready', '--health-interval', '500ms', '--health-timeout', '400ms', '--health-fall', '2', '--json');
    expect(add.code, add.stderr).toBe(0);
    expect(JSON.parse(add.stdout).health).toEqual({ type: 'http', path: '/ready', expect: 200, interval: '500ms', timeout: '400ms', rise: 2, fall: 2 });
    const set = await sy('service', 'set', 'tcp-10_5_0_9-80', '--health-rise', '3', '--json');
    expect(set.code, set.stderr).toBe(0);
    expect(JSON.parse(set.stdout).health).toEqual({ type: 'http', path: '/ready', expect: 200, interval: '500ms', timeout: '400ms', rise: 3, fall: 2 });
    const tcp = await sy('service', 'set', 'tcp-10_5_0_9-80', '--health', 'tcp', '--json');
    expect(JSON.parse(tcp.stdout).health).toEqual({ type: 'tcp', interval: '500ms', timeout: '400ms', rise: 3, fall: 2 });
    const bad = await sy('service', 'add', '--host', '10.5.0.10', '--port', '80', '--health', 'icmp');
    expect(bad.code).toBe(2);
    const refused = await sy('service', 'add', '--host', '10.5.0.10', '--port', '80', '--health', 'tcp', '--health-interval', '1s', '--health-timeout', '2s');
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/timeout/);
    expect((await sy('service', 'remove', 'tcp-10_5_0_9-80')).code).toBe(0);
  });

  it('add, list, show, set and remove a service with servers', async () => {
    const add = await sy('service', 'add', '--host', '10.5.0.1', '--port', '80', '--scheduler', 'rr', '--json');
    expect(add.code, add.stderr).toBe(0);
    expect(JSON.parse(add.stdout)).toMatchObject({ id: 'tcp-10_5_0_1-80', scheduler: 'rr' });

    const srv = await sy('server', 'add', 'tcp-10_5_0_1-80', '--host', '10.5.1.1', '--port', '8080', '--weight', '2', '--forwarder', 'm', '--upper', '9');
    expect(srv.code, srv.stderr).toBe(0);
    expect(JSON.parse(srv.stdout)).toEqual({ id: '10_5_1_1-8080', host: '10.5.1.1', port: 8080, forwarder: 'm', weight: 2, upper_threshold: 9, lower_threshold: 0 });

    expect(JSON.parse((await sy('server', 'list', 'tcp-10_5_0_1-80')).stdout)).toHaveLength(1);
    expect(JSON.parse((await sy('server', 'show', 'tcp-10_5_0_1-80', '10_5_1_1-8080')).stdout).weight).toBe(2);

    const set = await sy('service', 'set', 'tcp-10_5_0_1-80', '--persistence', '300', '--netmask', '255.255.255.0');
    expect(set.code, set.stderr).toBe(0);
    expect(JSON.parse(set.stdout)).toMatchObject({ persistence: 300, netmask: '255.255.255.0', scheduler: 'rr' });
    expect(JSON.parse(set.stdout).servers).toHaveLength(1);

    const show = await sy('service', 'show', '--host', '10.5.0.1', '--port', '80');
    expect(JSON.parse(show.stdout).persistence).toBe(300);
    expect(JSON.parse((await sy('service', 'list')).stdout).map((s: { id: string }) => s.id)).toEqual(['tcp-10_5_0_1-80']);

    expect((await sy('server', 'remove', 'tcp-10_5_0_1-80', '10_5_1_1-8080')).code).toBe(0);
    const rm = await sy('service', 'remove', 'tcp-10_5_0_1-80');
    expect(rm.code).toBe(0);
    expect(JSON.parse(rm.stdout)).toEqual({ msg: 'Success' });
  });

  it('fails with a clear message and a non-zero exit', async () => {
    const missing = await sy('service', 'show', 'tcp-10_9_9_9-1');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/404: No Service Found/);

    const bad = await sy('service', 'add', '--host', 'not-an-ip', '--port', '80');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/400: .*host/);

    const usage = await sy('service', 'add', '--port', 'eighty');
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/not a whole number/);

    const noToken = await runCli(['service', 'list', '--api', api]);
    expect(noToken.code).toBe(1);
    expect(noToken.stderr).toMatch(/401/);

    const down = await runCli(['service', 'list', '--api', 'http://127.0.0.1:1']);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/cannot reach the coordinator/);
  });

  it('has --help everywhere', async () => {
    for (const args of [['--help'], ['service', '--help'], ['server', '--help'], ['coordinator', '--help'], ['agent', '--help'], ['up', '--help'], ['hosts', '--help']]) {
      const r = await runCli(args);
      expect(r.code, args.join(' ')).toBe(0);
      expect(r.stdout).toMatch(/Usage: switchyard/);
    }
    const unknown = await runCli(['frobnicate']);
    expect(unknown.code).toBe(2);
  });
});
