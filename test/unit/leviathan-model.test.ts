/** The Leviathan model's pure rules: names, allocation, idempotence, refusals. */
import { describe, expect, it } from 'vitest';
import { DEFAULT_LEV_POOL, levPool, LevPool } from '../../packages/shared/src/index.js';
import * as model from '../../packages/coordinator/src/leviathan/model.js';

const fresh = () => model.emptyModel(DEFAULT_LEV_POOL);

describe('leviathan model', () => {
  it('default pool is Leviathan\'s: 10.B.0.0/16 from B=10, gateway .0.1, containers from .0.10', () => {
    expect(levPool.subnet(DEFAULT_LEV_POOL, 10)).toBe('10.10.0.0/16');
    expect(levPool.gateway(DEFAULT_LEV_POOL, 10)).toBe('10.10.0.1');
    expect(levPool.host(DEFAULT_LEV_POOL, 10, 0)).toBe('10.10.0.10');
    expect(levPool.host(DEFAULT_LEV_POOL, 10, 300)).toBe('10.10.1.54');
    expect(LevPool.safeParse({ network: '10.0.0.0/8', subnetPrefix: 4 }).success).toBe(false);
  });

  it('import is idempotent and places unknown containers on the default host', () => {
    const m = fresh();
    const file = { cenList: [{ cenID: 'cen1', containerIDs: ['c1', 'c2'] }] };
    model.importCens(m, file, 'host1');
    model.settle(m);
    const snapshot = JSON.stringify([...m.cens, ...m.containers]);
    model.importCens(m, file, 'host1');
    model.settle(m);
    expect(JSON.stringify([...m.cens, ...m.containers])).toBe(snapshot);
    expect(m.containers.get('c1')?.host).toBe('host1');
  });

  it('keeps addresses stable and fills holes with the lowest free one', () => {
    const m = fresh();
    model.importCens(m, { cenList: [{ cenID: 'cen1', containerIDs: ['a', 'b', 'c'] }] }, 'h');
    model.importCins(m, { cin1: ['cen1'] });
    model.makeCins(m, ['cin1']);
    model.settle(m);
    const ips = () => Object.fromEntries((m.cins.get('cin1')?.addresses ?? []).map((a) => [a.containerID, a.ip]));
    expect(ips()).toEqual({ a: '10.10.0.10', b: '10.10.0.11', c: '10.10.0.12' });
    model.removeFromCen(m, 'h', 'a', 'cen1');
    model.settle(m);
    expect(ips()).toEqual({ b: '10.10.0.11', c: '10.10.0.12' });
    model.addToCen(m, 'h', 'd', 'cen1');
    model.settle(m);
    expect(ips()).toEqual({ b: '10.10.0.11', c: '10.10.0.12', d: '10.10.0.10' });
  });

  it('refuses bad names with BAD_NAME before changing anything', () => {
    const m = fresh();
    for (const cenID of ['sixteen-chars-xx', 'lo', 'a b', '-x', 'x/y', '']) {
      expect(() => model.importCens(m, { cenList: [{ cenID, containerIDs: [] }] }, 'h'), cenID).toThrow(expect.objectContaining({ code: 'BAD_NAME' }));
    }
    expect(() => model.importCens(m, { cenList: [{ cenID: 'ok', containerIDs: ['$(reboot)'] }] }, 'h')).toThrow(expect.objectContaining({ code: 'BAD_NAME' }));
    expect(m.cens.size).toBe(0);
  });
});
