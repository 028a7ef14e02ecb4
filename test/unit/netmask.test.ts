import { describe, expect, it } from 'vitest';
import { maskOfPrefix, netmaskBits, prefixOfMask } from '@switchyard/shared';

describe('netmask helpers', () => {
  it('converts dotted masks and prefix lengths both ways', () => {
    expect(prefixOfMask('255.255.255.0')).toBe(24);
    expect(prefixOfMask('0.0.0.0')).toBe(0);
    expect(prefixOfMask('255.255.255.255')).toBe(32);
    expect(maskOfPrefix(4, 20)).toBe('255.255.240.0');
    expect(maskOfPrefix(6, 32)).toBe('ffff:ffff::');
    expect(maskOfPrefix(6, 0)).toBe('::');
  });
  it('refuses what is not a contiguous mask', () => {
    expect(prefixOfMask('255.0.255.0')).toBeUndefined();
    expect(prefixOfMask('255.255.255')).toBeUndefined();
    expect(prefixOfMask('nonsense')).toBeUndefined();
    expect(netmaskBits('255.0.255.0')).toBeUndefined();
  });
  it('reads a service netmask as a prefix length', () => {
    expect(netmaskBits('64')).toBe(64);
    expect(netmaskBits('255.255.0.0')).toBe(16);
  });
});
