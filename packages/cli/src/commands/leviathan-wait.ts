/**
 * `--wait` for `cen …` and `cin …`. A Leviathan object lives on the hosts of
 * its containers, so a write is waited for on those hosts only, each through
 * its agent's topology report (GET /leviathan/hosts): done when the report's
 * applied revision reaches the write's.
 *
 * Not through the objects' own `status`: after `cen remove` the object is
 * gone, after `cin destroy` its addresses (and with them its hosts) are, and
 * an import places containers whose namespaces the hosts make before any CEN
 * is. Nor through GET /hosts: a host's applied revision there is its L4
 * role's, which moves only with L4 changes.
 *
 * Which hosts: those that hold an object before the write (read first) and
 * those that must hold it after (from the write's answer). A host where an
 * object is `pending` holds nothing of it and is not waited for, so
 * destroying a CEN never made on an agentless host returns at once.
 */
import type { CenView, CinView, Host, LevHostView, LevState } from '@switchyard/shared';
import { ApiError, type ApiClient, type ApiResponse } from '../client.js';
import type { FlagValues } from '../flags.js';
import { lagState, waitHosts, type HostWait, type Waiter } from '../progress.js';

export type LevKind = 'cen' | 'cin';

const NAME: Record<LevKind, string> = { cen: 'CEN', cin: 'CIN' };

/** Above this many ids the views are read with one list request instead of one GET each. */
const FEW = 16;

/** Object id → its hosts and its state on each. */
type HostsOf = Map<string, Record<string, LevState>>;

/** `CEN c1`, `CENs c1, c2`, `400 CENs (c1, c2, c3, …)`. */
export function objectsLabel(kind: LevKind, ids: string[]): string {
  if (ids.length === 1) return `${NAME[kind]} ${ids[0]}`;
  if (ids.length <= 5) return `${NAME[kind]}s ${ids.join(', ')}`;
  return `${ids.length} ${NAME[kind]}s (${ids.slice(0, 3).join(', ')}, …)`;
}

function idOf(kind: LevKind, v: unknown): string | undefined {
  const o = v as Partial<CenView & CinView> | null;
  const id = kind === 'cen' ? o?.cenID : o?.cinID;
  return typeof id === 'string' && o?.hosts && typeof o.hosts === 'object' ? id : undefined;
}

function collect(kind: LevKind, list: unknown, into: HostsOf = new Map()): HostsOf {
  if (!Array.isArray(list)) return into;
  for (const v of list) {
    const id = idOf(kind, v);
    if (id !== undefined) into.set(id, (v as CenView | CinView).hosts);
  }
  return into;
}

/** The hosts of those of `ids` that exist now. */
async function hostsOf(api: ApiClient, kind: LevKind, ids: string[]): Promise<HostsOf> {
  if (ids.length > FEW) {
    const wanted = new Set(ids);
    const all = collect(kind, (await api.request('GET', `/${kind}`)).data);
    return new Map([...all].filter(([id]) => wanted.has(id)));
  }
  const found = await Promise.all(
    ids.map((id) =>
      api.request('GET', `/${kind}/${encodeURIComponent(id)}`).then(
        (r) => r.data,
        (e: unknown) => {
          // Not there (yet): the write itself will say so, or make it.
          if (e instanceof ApiError && e.status === 404) return undefined;
          throw e;
        },
      ),
    ),
  );
  return collect(kind, found);
}

/** Host → the objects it holds (`all`: every host of each object, pending or not). */
function holders(views: HostsOf, all: boolean, into = new Map<string, Set<string>>()): Map<string, Set<string>> {
  for (const [id, hosts] of views) {
    for (const [host, state] of Object.entries(hosts)) {
      if (!all && state === 'pending') continue;
      let set = into.get(host);
      if (!set) into.set(host, (set = new Set()));
      set.add(id);
    }
  }
  return into;
}

/**
 * One host's report against the write's revision. An error fails the wait
 * only when the report says the failing pass tried this revision or a later
 * one; an older error is being retried (with backoff) and may clear.
 */
export function levHostWait(id: string, report: LevHostView | undefined, revision: number, objects: string): HostWait {
  if (!report) return { id, state: 'no report from its agent yet', applied: false };
  if (report.appliedRevision >= revision) return { id, state: 'applied', applied: true };
  const lag = lagState(report.appliedRevision, revision);
  if (report.errors.length === 0) return { id, state: lag, applied: false };
  const message = report.errors.map((e) => e.message.trim()).join('; ');
  // A progress line keeps to one line; the failure carries the whole message (a command's input, say).
  const brief = message.split('\n')[0];
  if (report.failedRevision !== null && report.failedRevision >= revision) {
    return { id, state: `error: ${brief}`, applied: false, failure: `${objects} failed on ${id}: ${message}` };
  }
  return { id, state: `${lag}; error${report.failedRevision !== null ? ` at revision ${report.failedRevision}` : ''}, retrying: ${brief}`, applied: false };
}

export interface LevWrite {
  kind: LevKind;
  /** The objects the write names. */
  ids: string[];
  /**
   * `cen import`: wait on every host of the objects after the write, not only
   * those holding them — the import places containers, whose namespaces the
   * hosts make whether or not a CEN is made.
   */
  placing?: boolean;
}

/**
 * With --wait: reads which hosts hold the objects now, and returns what waits
 * for the write once its answer is in. Without --wait: undefined.
 */
export async function prepareLevWait(api: ApiClient, values: FlagValues, w: LevWrite): Promise<Waiter | undefined> {
  if (!values.wait) return undefined;
  const timeoutMs = values['wait-timeout'] as number;
  const before = holders(await hostsOf(api, w.kind, w.ids), false);
  return async (answer: ApiResponse) => {
    if (answer.revision === undefined) return;
    const revision = answer.revision;
    // The answer of make, destroy and import lists the objects after the write (remove answers {msg}).
    const held = holders(collect(w.kind, answer.data), w.placing ?? false, before);
    const label = objectsLabel(w.kind, w.ids);
    const objectsOn = (host: string) => objectsLabel(w.kind, [...(held.get(host) ?? [])].sort());
    const hosts = [...held.keys()].sort();
    await waitHosts({
      revision,
      timeoutMs,
      hosts: `every host of ${label}`,
      none: `no host holds ${label}: nothing to wait for`,
      poll: async () => {
        const reports = new Map((await api.request<LevHostView[]>('GET', '/leviathan/hosts')).data.map((r) => [r.hostId, r]));
        return hosts.map((h) => levHostWait(h, reports.get(h), revision, objectsOn(h)));
      },
      explain: async (lagging) => {
        const alive = new Set((await api.request<Host[]>('GET', '/hosts')).data.filter((h) => h.alive).map((h) => h.id));
        return new Map(lagging.map((h) => [h.id, `${alive.has(h.id) ? '' : 'no agent running; '}${objectsOn(h.id)}`]));
      },
    });
  };
}
