/**
 * L4 services in etcd: one key per service, its servers embedded, so a service
 * and its servers always change together in one write.
 *
 * Reads come from a watch-fed mirror, with read-your-writes (ConsistentReads).
 * Writes that depend on the current value are compare-and-swap on the key's
 * mod revision, retried on conflict, so concurrent coordinators never lose an
 * update.
 */
import type { Etcd3 } from 'etcd3';
import {
  cmp,
  fail,
  GroupCommit,
  ipFamily,
  op,
  PrefixMirror,
  Service,
  SwitchyardError,
  keysAt,
  replacePrefix,
  toService,
  toServiceView,
  transact,
  unchangedSince,
  type Server,
  type ServiceInput,
} from '@switchyard/shared';
import type { CoordinatorContext } from '../context.js';
import { ConsistentReads, type Written } from '../store/consistent-reads.js';

interface Stored {
  service: Service;
  /** The exact JSON body GET answers with (Portal's field set, see toServiceView). */
  json: string;
}

function stored(service: Service): Stored {
  return { service, json: JSON.stringify(toServiceView(service)) };
}

const MAX_CAS_ATTEMPTS = 8;

/** A stored value as a service, or undefined when it is not valid JSON or not a valid service. */
function parseStored(text: string): Service | undefined {
  try {
    const parsed = Service.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** Jittered pause between compare-and-swap attempts against other coordinators. */
function backoff(attempt: number): Promise<void> {
  return new Promise((r) => setTimeout(r, Math.random() * 5 * 2 ** attempt));
}

/** Runs tasks with the same key one at a time, in arrival order. */
class KeyedQueue {
  private readonly tails = new Map<string, Promise<unknown>>();
  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const next = prev.then(task, task);
    const tail = next.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return next;
  }
}

export class L4Repository {
  readonly mirror: PrefixMirror<Stored>;
  private readonly reads: ConsistentReads;
  private readonly queue = new KeyedQueue();
  private readonly etcd: Etcd3;
  /** Single-key writes from concurrent requests share etcd transactions. */
  private readonly writes: GroupCommit;
  /**
   * Values this coordinator is writing, already validated: when the watch
   * brings one back byte for byte, it is not parsed and checked a second time
   * (that would double the CPU cost of every write).
   */
  private readonly ownWrites = new Map<string, { text: string; value: Stored }>();

  constructor(private readonly ctx: CoordinatorContext) {
    this.etcd = ctx.etcd;
    // A write still queued at half the request deadline is dropped unsent,
    // leaving the other half for the transaction itself.
    this.writes = new GroupCommit(ctx.etcd, { queueTimeoutMs: ctx.config.etcdTimeoutMs / 2 });
    this.mirror = new PrefixMirror<Stored>(ctx.etcd, {
      prefix: ctx.keys.l4.services,
      parse: (key, value) => {
        const text = value.toString();
        const own = this.ownWrites.get(key);
        if (own && own.text === text) {
          this.ownWrites.delete(key);
          return own.value;
        }
        return stored(Service.parse(JSON.parse(text)));
      },
      onInvalid: (key, error) => ctx.log.warn({ key, err: error }, 'ignoring invalid service value in etcd'),
    });
    this.reads = new ConsistentReads(ctx, 'services', [this.mirror]);
  }

  start(): Promise<void> {
    return this.mirror.start();
  }

  stop(): Promise<void> {
    return this.mirror.stop();
  }

  // ---------- reads ----------

  async list(): Promise<Stored[]> {
    await this.reads.fresh();
    return [...this.mirror.entries.values()]
      .map((e) => e.value)
      .sort((a, b) => (a.service.id < b.service.id ? -1 : a.service.id > b.service.id ? 1 : 0));
  }

  /**
   * One service. A miss is confirmed against etcd before it becomes a 404, so
   * a service created through another coordinator a moment ago is found even
   * while this one's mirror has not seen it yet.
   */
  async get(id: string): Promise<Stored> {
    await this.reads.fresh();
    const key = this.ctx.keys.l4.service(id);
    const e = this.mirror.get(key);
    if (e) return e.value;
    return stored((await this.fromEtcd(id)).service);
  }

  // ---------- writes ----------

  /** POST /services: create, or return the existing service of that id (Portal's idempotence). */
  async create(input: ServiceInput): Promise<Written<Service>> {
    const service = toService(input);
    const key = this.ctx.keys.l4.service(service.id);
    const json = this.expect(key, service);
    const res = await this.ctx.call(() => this.writes.submit({ compare: [cmp.absent(key)], success: [op.put(key, json)], failure: [op.get(key)] }));
    if (res.succeeded) return { value: service, revision: this.reads.noteWrite(res.revision) };
    this.ownWrites.delete(key);
    const kv = res.responses[0].response_range?.kvs[0];
    if (!kv) throw new SwitchyardError('INTERNAL', 'service vanished while being read');
    // Nothing was written: the revision that matters is the one that made the
    // service what it is (an agent's appliedRevision reaches it; the cluster's
    // current revision may belong to another prefix and never would).
    const existing = parseStored(kv.value.toString());
    if (!existing) throw fail('SERVICE_EXISTS', `an invalid value is stored under service id ${service.id}; DELETE it first`);
    return { value: existing, revision: Number(kv.mod_revision) };
  }

  /**
   * PUT /services: the whole set replaced in one transaction — puts of the new
   * set and range deletes of the gaps between them that hold an old key, so
   * its size depends on the new set, not on how much is stored — guarded by
   * "nothing under the prefix was written since the listing" (retried if
   * something was).
   */
  async replaceAll(inputs: ServiceInput[]): Promise<Written<Service[]>> {
    const keys = this.ctx.keys.l4;
    const ids = new Set<string>();
    for (const s of inputs) {
      if (ids.has(s.id)) throw fail('INVALID', `duplicate service ${s.id} in the list`);
      ids.add(s.id);
    }
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const listed = await this.ctx.call(() => keysAt(this.etcd, keys.services), 'listing services');
      // Pinning (`hosts`) is Switchyard's own field: Portal clients never send
      // it, so a service they list again keeps the pinning it had. The mirror
      // holds every listed key's value once it has seen the newest of them.
      await this.reads.caughtUp(listed.newest);
      const existing = new Set(listed.keys);
      const services = inputs.map((s) => {
        const key = keys.service(s.id);
        return toService(s, { servers: [], hosts: existing.has(key) ? this.mirror.get(key)?.value.service.hosts : undefined });
      });
      const ops = replacePrefix(
        keys.services,
        services.map((s) => [keys.service(s.id), JSON.stringify(s)]),
        listed.keys,
      );
      // Nothing stored and nothing wanted: no write, and no revision of ours
      // (the cluster's may belong to another prefix, which agents never reach).
      if (ops.length === 0) return { value: services, revision: listed.newest };
      const res = await this.ctx.call(() => transact(this.etcd, [unchangedSince(keys.services, listed.revision)], ops), 'replacing all services');
      if (res.succeeded) return { value: services, revision: this.reads.noteWrite(Number(res.header.revision)) };
    }
    throw new SwitchyardError('CONFLICT', 'services are being changed concurrently; try again');
  }

  /**
   * PUT /services/:id. host/port/type may change and with them the id: the old
   * key goes and the new one comes in the same transaction. `servers` absent
   * keeps the current servers; present replaces them.
   */
  async update(id: string, input: ServiceInput): Promise<Written<Service>> {
    const oldKey = this.ctx.keys.l4.service(id);
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const current = await this.current(id, attempt > 0);
      const next = toService(input, current.service);
      const newKey = this.ctx.keys.l4.service(next.id);
      const json = JSON.stringify(next);
      let txn = this.etcd.if(oldKey, 'Mod', '==', current.modRevision);
      if (newKey !== oldKey) txn = txn.and(newKey, 'Create', '==', 0);
      const res = await this.ctx.call(() =>
        newKey === oldKey
          ? txn.then(this.etcd.put(oldKey).value(json)).commit()
          : txn.then(this.etcd.delete().key(oldKey), this.etcd.put(newKey).value(json)).else(this.etcd.get(newKey)).commit(),
      );
      if (res.succeeded) return { value: next, revision: this.reads.noteWrite(Number(res.header.revision)) };
      if (newKey !== oldKey && (res.responses[0]?.response_range?.kvs.length ?? 0) > 0) {
        throw fail('SERVICE_EXISTS', `a service with id ${next.id} already exists`);
      }
    }
    throw new SwitchyardError('CONFLICT', `service ${id} is being changed concurrently; try again`);
  }

  /**
   * DELETE /services/:id. Idempotent, as Portal's: deleting a service that is
   * not there succeeds (a retried delete, or two clients cleaning up, is not
   * an error).
   */
  async remove(id: string): Promise<Written<null>> {
    const res = await this.ctx.call(() => this.etcd.delete().key(this.ctx.keys.l4.service(id)).exec());
    // Nothing deleted: the state the caller waits for is what the mirror
    // already shows (the cluster's revision may belong to another prefix,
    // which agents never reach).
    if (Number(res.deleted) === 0) return { value: null, revision: this.mirror.revision };
    return { value: null, revision: this.reads.noteWrite(Number(res.header.revision)) };
  }

  /** POST /services/:id/servers: add, or return the existing server of that id. */
  addServer(id: string, server: Server): Promise<Written<Server>> {
    return this.mutate(id, (svc) => {
      const existing = svc.servers.find((s) => s.id === server.id);
      if (existing) return { result: existing };
      return { result: server, next: { ...svc, servers: [...svc.servers, server] } };
    });
  }

  /** PUT /services/:id/servers: replace the service's servers. */
  replaceServers(id: string, servers: Server[]): Promise<Written<Server[]>> {
    const seen = new Set<string>();
    for (const s of servers) {
      if (seen.has(s.id)) throw fail('INVALID', `duplicate server ${s.id} in the list`);
      seen.add(s.id);
    }
    return this.mutate(id, (svc) => ({ result: servers, next: { ...svc, servers } }));
  }

  /**
   * DELETE /services/:id/servers/:serverId. Idempotent for the server, as
   * Portal's; an unknown service stays a 404 (Portal answered a 500 there).
   */
  removeServer(id: string, serverId: string): Promise<Written<null>> {
    return this.mutate(id, (svc) => {
      if (!svc.servers.some((s) => s.id === serverId)) return { result: null };
      return { result: null, next: { ...svc, servers: svc.servers.filter((s) => s.id !== serverId) } };
    });
  }

  /**
   * Read-modify-write of one service, compare-and-swap on its mod revision.
   * The first attempt reads the mirror; a conflict re-reads etcd.
   */
  private mutate<R>(id: string, change: (svc: Service) => { result: R; next?: Service }): Promise<Written<R>> {
    // Changes to one service from this coordinator run one after another, so
    // they never compete with each other; CAS only arbitrates between coordinators.
    return this.queue.run(id, () => this.casLoop(id, change));
  }

  private async casLoop<R>(id: string, change: (svc: Service) => { result: R; next?: Service }): Promise<Written<R>> {
    const key = this.ctx.keys.l4.service(id);
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const current = await this.current(id, attempt > 0);
      const { result, next } = change(current.service);
      if (!next) return { value: result, revision: Math.max(current.modRevision, this.mirror.revision) };
      for (const s of next.servers) {
        if (ipFamily(s.host) !== ipFamily(next.host)) {
          throw fail('INVALID', `server ${s.id}: must be of the same address family as the service host`);
        }
      }
      const res = await this.ctx.call(() => this.writes.submit({ compare: [cmp.modIs(key, current.modRevision)], success: [op.put(key, JSON.stringify(next))] }));
      if (res.succeeded) return { value: result, revision: this.reads.noteWrite(res.revision) };
      await backoff(attempt);
    }
    throw new SwitchyardError('CONFLICT', `service ${id} is being changed concurrently; try again`);
  }

  /** Serialises a service this coordinator is about to write, remembering it for the mirror. */
  private expect(key: string, service: Service): string {
    const text = JSON.stringify(service);
    // Bounded: entries of writes that lost their race are replaced or dropped here.
    if (this.ownWrites.size > 10_000) this.ownWrites.clear();
    this.ownWrites.set(key, { text, value: stored(service) });
    return text;
  }

  /**
   * The current service and its mod revision: from the mirror, or from etcd
   * itself on a retry and on a miss (another coordinator may just have made it).
   */
  private async current(id: string, fromEtcd: boolean): Promise<{ service: Service; modRevision: number }> {
    if (!fromEtcd) {
      await this.reads.fresh();
      const e = this.mirror.get(this.ctx.keys.l4.service(id));
      if (e) return { service: e.value.service, modRevision: e.modRevision };
    }
    return this.fromEtcd(id);
  }

  private async fromEtcd(id: string): Promise<{ service: Service; modRevision: number }> {
    const res = await this.ctx.call(() => this.etcd.get(this.ctx.keys.l4.service(id)).exec());
    const kv = res.kvs[0];
    if (!kv) throw fail('SERVICE_NOT_FOUND');
    // A value the mirror refuses (written by hand, invalid) is not a service.
    const service = parseStored(kv.value.toString());
    if (!service) throw fail('SERVICE_NOT_FOUND');
    return { service, modRevision: Number(kv.mod_revision) };
  }
}
