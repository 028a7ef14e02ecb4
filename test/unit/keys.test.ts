import { describe, expect, it } from 'vitest';
import { keyspace, prefixEnd, skydns } from '@switchyard/shared';

describe('key layout', () => {
  it('builds and parses under a configurable prefix', () => {
    const k = keyspace('/custom/');
    expect(k.l4.service('0', 'tcp-10_0_0_1-80')).toBe('/custom/l4/sets/0/tcp-10_0_0_1-80');
    expect(k.l4.parseService('/custom/l4/sets/ab12/tcp-10_0_0_1-80')).toEqual({ gen: 'ab12', id: 'tcp-10_0_0_1-80' });
    expect(k.l4.parseService('/other/l4/sets/0/x')).toBeUndefined();
    expect(k.l4.parseService('/custom/l4/sets/0/a/b')).toBeUndefined();
    expect(k.l4.parse(k.l4.current)).toEqual({ kind: 'current' });
    expect(k.l4.parse(k.l4.registered('ab12'))).toEqual({ kind: 'registered', gen: 'ab12' });
    expect(k.l4.parse(k.l4.pending('ab12'))).toEqual({ kind: 'pending', gen: 'ab12' });
    expect(k.l4.parse('/custom/l4/gens/ab12/x')).toBeUndefined();
    expect(k.l4.set('ab12')).toBe('/custom/l4/sets/ab12/');
    expect(k.hosts.parse(k.hosts.status('node1'))).toEqual({ hostId: 'node1', kind: 'status' });
    expect(keyspace().prefix).toBe('/switchyard');
    expect(() => keyspace('relative')).toThrow(/must start with/);
  });
  it('SkyDNS keys reverse the domain', () => {
    expect(skydns.recordKey('skydns.local', ['services'], 'foo', 'X')).toBe('/skydns/local/skydns/services/foo/X');
    expect(skydns.recordKey('skydns.local', ['services', 'production'], 'foo', 'X')).toBe('/skydns/local/skydns/production/services/foo/X');
    expect(skydns.nameOfKey('/skydns/local/skydns/services/foo/X')).toBe('X.foo.services.skydns.local');
  });
  it('prefix ends bound exactly the prefix', () => {
    expect(prefixEnd('/a/').toString()).toBe('/a0');
  });
});

describe('etcd roles (keyspace().access)', () => {
  const k = keyspace('/sy');
  const covers = (ranges: ({ prefix: string } | { key: string })[], key: string) => ranges.some((r) => ('prefix' in r ? key.startsWith(r.prefix) : key === r.key));
  const agent = k.access.agent('h1');
  const reads = (key: string) => covers([...agent.read, ...agent.readwrite], key);
  const writes = (key: string) => covers(agent.readwrite, key);

  it('lets an agent write its own keys and read what it follows', () => {
    for (const key of [k.hosts.agent('h1'), k.hosts.status('h1'), k.hosts.owned('h1', 'ipvs'), k.lev.status('h1'), k.lev.underlay('h1'), k.lev.created('h1', 'c1')]) expect(writes(key), key).toBe(true);
    for (const key of [k.l4.current, k.l4.service('g1', 's1'), k.l4.pending('g1'), k.disco.lbOwned('s', 'r'), k.lev.cen('c'), k.lev.cin('c'), k.lev.container('c'), k.lev.underlay('h2')]) expect(reads(key), key).toBe(true);
  });

  it("never another host's keys (not even h10's for h1), desired state or Portmaster", () => {
    for (const key of [k.hosts.status('h2'), k.hosts.status('h10'), k.hosts.agent('h10'), k.lev.status('h10'), k.lev.underlay('h10'), k.l4.current, k.l4.service('0', 's'), k.lev.cen('c'), k.disco.lbOwned('s', 'r')]) {
      expect(writes(key), key).toBe(false);
    }
    for (const key of [k.pm.ranges, k.pm.offer('web', 'secret'), k.pm.port('web', 8000), k.lev.status('h2'), k.hosts.status('h2')]) expect(reads(key), key).toBe(false);
  });

  it('gives coordinators the whole prefix and the SkyDNS records', () => {
    const c = k.access.coordinator();
    for (const key of [k.pm.offer('web', 'x'), k.l4.current, k.hosts.status('h1'), skydns.recordKey('skydns.local', [], 'web', 'a')]) expect(covers(c.readwrite, key), key).toBe(true);
    expect(covers(c.readwrite, '/sy-other/x')).toBe(false);
  });
});
