/**
 * What one coordinator knows about one Portmaster service: its range, who
 * holds which port (fed by the etcd watch), and the ports its own in-flight
 * offers have reserved. No etcd here; the repository drives it.
 *
 * A port looks taken when etcd holds it OR a local offer is trying it, so
 * concurrent offers on one coordinator try different ports instead of all
 * racing for the lowest one. Correctness does not rest on this view: every
 * allocation is a compare-and-swap in etcd; the view only picks candidates.
 */
import type { PmPortRecord, PmService } from '@switchyard/shared';
import { PortSet } from './port-set.js';

export interface Holder {
  port: number;
  record: PmPortRecord;
  modRevision: number;
}

export class ServiceView {
  service?: PmService;
  /** Mod revision of the service key, compared by every offer. */
  modRevision = 0;
  readonly holders = new Map<number, Holder>();
  /**
   * Name → port of the instances, and of the open offers: two indexes, as
   * Portmaster keeps names unique among instances and among offers, and an
   * offer may carry an instance's name (accept refuses it).
   */
  readonly instanceByName = new Map<string, number>();
  readonly offerByName = new Map<string, number>();
  /** Offer secret → port. */
  readonly bySecret = new Map<string, number>();
  readonly reserved = new Set<number>();
  private ports?: PortSet;
  private waiters: (() => void)[] = [];

  constructor(readonly name: string) {}

  setService(service: PmService, modRevision: number): void {
    const rangeChanged = !this.ports || this.ports.start !== service.start || this.ports.end !== service.end;
    this.service = service;
    this.modRevision = modRevision;
    if (rangeChanged) {
      // A range change is rare (a service update): rebuilding costs the held
      // and reserved ports, never the range.
      const ports = new PortSet(service.start, service.end);
      for (const p of this.holders.keys()) ports.take(p);
      for (const p of this.reserved) ports.take(p);
      this.ports = ports;
      this.wake();
    }
  }

  clearService(): void {
    this.service = undefined;
    this.modRevision = 0;
    this.ports = undefined;
    this.wake();
  }

  hold(holder: Holder): void {
    const previous = this.holders.get(holder.port);
    if (previous) this.unindex(previous);
    this.holders.set(holder.port, holder);
    this.namesOf(holder).set(holder.record.name, holder.port);
    if (holder.record.secret !== undefined) this.bySecret.set(holder.record.secret, holder.port);
    this.ports?.take(holder.port);
  }

  unhold(port: number): void {
    const previous = this.holders.get(port);
    if (previous) this.unindex(previous);
    this.holders.delete(port);
    if (!this.reserved.has(port)) this.ports?.free(port);
    this.wake();
  }

  private unindex(h: Holder): void {
    const names = this.namesOf(h);
    if (names.get(h.record.name) === h.port) names.delete(h.record.name);
    if (h.record.secret !== undefined && this.bySecret.get(h.record.secret) === h.port) this.bySecret.delete(h.record.secret);
  }

  private namesOf(h: Holder): Map<string, number> {
    return h.record.secret === undefined ? this.instanceByName : this.offerByName;
  }

  /** The lowest port neither held nor reserved, or undefined. */
  lowestFree(): number | undefined {
    return this.ports?.lowestFree();
  }

  reserve(port: number): void {
    this.reserved.add(port);
    this.ports?.take(port);
  }

  unreserve(port: number): void {
    this.reserved.delete(port);
    if (!this.holders.has(port)) this.ports?.free(port);
    this.wake();
  }

  /** Resolves true at the next change that may free a port, false after `ms`. */
  changed(ms: number): Promise<boolean> {
    if (ms <= 0) return Promise.resolve(false);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== done);
        resolve(false);
      }, ms);
      const done = () => {
        clearTimeout(timer);
        resolve(true);
      };
      this.waiters.push(done);
    });
  }

  /** Nothing left worth keeping: no service, no holder, no reservation. */
  get empty(): boolean {
    return !this.service && this.holders.size === 0 && this.reserved.size === 0 && this.waiters.length === 0;
  }

  private wake(): void {
    if (this.waiters.length === 0) return;
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w();
  }
}
