/**
 * Which namespaces this agent created, kept in etcd at
 * `lev-hosts/<host>/created/<ns>`: recorded BEFORE the namespace is created,
 * so a crash in between never leaks one, and forgotten only after it is
 * deleted. A namespace that existed already is adopted, never recorded, and
 * so never deleted.
 */
import type { Etcd3 } from 'etcd3';
import { atomically, op, type Keyspace, type LevCreatedNs } from '@switchyard/shared';
import type { TopologyOp } from './model.js';

export class CreatedNamespaces {
  constructor(
    private readonly etcd: Etcd3,
    private readonly keys: Keyspace,
    private readonly hostId: string,
  ) {}

  /** Records the namespaces `ops` will create (one transaction). */
  async beforeApply(ops: TopologyOp[]): Promise<void> {
    const adds = ops.flatMap((o) => (o.op === 'netns-add' ? [o.ns] : []));
    if (adds.length === 0) return;
    const at = new Date().toISOString();
    await atomically(this.etcd, adds.map((ns) => op.put(this.keys.lev.created(this.hostId, ns), JSON.stringify({ containerID: ns, createdAt: at } satisfies LevCreatedNs))));
  }

  /** Forgets the namespaces `ops` deleted (one transaction). */
  async afterApply(ops: TopologyOp[]): Promise<void> {
    const dels = ops.flatMap((o) => (o.op === 'netns-del' ? [o.ns] : []));
    if (dels.length === 0) return;
    await atomically(this.etcd, dels.map((ns) => op.del(this.keys.lev.created(this.hostId, ns))));
  }
}
