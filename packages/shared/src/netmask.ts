/**
 * Netmasks, in the one place they are converted (ipaddr.js does the work).
 * A service's `netmask` (Portal's, ipvsadm's `-M`) is a dotted mask for IPv4
 * and a prefix length for IPv6; the dataplanes need it as a prefix length or
 * as a mask literal.
 */
import ipaddr from 'ipaddr.js';

/** The prefix length of a contiguous dotted IPv4 mask (`255.255.255.0` → 24), or undefined if it is not one. */
export function prefixOfMask(mask: string): number | undefined {
  if (!ipaddr.IPv4.isValidFourPartDecimal(mask)) return undefined;
  return ipaddr.IPv4.parse(mask).prefixLengthFromSubnetMask() ?? undefined;
}

/** The mask of a prefix length as an address literal: (4, 24) → `255.255.255.0`, (6, 32) → `ffff:ffff::`. */
export function maskOfPrefix(family: 4 | 6, bits: number): string {
  return family === 4 ? ipaddr.IPv4.subnetMaskFromPrefixLength(bits).toString() : ipaddr.IPv6.subnetMaskFromPrefixLength(bits).toString();
}

/**
 * The prefix length a service's netmask stands for: a prefix length as is
 * (IPv6, or digits), a dotted mask converted; undefined for an invalid one.
 */
export function netmaskBits(netmask: string): number | undefined {
  return /^\d{1,3}$/.test(netmask) ? Number(netmask) : prefixOfMask(netmask);
}
