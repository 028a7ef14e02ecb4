/**
 * The agent's "topology" role: follows the Leviathan records in etcd and
 * keeps this host's namespaces, bridges, veths, VXLAN devices and addresses
 * equal to them.
 *
 * The loop is the agent's SyncLoop (loop.ts): etcd changes trigger a sync,
 * triggers are coalesced and kept `minSyncIntervalMs` apart, a full sync
 * (read the kernel again) runs at start, every `resyncMs`, and after any
 * failure — after an exponential backoff, so a failing apply is retried a
 * few times a minute, not hot-looped. Other syncs plan against what the last
 * sync left, updated by the ops it ran. Each sync reports per-object
 * ready/error and the applied revision (status.ts).
 *
 * Parts: what etcd says (sources.ts), the underlay address on a lease
 * (LeasedKey), the report (status.ts), the namespaces this agent created
 * (namespaces.ts), and the pure planner (plan.ts) with its executor.
 *
 * Dry-run (`--dataplane dry-run`): the same plans, logged, and no command at
 * all — not even a read, like the L4 dry-run: each plan is made against what
 * the previous dry passes would have left, and reported as applied.
 */
import type { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';
import type { Keyspace, LevUnderlay } from '@switchyard/shared';
import { pythonAvailable } from '../exec/python.js';
import { ExecaRunner, type Runner } from '../exec/runner.js';
import { LeasedKey } from '../leased-key.js';
import { SyncLoop, type SyncObserver } from '../loop.js';
import { commandsFor, execute, type ExecMode } from './execute.js';
import { desiredFor, emptyObserved, type ObservedTopology, type TopologyOp } from './model.js';
import { CreatedNamespaces } from './namespaces.js';
import { checkUnderlayWanted, findUnderlay, observeTopology, type Underlay } from './observe.js';
import { applyOps, plan } from './plan.js';
import { TopologySources } from './sources.js';
import { TopologyStatus } from './status.js';

export interface TopologyOptions {
  etcd: Etcd3;
  keys: Keyspace;
  hostId: string;
  /** The host's network namespace (the agent's --netns); the machine's own when absent. */
  netns?: string;
  log: Logger;
  /**
   * Runs the commands. It must NOT have a default netns: `ip netns add` under
   * `ip netns exec` creates a namespace nobody else can see. Default: a plain ExecaRunner.
   */
  runner?: Runner;
  /** VXLAN local address, published for the other hosts; detected from the host context when absent (not in dry-run). */
  underlay?: string;
  /** The interface the underlay address is on (its MTU sizes VXLAN devices); found from the address when absent. */
  underlayInterface?: string;
  /** Full resync period (ms, default 60 s). */
  resyncMs?: number;
  /** Minimum interval between two syncs (ms, default 20). */
  minSyncIntervalMs?: number;
  /** First retry delay after a failed sync, doubled per failure (ms, default 500; SyncLoop). */
  backoffInitialMs?: number;
  /** Longest retry delay (ms, default 30 s; SyncLoop). */
  backoffMaxMs?: number;
  /** "netlink" (default: container namespaces read and changed by one helper process per pass), "batched" (one `ip` per namespace) or "per-object" commands. */
  mode?: ExecMode;
  /** TTL of the underlay key's lease (seconds, default 10). */
  leaseTtlSeconds?: number;
  /** Plan and log only; run no command. */
  dryRun?: boolean;
  /** Told of every sync pass (metrics). */
  observer?: SyncObserver;
}

export interface RunningTopology {
  /** The Leviathan revision fully applied (0 before the first sync). */
  readonly appliedRevision: number;
  readonly underlay: string | undefined;
  /** The newest desired revision seen on the watch. */
  readonly seenRevision: number;
  /** What the last successful sync left in place, by kind (cen, cin, container). */
  readonly objects: Record<string, number>;
  /** Resolves once a sync at or after revision `rev` has succeeded. */
  waitApplied(rev: number, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/** Resolves callers waiting for a revision to be applied. */
class AppliedRevision {
  value = 0;
  private waiters: { rev: number; resolve: () => void }[] = [];

  advance(rev: number): void {
    this.value = Math.max(this.value, rev);
    const done = this.waiters.filter((w) => w.rev <= this.value);
    this.waiters = this.waiters.filter((w) => w.rev > this.value);
    for (const w of done) w.resolve();
  }

  wait(rev: number, timeoutMs: number, what: string): Promise<void> {
    if (this.value >= rev) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const waiter = {
        rev,
        resolve: () => {
          clearTimeout(t);
          resolve();
        },
      };
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`${what} did not apply revision ${rev} within ${timeoutMs} ms (at ${this.value})`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }
}

/**
 * The underlay, its address published on a lease that is renewed if lost.
 * Read once, at start: a malformed address or interface name, or a given
 * interface that is missing, fails the start; a failed detection only leaves
 * VXLAN off.
 */
async function publishUnderlay(opts: TopologyOptions, runner: Runner, log: Logger): Promise<Underlay & { key?: LeasedKey }> {
  const { etcd, keys, hostId } = opts;
  const want = { ...(opts.underlay !== undefined ? { address: opts.underlay } : {}), ...(opts.underlayInterface !== undefined ? { iface: opts.underlayInterface } : {}) };
  checkUnderlayWanted(want);
  let found: Underlay = want.address ? { address: want.address } : {};
  if (!opts.dryRun) {
    if (want.iface) found = await findUnderlay(runner, opts.netns, want);
    else found = await findUnderlay(runner, opts.netns, want).catch(() => found);
  }
  const { address } = found;
  if (!address) {
    log.warn({ iface: found.iface }, 'no underlay address: CENs spanning hosts will not be joined by VXLAN');
    return {};
  }
  if (found.mtu === undefined) log.warn({ address }, 'underlay MTU unknown: VXLAN devices get the kernel default');
  const key = new LeasedKey(etcd, {
    key: keys.lev.underlay(hostId),
    value: JSON.stringify({ hostId, address } satisfies LevUnderlay),
    ttlSeconds: opts.leaseTtlSeconds ?? 10,
    what: 'underlay',
    log,
  });
  await key.start();
  return { ...found, key };
}

export async function startTopology(opts: TopologyOptions): Promise<RunningTopology> {
  const { etcd, keys, hostId } = opts;
  const log = opts.log.child({ component: 'topology' });
  const runner = opts.runner ?? new ExecaRunner();
  // The netns helper needs python3; without it, one `ip` per container namespace (slow with many, but correct).
  const mode = opts.mode ?? (pythonAvailable() ? 'netlink' : 'batched');
  if (!opts.mode && mode === 'batched') log.warn('no python3: container namespaces are read and changed with one ip process each (slow with many containers)');
  const dryRun = opts.dryRun ?? false;
  const sources = new TopologySources(etcd, keys, hostId, log);
  const status = new TopologyStatus(etcd, keys, hostId);
  const namespaces = new CreatedNamespaces(etcd, keys, hostId);
  const applied = new AppliedRevision();
  const underlay = await publishUnderlay(opts, runner, log);

  /** What the kernel holds: read by full syncs, advanced by the ops each sync ran. */
  let observed: ObservedTopology | undefined;
  /** Dry-run: the namespaces the dry passes would have created. */
  const dryCreated = new Set<string>();
  let objects: Record<string, number> = { cen: 0, cin: 0, container: 0 };

  async function apply(ops: TopologyOp[], revision: number, full: boolean): Promise<void> {
    const commands = commandsFor(ops, mode, opts.netns);
    if (dryRun) {
      log.info({ ops: ops.length, commands: commands.length, full, revision }, 'dry-run: plan computed, nothing applied');
      log.debug({ ops }, 'topology plan');
      for (const o of ops) if (o.op === 'netns-add') dryCreated.add(o.ns);
      for (const o of ops) if (o.op === 'netns-del') dryCreated.delete(o.ns);
      return;
    }
    log.info({ ops: ops.length, commands: commands.length, full, revision }, 'applying topology');
    log.debug({ ops }, 'topology plan');
    await namespaces.beforeApply(ops);
    await execute(runner, commands);
    await namespaces.afterApply(ops);
  }

  /** One pass (SyncLoop): plan against the kernel (full) or the last pass's result, apply, report. */
  async function sync(full: boolean): Promise<void> {
    const snap = sources.snapshot();
    const created = dryRun ? new Set([...snap.created, ...dryCreated]) : snap.created;
    const d = desiredFor({ hostId, underlay: underlay.address, underlayMtu: underlay.mtu, underlays: snap.underlays, cens: snap.cens, cins: snap.cins, containers: snap.containers });
    try {
      if (dryRun) observed ??= emptyObserved();
      else if (full || !observed) observed = await observeTopology(runner, opts.netns, new Set([...d.namespaces, ...created]), mode === 'netlink' ? 'netlink' : 'ip');
      const ops = plan(d, observed, { created, knownCens: new Set(snap.cens.map((c) => c.cenID)) });
      if (ops.length > 0) {
        // Until the ops ran, the kernel is unknown: a failure leaves `observed` unset, so the retry reads it.
        const before = observed;
        observed = undefined;
        await apply(ops, snap.revision, full);
        observed = applyOps(before, ops);
      }
      // Reported before waiters hear of it: whoever waited for a revision may GET its status at once.
      const revision = Math.max(applied.value, snap.revision);
      await status.report(revision, d.objects);
      objects = { cen: d.objects.cens.length, cin: d.objects.cins.length, container: d.objects.containers.length };
      applied.advance(revision);
    } catch (err) {
      await status.report(applied.value, d.objects, { message: (err as Error).message, revision: snap.revision }).catch(() => undefined);
      throw err;
    }
  }

  const loop = new SyncLoop({
    sync,
    minIntervalMs: opts.minSyncIntervalMs ?? 20,
    resyncMs: opts.resyncMs ?? 60_000,
    ...(opts.backoffInitialMs !== undefined ? { backoffInitialMs: opts.backoffInitialMs } : {}),
    ...(opts.backoffMaxMs !== undefined ? { backoffMaxMs: opts.backoffMaxMs } : {}),
    ...(opts.observer ? { observer: opts.observer } : {}),
    log,
  });
  await sources.start(() => loop.trigger());
  loop.start();
  log.info({ netns: opts.netns, underlay: underlay.address, underlayInterface: underlay.iface, underlayMtu: underlay.mtu, dryRun }, 'topology started');

  return {
    get appliedRevision() {
      return applied.value;
    },
    underlay: underlay.address,
    get seenRevision() {
      return sources.revision;
    },
    get objects() {
      return objects;
    },
    waitApplied(rev: number, timeoutMs = 30_000) {
      const done = applied.wait(rev, timeoutMs, `topology of ${hostId}`);
      loop.trigger();
      return done;
    },
    async stop() {
      await loop.stop();
      await sources.stop();
      await underlay.key?.stop();
    },
  };
}
