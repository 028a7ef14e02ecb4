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
