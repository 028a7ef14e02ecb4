/**
 * `switchyard status`: the cluster on one screen — which coordinators answer,
 * etcd's members and leader, every host's state and lag, and how many
 * objects each feature holds. `--api` may list several coordinators
 * (comma-separated); each is probed, and the first that answers is asked for
 * the rest. `--json` prints the same as one JSON object. Exit 1 when no
 * coordinator answers.
 */
import type { ClusterStatus, Host } from '@switchyard/shared';
import { ApiClient, ApiError } from '../client.js';
import { clientFlags, helpText, parseFlags, type FlagValues } from '../flags.js';

interface Probe {
  url: string;
  ok: boolean;
  ms: number;
  detail: string;
}

async function probe(url: string, values: FlagValues): Promise<Probe> {
  const started = performance.now();
  try {
    const r = await ApiClient.fromFlags({ ...values, api: url }).request<{ version: string; etcdRevision: number }>('GET', '/healthz');
    return { url, ok: true, ms: Math.round(performance.now() - started), detail: `version ${r.data.version}` };
  } catch (e) {
    return { url, ok: false, ms: Math.round(performance.now() - started), detail: (e as Error).message };
  }
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => `  ${r.map((c, i) => c.padEnd(widths[i])).join('  ')}`.trimEnd()).join('\n');
}

export function render(coordinators: Probe[], status: ClusterStatus | undefined, hosts: Host[] | undefined, error?: string): string {
  const out: string[] = [];
  out.push(`Coordinators (${coordinators.filter((c) => c.ok).length}/${coordinators.length} reachable)`);
  out.push(table(coordinators.map((c) => [c.url, c.ok ? 'up' : 'DOWN', `${c.ms} ms`, c.detail])));
  if (!status || !hosts) {
    out.push('', error ?? 'no coordinator answered');
    return `${out.join('\n')}\n`;
  }
  const rev = status.etcd.revision;
  out.push('', `etcd (revision ${rev}, leader ${status.etcd.members.find((m) => m.leader)?.name || status.etcd.leader || 'NONE'})`);
  out.push(table(status.etcd.members.map((m) => [m.name || m.id, m.leader ? 'leader' : m.learner ? 'learner' : 'follower', m.clientURLs.join(',')])));
  out.push('', `Hosts (${hosts.filter((h) => h.alive).length}/${hosts.length} alive)`);
  if (hosts.length === 0) out.push('  none: start an agent (`switchyard agent` or `switchyard up`)');
  else
    out.push(
      table([
        ['HOST', 'ALIVE', 'DATAPLANE', 'APPLIED', 'LAG', 'ERRORS', 'WARNINGS', 'LAST SYNC'],
        ...hosts.map((h) => [h.id, h.alive ? 'yes' : 'NO', h.dataplane ?? '-', String(h.appliedRevision), String(Math.max(0, status.etcd.desiredRevision - h.appliedRevision)), String(h.errors.length), String(h.warnings.length), h.lastSync ?? '-']),
      ]),
    );
  const c = status.counts;
  out.push('', 'Objects');
  out.push(
    table([
      ['L4 services', String(c.services)],
      ['port services', `${c.portServices} (${c.portOffers} open offers, ${c.portInstances} instances)`],
      ['CENs / CINs', `${c.cens} / ${c.cins} (${c.containers} containers)`],
      ['providers', String(c.providers)],
    ]),
  );
  return `${out.join('\n')}\n`;
}

export async function statusCommand(argv: string[]): Promise<void> {
  const { values, help } = parseFlags(argv, clientFlags);
  if (help) {
    process.stdout.write(helpText('switchyard status [--api URL[,URL…]]', 'The cluster on one screen: coordinators, etcd members and leader, hosts and their lag, object counts.', clientFlags));
    return;
  }
  const urls = String(values.api).split(',').map((u) => u.trim()).filter(Boolean);
  const coordinators = await Promise.all(urls.map((u) => probe(u, values)));
  const first = coordinators.find((c) => c.ok);
  let status: ClusterStatus | undefined;
  let hosts: Host[] | undefined;
  let error: string | undefined;
  if (first) {
    const api = ApiClient.fromFlags({ ...values, api: first.url });
    try {
      [status, hosts] = await Promise.all([api.request<ClusterStatus>('GET', '/status').then((r) => r.data), api.request<Host[]>('GET', '/hosts').then((r) => r.data)]);
    } catch (e) {
      error = (e as Error).message;
    }
  }
  if (values.json) process.stdout.write(`${JSON.stringify({ coordinators, status, hosts, ...(error ? { error } : {}) })}\n`);
  else process.stdout.write(render(coordinators, status, hosts, error));
  if (!first) throw new ApiError(0, 'no coordinator reachable');
  if (error) throw new ApiError(0, error);
}
