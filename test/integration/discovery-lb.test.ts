/**
 * `/provide?lb=<serviceId>`: the provider is a real server of the L4 service
 * while connected — also when its coordinator dies (a surviving coordinator
 * cleans up once the registration expires with the dead one's lease).
 */
import { randomBytes } from 'node:crypto';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readGeneration } from '@switchyard/shared';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { startCli } from '../helpers/cli.js';
import { testCoordinator } from '../helpers/coordinator.js';
import { freePort, sharedEtcdUrl } from '../helpers/etcd.js';
import { eventually } from '../helpers/eventually.js';
import { provide, refused, terminateProviders } from '../helpers/providers.js';


describe('/provide?lb=', () => {
  let c: Coordinator;
  let base: string;
  let etcd: Etcd3;
  const label = `t${randomBytes(5).toString('hex')}`;
  const root = `${label}.test.local`;
  const dir = `/skydns/local/test/${label}/`;
  const svc = 'tcp-10_50_0_1-80';

  async function servers(): Promise<{ id: string; weight: number }[]> {
    const r = await c.app.inject({ method: 'GET', url: `/services/${svc}/servers` });
    expect(r.statusCode).toBe(200);
    return r.json();
  }

  beforeAll(async () => {
    c = await testCoordinator('disco-lb', { dnsRoot: root, providerTtlMs: 2000 });
    base = await c.listen();
    etcd = new Etcd3({ hosts: sharedEtcdUrl() });
    const r = await c.app.inject({ method: 'POST', url: '/services', payload: { host: '10.50.0.1', port: 80 } });
    expect(r.statusCode).toBe(200);
  });
  afterAll(async () => {
    terminateProviders();
    await c.close();
    etcd.close();
  });

  it('adds the provider as a real server on connect and removes it on disconnect', async () => {
    const ws = await provide(base, `service=web&port=8080&host=10.60.0.1&lb=${svc}`);
    const got = await eventually(async () => {
      const s = await servers();
      return s.length === 1 ? s : undefined;
    });
    expect(got[0]).toMatchObject({ id: '10_60_0_1-8080', weight: 1 });
    // And the SkyDNS record, as without lb.
    await eventually(async () => ((await etcd.getAll().prefix(`${dir}services/web/`).keys()).length === 1 ? true : undefined));
    ws.close();
    await eventually(async () => ((await servers()).length === 0 ? true : undefined));
    // Nothing of the claim is left behind.
    await eventually(async () => ((await etcd.getAll().prefix(c.ctx.keys.disco.lb).keys()).length === 0 ? true : undefined));
  });

  it('gives the real server the provider\'s weight when one is given', async () => {
    const ws = await provide(base, `service=web&port=8081&host=10.60.0.1&weight=5&lb=${svc}`);
    const got = await eventually(async () => {
      const s = await servers();
      return s.length === 1 ? s : undefined;
    });
    expect(got[0]).toMatchObject({ id: '10_60_0_1-8081', weight: 5 });
    ws.close();
    await eventually(async () => ((await servers()).length === 0 ? true : undefined));
  });

  it('refuses an unknown lb service or a host that cannot be a real server, writing nothing', async () => {
    const before = Number((await etcd.get('/').exec()).header.revision);
    const unknown = await refused(base, 'service=web&port=8080&host=10.60.0.1&lb=tcp-10_99_0_1-80');
    expect(unknown.frame).toEqual({ error: 'No Service Found', code: 'SERVICE_NOT_FOUND' });
    expect(unknown.code).toBe(1008);
    const named = await refused(base, `service=web&port=8080&host=web1.example.com&lb=${svc}`);
    expect(named.frame.code).toBe('INVALID');
    expect(named.frame.error).toContain('must be an IP address');
    const v6 = await refused(base, `service=web&port=8080&host=fd00::1&lb=${svc}`);
    expect(v6.frame.error).toContain('address family');
    const after = Number((await etcd.get('/').exec()).header.revision);
    expect(after).toBe(before);
  });

  it('keeps a real server shared by two providers until the last one leaves', async () => {
    const a = await provide(base, `service=web&port=9000&host=10.60.0.2&lb=${svc}`);
    const b = await provide(base, `service=web&port=9000&host=10.60.0.2&lb=${svc}`);
    await eventually(async () => ((await etcd.getAll().prefix(c.ctx.keys.disco.lbRegs(svc, '10_60_0_2-9000')).keys()).length === 2 ? true : undefined));
    await eventually(async () => ((await servers()).length === 1 ? true : undefined));
    expect((await servers()).map((s) => s.id)).toEqual(['10_60_0_2-9000']);
    // Everything that happens to the service and the marker from here on.
    const seen: string[][] = [];
    const gen = await readGeneration(etcd, c.ctx.keys.l4);
    const serviceWatch = await etcd.watch().key(c.ctx.keys.l4.service(gen.id, svc)).create();
    serviceWatch.on('put', (kv) => seen.push((JSON.parse(kv.value.toString()) as { servers: { id: string }[] }).servers.map((s) => s.id)));
    const markerEvents: string[] = [];
    const markerWatch = await etcd.watch().key(c.ctx.keys.disco.lbOwned(svc, '10_60_0_2-9000')).create();
    markerWatch.on('data', (res) => res.events.forEach((e) => markerEvents.push(e.type)));
    try {
      a.close();
      await eventually(async () => ((await etcd.getAll().prefix(c.ctx.keys.disco.lbRegs(svc, '10_60_0_2-9000')).keys()).length === 1 ? true : undefined));
      // Barrier instead of a sleep: a later provider of another server comes
      // and goes, and its cleanup (which starts after anything a's release
      // set off, and takes longer) is seen on the watch.
      const later = await provide(base, `service=web&port=9001&host=10.60.0.2&lb=${svc}`);
      await eventually(() => (seen.some((ids) => ids.includes('10_60_0_2-9001')) ? true : undefined));
      later.close();
      await eventually(() => (seen.length > 0 && !seen[seen.length - 1].includes('10_60_0_2-9001') ? true : undefined));
      // The shared server was in every version of the service, and its marker never changed.
      expect(seen.filter((ids) => !ids.includes('10_60_0_2-9000'))).toEqual([]);
      expect(markerEvents).toEqual([]);
      expect((await servers()).map((s) => s.id)).toEqual(['10_60_0_2-9000']);
    } finally {
      await serviceWatch.cancel();
      await markerWatch.cancel();
    }
    b.close();
    await eventually(async () => ((await servers()).length === 0 ? true : undefined));
  });

  it('never removes a real server an admin configured before a provider with lb= came and went', async () => {
    const id = '10_60_0_4-9000';
    const added = await c.app.inject({ method: 'POST', url: `/services/${svc}/servers`, payload: { host: '10.60.0.4', port: 9000, weight: 7 } });
    expect(added.statusCode).toBe(200);
    const ws = await provide(base, `service=web&port=9000&host=10.60.0.4&lb=${svc}`);
    const regs = c.ctx.keys.disco.lbRegs(svc, id);
    await eventually(async () => ((await etcd.getAll().prefix(regs).keys()).length === 1 ? true : undefined));
    // Registered, but the server is not the providers' to remove: no marker.
    expect(await etcd.get(c.ctx.keys.disco.lbOwned(svc, id)).string()).toBeNull();
    expect(await servers()).toEqual([expect.objectContaining({ id, weight: 7 })]);
    ws.close();
    // Once nothing of the claim is left, any cleanup has run: a marker would
    // only have gone after the server it guarded.
    await eventually(async () => ((await etcd.getAll().prefix(`${c.ctx.keys.disco.lb}${svc}/${id}/`).keys()).length === 0 ? true : undefined));
    expect(await servers()).toEqual([expect.objectContaining({ id, weight: 7 })]);
    // A second provider coming and going leaves it alone too.
    const again = await provide(base, `service=web&port=9000&host=10.60.0.4&lb=${svc}`);
    await eventually(async () => ((await etcd.getAll().prefix(regs).keys()).length === 1 ? true : undefined));
    again.close();
    await eventually(async () => ((await etcd.getAll().prefix(`${c.ctx.keys.disco.lb}${svc}/${id}/`).keys()).length === 0 ? true : undefined));
    expect(await servers()).toEqual([expect.objectContaining({ id, weight: 7 })]);
    const removed = await c.app.inject({ method: 'DELETE', url: `/services/${svc}/servers/${id}` });
    expect(removed.statusCode).toBe(200);
  });

  it('a surviving coordinator removes the real server of a coordinator killed with SIGKILL', async () => {
    const port = await freePort();
    const cli = startCli(
      ['coordinator', '--etcd', sharedEtcdUrl(), '--prefix', c.ctx.config.prefix, '--listen', `127.0.0.1:${port}`, '--dns-root', root, '--provider-ttl', '2s'],
      /listening/i,
    );
    try {
      await cli.ready;
      await provide(`http://127.0.0.1:${port}`, `service=web&port=9100&host=10.60.0.3&lb=${svc}`);
      await eventually(async () => ((await servers()).length === 1 ? true : undefined), 5000);
      // What bounds the cleanup: the registration is on the dead coordinator's lease, granted with --provider-ttl.
      const regs = await etcd.getAll().prefix(c.ctx.keys.disco.lbRegs(svc, '10_60_0_3-9100')).exec();
      expect(regs.kvs).toHaveLength(1);
      const lease = String(regs.kvs[0].lease);
      expect(Number((await etcd.leaseClient.leaseTimeToLive({ ID: lease, keys: false })).grantedTTL)).toBe(2);
      cli.child.kill('SIGKILL');
      // TTL 2 s, then the surviving coordinator's watch and one transaction:
      // three TTLs leave room for a loaded machine and still fail a server
      // that is never cleaned up.
      await eventually(async () => ((await servers()).length === 0 ? true : undefined), 6000, 50);
      expect(Number((await etcd.leaseClient.leaseTimeToLive({ ID: lease, keys: false })).TTL)).toBe(-1);
      await eventually(async () => ((await etcd.getAll().prefix(c.ctx.keys.disco.lb).keys()).length === 0 ? true : undefined));
    } finally {
      cli.child.kill('SIGKILL');
    }
  });
});
