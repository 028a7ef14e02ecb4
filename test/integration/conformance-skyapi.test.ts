/**
 * skyapi's Go client (mediocregopher/skyapi, package `client`), replayed with a
 * real `ws` client: the URL is the one `provide()` builds — `ws://<addr>/provide?`
 * and url.Values.Encode() of service, host and port split from ThisAddr (host
 * left out for ":port"), category and prefix only when set, priority and
 * weight always (1 and 100 by default) — keys in Encode's sorted order. The
 * client then pings every Opts.Interval and expects its pongs.
 *
 * The record ids below were computed with Go's fmt, as skyapi's server
 * computes them (sha1 over Fprint(service), Fprint(category), Fprint(host),
 * Fprint(port)); with a prefix the id is `<prefix>-<first 20 hex>`.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { testCoordinator } from '../helpers/coordinator.js';
import { freePort, sharedEtcdUrl } from '../helpers/etcd.js';
import { eventually } from '../helpers/eventually.js';
import { provide, refused, terminateProviders } from '../helpers/providers.js';

const run = promisify(execFile);

/** sha1("web" "services" "10.0.0.7" "8080"), Go fmt. */
const WEB_10_0_0_7 = '8943bafc27883202dc578cb047b8abc610de04be';
/** sha1("web" "services" "127.0.0.1" "8080"): ThisAddr ":8080", the peer's address. */
const WEB_PEER = 'fa901b787def180d1166a0429e1541909a4c6313';

let c: Coordinator;
let base: string;
let etcd: Etcd3;
let dnsPort: number;
const label = `t${randomBytes(5).toString('hex')}`;
const root = `${label}.test.local`;
const dir = `/skydns/local/test/${label}/services/web/`;

beforeAll(async () => {
  dnsPort = await freePort();
  c = await testCoordinator('conformance-skyapi', { dnsRoot: root, providerTtlMs: 2000, dnsListen: { host: '127.0.0.1', port: dnsPort } });
  base = await c.listen();
  etcd = new Etcd3({ hosts: sharedEtcdUrl() });
});
afterAll(async () => {
  terminateProviders();
  await c.close();
  etcd.close();
});

async function keys(): Promise<string[]> {
  return (await etcd.getAll().prefix(dir).keys()).sort();
}

function closed(ws: WebSocket): Promise<void> {
  return new Promise((resolve) => (ws.readyState === ws.CLOSED ? resolve() : ws.once('close', () => resolve())));
}

async function srvTargets(): Promise<string[]> {
  const { stdout } = await run('dig', ['@127.0.0.1', '-p', String(dnsPort), '+time=2', '+tries=1', '+short', 'SRV', `web.services.${root}`]);
  return stdout.trim().split('\n').filter(Boolean).map((l) => l.split(/\s+/)[3]).sort();
}

describe('skyapi client handshake', () => {
  it('Opts{Service: web, ThisAddr: 10.0.0.7:8080, Prefix: dc1}: the record is <prefix>-<20 hex>, the SRV target with it', async () => {
    const ws = await provide(base, 'host=10.0.0.7&port=8080&prefix=dc1&priority=1&service=web&weight=100');
    const id = `dc1-${WEB_10_0_0_7.slice(0, 20)}`;
    await eventually(async () => ((await keys()).length === 1 ? true : undefined));
    expect(await keys()).toEqual([`${dir}${id}`]);
    expect(await etcd.get(`${dir}${id}`).string()).toBe('{"host":"10.0.0.7","port":8080,"priority":1,"weight":100}');
    expect(await eventually(async () => ((await srvTargets()).length === 1 ? srvTargets() : undefined))).toEqual([`${id}.web.services.${root}.`]);
    // The client's keep-alive: a ping every Opts.Interval, answered.
    const pong = new Promise<void>((resolve) => ws.once('pong', () => resolve()));
    ws.ping();
    await pong;
    ws.close();
    await closed(ws);
    await eventually(async () => ((await keys()).length === 0 ? true : undefined));
  });

  it('a reconnect of the same process gets the same id, so the SRV target name is stable', async () => {
    const targets: string[][] = [];
    for (let i = 0; i < 2; i++) {
      const ws = await provide(base, 'host=10.0.0.7&port=8080&prefix=dc1&priority=1&service=web&weight=100');
      await eventually(async () => ((await srvTargets()).length === 1 ? true : undefined));
      targets.push(await srvTargets());
      ws.terminate();
      await eventually(async () => ((await keys()).length === 0 ? true : undefined));
    }
    expect(targets[0]).toEqual([`dc1-${WEB_10_0_0_7.slice(0, 20)}.web.services.${root}.`]);
    expect(targets[1]).toEqual(targets[0]);
  });

  it('ThisAddr ":8080" sends no host: the peer address is hashed; no prefix gives the whole 40 hex', async () => {
    const ws = await provide(base, 'port=8080&priority=1&service=web&weight=100');
    await eventually(async () => ((await keys()).length === 1 ? true : undefined));
    expect(await keys()).toEqual([`${dir}${WEB_PEER}`]);
    ws.close();
    await eventually(async () => ((await keys()).length === 0 ? true : undefined));
  });

  it('two live connections with one identity: the first keeps its id, the second gets -2; neither close erases the other', async () => {
    const q = 'host=10.0.0.7&port=8080&prefix=dc1&priority=1&service=web&weight=100';
    const id = `dc1-${WEB_10_0_0_7.slice(0, 20)}`;
    const first = await provide(base, q);
    await eventually(async () => ((await keys()).length === 1 ? true : undefined));
    const second = await provide(base, q);
    await eventually(async () => ((await keys()).length === 2 ? true : undefined));
    expect(await keys()).toEqual([`${dir}${id}`, `${dir}${id}-2`]);
    first.close();
    await eventually(async () => ((await keys()).length === 1 ? true : undefined));
    expect(await keys()).toEqual([`${dir}${id}-2`]);
    second.close();
    await eventually(async () => ((await keys()).length === 0 ? true : undefined));
  });

  it('a prefix that cannot be a DNS label is refused with an error frame, nothing written', async () => {
    const r = await refused(base, 'host=10.0.0.7&port=8080&prefix=a.b&priority=1&service=web&weight=100');
    expect(r.code).toBe(1008);
    expect(r.frame.code).toBe('INVALID');
    expect(r.frame.error).toMatch(/prefix/);
    expect(await keys()).toEqual([]);
  });
});
