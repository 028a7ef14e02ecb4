/**
 * The Leviathan model in etcd: a watch-fed mirror of the desired state the
 * API writes (`lev/`). What agents report (`lev-status/`) is read from etcd
 * by each GET (current()), not mirrored: the coordinator never needs the
 * agents' other records (`lev-hosts/`: underlays, one key per namespace
 * created).
 *
 * A write reads the model from the mirror, applies a pure change from
 * model.ts to a copy, and writes every changed key in a transaction guarded
 * by the `lev/epoch` key's mod revision: if any other coordinator wrote in
 * between, the transaction fails, the mirror catches up and the change is
 * computed again. Leviathan writes are rare and small, so one guard for the
 * whole model is simpler than per-key compares and is obviously correct (a
 * change may read any part of the model: a CIN's addresses depend on its
 * CENs' members).
 *
 * A change too big for one transaction on an etcd with default limits (a
 * 1,000-container CEN file) goes in chunks chained on the same guard: each
 * chunk compares the epoch the previous one wrote, so nothing of another
 * coordinator can slip in between. If something does (the chain breaks), or
 * the coordinator dies midway, what was written stays — every Leviathan
 * change is idempotent (import, make, destroy), so the retry (or the
 * client's repeat) recomputes the change on the model as it now is and
 * writes only what is left. Readers can see such a change part-applied.
 */
import type { Etcd3, ICompare, IRequestOp } from 'etcd3';
import {
  DEFAULT_LEV_POOL,
  LevHostStatus,
  LevPool,
  chunkOps,
  ETCD_DEFAULT_MAX_TXN_OPS,
  op,
  PrefixMirror,
  retryCas,
  AGAIN,
  StoredCen,
  StoredCin,
  StoredContainer,
  StoredCpool,
  SwitchyardError,
  type CenView,
  type CinView,
  type ContainerView,
  type LevHostView,
  type LevState,
} from '@switchyard/shared';
import type { CoordinatorContext } from '../context.js';
import { ConsistentReads } from '../store/consistent-reads.js';
import { cloneModel, emptyModel, settle, type LevModel } from './model.js';

/** One desired-state record, as parsed from its key and value. */
export type LevRecord =
  | { kind: 'cen'; value: StoredCen }
  | { kind: 'cin'; value: StoredCin }
  | { kind: 'container'; value: StoredContainer }
  | { kind: 'cpool'; value: StoredCpool }
  | { kind: 'pool'; value: LevPool }
  | { kind: 'subnet'; index: number; value: string }
  | { kind: 'epoch'; value: string };

/**
 * What a GET answers from: the model as the mirror holds it and the agents'
 * reports read at that moment. Each request has its own; nothing is shared.
 */
export interface LevSnapshot {
  model: LevModel;
  /** Host id → its agent's report. */
  statuses: ReadonlyMap<string, LevHostStatus>;
}

const MAX_ATTEMPTS = 8;

export class LeviathanRepository {
  readonly mirror: PrefixMirror<LevRecord>;
  private readonly reads: ConsistentReads;
  private readonly etcd: Etcd3;

  constructor(private readonly ctx: CoordinatorContext) {
    this.etcd = ctx.etcd;
    const k = ctx.keys.lev;
    this.mirror = new PrefixMirror<LevRecord>(ctx.etcd, {
      prefix: k.all,
      parse: (key, raw) => {
        const text = raw.toString();
        if (key === k.epoch) return { kind: 'epoch', value: text };
        if (key === k.pool) return { kind: 'pool', value: LevPool.parse(JSON.parse(text)) };
        const index = k.parseSubnet(key);
        if (index !== undefined) return { kind: 'subnet', index, value: text };
        if (k.parseCen(key)) return { kind: 'cen', value: StoredCen.parse(JSON.parse(text)) };
        if (k.parseCin(key)) return { kind: 'cin', value: StoredCin.parse(JSON.parse(text)) };
        if (k.parseContainer(key)) return { kind: 'container', value: StoredContainer.parse(JSON.parse(text)) };
        if (k.parseCpool(key)) return { kind: 'cpool', value: StoredCpool.parse(JSON.parse(text)) };
        return undefined;
      },
      onInvalid: (key, err) => ctx.log.warn({ key, err }, 'ignoring invalid Leviathan record in etcd'),
    });
    // Every write here bumps the epoch key: its mod revision is the newest
    // write under the prefix, read with one get instead of a scan.
    this.reads = new ConsistentReads(ctx, 'container networks', [this.mirror] as PrefixMirror<unknown>[], {
      newest: async () => Number((await ctx.etcd.get(ctx.keys.lev.epoch).exec()).kvs[0]?.mod_revision ?? 0),
    });
  }

  async start(): Promise<void> {
    await this.mirror.start();
  }

  async stop(): Promise<void> {
    await this.mirror.stop();
  }

  /** Waits until the mirrors reflect every write this coordinator acknowledged. */
  fresh(): Promise<void> {
    return this.reads.fresh();
  }

  /**
   * fresh(), and the agents' reports read from etcd itself: agents write
   * their status straight to etcd, and a client that waited for an agent must
   * see what it reported (a watch only advances on its own prefix, so waiting
   * for it cannot prove it is current). One range read of the status prefix,
   * which holds nothing else; GET routes only.
   */
  async current(): Promise<LevSnapshot> {
    await this.fresh();
    return { model: this.model(), statuses: await this.reports() };
  }

  /** The agents' reports, read from etcd now (see current()). */
  async reports(): Promise<Map<string, LevHostStatus>> {
    const k = this.ctx.keys.lev;
    const res = await this.ctx.call(() => this.etcd.getAll().prefix(k.statuses).exec(), 'reading agent reports');
    const statuses = new Map<string, LevHostStatus>();
    for (const kv of res.kvs) {
      const hostId = k.parseStatus(kv.key.toString());
      if (hostId === undefined) continue;
      try {
        const parsed = LevHostStatus.safeParse(JSON.parse(kv.value.toString()));
        if (parsed.success && parsed.data.hostId === hostId) statuses.set(hostId, parsed.data);
        else this.ctx.log.warn({ key: kv.key.toString() }, 'ignoring invalid agent report');
      } catch {
        this.ctx.log.warn({ key: kv.key.toString() }, 'ignoring agent report that is not JSON');
      }
    }
    return statuses;
  }

  /** The model as the mirror holds it now. */
  model(): LevModel {
    const pool = this.mirror.get(this.ctx.keys.lev.pool)?.value;
    const m = emptyModel(pool?.kind === 'pool' ? pool.value : DEFAULT_LEV_POOL);
    for (const { value: r } of this.mirror.entries.values()) {
      if (r.kind === 'cen') m.cens.set(r.value.cenID, r.value);
      else if (r.kind === 'cin') m.cins.set(r.value.cinID, r.value);
      else if (r.kind === 'container') m.containers.set(r.value.containerID, r.value);
      else if (r.kind === 'cpool') m.cpools.set(r.value.cpoolID, r.value);
      else if (r.kind === 'subnet') m.subnets.set(r.index, r.value);
    }
    return m;
  }

  /** Mod revision of a desired-state key (0 when absent). */
  revisionOf(key: string): number {
    return this.mirror.get(key)?.modRevision ?? 0;
  }

  /** Runs `fn`; a "not found" is confirmed against etcd's latest state first (ConsistentReads.confirm). */
  confirm<T>(fn: () => Promise<T>): Promise<T> {
    return this.reads.confirm(fn);
  }

  /**
   * Applies `change` to the current model and writes the difference in one
   * transaction. Nothing is written when `change` throws or changes nothing;
   * a "not found" from it is checked against etcd's latest state first, so an
   * object another coordinator made a moment ago is found.
   */
  change<R>(change: (m: LevModel) => R): Promise<{ value: R; revision: number }> {
    return this.reads.confirm(() => this.changeOnce(change));
  }

  private async changeOnce<R>(change: (m: LevModel) => R): Promise<{ value: R; revision: number }> {
    return retryCas(async () => {
      await this.fresh();
      const before = this.model();
      const after = cloneModel(before);
      const value = change(after);
      settle(after);
      const ops = this.diff(before, after);
      if (ops.length === 0) return { value, revision: this.mirror.revision };
      const epoch = this.mirror.get(this.ctx.keys.lev.epoch);
      const key = Buffer.from(this.ctx.keys.lev.epoch);
      let guard: ICompare = epoch ? { key, target: 'Mod', result: 'Equal', mod_revision: epoch.modRevision } : { key, target: 'Version', result: 'Equal', version: 0 };
      // One operation of each transaction is the epoch's own bump.
      const chunks = chunkOps(ops, { maxOps: ETCD_DEFAULT_MAX_TXN_OPS - 1 });
      let revision = 0;
      for (const [i, chunk] of chunks.entries()) {
        const compare = guard;
        const res = await this.ctx.write(
          () => this.etcd.kv.txn({ compare: [compare], success: [...chunk, op.put(this.ctx.keys.lev.epoch, String(Date.now()))], failure: [] }),
          chunks.length > 1 ? `writing container networks (part ${i + 1} of ${chunks.length})` : 'writing container networks',
        );
        revision = Number(res.header.revision);
        if (!res.succeeded) {
          // Someone else wrote: catch up to at least their revision and
          // recompute (on top of any parts of ours already written).
          if (i > 0) this.reads.noteWrite(Number(guard.mod_revision));
          await this.reads.caughtUp(revision);
          return AGAIN;
        }
        guard = { key, target: 'Mod', result: 'Equal', mod_revision: revision };
      }
      return { value, revision: this.reads.noteWrite(revision) };
    }, { attempts: MAX_ATTEMPTS, pause: false, exhausted: () => new SwitchyardError('CONFLICT', 'container networks are being changed concurrently; try again') });
  }

  /** PUT /leviathan/pool: refused while any CIN holds a subnet of the current pool. */
  setPool(pool: LevPool): Promise<{ value: LevPool; revision: number }> {
    return this.change((m) => {
      const busy = [...m.cins.values()].filter((c) => c.subnet).map((c) => c.cinID);
      if (busy.length > 0) throw new SwitchyardError('CONFLICT', `the pool is in use by made CINs: ${busy.join(', ')}; destroy them first`);
      m.pool = pool;
      return pool;
    });
  }

  private diff(before: LevModel, after: LevModel): IRequestOp[] {
    const k = this.ctx.keys.lev;
    const ops: IRequestOp[] = [];
    const compare = <T>(a: Map<string, T>, b: Map<string, T>, keyOf: (id: string) => string) => {
      for (const [id, v] of b) {
        const old = a.get(id);
        if (!old || JSON.stringify(old) !== JSON.stringify(v)) ops.push(op.put(keyOf(id), JSON.stringify(v)));
      }
      for (const id of a.keys()) if (!b.has(id)) ops.push(op.del(keyOf(id)));
    };
    compare(before.cens, after.cens, k.cen);
    compare(before.cins, after.cins, k.cin);
    compare(before.containers, after.containers, k.container);
    compare(before.cpools, after.cpools, k.cpool);
    for (const [index, owner] of after.subnets) if (before.subnets.get(index) !== owner) ops.push(op.put(k.subnet(index), owner));
    for (const index of before.subnets.keys()) if (!after.subnets.has(index)) ops.push(op.del(k.subnet(index)));
    if (JSON.stringify(before.pool) !== JSON.stringify(after.pool)) ops.push(op.put(k.pool, JSON.stringify(after.pool)));
    return ops;
  }

  // ---------- status ----------

  /**
   * Leviathan's words for one object over the hosts it touches: made and
   * applied everywhere → ready; any error → error; made, not yet applied →
   * preparing; not made but still present somewhere → destroy; else pending.
   */
  private state(
    statuses: ReadonlyMap<string, LevHostStatus>,
    made: boolean,
    hosts: string[],
    rev: number,
    pick: (s: LevHostStatus) => 'ready' | 'error' | undefined,
  ): { status: LevState; hosts: Record<string, LevState> } {
    const per: Record<string, LevState> = {};
    for (const h of hosts) {
      const s = statuses.get(h);
      const seen = s ? pick(s) : undefined;
      const current = s !== undefined && s.appliedRevision >= rev;
      if (made) per[h] = seen === 'error' ? 'error' : seen === 'ready' && current ? 'ready' : 'preparing';
      else per[h] = seen !== undefined ? 'destroy' : 'pending';
    }
    const values = Object.values(per);
    let status: LevState;
    if (made) status = values.includes('error') ? 'error' : values.every((v) => v === 'ready') ? 'ready' : 'preparing';
    else status = values.includes('destroy') ? 'destroy' : 'pending';
    return { status, hosts: per };
  }

  cenView({ model: m, statuses }: LevSnapshot, id: string): CenView {
    const c = m.cens.get(id) as StoredCen;
    const hosts = [...new Set(c.contIDs.map((x) => m.containers.get(x)?.host).filter((h): h is string => !!h))].sort();
    const { status, hosts: per } = this.state(statuses, c.made, hosts, this.revisionOf(this.ctx.keys.lev.cen(id)), (s) => s.cens[id]);
    return { cenID: c.cenID, contIDs: c.contIDs, wiring_type: c.contIDs.length === 0 ? null : c.wiring, status, hosts: per };
  }

  cinView({ model: m, statuses }: LevSnapshot, id: string): CinView {
    const c = m.cins.get(id) as StoredCin;
    const hosts = [...new Set(c.addresses.map((a) => m.containers.get(a.containerID)?.host).filter((h): h is string => !!h))].sort();
    const { status, hosts: per } = this.state(statuses, c.made, hosts, this.revisionOf(this.ctx.keys.lev.cin(id)), (s) => s.cins[id]);
    return {
      cinID: c.cinID,
      cenIDs: c.cenIDs,
      subnet: c.subnet?.cidr ?? null,
      gateway: c.subnet?.gateway ?? null,
      addresses: c.addresses.map((a) => ({ containerID: a.containerID, cenID: a.cenID, ipaddress: a.ip, tag: m.containers.get(a.containerID)?.tag ?? null })),
      status,
      hosts: per,
    };
  }

  hostView(s: LevHostStatus): LevHostView {
    const count = (r: Record<string, unknown>) => Object.keys(r).length;
    return {
      hostId: s.hostId,
      appliedRevision: s.appliedRevision,
      failedRevision: s.errors.length > 0 ? (s.failedRevision ?? null) : null,
      lastSync: s.lastSync,
      cens: count(s.cens),
      cins: count(s.cins),
      containers: count(s.containers),
      errors: s.errors,
    };
  }

  containerView({ model: m, statuses }: LevSnapshot, id: string): ContainerView {
    const c = m.containers.get(id) as StoredContainer;
    const cenIDs = [...m.cens.values()].filter((x) => x.contIDs.includes(id)).map((x) => x.cenID);
    const addresses = [...m.cins.values()].flatMap((cin) => cin.addresses.filter((a) => a.containerID === id).map((a) => ({ cinID: cin.cinID, cenID: a.cenID, ipaddress: a.ip })));
    const { status } = this.state(statuses, true, [c.host], this.revisionOf(this.ctx.keys.lev.container(id)), (s) => s.containers[id]);
    return { contID: c.containerID, hostID: c.host, cenIDs, tag: c.tag, cpoolID: c.cpoolID, addresses, status };
  }
}
