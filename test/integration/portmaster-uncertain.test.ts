/**
 * An offer answered 504 OUTCOME_UNKNOWN that etcd did apply is withdrawn as
 * soon as the coordinator sees it, so it never holds its port for the offer
 * TTL (the outage itself is in test/faults; here the resolution, on a real etcd).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { PmPortRecord, PrefixMirror, type PmOffer } from '@switchyard/shared';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { UncertainOffers } from '../../packages/coordinator/src/portmaster/uncertain-offers.js';
import type { PmRecord } from '../../packages/coordinator/src/portmaster/repository.js';
import { testCoordinator } from '../helpers/coordinator.js';

let c: Coordinator;
beforeAll(async () => {
  c = await testCoordinator('pm-uncertain');
});
afterAll(() => c.close());

function portMirror(): PrefixMirror<PmRecord> {
  return new PrefixMirror<PmRecord>(c.ctx.etcd, {
    prefix: c.ctx.keys.pm.mirrored,
    parse: (key, value) => {
      const k = c.ctx.keys.pm.parse(key);
      return k?.kind === 'port' ? { kind: 'port', service: k.service, port: k.port, holder: PmPortRecord.parse(JSON.parse(value.toString())) } : undefined;
    },
  });
}

it('withdraws an applied offer of unknown outcome: offer, port and name keys go; others stay', async () => {
  expect((await c.app.inject({ method: 'POST', url: '/v1/services', payload: { name: 'unk', start: 9100, end: 9109 } })).statusCode).toBe(201);
  const lost = (await c.app.inject({ method: 'POST', url: '/v1/services/unk/offers', payload: { name: 'lost' } })).json<PmOffer>();
  const kept = (await c.app.inject({ method: 'POST', url: '/v1/services/unk/offers', payload: { name: 'kept' } })).json<PmOffer>();
  const mirror = portMirror();
  await mirror.start();
  const uncertain = new UncertainOffers(c.ctx, mirror, { ttlMs: 60_000, log: c.ctx.log, sweepMs: 50 });
  uncertain.start();
  try {
    uncertain.note(lost);
    await expect.poll(() => uncertain.size, { timeout: 3000 }).toBe(0);
    const k = c.ctx.keys.pm;
    expect(await c.ctx.etcd.get(k.offer('unk', lost.secret)).string()).toBeNull();
    expect(await c.ctx.etcd.get(k.port('unk', lost.port)).string()).toBeNull();
    expect(await c.ctx.etcd.get(k.name('unk', 'lost')).string()).toBeNull();
    const offers = (await c.app.inject({ method: 'GET', url: '/v1/services/unk/offers' })).json<PmOffer[]>();
    expect(offers.map((o) => o.name)).toEqual(['kept']);
    expect(offers[0].port).toBe(kept.port);
    // The freed port is offered again.
    const again = await c.app.inject({ method: 'POST', url: '/v1/services/unk/offers', payload: { name: 'lost' } });
    expect(again.json<PmOffer>().port).toBe(lost.port);
  } finally {
    uncertain.stop();
    await mirror.stop();
  }
});

it('withdraws an offer of unknown outcome that shows up only later (a member delivering it on resume)', async () => {
  expect((await c.app.inject({ method: 'POST', url: '/v1/services', payload: { name: 'late', start: 9200, end: 9209 } })).statusCode).toBe(201);
  const mirror = portMirror();
  await mirror.start();
  const uncertain = new UncertainOffers(c.ctx, mirror, { ttlMs: 60_000, log: c.ctx.log, sweepMs: 60_000 });
  uncertain.start();
  try {
    const secret = 'late-secret-1';
    const offer: PmOffer = { service: 'late', name: 'x', port: 9200, secret, created: new Date().toISOString() };
    uncertain.note(offer);
    await new Promise((r) => setTimeout(r, 200));
    expect(uncertain.size).toBe(1);
    // The write lands now (what the frozen member would do when thawed).
    const k = c.ctx.keys.pm;
    await c.ctx.etcd
      .if(k.offer('late', secret), 'Create', '==', 0)
      .then(
        c.ctx.etcd.put(k.port('late', 9200)).value(JSON.stringify({ name: 'x', created: offer.created, secret })),
        c.ctx.etcd.put(k.name('late', 'x')).value(JSON.stringify({ port: 9200 })),
        c.ctx.etcd.put(k.offer('late', secret)).value(JSON.stringify(offer)),
      )
      .commit();
    await expect.poll(() => uncertain.size, { timeout: 3000 }).toBe(0);
    expect(await c.ctx.etcd.get(k.port('late', 9200)).string()).toBeNull();
  } finally {
    uncertain.stop();
    await mirror.stop();
  }
});
