/**
 * The topology role's report at `lev-status/<host>`: per object ready or
 * error, and the desired revision fully applied. Written only when it
 * changes (the timestamp aside), so a quiet host writes nothing.
 */
import type { Etcd3 } from 'etcd3';
import type { Keyspace, LevHostStatus } from '@switchyard/shared';

export interface StatusObjects {
  cens: string[];
  cins: string[];
  containers: string[];
}

export class TopologyStatus {
  private last = '';

  constructor(
    private readonly etcd: Etcd3,
    private readonly keys: Keyspace,
    private readonly hostId: string,
  ) {}

  /**
   * Every object `ready` at `appliedRevision`, or every object `error` with
   * the failure of the pass that tried to apply `failure.revision`.
   */
  async report(appliedRevision: number, objects: StatusObjects, failure?: { message: string; revision: number }): Promise<void> {
    const state = failure ? ('error' as const) : ('ready' as const);
    const all = (ids: string[]) => Object.fromEntries(ids.map((id) => [id, state]));
    const status: LevHostStatus = {
      hostId: this.hostId,
      appliedRevision,
      ...(failure ? { failedRevision: failure.revision } : {}),
      lastSync: new Date().toISOString(),
      cens: all(objects.cens),
      cins: all(objects.cins),
      containers: all(objects.containers),
      errors: failure ? [{ object: `host/${this.hostId}`, message: failure.message }] : [],
    };
    const text = JSON.stringify({ ...status, lastSync: '' });
    if (text === this.last) return;
    await this.etcd.put(this.keys.lev.status(this.hostId)).value(JSON.stringify(status));
    this.last = text;
  }
}
