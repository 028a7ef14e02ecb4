/**
 * Health checks against the real kernel (nftables) with real TCP: two HTTP
 * backends behind a VIP, checked over HTTP every 500 ms (fall 2, rise 2) by
 * an agent confined to the balancer's namespace — so its probes leave from
 * there, through the probe worker. A backend is killed and started again
 * while a client opens a new connection every 25 ms, and the timeline says
 * when new connections stopped failing and when traffic came back.
 *
 * Everything is named syhc* and removed in afterAll, even on failure.
 */
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Etcd3 } from 'etcd3';
import { Service, type Host } from '@switchyard/shared';
import { fileURLToPath } from 'node:url';
import { startAgent, type RunningAgent } from '../../packages/agent/src/index.js';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { testCoordinator } from '../helpers/coordinator.js';
import { sharedEtcdUrl } from '../helpers/etcd.js';
import { B1, B2, L4Lab, VIP, waitFor } from '../helpers/l4-topology.js';

const LOOP = fileURLToPath(new URL('../fixtures/agent/http-loop.py', import.meta.url));
const lab = new L4Lab('syhc');
const TABLE = `syhct${lab.r}`;
const HOST = `syhc-${lab.r}`;
const SID = `tcp-${VIP.replace(/\./g, '_')}-80`;
const S1 = `${B1.replace(/\./g, '_')}-8080`;
const S2 = `${B2.replace(/\./g, '_')}-8080`;

let coord: Coordinator;
let agent: RunningAgent | undefined;
const etcd = new Etcd3({ hosts: sharedEtcdUrl() });

/**
 * Starts a client loop for `seconds`. `running` resolves once it has answers
 * (so what follows happens mid-loop); `done` to its timeline.
 */
function timeline(seconds: number): { running: Promise<void>; done: Promise<{ t: number; r: string }[]> } {
  const child = execa('ip', ['netns', 'exec', lab.ns.c, '/usr/bin/python3', LOOP, VIP, '80', String(seconds), '25'], { reject: false, buffer: true });
  let lines = 0;
  const running = new Promise<void>((resolve) => {
    child.stdout?.on('data', (d: Buffer) => {
      lines += String(d).split('\n').length - 1;
      if (lines >= 20) resolve();
    });
    void child.then(() => resolve());
  });
  const done = child.then((res) =>
    String(res.stdout)
      .split('\n')
      .filter(Boolean)
      .map((l) => ({ t: Number(l.split(' ')[0]), r: l.slice(l.indexOf(' ') + 1) })),
  );
  return { running, done };
}

async function host(): Promise<Host> {
  const res = await coord.app.inject({ method: 'GET', url: `/hosts/${HOST}` });
  return res.json() as Host;
}

async function serviceView() {
  const res = await coord.app.inject({ method: 'GET', url: `/services/${SID}` });
  expect(res.statusCode, res.body).toBe(200);
  return res.json() as { servers: { id: string; weight: number; health?: { up: number; down: number; hosts: number; summary: string } }[] };
}

describe('health checks on the real kernel (nftables)', () => {
  beforeAll(async () => {
    coord = await testCoordinator('l4-health');
    try {
      await lab.setup();
    } catch (e) {
      await lab.teardown();
      throw e;
    }
    agent = await startAgent({ hostId: HOST, etcd: [sharedEtcdUrl()], prefix: coord.ctx.keys.prefix, dataplane: 'nftables', netns: lab.ns.lb, nftTable: TABLE, logLevel: 'silent' });
    const res = await coord.app.inject({
      method: 'POST',
      url: '/services',
      payload: {
        host: VIP,
        port: 80,
        scheduler: 'rr',
        servers: [B1, B2].map((h) => ({ host: h, port: 8080, forwarder: 'm' })),
        health: { type: 'http', path: '/', interval: '500ms', timeout: '400ms', fall: 2, rise: 2 },
      },
    });
    expect(res.statusCode, res.body).toBe(200);
    await waitFor('both servers checked healthy', async () => (await host()).health?.healthy === 2);
  });

  afterAll(async () => {
    await agent?.stop().catch(() => undefined);
    await lab.teardown();
    await coord?.close();
    etcd.close();
  });

  it('a killed backend stops getting new connections within 1.5 s; its weight in etcd is untouched', async () => {
    const loop = timeline(4);
    await loop.running;
    const killedAt = Date.now();
    await lab.stopBackend(1);
    const seen = await loop.done;
    // Connections opened before the kill (one in flight at the kill may be cut).
    const before = seen.filter((x) => x.t < killedAt - 100);
    expect(new Set(before.map((x) => x.r))).toEqual(new Set(['b1', 'b2']));
    const after = seen.filter((x) => x.t >= killedAt + 1500);
    expect(after.length).toBeGreaterThan(50);
    expect(after.filter((x) => x.r !== 'b2'), 'new connections 1.5 s after the kill').toEqual([]);
    const failures = seen.filter((x) => x.r.startsWith('ERR'));
    // Print the window for the record: last failure after the kill.
    console.log(`health: last failed connection ${failures.length ? failures.at(-1)!.t - killedAt : 0} ms after the kill (${failures.length} failed)`);

    await waitFor('the host to report b1 unhealthy', async () => (await host()).health?.servers.some((s) => s.serverId === S1 && s.state === 'unhealthy'));
    const h = await host();
    expect(h.health).toMatchObject({ healthy: 1, unhealthy: 1, unknown: 0, truncated: 0 });
    expect(h.health?.servers[0]).toMatchObject({ serviceId: SID, serverId: S1, state: 'unhealthy', lastError: expect.stringContaining('ECONNREFUSED') });
    const view = await serviceView();
    expect(view.servers.find((s) => s.id === S1)).toMatchObject({ weight: 1, health: { up: 0, down: 1, hosts: 1, summary: '0/1 host see it up' } });
    expect(view.servers.find((s) => s.id === S2)).toMatchObject({ weight: 1, health: { up: 1, down: 0, hosts: 1, summary: '1/1 host see it up' } });
    const stored = Service.parse(JSON.parse((await etcd.get(coord.ctx.keys.l4.service(coord.l4.generation().id, SID)).string()) as string));
    expect(stored.servers.map((s) => s.weight)).toEqual([1, 1]);
  });

  it('started again, it gets new connections within 1.5 s', async () => {
    const loop = timeline(6);
    await loop.running;
    await lab.startBackend(1);
    const listeningAt = Date.now();
    const seen = await loop.done;
    const firstB1 = seen.find((x) => x.t >= listeningAt && x.r === 'b1');
    expect(firstB1, 'a new connection reached b1 again').toBeDefined();
    console.log(`health: b1 back in the pick ${firstB1!.t - listeningAt} ms after it listened`);
    expect(firstB1!.t - listeningAt).toBeLessThanOrEqual(1500);
    expect(seen.filter((x) => x.r.startsWith('ERR'))).toEqual([]);
    await waitFor('the host to report both healthy', async () => (await host()).health?.healthy === 2);
  });

  it('when every server fails, all are kept in and the host warns', async () => {
    await lab.stopBackend(1);
    await lab.stopBackend(2);
    await waitFor('both unhealthy and the warning', async () => {
      const h = await host();
      return h.health?.unhealthy === 2 && h.warnings.some((w) => w.serviceId === SID && w.message.includes('every real server fails'));
    });
    // Both stay in the pick: the map still names both backends.
    const map = (await execa('ip', ['netns', 'exec', lab.ns.lb, 'nft', 'list', 'table', 'inet', TABLE])).stdout;
    expect(map).toContain(B1);
    expect(map).toContain(B2);
    await lab.startBackend(2);
    await waitFor('the warning to clear', async () => (await host()).warnings.length === 0);
  });
});
