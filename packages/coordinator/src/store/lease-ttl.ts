/**
 * etcd lease TTLs, shared by whoever puts keys on a lease (discovery's
 * coordinator lease) and whoever reports their lifetime (the DNS responder's
 * record TTL), so neither depends on the other.
 */

/** etcd's lease TTL is whole seconds; a TTL below 1 s is rounded up. */
export function leaseSeconds(ttlMs: number): number {
  return Math.max(1, Math.ceil(ttlMs / 1000));
}
