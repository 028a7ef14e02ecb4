/**
 * Portmaster's services, offers and instances in etcd.
 *
 * Every rule that must hold across coordinators is a compare in the one
 * transaction that writes:
 *   - service create/update/delete compare the mod revision of `pm/ranges`,
 *     the single key holding every range, so two coordinators cannot create
 *     overlapping ranges at once; an update also compares that no port key of
 *     the service lies outside the new range (port keys are zero-padded, so
 *     "outside" is two key ranges);
 *   - an offer compares port key absent, offered-name key absent and the
 *     service key's mod revision unchanged, then puts port + offered-name +
 *     offer keys on a lease that is never kept alive, so an unaccepted offer
 *     simply expires;
 *   - accept compares that the offer key still exists and the instance-name
 *     key is absent (an offer may carry an instance's name, as in
 *     Portmaster; accepting it is what is refused); reject compares the
 *     offer key.
 *
 * Bodies are read with Django REST framework's semantics (the serializers in
 * @switchyard/shared): field errors first, all of them, then the
 * serializer's cross-field checks, each refusal in DRF's shape.
 *
 * Reads come from a watch-fed mirror of ranges, services and held ports (one
 * key per held port: names and offers are guard keys, indexed from the port
 * records); a read waits until the mirror reflects this coordinator's last
 * acknowledged write (read-your-writes).
 * The mirror also feeds each service's `ServiceView`, which picks the lowest
 * free port without scanning the range and keeps concurrent local offers on
 * different ports. Losing a compare (another coordinator got there first)
 * means: wait until the mirror shows what won, then look again.
 */
import { randomUUID } from 'node:crypto';
import type { Etcd3, ICompare, IRequestOp } from 'etcd3';
import type { FastifyBaseLogger } from 'fastify';
import {
  cmp,
  drfDateTime,
  errorRegistry,
  fail,
  isSafeName,
  op,
  parsePortOrName,
  PmOfferRecord,
  PmPortRecord,
  PmRangesRecord,
  PmRefusal,
  PmService,
  pmNonFieldRefusal,
  prefixEnd,
  PrefixMirror,
  rangesOverlap,
  retryCas,
  AGAIN,
  readOfferName,
  readServiceFields,
  SwitchyardError,
  type MirrorChange,
  type PmInstance,
  type PmOffer,
} from '@switchyard/shared';
import type { CoordinatorContext } from '../context.js';
import { ConsistentReads, type Written } from '../store/consistent-reads.js';
import { OfferLeases } from './offer-leases.js';
import { ServiceView, type Holder } from './service-view.js';
import { UncertainOffers } from './uncertain-offers.js';

export type PmRecord =
  | { kind: 'ranges'; ranges: PmRangesRecord }
  | { kind: 'service'; service: PmService }
  | { kind: 'port'; service: string; port: number; holder: PmPortRecord };

/** Compare-and-swap attempts of a service write before giving up with 409. */
const MAX_SERVICE_ATTEMPTS = 8;
/**
 * Ports one offer may try. Each lost try means another coordinator took that
 * port in the meantime, and the port stays marked until our mirror shows it,
 * so a request never tries a port twice.
 */
const MAX_OFFER_ATTEMPTS = 32;

function byName(a: PmService, b: PmService): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

export class PortmasterRepository {
  readonly mirror: PrefixMirror<PmRecord>;
  private readonly views = new Map<string, ServiceView>();
  private readonly leases: OfferLeases;
  private readonly etcd: Etcd3;
  private readonly log: FastifyBaseLogger;
  private readonly reads: ConsistentReads;
  /** Offers answered 504: withdrawn if they turn out to have been applied. */
  private readonly uncertain: UncertainOffers;

  constructor(private readonly ctx: CoordinatorContext) {
    this.etcd = ctx.etcd;
    this.log = ctx.log.child({ component: 'portmaster' });
    this.leases = new OfferLeases(ctx.etcd, { ttlMs: ctx.config.offerTtlMs });
    this.mirror = new PrefixMirror<PmRecord>(ctx.etcd, {
      prefix: ctx.keys.pm.mirrored,
      parse: (key, value) => this.parse(key, value),
      onInvalid: (key, error) => this.log.warn({ key, err: error }, 'ignoring invalid portmaster record in etcd'),
    });
    this.mirror.on('change', (c: MirrorChange<PmRecord>) => this.apply(c));
    this.reads = new ConsistentReads(ctx, 'port allocations', [this.mirror]);
    this.uncertain = new UncertainOffers(ctx, this.mirror, { ttlMs: ctx.config.offerTtlMs, log: this.log });
  }

  start(): Promise<void> {
    this.uncertain.start();
    return this.mirror.start();
  }

  /** Runs `fn`; a "not found" is confirmed against etcd's latest state first (ConsistentReads.confirm). */
  confirm<T>(fn: () => Promise<T>): Promise<T> {
    return this.reads.confirm(fn);
  }

  async stop(): Promise<void> {
    this.uncertain.stop();
    await this.mirror.stop();
  }

  // ---------- mirror → views ----------

  private parse(key: string, value: Buffer): PmRecord | undefined {
    const k = this.ctx.keys.pm.parse(key);
    if (!k) return undefined;
    const json: unknown = JSON.parse(value.toString());
    switch (k.kind) {
      case 'ranges':
        return { kind: 'ranges', ranges: PmRangesRecord.parse(json) };
      case 'service':
        return { kind: 'service', service: PmService.parse(json) };
      case 'port':
        return { kind: 'port', service: k.service, port: k.port, holder: PmPortRecord.parse(json) };
      default:
        return undefined;
    }
  }

  private view(name: string): ServiceView {
    let v = this.views.get(name);
    if (!v) {
      v = new ServiceView(name);
      this.views.set(name, v);
    }
    return v;
  }

  private prune(v: ServiceView): void {
    if (v.empty && this.views.get(v.name) === v) this.views.delete(v.name);
  }

  private apply(c: MirrorChange<PmRecord>): void {
    if (c.type === 'put') {
      const r = c.entry.value;
      if (r.kind === 'service') this.view(r.service.name).setService(r.service, c.entry.modRevision);
      else if (r.kind === 'port') this.view(r.service).hold({ port: r.port, record: r.holder, modRevision: c.entry.modRevision });
      return;
    }
    const r = c.previous?.value;
    if (r?.kind === 'service') {
      const v = this.view(r.service.name);
      v.clearService();
      this.prune(v);
    } else if (r?.kind === 'port') {
      const v = this.view(r.service);
      v.unhold(r.port);
      this.prune(v);
    }
  }

  private ranges(): { ranges: PmRangesRecord; modRevision: number } {
    const e = this.mirror.get(this.ctx.keys.pm.ranges);
    return e?.value.kind === 'ranges' ? { ranges: e.value.ranges, modRevision: e.modRevision } : { ranges: {}, modRevision: 0 };
  }

  private async txn(compare: ICompare[], success: IRequestOp[], what: string): Promise<{ succeeded: boolean; revision: number }> {
    const res = await this.ctx.write(() => this.etcd.kv.txn({ compare, success, failure: [] }), what);
    return { succeeded: res.succeeded, revision: Number(res.header.revision) };
  }

  // ---------- services ----------

  async listServices(): Promise<PmService[]> {
    await this.reads.fresh();
    return [...this.views.values()].flatMap((v) => (v.service ? [v.service] : [])).sort(byName);
  }

  async getService(name: string): Promise<PmService> {
    await this.reads.fresh();
    return this.serviceView(name).service as PmService;
  }

  private serviceView(name: string): ServiceView {
    const v = this.views.get(name);
    if (!v?.service) throw fail('PM_SERVICE_NOT_FOUND');
    return v;
  }

  /**
   * ServiceSerializer.validate, in Portmaster's order: start below end, no
   * overlap with another service, no held port outside the range (Portmaster
   * checks its instances; an open offer outside would be stranded the same).
   */
  private checkRange(service: PmService, ranges: PmRangesRecord, view?: ServiceView): void {
    if (service.start >= service.end) throw pmNonFieldRefusal('PM_START_LOWER');
    if (Object.entries(ranges).some(([other, r]) => other !== service.name && rangesOverlap(r, service))) throw pmNonFieldRefusal('PM_OVERLAP');
    for (const p of view?.holders.keys() ?? []) if (p < service.start || p > service.end) throw pmNonFieldRefusal('PM_RANGE_IN_USE');
  }

  async createService(body: Record<string, unknown>): Promise<Written<PmService>> {
    const { values, errors } = readServiceFields(body, false);
    const keys = this.ctx.keys.pm;
    return retryCas(async () => {
      await this.reads.fresh();
      const { ranges, modRevision } = this.ranges();
      // The name's UniqueValidator is one more field check, reported with the others.
      errors.throwIfAny(values.name !== undefined && ranges[values.name] ? { field: 'name', message: errorRegistry.PM_SERVICE_EXISTS.message } : undefined);
      // No field error: every required field is there.
      const service: PmService = { name: values.name as string, description: values.description ?? null, start: values.start as number, end: values.end as number };
      this.checkRange(service, ranges);
      const next = { ...ranges, [service.name]: { start: service.start, end: service.end } };
      const res = await this.txn(
        [cmp.modIs(keys.ranges, modRevision), cmp.absent(keys.service(service.name))],
        [op.put(keys.ranges, JSON.stringify(next)), op.put(keys.service(service.name), JSON.stringify(service))],
        'creating a port service',
      );
      if (res.succeeded) {
        this.reads.noteWrite(res.revision);
        this.log.info({ service: service.name, start: service.start, end: service.end }, 'service created');
        return { value: service, revision: res.revision };
      }
      // Lost to another writer (the header is the cluster's revision, not a
      // write of ours): look again once the mirror shows what won.
      await this.reads.caughtUp(res.revision);
      return AGAIN;
    }, { attempts: MAX_SERVICE_ATTEMPTS, pause: false, exhausted: () => new SwitchyardError('CONFLICT', 'port services are being changed concurrently; try again') });
  }

  /**
   * PUT (partial = false) or PATCH (partial = true) /v1/services/:name. Fields
   * a body leaves out keep their value (DRF's update sets only the fields it
   * read); a PATCH's cross-field checks see the merged service. A different
   * `name` is refused: Django would save a copy under the new name.
   */
  async updateService(name: string, body: Record<string, unknown>, partial: boolean): Promise<Written<PmService>> {
    const { values, errors } = readServiceFields(body, partial);
    const keys = this.ctx.keys.pm;
    return retryCas(async () => {
      await this.reads.fresh();
      const view = this.serviceView(name);
      const current = view.service as PmService;
      const { ranges, modRevision } = this.ranges();
      const renamed = values.name !== undefined && values.name !== name;
      errors.throwIfAny(renamed ? { field: 'name', message: errorRegistry[ranges[values.name as string] ? 'PM_SERVICE_EXISTS' : 'PM_RENAME'].message } : undefined);
      const service: PmService = {
        name,
        description: values.description === undefined ? current.description : values.description,
        start: values.start ?? current.start,
        end: values.end ?? current.end,
      };
      this.checkRange(service, ranges, view);
      const next = { ...ranges, [name]: { start: service.start, end: service.end } };
      const res = await this.txn(
        [
          cmp.modIs(keys.ranges, modRevision),
          cmp.modIs(keys.service(name), view.modRevision),
          cmp.noneIn(keys.ports(name), Buffer.from(keys.port(name, service.start))),
          cmp.noneIn(`${keys.port(name, service.end)}\0`, prefixEnd(keys.ports(name))),
        ],
        [op.put(keys.ranges, JSON.stringify(next)), op.put(keys.service(name), JSON.stringify(service))],
        'updating a port service',
      );
      if (res.succeeded) {
        this.reads.noteWrite(res.revision);
        this.log.info({ service: name, start: service.start, end: service.end }, 'service updated');
        return { value: service, revision: res.revision };
      }
      // Lost to another writer (the header is the cluster's revision, not a
      // write of ours): look again once the mirror shows what won.
      await this.reads.caughtUp(res.revision);
      return AGAIN;
    }, { attempts: MAX_SERVICE_ATTEMPTS, pause: false, what: `service ${name}` });
  }

  /** Deletes the service and, in the same transaction, every offer and port it holds. */
  async deleteService(name: string): Promise<Written<null>> {
    const keys = this.ctx.keys.pm;
    return retryCas(async () => {
      await this.reads.fresh();
      const view = this.serviceView(name);
      const { ranges, modRevision } = this.ranges();
      const next = { ...ranges };
      delete next[name];
      const res = await this.txn(
        [cmp.modIs(keys.ranges, modRevision), cmp.modIs(keys.service(name), view.modRevision)],
        [
          op.put(keys.ranges, JSON.stringify(next)),
          op.del(keys.service(name)),
          op.delPrefix(keys.ports(name)),
          op.delPrefix(keys.names(name)),
          op.delPrefix(keys.offerNames(name)),
          op.delPrefix(keys.offers(name)),
        ],
        'deleting a port service',
      );
      if (res.succeeded) {
        this.reads.noteWrite(res.revision);
        this.log.info({ service: name, freed: view.holders.size }, 'service deleted');
        return { value: null, revision: res.revision };
      }
      // Lost to another writer (the header is the cluster's revision, not a
      // write of ours): look again once the mirror shows what won.
      await this.reads.caughtUp(res.revision);
      return AGAIN;
    }, { attempts: MAX_SERVICE_ATTEMPTS, pause: false, what: `service ${name}` });
  }

  // ---------- offers ----------

  /**
   * POST /v1/services/:name/offers: the lowest free port, held for the
   * instance name until accepted, rejected or expired.
   */
  async offer(serviceName: string, body: Record<string, unknown>): Promise<Written<PmOffer>> {
    // OfferSerializer: the name's field errors and a full range ("port") are
    // reported together; the (service, name) uniqueness among offers after.
    const { name, errors } = readOfferName(body);
    const startedAt = Date.now();
    const created = new Date(startedAt).toISOString();
    const deadline = startedAt + this.ctx.config.etcdTimeoutMs;
    const keys = this.ctx.keys.pm;
    await this.reads.ready();
    // The hot path does not wait for the watch: the compare in etcd is the
    // authority, and a stale view only costs a retry. Only an unknown service
    // is worth a wait, in case this coordinator just created it.
    let fresh = false;
    if (!this.views.get(serviceName)?.service) {
      await this.reads.fresh();
      fresh = true;
    }
    // A refusal must not rest on a view older than this coordinator's own
    // acknowledged writes (a release or reject it just answered): catch up once.
    const refuse = async (refusal: () => PmRefusal | undefined): Promise<void> => {
      if (fresh) throw refusal() as PmRefusal;
      await this.reads.fresh();
      fresh = true;
    };
    /** The service's view and the port to try next, once there is one to try. */
    const pick = async (): Promise<{ view: ServiceView; port: number; instance: string }> => {
      for (;;) {
        const view = this.serviceView(serviceName);
        const port = view.lowestFree();
        // Portmaster's order: a full range is reported (with the name's field errors) before a taken name.
        if (port === undefined) {
          // Every port is held or being tried by one of our own offers; those may still lose.
          if (view.reserved.size === 0) {
            await refuse(() => errors.refusal({ field: 'port', message: errorRegistry.PM_EXHAUSTED.message }));
            continue;
          }
          if (!(await view.changed(deadline - Date.now()))) throw fail('PM_BUSY');
          continue;
        }
        errors.throwIfAny();
        const instance = name as string;
        if (view.offerByName.has(instance)) {
          await refuse(() => pmNonFieldRefusal('PM_OFFER_NAME_EXISTS'));
          continue;
        }
        return { view, port, instance };
      }
    };
    return retryCas(
      async () => {
        const { view, port, instance } = await pick();
        view.reserve(port);
        let revision = 0;
        const offer: PmOffer = { service: serviceName, name: instance, port, secret: randomUUID(), created };
        try {
          const lease = await this.ctx.write(() => this.leases.forOfferStartedAt(startedAt), 'granting an offer lease');
          const res = await this.txn(
            [cmp.modIs(keys.service(serviceName), view.modRevision), cmp.absent(keys.port(serviceName, port)), cmp.absent(keys.offerName(serviceName, instance))],
            [
              op.put(keys.port(serviceName, port), JSON.stringify({ name: instance, created, secret: offer.secret } satisfies PmPortRecord), lease),
              op.put(keys.offerName(serviceName, instance), JSON.stringify({ port }), lease),
              op.put(keys.offer(serviceName, offer.secret), JSON.stringify(offer), lease),
            ],
            'offering a port',
          ).catch((e: unknown) => {
            // Nobody will ever hold this offer's secret: if it was applied, it
            // must not keep its port for the offer TTL (uncertain-offers.ts).
            if (e instanceof SwitchyardError && e.code === 'OUTCOME_UNKNOWN') this.uncertain.note(offer);
            throw e;
          });
          revision = res.revision;
          if (res.succeeded) {
            this.reads.noteWrite(revision);
            this.log.debug({ service: serviceName, name: instance, port }, 'port offered');
            return { value: { ...offer, created: drfDateTime(created) }, revision };
          }
        } finally {
          this.settle(view, port, revision);
        }
        // Lost: the port, the offered name or the service changed under us. Look again
        // once the mirror shows what won.
        await this.reads.caughtUp(revision);
        return AGAIN;
      },
      {
        attempts: MAX_OFFER_ATTEMPTS,
        pause: false,
        exhausted: () => fail('PM_BUSY', `no port could be taken in ${MAX_OFFER_ATTEMPTS} tries: other coordinators keep winning; try again`),
      },
    );
  }

  /**
   * Ends a reservation. After a transaction it stays until the mirror has
   * caught up with it, so the port is never offered again in between (ours
   * now, or another coordinator's). An outcome we never learned (revision 0:
   * etcd did not answer) ends it at once: the compare keeps a retry safe.
   */
  private settle(view: ServiceView, port: number, revision: number): void {
    const done = () => {
      view.unreserve(port);
      this.prune(view);
    };
    if (revision === 0 || this.mirror.revision >= revision) done();
    else void this.mirror.waitFor(revision).then(done);
  }

  /** An unknown service has no offers: `[]`, as Portmaster's list answers (it filters, it does not look the service up). */
  async listOffers(serviceName: string): Promise<PmOffer[]> {
    await this.reads.fresh();
    const view = this.views.get(serviceName);
    if (!view?.service) return [];
    return [...view.holders.values()]
      .filter((h) => h.record.secret !== undefined)
      .sort((a, b) => a.port - b.port)
      .map((h) => ({ service: serviceName, name: h.record.name, port: h.port, secret: h.record.secret as string, created: drfDateTime(h.record.created) }));
  }

  async getOffer(serviceName: string, secret: string): Promise<PmOffer> {
    await this.reads.fresh();
    this.serviceView(serviceName);
    return this.findOffer(serviceName, secret);
  }

  /**
   * The offer: from the mirror, else from etcd (it may have been made through
   * another coordinator a moment ago). Whoever acts on it compares that its
   * offer key still exists; while it does, its port and name keys are its own.
   */
  private async findOffer(serviceName: string, secret: string): Promise<PmOffer> {
    if (!isSafeName(secret, 64)) throw fail('PM_OFFER_NOT_FOUND');
    const view = this.views.get(serviceName);
    const port = view?.bySecret.get(secret);
    const h = port === undefined ? undefined : view?.holders.get(port);
    if (h) return { service: serviceName, name: h.record.name, port: h.port, secret, created: drfDateTime(h.record.created) };
    const value = await this.ctx.call(() => this.etcd.get(this.ctx.keys.pm.offer(serviceName, secret)).string(), 'reading an offer');
    if (value === null) throw fail('PM_OFFER_NOT_FOUND');
    const offer = PmOfferRecord.parse(JSON.parse(value));
    return { ...offer, created: drfDateTime(offer.created) };
  }

  /**
   * Turns the offer into an instance: its keys leave the lease and the offer
   * key goes, in one transaction that also takes the instance name. An
   * instance already named so refuses it with Portmaster's 400 (a bare list,
   * as a ValidationError raised in its view is answered); the offer stays.
   */
  async accept(serviceName: string, secret: string): Promise<Written<PmInstance>> {
    const keys = this.ctx.keys.pm;
    const offer = await this.findOffer(serviceName, secret);
    const created = new Date().toISOString();
    const nameKey = keys.name(serviceName, offer.name);
    const success = [
      op.put(keys.port(serviceName, offer.port), JSON.stringify({ name: offer.name, created } satisfies PmPortRecord)),
      op.put(nameKey, JSON.stringify({ port: offer.port })),
      op.del(keys.offer(serviceName, secret)),
      op.del(keys.offerName(serviceName, offer.name)),
    ];
    let res = await this.txn([cmp.present(keys.offer(serviceName, secret)), cmp.absent(nameKey)], success, 'accepting an offer');
    if (!res.succeeded) {
      const [offerLeft, guard] = await this.ctx.call(
        () => Promise.all([this.etcd.get(keys.offer(serviceName, secret)).string(), this.etcd.getAll().prefix(nameKey).exec()]),
        'reading a refused accept',
      );
      // Failed compare: rejected, expired, accepted already, or its service deleted.
      if (offerLeft === null) throw fail('PM_OFFER_NOT_FOUND');
      const held = guard.kvs.find((kv) => kv.key.toString() === nameKey);
      // An offer made before offers had their own name guard holds the
      // instance-name key itself (on its lease): that is no clash.
      if (held && (JSON.parse(held.value.toString()) as { port?: number }).port === offer.port) {
        res = await this.txn([cmp.present(keys.offer(serviceName, secret)), cmp.modIs(nameKey, Number(held.mod_revision))], success, 'accepting an offer');
      }
      if (!res.succeeded) {
        if ((await this.ctx.call(() => this.etcd.get(keys.offer(serviceName, secret)).string(), 'reading a refused accept')) === null) throw fail('PM_OFFER_NOT_FOUND');
        throw new PmRefusal('PM_NAME_EXISTS', [errorRegistry.PM_NAME_EXISTS.message]);
      }
    }
    this.reads.noteWrite(res.revision);
    this.log.info({ service: serviceName, name: offer.name, port: offer.port }, 'offer accepted');
    return { value: { service: serviceName, name: offer.name, port: offer.port, created: drfDateTime(created) }, revision: res.revision };
  }

  async reject(serviceName: string, secret: string): Promise<Written<null>> {
    const keys = this.ctx.keys.pm;
    const offer = await this.findOffer(serviceName, secret);
    const res = await this.txn(
      [cmp.present(keys.offer(serviceName, secret))],
      [op.del(keys.offer(serviceName, secret)), op.del(keys.port(serviceName, offer.port)), op.del(keys.offerName(serviceName, offer.name))],
      'rejecting an offer',
    );
    if (!res.succeeded) throw fail('PM_OFFER_NOT_FOUND');
    this.reads.noteWrite(res.revision);
    this.log.debug({ service: serviceName, name: offer.name, port: offer.port }, 'offer rejected');
    return { value: null, revision: res.revision };
  }

  // ---------- instances (ports) ----------

  /** `[]` for an unknown service, as for offers (Portmaster's list would show every service's instances). */
  async listInstances(serviceName: string): Promise<PmInstance[]> {
    await this.reads.fresh();
    const view = this.views.get(serviceName);
    if (!view?.service) return [];
    return [...view.holders.values()]
      .filter((h) => h.record.secret === undefined)
      .sort((a, b) => a.port - b.port)
      .map((h) => this.instanceOf(serviceName, h));
  }

  async getInstance(serviceName: string, portOrName: string): Promise<PmInstance> {
    await this.reads.fresh();
    return this.instanceOf(serviceName, this.findInstance(serviceName, portOrName));
  }

  private instanceOf(service: string, h: Holder): PmInstance {
    return { service, name: h.record.name, port: h.port, created: drfDateTime(h.record.created) };
  }

  /** All digits → by port, else by instance name. Offers are not instances (as in Portmaster). */
  private findInstance(serviceName: string, portOrName: string): Holder {
    const view = this.serviceView(serviceName);
    const which = parsePortOrName(portOrName);
    const port = 'port' in which ? which.port : view.instanceByName.get(which.name);
    const h = port === undefined ? undefined : view.holders.get(port);
    if (!h || h.record.secret !== undefined) throw fail('PM_PORT_NOT_FOUND');
    return h;
  }

  /** DELETE /v1/services/:name/ports/:portOrName: frees the port and the instance name. */
  async release(serviceName: string, portOrName: string): Promise<Written<PmInstance>> {
    const keys = this.ctx.keys.pm;
    return retryCas(async () => {
      await this.reads.fresh();
      const h = this.findInstance(serviceName, portOrName);
      const res = await this.txn(
        [cmp.modIs(keys.port(serviceName, h.port), h.modRevision)],
        [op.del(keys.port(serviceName, h.port)), op.del(keys.name(serviceName, h.record.name))],
        'releasing a port',
      );
      if (res.succeeded) {
        this.reads.noteWrite(res.revision);
        this.log.info({ service: serviceName, name: h.record.name, port: h.port }, 'port released');
        return { value: this.instanceOf(serviceName, h), revision: res.revision };
      }
      // Lost to another writer (the header is the cluster's revision, not a
      // write of ours): look again once the mirror shows what won.
      await this.reads.caughtUp(res.revision);
      return AGAIN;
    }, { attempts: MAX_SERVICE_ATTEMPTS, pause: false, what: `port ${portOrName} of ${serviceName}` });
  }
}
