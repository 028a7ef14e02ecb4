/** Portmaster's input rules and key layout, without etcd. */
import { describe, expect, it } from 'vitest';
import { checkRange, keyspace, parsePortOrName, PM_PORT_MAX, PM_PORT_MIN, PmOfferInput, PmServiceInput, rangesOverlap, type SwitchyardError } from '@switchyard/shared';

function codeOf(fn: () => void): string | undefined {
  try {
    fn();
    return undefined;
  } catch (e) {
    return (e as SwitchyardError).code;
  }
}

describe('ranges', () => {
  it('bounds are 1024–49151 inclusive, as Portmaster\'s `value < 1024 or value >= 49152`', () => {
    expect([PM_PORT_MIN, PM_PORT_MAX]).toEqual([1024, 49151]);
    expect(codeOf(() => checkRange(1024, 49151))).toBeUndefined();
    expect(codeOf(() => checkRange(1023, 2000))).toBe('PM_RESERVED_RANGE');
    expect(codeOf(() => checkRange(2000, 49152))).toBe('PM_RESERVED_RANGE');
    // Bounds are checked before order, as Portmaster's field validators run first.
    expect(codeOf(() => checkRange(50000, 40000))).toBe('PM_RESERVED_RANGE');
    expect(codeOf(() => checkRange(3000, 2000))).toBe('PM_START_LOWER');
    expect(codeOf(() => checkRange(3000, 3000))).toBe('PM_START_LOWER');
  });

  it('overlap is inclusive at both ends', () => {
    expect(rangesOverlap({ start: 1, end: 5 }, { start: 5, end: 9 })).toBe(true);
    expect(rangesOverlap({ start: 5, end: 9 }, { start: 1, end: 5 })).toBe(true);
    expect(rangesOverlap({ start: 1, end: 10 }, { start: 3, end: 4 })).toBe(true);
    expect(rangesOverlap({ start: 1, end: 4 }, { start: 5, end: 9 })).toBe(false);
  });
});

describe('input schemas', () => {
  it('service: safe name, integer or numeric-string ports, optional nullable description', () => {
    expect(PmServiceInput.parse({ name: 'Django', start: '5000', end: 10000 })).toEqual({ name: 'Django', start: 5000, end: 10000 });
    expect(PmServiceInput.safeParse({ name: 'Django', description: null, start: 5000, end: 10000 }).success).toBe(true);
    for (const bad of [
      { name: 'a/b', start: 5000, end: 5001 },
      { name: '-a', start: 5000, end: 5001 },
      { name: 'a', start: 5000.5, end: 5001 },
      { name: 'a', start: '50x', end: 5001 },
      { name: 'a', start: 5000, end: 65536 },
      { name: 'a', start: 5000 },
    ]) {
      expect(PmServiceInput.safeParse(bad).success).toBe(false);
    }
  });

  it('offer: an instance name is a safe token', () => {
    expect(PmOfferInput.safeParse({ name: 'Web-01' }).success).toBe(true);
    expect(PmOfferInput.safeParse({ name: 'web 01' }).success).toBe(false);
    expect(PmOfferInput.safeParse({ name: '..' }).success).toBe(false);
    expect(PmOfferInput.safeParse({}).success).toBe(false);
  });

  it('all digits address a port, anything else an instance name', () => {
    expect(parsePortOrName('5000')).toEqual({ port: 5000 });
    expect(parsePortOrName('Web-01')).toEqual({ name: 'Web-01' });
    expect(parsePortOrName('5000a')).toEqual({ name: '5000a' });
  });
});

describe('key layout', () => {
  it('port keys sort in port order and parse back', () => {
    const k = keyspace('/t').pm;
    expect(k.port('svc', 1024)).toBe('/t/pm/alloc/ports/svc/01024');
    expect([k.port('s', 10000), k.port('s', 9999), k.port('s', 49151)].sort()).toEqual([k.port('s', 9999), k.port('s', 10000), k.port('s', 49151)]);
    expect(k.parse(k.port('svc', 1024))).toEqual({ kind: 'port', service: 'svc', port: 1024 });
    expect(k.parse(k.service('svc'))).toEqual({ kind: 'service', service: 'svc' });
    expect(k.parse(k.name('svc', 'web'))).toEqual({ kind: 'name', service: 'svc', instance: 'web' });
    expect(k.parse(k.offer('svc', 'abc'))).toEqual({ kind: 'offer', service: 'svc', secret: 'abc' });
    expect(k.parse(k.ranges)).toEqual({ kind: 'ranges' });
    expect(k.parse('/t/pm/alloc/ports/svc/1024')).toBeUndefined();
    expect(k.parse('/t/pm/alloc/services/svc/x')).toBeUndefined();
    expect(k.parse('/t/pm/other/x')).toBeUndefined();
    expect(k.parse('/u/pm/ranges')).toBeUndefined();
  });
});
