/**
 * The agent's presence in etcd: its registration under a lease (the lease's
 * keep-alive is the heartbeat; when the agent dies the key expires and the
 * host shows `alive: false`). A lost lease — etcd was unreachable longer than
 * the TTL — is replaced and the registration written again.
 */
import type { Etcd3, Lease } from 'etcd3';
import type { Logger } from 'pino';
import type { AgentRegistration, Keyspace } from '@switchyard/shared';

export class Registration {
  private lease?: Lease;
  private stopped = false;
  private retry?: NodeJS.Timeout;

  constructor(
    private readonly etcd: Etcd3,
    private readonly keys: Keyspace,
    private readonly record: AgentRegistration,
    private readonly ttlSeconds: number,
    private readonly log: Logger,
  ) {}

  /** Registers in the background; never blocks the agent on etcd. */
  start(): void {
    void this.register();
  }

  private async register(): Promise<void> {
    if (this.stopped) return;
    const lease = this.etcd.lease(this.ttlSeconds, { autoKeepAlive: true });
    this.lease = lease;
    lease.on('lost', (err) => {
      if (this.stopped || this.lease !== lease) return;
      this.log.warn({ err: err.message }, 'registration lease lost; registering again');
      this.scheduleRetry(0);
    });
    try {
      await lease.put(this.keys.hosts.agent(this.record.id)).value(JSON.stringify(this.record));
      this.log.info({ dataplane: this.record.dataplane, leaseTtl: this.ttlSeconds }, 'registered');
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'registration failed; retrying');
      lease.release();
      this.scheduleRetry(1000);
    }
  }

  private scheduleRetry(ms: number): void {
    clearTimeout(this.retry);
    this.retry = setTimeout(() => void this.register(), ms);
  }

  /** Revokes the lease, so the host shows as not alive at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retry);
    const lease = this.lease;
    this.lease = undefined;
    if (lease) await Promise.race([lease.revoke().catch(() => lease.release()), new Promise((r) => setTimeout(r, 1000))]);
  }
}
