/**
 * The agent's presence in etcd: its registration under a lease (the lease's
 * keep-alive is the heartbeat; when the agent dies the key expires and the
 * host shows `alive: false`). A lost lease — etcd was unreachable longer than
 * the TTL — is replaced and the registration written again (LeasedKey).
 */
import type { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';
import type { AgentRegistration, Keyspace } from '@switchyard/shared';
import { LeasedKey } from './leased-key.js';

export class Registration {
  private readonly key: LeasedKey;

  constructor(etcd: Etcd3, keys: Keyspace, record: AgentRegistration, ttlSeconds: number, log: Logger) {
    this.key = new LeasedKey(etcd, { key: keys.hosts.agent(record.id), value: JSON.stringify(record), ttlSeconds, what: 'registration', log });
  }

  /** Registers in the background; never blocks the agent on etcd. */
  start(): void {
    void this.key.start();
  }

  /** Revokes the lease, so the host shows as not alive at once. */
  async stop(): Promise<void> {
    await this.key.stop();
  }
}
