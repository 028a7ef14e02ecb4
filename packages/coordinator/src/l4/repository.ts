/**
 * L4 services in etcd: one key per service, its servers embedded, so a service
 * and its servers always change together in one write. Services live in
 * generations (etcd/generations.ts): PUT /services writes a new generation in
 * chunks and switches `l4/current` to it in one small transaction, so it works
 * on an etcd with default limits and nobody sees half a set.
 *
 * Reads come from a watch-fed mirror of the whole `l4/` root, showing the
 * generation `current` names, with read-your-writes (ConsistentReads).
 * Writes of one service compare the generation they read (a PUT that
 * switched meanwhile makes them retry in the new one) and, when they depend
 * on the current value, the key's mod revision, retried on conflict, so
 * concurrent coordinators never lose an update.
 */
import type { Etcd3, IResponseOp } from 'etcd3';
import {
  abandonGeneration,
  assertFits,
  atomically,
  cmp,
  collectGenerations,
  fail,
  generationIs,
  generationOf,
  GroupCommit,
  ipFamily,
  keysAt,
  mirroredGeneration,
  newGenerationId,
  op,
  parseGenerationRecord,
  PrefixMirror,
  readGeneration,
  Service,
  switchGeneration,
  SwitchyardError,
  toService,
  toServiceView,
  transact,
  unchangedSince,
  writeGeneration,
  type Generation,
  type GenerationRecord,
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
/** How often crashed PUTs' leftovers are looked for (they are also looked for at start). */
const COLLECT_EVERY_MS = 30_000;

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

/** A service as read, with what a write of it must compare. */
interface Current {
  service: Service;
  modRevision: number;
  gen: Generation;
}

export class L4Repository {
  readonly mirror: PrefixMirror<GenerationRecord<Stored>>;
  private collectTimer?: NodeJS.Timeout;
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
    const keys = ctx.keys.l4;
    this.mirror = new PrefixMirror<GenerationRecord<Stored>>(ctx.etcd, {
      prefix: keys.root,
      parse: (key, raw) =>
        parseGenerationRecord(keys, key, raw, (rel, value) => {
          if (rel.includes('/')) return undefined;
          const text = value.toString();
          const own = this.ownWrites.get(key);
          if (own && own.text === text) {
            this.ownWrites.delete(key);
            return own.value;
          }
          return stored(Service.parse(JSON.parse(text)));
        }),
      onInvalid: (key, error) => ctx.log.warn({ key, err: error }, 'ignoring invalid service value in etcd'),
    });
    this.reads = new ConsistentReads(ctx, 'services', [this.mirror]);
  }

  async start(): Promise<void> {
    this.collectTimer = setInterval(() => void this.collect(), COLLECT_EVERY_MS);
    this.collectTimer.unref();
    void this.collect();
    await this.mirror.start();
  }

  stop(): Promise<void> {
    clearInterval(this.collectTimer);
    return this.mirror.stop();
  }

  /** Deletes what PUTs of crashed coordinators left behind (never anything a reader shows). */
  private async collect(): Promise<void> {
    try {
      const gone = await collectGenerations(this.etcd, this.ctx.keys.l4);
      if (gone.length > 0) this.ctx.log.info({ generations: gone }, 'collected abandoned service generations');
    } catch (err) {
      this.ctx.log.debug({ err: (err as Error).message }, 'service generations not collected; next time');
    }
  }

  /** The generation this coordinator's mirror shows (a write comparing it retries if it moved). */
  generation(): Generation {
    return mirroredGeneration(this.mirror, this.ctx.keys.l4);
  }

  // ---------- reads ----------

  async list(): Promise<Stored[]> {
    await this.reads.fresh();
    // Synchronous from here: the mirror applies a revision at once, so this
    // is one generation, whole.
    const set = this.ctx.keys.l4.set(this.generation().id);
    const all: Stored[] = [];
    for (const [key, e] of this.mirror.entries) if (e.value.kind === 'record' && key.startsWith(set)) all.push(e.value.value);
    return all.sort((a, b) => (a.service.id < b.service.id ? -1 : a.service.id > b.service.id ? 1 : 0));
  }

  /**
   * One service. A miss is confirmed against etcd before it becomes a 404, so
   * a service created through another coordinator a moment ago is found even
   * while this one's mirror has not seen it yet.
   */
  async get(id: string): Promise<Stored & { modRevision: number }> {
    await this.reads.fresh();
    const e = this.mirrored(this.generation(), id);
    if (e) return { ...e.value, modRevision: e.modRevision };
    const { service, modRevision } = await this.fromEtcd(id);
    return { ...stored(service), modRevision };
  }

  private mirrored(gen: Generation, id: string): { value: Stored; modRevision: number } | undefined {
    const e = this.mirror.get(this.ctx.keys.l4.service(gen.id, id));
    return e && e.value.kind === 'record' ? { value: e.value.value, modRevision: e.modRevision } : undefined;
  }

  // ---------- writes ----------

  /** POST /services: create, or return the existing service of that id (Portal's idempotence). */
  async create(input: ServiceInput): Promise<Written<Service>> {
    const service = toService(input);
    const keys = this.ctx.keys.l4;
    let gen = this.generation();
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const key = keys.service(gen.id, service.id);
      const json = this.expect(key, service);
      const res = await this.ctx.write(
        () => this.writes.submit({ compare: [generationIs(keys, gen), cmp.absent(key)], success: [op.put(key, json)], failure: [op.get(keys.current), op.get(key)] }),
        'creating a service',
      );
      if (res.succeeded) return { value: service, revision: this.reads.noteWrite(res.revision) };
      this.ownWrites.delete(key);
      const now = this.movedTo(gen, res.responses[0]);
      if (now) {
        gen = now; // a PUT /services switched generations: try in the new one
        continue;
      }
      const kv = res.responses[1].response_range?.kvs[0];
      if (!kv) throw new SwitchyardError('INTERNAL', 'service vanished while being read');
      // Nothing was written: the revision that matters is the one that made the
      // service what it is (an agent's appliedRevision reaches it; the cluster's
      // current revision may belong to another prefix and never would).
      const existing = parseStored(kv.value.toString());
      if (!existing) throw fail('SERVICE_EXISTS', `an invalid value is stored under service id ${service.id}; DELETE it first`);
      return { value: existing, revision: Number(kv.mod_revision) };
    }
    throw new SwitchyardError('CONFLICT', 'services are being replaced concurrently; try again');
  }

  /** The generation a failed write's `get(current)` found, if it is not `gen` any more. */
  private movedTo(gen: Generation, response: IResponseOp | undefined): Generation | undefined {
    const now = generationOf(response?.response_range?.kvs[0]);
    return now.revision !== gen.revision ? now : undefined;
  }

  /**
   * PUT /services: the whole set replaced, atomically for every reader,
   * whatever its size (etcd/generations.ts): the new set is written under a
   * fresh generation in chunks, then one transaction switches `current` to it
   * and deletes the old one — if `current` still names the generation read
   * and nothing in it was written since it was listed (the pinning carried
   * over comes from that listing). Otherwise the new generation is abandoned
   * and the whole is tried again.
   */
  async replaceAll(inputs: ServiceInput[]): Promise<Written<Service[]>> {
    const keys = this.ctx.keys.l4;
    const ids = new Set<string>();
    for (const s of inputs) {
      if (ids.has(s.id)) throw fail('INVALID', `duplicate service ${s.id} in the list`);
      ids.add(s.id);
    }
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const from = await this.ctx.call(() => readGeneration(this.etcd, keys), 'reading the service generation');
      const listed = await this.ctx.call(() => keysAt(this.etcd, keys.set(from.id)), 'listing services');
      // Pinning (`hosts`) is Switchyard's own field: Portal clients never send
      // it, so a service they list again keeps the pinning it had. The mirror
      // holds every listed key's value once it has seen the newest of them.
      await this.reads.caughtUp(listed.newest);
      const existing = new Set(listed.keys);
      const services = inputs.map((s) => {
        const key = keys.service(from.id, s.id);
        return toService(s, { servers: [], hosts: existing.has(key) ? this.mirrored(from, s.id)?.value.service.hosts : undefined });
      });
      // Nothing stored and nothing wanted: no write, and no revision of ours
      // (the cluster's may belong to another prefix, which agents never reach).
      if (services.length === 0 && listed.keys.length === 0) return { value: services, revision: listed.newest };
      const gen = newGenerationId();
      const records = services.map((s): [string, string] => [s.id, this.expect(keys.service(gen, s.id), s)]);
      const timeoutMs = this.bulkTimeoutMs(records.length);
      // writeGeneration keeps its own deadline (and abandons what it wrote
      // when it passes); the call's is a safety net behind it.
      const pending = await this.ctx.write(() => writeGeneration(this.etcd, keys, records, { id: gen, timeoutMs }), 'writing services', { ms: timeoutMs + 5000 });
      try {
        const res = await this.ctx.write(
          () => switchGeneration(this.etcd, keys, pending, from, [unchangedSince(keys.set(from.id), listed.revision)]),
          'switching to the new services',
        );
        if (res.succeeded) return { value: services, revision: this.reads.noteWrite(res.revision) };
      } catch (e) {
        // The switch may have been applied without an answer: keep the
        // generation (the collector takes it if it never became current).
        await pending.lease.revoke().catch(() => undefined);
        throw e;
      }
      for (const s of services) this.ownWrites.delete(keys.service(gen, s.id));
      await this.ctx.write(() => abandonGeneration(this.etcd, keys, pending), 'abandoning a replaced set');
    }
    throw new SwitchyardError('CONFLICT', 'services are being changed concurrently; try again');
  }

  /** Deadline for writing `n` records in chunks: the request deadline, plus time in proportion to the size. */
  private bulkTimeoutMs(n: number): number {
    return this.ctx.config.etcdTimeoutMs + n;
  }

  /**
   * PUT /services/:id. host/port/type may change and with them the id: the old
   * key goes and the new one comes in the same transaction. `servers` absent
   * keeps the current servers; present replaces them.
   */
  async update(id: string, input: ServiceInput): Promise<Written<Service>> {
    const keys = this.ctx.keys.l4;
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const current = await this.current(id, attempt > 0);
      const next = toService(input, current.service);
      const oldKey = keys.service(current.gen.id, id);
      const newKey = keys.service(current.gen.id, next.id);
      const json = JSON.stringify(next);
      assertFits(newKey, json);
      const compare = [generationIs(keys, current.gen), cmp.modIs(oldKey, current.modRevision)];
      const res = await this.ctx.write(() =>
        newKey === oldKey
          ? transact(this.etcd, compare, [op.put(oldKey, json)])
          : transact(this.etcd, [...compare, cmp.absent(newKey)], [op.del(oldKey), op.put(newKey, json)], [op.get(newKey)]),
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
    const keys = this.ctx.keys.l4;
    let gen = this.generation();
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const res = await this.ctx.write(() => transact(this.etcd, [generationIs(keys, gen)], [op.del(keys.service(gen.id, id))], [op.get(keys.current)]), 'deleting a service');
      if (res.succeeded) {
        // Nothing deleted: the state the caller waits for is what the mirror
        // already shows (the cluster's revision may belong to another prefix,
        // which agents never reach).
        if (Number(res.responses[0].response_delete_range?.deleted ?? 0) === 0) return { value: null, revision: this.mirror.revision };
        return { value: null, revision: this.reads.noteWrite(Number(res.header.revision)) };
      }
      gen = generationOf(res.responses[0]?.response_range?.kvs[0]);
    }
    throw new SwitchyardError('CONFLICT', `service ${id} is being changed concurrently; try again`);
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
    const keys = this.ctx.keys.l4;
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const current = await this.current(id, attempt > 0);
      const { result, next } = change(current.service);
      if (!next) return { value: result, revision: Math.max(current.modRevision, this.mirror.revision) };
      for (const s of next.servers) {
        if (ipFamily(s.host) !== ipFamily(next.host)) {
          throw fail('INVALID', `server ${s.id}: must be of the same address family as the service host`);
        }
      }
      const key = keys.service(current.gen.id, id);
      const json = JSON.stringify(next);
      assertFits(key, json);
      const res = await this.ctx.write(
        () => this.writes.submit({ compare: [generationIs(keys, current.gen), cmp.modIs(key, current.modRevision)], success: [op.put(key, json)] }),
        'changing a service',
      );
      if (res.succeeded) return { value: result, revision: this.reads.noteWrite(res.revision) };
      await backoff(attempt);
    }
    throw new SwitchyardError('CONFLICT', `service ${id} is being changed concurrently; try again`);
  }

  /** Serialises a service this coordinator is about to write, remembering it for the mirror. */
  private expect(key: string, service: Service): string {
    const text = JSON.stringify(service);
    assertFits(key, text);
    // Bounded: entries of writes that lost their race are replaced or dropped
    // here (a PUT of 10,000 services adds 10,000 at once).
    if (this.ownWrites.size > 50_000) this.ownWrites.clear();
    this.ownWrites.set(key, { text, value: stored(service) });
    return text;
  }

  /**
   * The current service, its mod revision and generation: from the mirror, or
   * from etcd itself on a retry and on a miss (another coordinator may just
   * have made it).
   */
  private async current(id: string, fromEtcd: boolean): Promise<Current> {
    if (!fromEtcd) {
      await this.reads.fresh();
      const gen = this.generation();
      const e = this.mirrored(gen, id);
      if (e) return { service: e.value.service, modRevision: e.modRevision, gen };
    }
    return this.fromEtcd(id);
  }

  /**
   * The service as etcd holds it in the current generation: one read of
   * `current` and the key of the generation the mirror expects; again in the
   * right one if a PUT switched meanwhile.
   */
  private async fromEtcd(id: string): Promise<Current> {
    const keys = this.ctx.keys.l4;
    let guess = this.generation();
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const res = await this.ctx.call(() => atomically(this.etcd, [op.get(keys.current), op.get(keys.service(guess.id, id))]));
      const gen = generationOf(res.responses[0].response_range?.kvs[0]);
      if (gen.id !== guess.id) {
        guess = gen;
        continue;
      }
      const kv = res.responses[1].response_range?.kvs[0];
      if (!kv) throw fail('SERVICE_NOT_FOUND');
      // A value the mirror refuses (written by hand, invalid) is not a service.
      const service = parseStored(kv.value.toString());
      if (!service) throw fail('SERVICE_NOT_FOUND');
      return { service, modRevision: Number(kv.mod_revision), gen };
    }
    throw new SwitchyardError('CONFLICT', 'services are being replaced concurrently; try again');
  }
}
