/**
 * Leases for offers. An unaccepted offer must vanish after the offer TTL
 * without any request noticing, so its keys live on an etcd lease that is
 * never kept alive: etcd itself deletes them (in one revision) when it expires.
 *
 * Granting a lease is a round trip of its own. Offers begun within the same
 * window (1 s) share one lease, so under load the grant is paid once per
 * second, not once per offer. The lease is granted for the TTL plus the
 * window, rounded up to whole seconds (etcd's unit), so an offer never expires
 * early: it lives at least the TTL and at most about TTL + 2 s. etcd 3.4 also
 * raises any TTL below its minimum (~2 s) to that minimum.
 */
import type { Etcd3 } from 'etcd3';

export interface OfferLeasesOptions {
  ttlMs: number;
  /** Offers started within this long of a grant share its lease (ms). */
  windowMs?: number;
  now?: () => number;
}

export class OfferLeases {
  private current?: { since: number; id: Promise<string> };
  private readonly windowMs: number;
  private readonly ttlSeconds: number;
  private readonly now: () => number;

  constructor(
    private readonly etcd: Etcd3,
    opts: OfferLeasesOptions,
  ) {
    this.windowMs = opts.windowMs ?? 1000;
    this.ttlSeconds = Math.ceil((opts.ttlMs + this.windowMs) / 1000);
    this.now = opts.now ?? Date.now;
  }

  /** The lease for an offer begun at `startedAt` (the offer's `created`). */
  forOfferStartedAt(startedAt: number): Promise<string> {
    const c = this.current;
    // A lease counts its TTL from its grant, which came after `since`; an offer
    // begun at or after `since` and within the window outlives the TTL on it.
    if (c && startedAt >= c.since && startedAt - c.since < this.windowMs) return c.id;
    const since = Math.min(startedAt, this.now());
    const id = this.etcd.leaseClient.leaseGrant({ TTL: this.ttlSeconds }).then((r) => String(r.ID));
    const entry = { since, id };
    this.current = entry;
    // A failed grant must not poison the window: the next offer asks again.
    id.catch(() => {
      if (this.current === entry) this.current = undefined;
    });
    return id;
  }
}
