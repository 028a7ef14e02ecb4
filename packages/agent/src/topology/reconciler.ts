/**
 * The agent's "topology" role: follows the Leviathan records in etcd and
 * keeps this host's namespaces, bridges, veths, VXLAN devices and addresses
 * equal to them.
 *
 * Loop (kube-proxy's bounded-frequency runner, in small): etcd changes
 * trigger a sync; triggers inside `minSyncIntervalMs` are coalesced; a full
 * sync (read the kernel again) runs at start, every `resyncMs`, and after
 * any failure; other syncs plan against what the last sync left, updated by
 * the ops it ran. Each sync reports per-object ready/error and the applied
 * revision at `lev-hosts/<host>/status`.
 *
 * Namespaces this agent creates are recorded in etcd BEFORE they are created
 * (`lev-hosts/<host>/created/<ns>`), so a crash in between never leaks one;
 * a namespace that existed already is adopted and never deleted.
 */
import type { Etcd3, Lease } from 'etcd3';
import type { Logger } from 'pino';
import {
  LevCreatedNs,
  LevUnderlay,
  op,
  atomically,
  PrefixMirror,
  StoredCen,
  StoredCin,
  StoredContainer,
  type Keyspace,
  type LevHostStatus,
} from '@switchyard/shared';
import { ExecaRunner, type Runner } from '../exec/runner.js';
import { commandsFor, execute, type ExecMode } from './execute.js';
import { desiredFor, type ObservedTopology, type TopologyOp } from './model.js';
import { detectUnderlay, observeTopology } from './observe.js';
import { applyOps, plan } from './plan.js';

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
  /** VXLAN local address; detected from the host context when absent. */
  underlay?: string;
  resyncMs?: number;
  minSyncIntervalMs?: number;
  /** "batched" (default) or "per-object" commands. */
  mode?: ExecMode;
  leaseTtlSeconds?: number;
}

export interface RunningTopology {
  /** The Leviathan revision fully applied (0 before the first sync). */
  readonly appliedRevision: number;
  readonly underlay: string | undefined;
  /** Resolves once a sync at or after revision `rev` has succeeded. */
  waitApplied(rev: number, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

type Desired = { kind: 'cen'; value: StoredCen } | { kind: 'cin'; value: StoredCin } | { kind: 'container'; value: StoredContainer };
type HostRec = { kind: 'underlay'; hostId: string; address: string } | { kind: 'created'; hostId: string; ns: string } | { kind: 'other' };

export async function startTopology(opts: TopologyOptions): Promise<RunningTopology> {
  const { etcd, keys, hostId } = opts;
  const log = opts.log.child({ component: 'topology' });
  const runner = opts.runner ?? new ExecaRunner();
  const mode = opts.mode ?? 'batched';
  const resyncMs = opts.resyncMs ?? 60_000;
  const minInterval = opts.minSyncIntervalMs ?? 20;
  const k = keys.lev;

  const desired = new PrefixMirror<Desired>(etcd, {
    prefix: k.all,
    parse: (key, raw) => {
      const json = () => JSON.parse(raw.toString());
      if (k.parseCen(key)) return { kind: 'cen', value: StoredCen.parse(json()) };
      if (k.parseCin(key)) return { kind: 'cin', value: StoredCin.parse(json()) };
      if (k.parseContainer(key)) return { kind: 'container', value: StoredContainer.parse(json()) };
      return undefined;
    },
    onInvalid: (key, err) => log.warn({ key, err }, 'ignoring invalid Leviathan record'),
  });
  const hosts = new PrefixMirror<HostRec>(etcd, {
    prefix: k.hosts,
    parse: (key, raw) => {
      const p = k.parseHostKey(key);
      if (p?.kind === 'underlay') return { kind: 'underlay', hostId: p.hostId, address: LevUnderlay.parse(JSON.parse(raw.toString())).address };
      if (p?.kind === 'created' && p.hostId === hostId) return { kind: 'created', hostId: p.hostId, ns: p.ns as string };
      return { kind: 'other' };
    },
  });

  const underlay = opts.underlay ?? (await detectUnderlay(runner, opts.netns).catch(() => undefined));
  let lease: Lease | undefined;
  if (underlay) {
    lease = etcd.lease(opts.leaseTtlSeconds ?? 10);
    lease.on('lost', () => log.warn('underlay lease lost'));
    await lease.put(k.underlay(hostId)).value(JSON.stringify({ hostId, address: underlay } satisfies LevUnderlay));
  } else {
    log.warn('no underlay address: CENs spanning hosts will not be joined by VXLAN');
  }

  let observed: ObservedTopology | undefined;
  let needFull = true;
  let lastFull = 0;
  let applied = 0;
  let lastStatus = '';
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let again = false;
  let stopped = false;
  let failures = 0;
  const waiters: { rev: number; resolve: () => void }[] = [];

  const collect = () => {
    const cens: StoredCen[] = [];
    const cins: StoredCin[] = [];
    const containers: StoredContainer[] = [];
    for (const { value } of desired.entries.values()) {
      if (value.kind === 'cen') cens.push(value.value);
      else if (value.kind === 'cin') cins.push(value.value);
      else containers.push(value.value);
    }
    const underlays = new Map<string, string>();
    const created = new Set<string>();
    for (const { value } of hosts.entries.values()) {
      if (value.kind === 'underlay') underlays.set(value.hostId, value.address);
      else if (value.kind === 'created') created.add(value.ns);
    }
    return { cens, cins, containers, underlays, created };
  };

  async function writeStatus(rev: number, objects: { cens: string[]; cins: string[]; containers: string[] }, error?: string): Promise<void> {
    const state = error ? ('error' as const) : ('ready' as const);
    const status: LevHostStatus = {
      hostId,
      appliedRevision: error ? applied : rev,
      lastSync: new Date().toISOString(),
      cens: Object.fromEntries(objects.cens.map((id) => [id, state])),
      cins: Object.fromEntries(objects.cins.map((id) => [id, state])),
      containers: Object.fromEntries(objects.containers.map((id) => [id, state])),
      errors: error ? [{ object: `host/${hostId}`, message: error }] : [],
    };
    const text = JSON.stringify({ ...status, lastSync: '' });
    if (text === lastStatus) return;
    await etcd.put(k.status(hostId)).value(JSON.stringify(status));
    lastStatus = text;
  }

  async function syncOnce(): Promise<void> {
    const rev = desired.revision;
    const { cens, cins, containers, underlays, created } = collect();
    const d = desiredFor({ hostId, underlay, underlays, cens, cins, containers });
    const full = needFull || !observed || Date.now() - lastFull >= resyncMs;
    try {
      if (full) {
        observed = await observeTopology(runner, opts.netns, new Set([...d.namespaces, ...created]));
        lastFull = Date.now();
        needFull = false;
      }
      const ops: TopologyOp[] = plan(d, observed as ObservedTopology, { created, knownCens: new Set(cens.map((c) => c.cenID)) });
      if (ops.length > 0) {
        log.info({ ops: ops.length, full, revision: rev }, 'applying topology');
        log.debug({ ops }, 'topology plan');
        const adds = ops.filter((o): o is Extract<TopologyOp, { op: 'netns-add' }> => o.op === 'netns-add');
        if (adds.length > 0) {
          const at = new Date().toISOString();
          await atomically(etcd, adds.map((a) => op.put(k.created(hostId, a.ns), JSON.stringify({ containerID: a.ns, createdAt: at } satisfies LevCreatedNs))));
        }
        await execute(runner, commandsFor(ops, mode, opts.netns));
        observed = applyOps(observed as ObservedTopology, ops);
        const dels = ops.filter((o): o is Extract<TopologyOp, { op: 'netns-del' }> => o.op === 'netns-del');
        if (dels.length > 0) await atomically(etcd, dels.map((x) => op.del(k.created(hostId, x.ns))));
      }
      applied = Math.max(applied, rev);
      failures = 0;
      await writeStatus(rev, d.objects);
      for (const w of waiters.filter((x) => x.rev <= applied)) w.resolve();
      waiters.splice(0, waiters.length, ...waiters.filter((x) => x.rev > applied));
    } catch (err) {
      needFull = true;
      failures++;
      log.error({ err, revision: rev }, 'topology sync failed');
      await writeStatus(rev, d.objects, (err as Error).message).catch(() => undefined);
      schedule(Math.min(30_000, 200 * 2 ** Math.min(failures, 8)));
    }
  }

  function schedule(delay = minInterval): void {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    if (timer) return;
    timer = setTimeout(() => {
      timer = undefined;
      running = syncOnce().finally(() => {
        running = undefined;
        if (again) {
          again = false;
          schedule();
        }
      });
    }, delay);
  }

  const trigger = () => schedule();
  desired.on('revision', trigger);
  desired.on('resync', trigger);
  hosts.on('change', (c: { key: string }) => {
    if (k.parseHostKey(c.key)?.kind === 'underlay') trigger();
  });
  await Promise.all([desired.start(), hosts.start()]);
  const periodic = setInterval(() => {
    needFull = true;
    trigger();
  }, resyncMs);
  schedule(0);

  return {
    get appliedRevision() {
      return applied;
    },
    underlay,
    waitApplied(rev: number, timeoutMs = 30_000) {
      if (applied >= rev) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`topology of ${hostId} did not apply revision ${rev} within ${timeoutMs} ms (at ${applied})`)), timeoutMs);
        waiters.push({
          rev,
          resolve: () => {
            clearTimeout(t);
            resolve();
          },
        });
        trigger();
      });
    },
    async stop() {
      stopped = true;
      clearInterval(periodic);
      if (timer) clearTimeout(timer);
      await running;
      await Promise.all([desired.stop(), hosts.stop()]);
      if (lease) await lease.revoke().catch(() => undefined);
    },
  };
}
