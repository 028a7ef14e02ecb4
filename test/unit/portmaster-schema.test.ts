/** Portmaster's input rules and key layout, without etcd. */
import { describe, expect, it } from 'vitest';
import {
  drfDateTime,
  inReservedRange,
  keyspace,
  parsePortOrName,
  PM_PORT_MAX,
  PM_PORT_MIN,
  PmRefusal,
  rangesOverlap,
  readOfferName,
  readServiceFields,
} from '@switchyard/shared';

/** The body a refusal answers with, or undefined if `fn` does not refuse. */
function refusalOf(fn: () => void): unknown {
  try {
    fn();
    return undefined;
  } catch (e) {
    if (e instanceof PmRefusal) return e.body;
    throw e;
  }
}

/** The field errors of a service body, as DRF would answer them (undefined: none). */
function serviceErrors(body: unknown, partial = false): unknown {
  return refusalOf(() => readServiceFields(body, partial).errors.throwIfAny());
}

describe('ranges', () => {
  it("bounds are 1024–49151 inclusive, as Portmaster's `value < 1024 or value >= 49152`", () => {
    expect([PM_PORT_MIN, PM_PORT_MAX]).toEqual([1024, 49151]);
    expect([1023, 1024, 49151, 49152].map(inReservedRange)).toEqual([true, false, false, true]);
    expect(serviceErrors({ name: 'a', start: 1023, end: 49152 })).toEqual({ start: ['Port range is in reserved range.'], end: ['Port range is in reserved range.'] });
    expect(serviceErrors({ name: 'a', start: 1024, end: 49151 })).toBeUndefined();
  });

  it('overlap is inclusive at both ends', () => {
    expect(rangesOverlap({ start: 1, end: 5 }, { start: 5, end: 9 })).toBe(true);
    expect(rangesOverlap({ start: 5, end: 9 }, { start: 1, end: 5 })).toBe(true);
    expect(rangesOverlap({ start: 1, end: 10 }, { start: 3, end: 4 })).toBe(true);
    expect(rangesOverlap({ start: 1, end: 4 }, { start: 5, end: 9 })).toBe(false);
  });
});

describe("bodies read with Django REST framework's field semantics", () => {
  it("IntegerField: int(str(x)) after stripping a '.0' tail", () => {
    const values = (start: unknown) => readServiceFields({ name: 'a', start, end: 2000 }, false).values.start;
    expect([5000, '5000', ' 5000 ', '+5000', '5_000', '5000.0', '5000.', 5000.0].map(values)).toEqual(Array(8).fill(5000));
    for (const bad of [5000.5, '50x', '', true, [5000], { a: 1 }, '5000.5', '0x10']) {
      expect(serviceErrors({ name: 'a', start: bad, end: 2000 })).toEqual({ start: ['A valid integer is required.'] });
    }
    expect(serviceErrors({ name: 'a', start: '1'.repeat(1001), end: 2000 })).toEqual({ start: ['String value too large.'] });
  });

  it('CharField: blank, null, required, type and length, trimmed', () => {
    expect(readServiceFields({ name: ' Django ', start: 2000, end: 3000 }, false).values.name).toBe('Django');
    expect(readServiceFields({ name: 'a', description: '', start: 2000, end: 3000 }, false).values.description).toBe('');
    expect(readServiceFields({ name: 'a', description: null, start: 2000, end: 3000 }, false).values.description).toBeNull();
    expect(serviceErrors({ name: '', start: 2000, end: 3000 })).toEqual({ name: ['This field may not be blank.'] });
    expect(serviceErrors({ name: null, start: 2000, end: 3000 })).toEqual({ name: ['This field may not be null.'] });
    expect(serviceErrors({ start: 2000, end: 3000 })).toEqual({ name: ['This field is required.'] });
    expect(serviceErrors({ name: false, start: 2000, end: 3000 })).toEqual({ name: ['Not a valid string.'] });
    expect(serviceErrors({ name: 'x'.repeat(65), start: 2000, end: 3000 })).toEqual({ name: ['Ensure this field has no more than 64 characters.'] });
    expect(serviceErrors({ name: 'a/b', start: 2000, end: 3000 })).toEqual({ name: [expect.stringMatching(/^Use 1–64 characters/)] });
  });

  it('errors come in field order; a partial body skips what it leaves out', () => {
    expect(Object.keys(serviceErrors({ end: 'x', start: 'x', description: [] }) as object)).toEqual(['name', 'description', 'start', 'end']);
    expect(serviceErrors({ end: 3000 }, true)).toBeUndefined();
    expect(readServiceFields({ end: 3000 }, true).values).toEqual({ end: 3000 });
  });

  it('a body that is not a dictionary', () => {
    expect(refusalOf(() => readOfferName([1]))).toEqual({ non_field_errors: ['Invalid data. Expected a dictionary, but got list.'] });
    expect(refusalOf(() => readOfferName(1.5))).toEqual({ non_field_errors: ['Invalid data. Expected a dictionary, but got float.'] });
    expect(refusalOf(() => readOfferName(null))).toEqual({ non_field_errors: ['No data provided'] });
    expect(readOfferName(undefined).errors.refusal()?.body).toEqual({ name: ['This field is required.'] });
    expect(readOfferName({ name: 'Web-01' }).name).toBe('Web-01');
  });

  it('times print as DRF prints a DateTimeField', () => {
    expect(drfDateTime('2017-09-07T16:31:18.365Z')).toBe('2017-09-07T16:31:18.365000Z');
    expect(drfDateTime('2017-09-07T16:31:18.000Z')).toBe('2017-09-07T16:31:18Z');
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
    expect(k.parse(k.offerName('svc', 'web'))).toEqual({ kind: 'offerName', service: 'svc', instance: 'web' });
    expect(k.parse(k.offer('svc', 'abc'))).toEqual({ kind: 'offer', service: 'svc', secret: 'abc' });
    expect(k.parse(k.ranges)).toEqual({ kind: 'ranges' });
    expect(k.parse('/t/pm/alloc/ports/svc/1024')).toBeUndefined();
    expect(k.parse('/t/pm/alloc/services/svc/x')).toBeUndefined();
    expect(k.parse('/t/pm/other/x')).toBeUndefined();
    expect(k.parse('/u/pm/ranges')).toBeUndefined();
  });
});
