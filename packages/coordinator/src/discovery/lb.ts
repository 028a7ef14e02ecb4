/**
 * `/provide?lb=<serviceId>`: a provider is a real server of an L4 service
 * for as long as it is connected.
 *
 * The real server itself is a plain part of the service's value (the agents
 * read it from there); it cannot sit on a lease. So the ownership is kept
 * next to it, in two kinds of keys:
 *
 *   disco/lb/<svc>/<srv>/owned         plain key: "providers manage this server"
 *   disco/lb/<svc>/<srv>/regs/<conn>   one per live provider, on its coordinator's lease
 *
 * A claim writes both in one transaction, then adds the server. A release
 * deletes the registration and, if it was the last one, cleans up. When a
 * coordinator dies its registrations expire with its lease; every surviving
 * coordinator watches disco/lb/ and cleans up any `owned` pair that has no
 * registration left, so the server goes within the provider TTL. A
 * coordinator that starts later does the same from its first list, so even
 * "every coordinator died" heals at the next start.
 *
 * Cleanup is safe against a concurrent claim: it removes the server, then
 * deletes the marker only if the registrations are still empty (one txn with
 * a compare over the whole range); if a claim slipped in, it adds the
 * server back. Two providers at the same host:port share the one real
 * server (reference counting by registrations), so neither removes it from
 * under the other. Every step is idempotent, so several coordinators
 * cleaning the same pair at once is harmless.
 */
import type { Etcd3 } from 'etcd3';
import type { FastifyBaseLogger } from 'fastify';
import {
  fail,
  ipFamily,
  isSwitchyardError,
  op,
  prefixEnd,
  PrefixMirror,
  Server,
  ServerInput,
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

  private async register(claim: LbClaim): Promise<void> {
    const keys = this.ctx.keys.disco;
    const leaseId = await this.ctx.call(() => this.lease.id(), 'granting the coordinator lease');
    await this.ctx.call(() =>
      this.etcd.kv.txn({
        compare: [],
        success: [
          op.put(keys.lbOwned(claim.serviceId, claim.server.id), '{}'),
          op.put(keys.lbReg(claim.serviceId, claim.server.id, claim.connId), JSON.stringify(claim.server), leaseId),
        ],
        failure: [],
      }),
    );
    if (claim.released) return;
    await this.l4.addServer(claim.serviceId, claim.server);
  }

  /** The provider is gone: drop its registration; the last one out removes the server. */
  async release(claim: LbClaim): Promise<void> {
    if (claim.released) return;
    claim.released = true;
    this.claims.delete(claim);
    const keys = this.ctx.keys.disco;
    try {
      const res = await this.ctx.call(() => this.etcd.delete().key(keys.lbReg(claim.serviceId, claim.server.id, claim.connId)).exec());
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

  private async clean(serviceId: string, serverId: string): Promise<void> {
    const keys = this.ctx.keys.disco;
    const regs = keys.lbRegs(serviceId, serverId);
    try {
      await this.l4.removeServer(serviceId, serverId);
    } catch (e) {
      if (!(isSwitchyardError(e) && (e.code === 'SERVER_NOT_FOUND' || e.code === 'SERVICE_NOT_FOUND'))) throw e;
    }
    // Delete the marker only if still nobody is registered (an empty range
    // compares as one key with create revision 0).
    const res = await this.ctx.call(() =>
      this.etcd.kv.txn({
        compare: [{ key: Buffer.from(regs), range_end: prefixEnd(regs), target: 'Create', result: 'Equal', create_revision: '0' }],
        success: [op.del(keys.lbOwned(serviceId, serverId))],
        failure: [{ request_range: { key: Buffer.from(regs), range_end: prefixEnd(regs), limit: '1' } }],
      }),
    );
    if (res.succeeded) {
      this.log.info({ service: serviceId, server: serverId }, 'provider-managed real server removed');
      return;
    }
    // A provider claimed it while we removed it: put the server back, as
    // that provider's registration describes it.
    const kv = res.responses[0]?.response_range?.kvs[0];
    const server = kv ? Server.safeParse(JSON.parse(kv.value.toString())) : undefined;
    if (server?.success) await this.l4.addServer(serviceId, server.data);
  }
}

export function toFrameError(e: unknown): SwitchyardError {
  return isSwitchyardError(e) ? e : toSwitchyardError(e);
}
