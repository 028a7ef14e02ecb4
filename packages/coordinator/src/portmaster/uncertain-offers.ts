/**
 * Offers whose write was answered 504 OUTCOME_UNKNOWN.
 *
 * The client never learned the offer's secret, so nobody can accept or reject
 * it; if the write was applied (at once, or later: a frozen member may hand it
 * on when it resumes), it would hold its port for the whole offer TTL. So each
 * such offer is remembered here, and the moment its port record shows up in
 * the watch-fed mirror — or is already there when etcd answers again — it is
 * withdrawn: the offer, port and name keys deleted in one transaction that
 * compares the offer key (its secret is unique to this offer). A client that
 * repeats the request gets a new offer.
 *
 * Remembered in memory for the offer TTL (after that etcd's lease has removed
 * it anyway). If this coordinator dies within the outage, the offer falls back
 * to expiring with its lease (README "Failures").
 */
import type { FastifyBaseLogger } from 'fastify';
import { cmp, membersOf, op, type MirrorChange, type PmOffer, type PrefixMirror } from '@switchyard/shared';
import type { CoordinatorContext } from '../context.js';
import type { PmRecord } from './repository.js';

interface Uncertain {
  offer: PmOffer;
  /** Date.now() after which the offer's lease has expired anyway. */
  until: number;
  withdrawing: boolean;
}

export class UncertainOffers {
  /** By secret. */
  private readonly offers = new Map<string, Uncertain>();
  private timer?: NodeJS.Timeout;
  private readonly onChange = (c: MirrorChange<PmRecord>) => {
    if (c.type !== 'put' || c.entry.value.kind !== 'port') return;
    const secret = c.entry.value.holder.secret;
    const u = secret === undefined ? undefined : this.offers.get(secret);
    if (u) void this.withdraw(u);
  };

  constructor(
    private readonly ctx: CoordinatorContext,
    private readonly mirror: PrefixMirror<PmRecord>,
    private readonly opts: { ttlMs: number; log: FastifyBaseLogger; sweepMs?: number },
  ) {}

  start(): void {
    this.mirror.on('change', this.onChange);
  }

  stop(): void {
    this.mirror.off('change', this.onChange);
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** How many offers are still unresolved (for tests and logs). */
  get size(): number {
    return this.offers.size;
  }

  note(offer: PmOffer): void {
    this.offers.set(offer.secret, { offer, until: Date.now() + this.opts.ttlMs + 2000, withdrawing: false });
    this.opts.log.warn({ service: offer.service, name: offer.name, port: offer.port }, 'offer outcome unknown; it is withdrawn if it was applied');
    // The mirror may already hold it (applied, answer lost), or show it only
    // after a relist: look again every so often while any is unresolved.
    this.timer ??= setInterval(() => this.sweep(), this.opts.sweepMs ?? 500);
    this.timer.unref();
  }

  private sweep(): void {
    const now = Date.now();
    const members = membersOf(this.ctx.etcd);
    for (const u of this.offers.values()) {
      if (now > u.until) {
        this.offers.delete(u.offer.secret);
        continue;
      }
      if (!this.mirror.healthy || members?.allDown) continue;
      const held = this.mirror.get(this.ctx.keys.pm.port(u.offer.service, u.offer.port));
      if (held?.value.kind === 'port' && held.value.holder.secret === u.offer.secret) void this.withdraw(u);
    }
    if (this.offers.size === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  private async withdraw(u: Uncertain): Promise<void> {
    if (u.withdrawing) return;
    u.withdrawing = true;
    const k = this.ctx.keys.pm;
    const { service, secret, port, name } = u.offer;
    try {
      const res = await this.ctx.write(
        () =>
          this.ctx.etcd.kv.txn({
            compare: [cmp.present(k.offer(service, secret))],
            success: [op.del(k.offer(service, secret)), op.del(k.port(service, port)), op.del(k.offerName(service, name))],
            failure: [],
          }),
        'withdrawing an offer of unknown outcome',
      );
      // Not present: accepted or rejected meanwhile is impossible (nobody has
      // the secret), so it expired or its service went; either way it is done.
      this.offers.delete(secret);
      this.opts.log.info({ service, name, port, withdrawn: res.succeeded }, 'offer of unknown outcome resolved');
    } catch {
      // etcd away again: the sweep or the mirror tries later.
    } finally {
      u.withdrawing = false;
    }
  }
}
