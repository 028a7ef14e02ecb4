/**
 * `/provide?lb=<serviceId>`: a provider is a real server of an L4 service
 * for as long as it is connected.
 *
 * The real server itself is a plain part of the service's value (the agents
 * read it from there); it cannot sit on a lease. So the ownership is kept
 * next to it, in two kinds of keys:
 *
 *   disco/lb/<svc>/<srv>/owned         plain key: "providers added this server; the last one out removes it"
 *   disco/lb/<svc>/<srv>/regs/<conn>   one per live provider, on its coordinator's lease
 *
 * A claim is one transaction, guarded by compares on the service key and
 * the marker as they were read:
 *  - the server is not in the service: add it, write `owned`, register;
 *  - it is, with `owned`: another provider added it; register;
 *  - it is, without `owned`: someone else (an admin, over REST) configured
 *    it; register only. Nothing ever removes it on the providers' behalf.
 * Deciding "was it there?" and writing the marker in one step is what keeps
 * a provider from adopting (and later deleting) a server it did not add.
 *
 * A release deletes the registration and, if it was the last one, cleans
 * up: one transaction removes the server and the marker, only if the marker
 * is still there, nobody is registered (a compare over the whole range) and
 * the service is unchanged since it was read. When a coordinator dies its
 * registrations expire with its lease; every surviving coordinator watches
 * disco/lb/ and cleans up any `owned` pair with no registration left, so the
 * server goes within the provider TTL. A coordinator that starts later does
 * the same from its first list, so even "every coordinator died" heals at
 * the next start. Two providers at the same host:port share the one real
 * server (reference counting by registrations). Every step is a
 * compare-and-swap and idempotent, so several coordinators at once are
 * harmless.
 */
import type { Etcd3, ICompare, IRequestOp } from 'etcd3';
import type { FastifyBaseLogger } from 'fastify';
import {
  AGAIN,
  atomically,
  retryCas,
  fail,
  generationIs,
  generationOf,
  type Generation,
  ipFamily,
  isSwitchyardError,
  op,
  prefixEnd,
  PrefixMirror,
  Server,
  ServerInput,
  Service,
  SwitchyardError,
  toSwitchyardError,
} from '@switchyard/shared';
import type { CoordinatorContext } from '../context.js';
import type { L4Repository } from '../l4/repository.js';
import type { CoordinatorLease } from './lease.js';

export interface LbClaim {
  serviceId: string;
  server: Server;
  connId: string;
  released: boolean;
}

type LbKind = 'owned' | 'reg';

/** The service and the `owned` marker of one (service, server) pair, read at one revision. */
export interface PairState {
  /** The service generation the pair was read in (a write compares it: a PUT /services may switch it). */
  gen?: Generation;
  service?: { value: Service; modRevision: number };
  owned?: { modRevision: number };
}

/**
 * How a provider joins a pair: `add` the server (and own it), or only
 * register, because the server is there already, added by providers
 * (`owned`) or configured by someone else (`foreign`: never removed).
 */
export type ClaimPlan = { kind: 'add'; next: Service } | { kind: 'owned' } | { kind: 'foreign' };

export function planClaim(state: PairState & { service: { value: Service } }, server: Server): ClaimPlan {
  const service = state.service.value;
  if (!service.servers.some((s) => s.id === server.id)) return { kind: 'add', next: { ...service, servers: [...service.servers, server] } };
  return state.owned ? { kind: 'owned' } : { kind: 'foreign' };
}

/**
 * The last provider of a pair left: undefined if there is nothing of the
 * providers' to remove (no marker: never theirs, or cleaned already); else
 * the service without the server (`next` undefined if it is gone already).
 */
export function planClean(state: PairState, serverId: string): { next?: Service } | undefined {
  if (!state.owned) return undefined;
  const service = state.service?.value;
  if (!service?.servers.some((s) => s.id === serverId)) return {};
  return { next: { ...service, servers: service.servers.filter((s) => s.id !== serverId) } };
}

/** `key` is as it was read: same mod revision, or still absent. */
function unchanged(key: string, modRevision: number | undefined): ICompare {
  return modRevision === undefined
    ? { key: Buffer.from(key), target: 'Create', result: 'Equal', create_revision: '0' }
    : { key: Buffer.from(key), target: 'Mod', result: 'Equal', mod_revision: String(modRevision) };
}

export class LbRegistry {
  readonly mirror: PrefixMirror<LbKind>;
  private readonly claims = new Set<LbClaim>();
  private readonly cleaning = new Map<string, Promise<void>>();
  private readonly etcd: Etcd3;
  private stopped = false;

  constructor(
    private readonly ctx: CoordinatorContext,
    private readonly l4: L4Repository,
    private readonly lease: CoordinatorLease,
    private readonly log: FastifyBaseLogger,
  ) {
    this.etcd = ctx.etcd;
    this.mirror = new PrefixMirror<LbKind>(ctx.etcd, {
      prefix: ctx.keys.disco.lb,
      parse: (key) => ctx.keys.disco.parseLb(key)?.kind,
    });
    this.mirror.on('change', (c: { type: string; key: string }) => {
      const k = ctx.keys.disco.parseLb(c.key);
      if (k && c.type === 'delete' && k.kind === 'reg' && !this.stopped) void this.maybeClean(k.serviceId, k.serverId);
    });
    this.mirror.on('resync', () => this.reconcileAll());
    lease.on('lost', () => void this.reclaimAll());
  }

  start(): void {
    void this.mirror.start();
  }

  /** Releases every claim of this process (a graceful stop removes its servers), then stops watching. */
  async stop(): Promise<void> {
    await Promise.allSettled([...this.claims].map((c) => this.release(c)));
    this.stopped = true;
    await Promise.allSettled([...this.cleaning.values()]);
    await this.mirror.stop();
  }

  /**
   * The real server a provider would become, or why it cannot: the service
   * must exist and the host must be an address of the service's family.
   * Reads only; writes nothing.
   */
  async check(serviceId: string, host: string, port: number, weight: number | undefined): Promise<Server> {
    const { service } = await this.l4.get(serviceId);
    const parsed = ServerInput.safeParse({ host, port, ...(weight !== undefined ? { weight } : {}) });
    if (!parsed.success) throw fail('INVALID', `lb: host ${host} must be an IP address to be a real server`);
    if (ipFamily(parsed.data.host) !== ipFamily(service.host)) {
      throw fail('INVALID', `lb: host ${host} is not of the address family of service ${serviceId}`);
    }
    return parsed.data;
  }

  /** Registers the provider (on the lease) and adds the real server. */
  async claim(serviceId: string, server: Server, connId: string): Promise<LbClaim> {
    const claim: LbClaim = { serviceId, server, connId, released: false };
    this.claims.add(claim);
    try {
      await this.register(claim);
    } catch (e) {
      await this.release(claim);
      throw e;
    }
    return claim;
  }

  /** Reads the current generation, the service in it and the marker of a pair, at one revision. */
  private async readPair(serviceId: string, serverId: string): Promise<PairState & { gen: Generation }> {
    const keys = this.ctx.keys;
    let guess = this.l4.generation();
    // A few reads at most: each retry follows a PUT /services that switched generations.
    for (let attempt = 0; attempt < 8; attempt++) {
      const res = await this.ctx.call(() =>
        atomically(this.etcd, [op.get(keys.l4.current), op.get(keys.l4.service(guess.id, serviceId)), op.get(keys.disco.lbOwned(serviceId, serverId))]),
      );
      const [cur, svc, owned] = res.responses.map((r) => r.response_range?.kvs[0]);
      const gen = generationOf(cur);
      if (gen.id !== guess.id) {
        guess = gen; // a PUT /services switched generations: read in the new one
        continue;
      }
      const state: PairState & { gen: Generation } = { gen };
      if (svc) state.service = { value: Service.parse(JSON.parse(svc.value.toString())), modRevision: Number(svc.mod_revision) };
      if (owned) state.owned = { modRevision: Number(owned.mod_revision) };
      return state;
    }
    throw new SwitchyardError('CONFLICT', `service ${serviceId} is being replaced concurrently; try again`);
  }

  /** One transaction: the registration, and the server and its marker if the server was not there. */
  private async register(claim: LbClaim): Promise<void> {
    const keys = this.ctx.keys;
    const { serviceId, server, connId } = claim;
    const leaseId = await this.ctx.write(() => this.lease.id(), 'granting the coordinator lease');
    await retryCas(async () => {
      const state = await this.readPair(serviceId, server.id);
      if (!state.service) throw fail('SERVICE_NOT_FOUND');
      const plan = planClaim({ ...state, service: state.service }, server);
      const reg = op.put(keys.disco.lbReg(serviceId, server.id, connId), JSON.stringify(server), leaseId);
      const success: IRequestOp[] =
        plan.kind === 'add' ? [op.put(keys.l4.service(state.gen.id, serviceId), JSON.stringify(plan.next)), op.put(keys.disco.lbOwned(serviceId, server.id), '{}'), reg] : [reg];
      const compare = [
        generationIs(keys.l4, state.gen),
        unchanged(keys.l4.service(state.gen.id, serviceId), state.service.modRevision),
        unchanged(keys.disco.lbOwned(serviceId, server.id), state.owned?.modRevision),
      ];
      const res = await this.ctx.write(() => this.etcd.kv.txn({ compare, success, failure: [] }), 'registering a provider');
      if (!res.succeeded) return AGAIN;
      this.log.debug({ service: serviceId, server: server.id, plan: plan.kind }, 'provider registered as a real server');
    }, { what: `service ${serviceId}` });
    // Released while the transaction was in flight: its delete may have
    // come first, so delete again.
    if (claim.released) await this.unregister(claim);
  }

  /** The provider is gone: drop its registration; the last one out removes the server it added. */
  async release(claim: LbClaim): Promise<void> {
    if (claim.released) return;
    claim.released = true;
    this.claims.delete(claim);
    await this.unregister(claim);
  }

  private async unregister(claim: LbClaim): Promise<void> {
    const keys = this.ctx.keys.disco;
    try {
      const res = await this.ctx.write(() => this.etcd.delete().key(keys.lbReg(claim.serviceId, claim.server.id, claim.connId)).exec(), 'unregistering a provider');
      // Judge "was it the last one?" on a mirror that has seen our delete.
      await this.ctx.call(() => this.mirror.waitFor(Number(res.header.revision)), 'waiting for the lb watch');
    } catch (err) {
      // etcd is down: the registration expires with the lease and the
      // watchers clean up then.
      this.log.warn({ err: (err as Error).message, service: claim.serviceId, server: claim.server.id }, 'lb registration not deleted; it expires with the lease');
      return;
    }
    await this.maybeClean(claim.serviceId, claim.server.id);
  }

  /** After a lease loss the registrations are gone: write them again, re-add the servers. */
  private async reclaimAll(): Promise<void> {
    for (const claim of [...this.claims]) {
      if (claim.released || this.stopped) continue;
      try {
        await this.register(claim);
      } catch (err) {
        this.log.warn({ err: (err as Error).message, service: claim.serviceId, server: claim.server.id }, 'lb claim not restored');
      }
    }
  }

  private reconcileAll(): void {
    if (this.stopped) return;
    const owned = new Set<string>();
    const registered = new Set<string>();
    for (const [key, e] of this.mirror.entries) {
      const k = this.ctx.keys.disco.parseLb(key);
      if (!k) continue;
      (e.value === 'owned' ? owned : registered).add(`${k.serviceId}\u0000${k.serverId}`);
    }
    for (const pair of owned) {
      if (registered.has(pair)) continue;
      const [serviceId, serverId] = pair.split('\u0000');
      void this.maybeClean(serviceId, serverId);
    }
  }

  /** Cleans the pair up if the mirror shows no registration left; one cleanup per pair at a time. */
  private maybeClean(serviceId: string, serverId: string): Promise<void> {
    const regs = this.ctx.keys.disco.lbRegs(serviceId, serverId);
    for (const key of this.mirror.entries.keys()) if (key.startsWith(regs)) return Promise.resolve();
    const id = `${serviceId}\u0000${serverId}`;
    const running = this.cleaning.get(id);
    if (running) return running;
    const run = this.clean(serviceId, serverId)
      .catch((err) => this.log.warn({ err: (err as Error).message, service: serviceId, server: serverId }, 'lb cleanup failed; retried at the next resync'))
      .finally(() => this.cleaning.delete(id));
    this.cleaning.set(id, run);
    return run;
  }

  /**
   * Removes the server and its marker in one transaction, if the marker is
   * still there, nobody registered meanwhile (an empty range compares as one
   * key with create revision 0) and the service is as read.
   */
  private async clean(serviceId: string, serverId: string): Promise<void> {
    const keys = this.ctx.keys;
    const regs = keys.disco.lbRegs(serviceId, serverId);
    await retryCas(async () => {
      const state = await this.readPair(serviceId, serverId);
      const plan = planClean(state, serverId);
      if (!plan) return;
      const success: IRequestOp[] = [op.del(keys.disco.lbOwned(serviceId, serverId))];
      if (plan.next) success.unshift(op.put(keys.l4.service(state.gen.id, serviceId), JSON.stringify(plan.next)));
      const res = await this.ctx.write(() =>
        this.etcd.kv.txn({
          compare: [
            { key: Buffer.from(regs), range_end: prefixEnd(regs), target: 'Create', result: 'Equal', create_revision: '0' },
            unchanged(keys.disco.lbOwned(serviceId, serverId), state.owned?.modRevision),
            generationIs(keys.l4, state.gen),
            unchanged(keys.l4.service(state.gen.id, serviceId), state.service?.modRevision),
          ],
          success,
          failure: [{ request_range: { key: Buffer.from(regs), range_end: prefixEnd(regs), limit: '1', keys_only: true } }],
        }),
        'removing a provider-managed server',
      );
      if (res.succeeded) {
        this.log.info({ service: serviceId, server: serverId }, 'provider-managed real server removed');
        return;
      }
      // A provider registered meanwhile: the server stays, it is theirs now.
      if ((res.responses[0]?.response_range?.kvs.length ?? 0) > 0) return;
      return AGAIN;
    }, { exhausted: () => new SwitchyardError('CONFLICT', `service ${serviceId} is being changed concurrently`) });
  }
}

export function toFrameError(e: unknown): SwitchyardError {
  return isSwitchyardError(e) ? e : toSwitchyardError(e);
}
