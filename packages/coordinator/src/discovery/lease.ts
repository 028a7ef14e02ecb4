/**
 * The coordinator lease: ONE etcd lease per coordinator process, kept alive
 * by etcd3's keep-alive stream (a renewal every TTL/3 on one stream, which
 * etcd answers from the leader without a raft write). Every provider record
 * and lb registration of this process is attached to it, so
 *
 *  - idle providers cost etcd nothing per connection: the load is one
 *    keep-alive per TTL/3, whether 1 or 10,000 providers are connected;
 *  - if the process dies, etcd deletes all of its records when the TTL runs
 *    out;
 *  - a graceful stop revokes it, which deletes them all in one step.
 *
 * If the lease is lost (etcd unreachable for longer than the TTL, or etcd
 * says it no longer exists), `lost` is emitted and the next `id()` grants a
 * fresh one; owners of records claim them again on it.
 */
import { EventEmitter } from 'node:events';
import { EtcdLeaseInvalidError, type Etcd3, type Lease } from 'etcd3';
import type { FastifyBaseLogger } from 'fastify';
import { withTimeout } from '@switchyard/shared';

/** Events: `lost` (the lease is gone; records on it are gone or going). */
export class CoordinatorLease extends EventEmitter {
  private lease?: Lease;
  private granted?: Promise<string>;
  private stopped = false;

  constructor(
    private readonly etcd: Etcd3,
    readonly ttlSeconds: number,
    private readonly log: FastifyBaseLogger,
  ) {
    super();
  }

  /** The id of the live lease, granting one first if there is none. Rejects while etcd is unreachable. */
  id(): Promise<string> {
    if (this.stopped) return Promise.reject(new Error('coordinator lease stopped'));
    this.granted ??= this.grant();
    return this.granted;
  }

  private grant(): Promise<string> {
    const lease = this.etcd.lease(this.ttlSeconds);
    this.lease = lease;
    let wasGranted = false;
    lease.on('lost', (err) => {
      if (this.lease !== lease) return;
      this.forget(lease);
      // A grant that failed held no records: the caller retries id().
      if (this.stopped || !wasGranted) return;
      this.log.warn({ err: err.message }, 'coordinator lease lost; granting a new one and re-putting records');
      this.emit('lost');
    });
    const granted = lease.grant();
    granted.then(
      (id) => {
        wasGranted = true;
        this.log.info({ lease: id, ttlSeconds: this.ttlSeconds }, 'coordinator lease granted');
      },
      () => this.forget(lease),
    );
    return granted;
  }

  private forget(lease: Lease): void {
    if (this.lease !== lease) return;
    this.lease = undefined;
    this.granted = undefined;
  }

  /**
   * A write was refused because etcd does not know the lease `id` any more
   * (it expired while no keep-alive got through): treat it as lost.
   */
  invalidate(id: string): void {
    const lease = this.lease;
    if (!lease || !this.granted) return;
    void this.granted.then((current) => {
      if (current !== id || this.lease !== lease) return;
      lease.release();
      this.forget(lease);
      if (this.stopped) return;
      this.log.warn({ lease: id }, 'etcd no longer knows the coordinator lease; granting a new one');
      this.emit('lost');
    });
  }

  /** Revokes the lease: every record on it goes at once. Best effort, bounded. */
  async stop(timeoutMs = 2000): Promise<void> {
    this.stopped = true;
    const lease = this.lease;
    this.lease = undefined;
    this.granted = undefined;
    if (!lease) return;
    try {
      await withTimeout(lease.revoke(), timeoutMs, 'revoking the coordinator lease');
    } catch (err) {
      // etcd is down: the records go when the TTL runs out instead.
      lease.release();
      this.log.warn({ err: (err as Error).message }, 'could not revoke the coordinator lease; its records expire with the TTL');
    }
  }
}

/** Is this etcd error "the lease you attached does not exist"? */
export function isLeaseNotFound(err: unknown): boolean {
  return err instanceof EtcdLeaseInvalidError || /lease not found|expired or revoked/i.test(String((err as Error)?.message ?? err));
}
