/** `/provide?lb=`: what a claim and a cleanup write, decided from what etcd holds. */
import { describe, expect, it } from 'vitest';
import { planClaim, planClean } from '../../packages/coordinator/src/discovery/lb.js';
import { ServerInput, ServiceInput, toService } from '../../packages/shared/src/index.js';

const admin = ServerInput.parse({ host: '10.0.0.1', port: 80, weight: 7 });
const provider = ServerInput.parse({ host: '10.0.0.2', port: 80 });
const service = toService(ServiceInput.parse({ host: '10.50.0.1', port: 80 }), { servers: [admin] });

describe('planClaim', () => {
  it('adds a server that is not there, and owns it', () => {
    const plan = planClaim({ service: { value: service, modRevision: 5 } }, provider);
    expect(plan).toEqual({ kind: 'add', next: { ...service, servers: [admin, provider] } });
  });

  it('only registers with a server someone else configured: no marker, never removed', () => {
    expect(planClaim({ service: { value: service, modRevision: 5 } }, { ...admin, weight: 1 })).toEqual({ kind: 'foreign' });
  });

  it('only registers with a server other providers added', () => {
    expect(planClaim({ service: { value: service, modRevision: 5 }, owned: { modRevision: 4 } }, admin)).toEqual({ kind: 'owned' });
  });
});

describe('planClean', () => {
  it('leaves a server without the providers\' marker alone', () => {
    expect(planClean({ service: { value: service, modRevision: 5 } }, admin.id)).toBeUndefined();
  });

  it('removes a marked server from the service', () => {
    const withProvider = { ...service, servers: [admin, provider] };
    expect(planClean({ service: { value: withProvider, modRevision: 5 }, owned: { modRevision: 4 } }, provider.id)).toEqual({ next: service });
  });

  it('only drops the marker when the server or the service is gone already', () => {
    expect(planClean({ service: { value: service, modRevision: 5 }, owned: { modRevision: 4 } }, provider.id)).toEqual({});
    expect(planClean({ owned: { modRevision: 4 } }, provider.id)).toEqual({});
  });
});
