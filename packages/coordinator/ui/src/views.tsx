/** The five sections of the dashboard. Each reads the store; actions go through `ask` (a confirmation). */
import type { ComponentChildren } from 'preact';
import { useMemo, useState } from 'preact/hooks';
import type { Host, Server } from '@switchyard/shared';
import type { ServiceItem } from '../../src/ui/protocol.ts';
import { call } from './api.ts';
import type { Action } from './confirm.tsx';
import type { Store } from './store.ts';

export interface ViewProps {
  store: Store;
  version: number;
  now: number;
  ask(action: Action): void;
}

const PAGE = 50;
const MAX_WEIGHT = 2 ** 31 - 1;

export function ago(iso: string | null, now: number): string {
  if (!iso) return 'never';
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

const plural = (n: number, word: string) => `${n.toLocaleString()} ${word}${n === 1 ? '' : 's'}`;

const hostPort = (h: string, p: number) => (h.includes(':') ? `[${h}]:${p}` : `${h}:${p}`);

function Search({ id, label, value, onInput }: { id: string; label: string; value: string; onInput(v: string): void }) {
  return (
    <div class="search">
      <label for={id}>{label}</label>
      <input id={id} type="search" value={value} placeholder="Filter…" autoComplete="off" onInput={(e) => onInput((e.target as HTMLInputElement).value)} />
    </div>
  );
}

function Pager({ page, total, onPage, label }: { page: number; total: number; onPage(p: number): void; label: string }) {
  const pages = Math.max(1, Math.ceil(total / PAGE));
  const first = total === 0 ? 0 : page * PAGE + 1;
  const last = Math.min(total, (page + 1) * PAGE);
  return (
    <nav class="pager" aria-label={`${label} pages`}>
      <button type="button" class="button" disabled={page === 0} onClick={() => onPage(page - 1)}>
        ← Previous
      </button>
      <span aria-live="polite">
        {first.toLocaleString()}–{last.toLocaleString()} of {total.toLocaleString()}
      </span>
      <button type="button" class="button" disabled={page >= pages - 1} onClick={() => onPage(page + 1)}>
        Next →
      </button>
    </nav>
  );
}

function Badge({ kind, children }: { kind: 'ok' | 'warn' | 'bad' | 'muted' | 'info'; children: ComponentChildren }) {
  return <span class={`badge ${kind}`}>{children}</span>;
}

// ---------- L4 services ----------

function serverInput(s: Server, weight = s.weight) {
  return { host: s.host, port: s.port, forwarder: s.forwarder, weight, upper_threshold: s.upper_threshold, lower_threshold: s.lower_threshold };
}

function serverActions(item: ServiceItem, server: Server): { weight: Action; drain: Action; remove: Action } {
  const svc = item.s.id;
  const name = hostPort(server.host, server.port);
  // The page sends the servers as it shows them, with one weight changed: PUT replaces the list.
  const setWeight = async (w: number) => {
    const servers = item.s.servers.map((s) => serverInput(s, s.id === server.id ? w : s.weight));
    await call('PUT', `/services/${encodeURIComponent(svc)}/servers`, servers);
  };
  return {
    weight: {
      title: 'Set weight',
      body: `Server ${name} of ${svc} has weight ${server.weight}. New connections are shared in proportion to weight.`,
      confirmLabel: 'Set weight',
      number: { label: 'Weight', initial: server.weight, min: 0, max: MAX_WEIGHT },
      run: async (w) => {
        await setWeight(w ?? server.weight);
        return `Weight of ${name} in ${svc} set to ${w}.`;
      },
    },
    drain: {
      title: 'Drain server',
      body: `Set the weight of ${name} in ${svc} to 0? It gets no new connections; open ones finish.`,
      confirmLabel: 'Drain',
      danger: true,
      run: async () => {
        await setWeight(0);
        return `${name} in ${svc} drained (weight 0).`;
      },
    },
    remove: {
      title: 'Remove server',
      body: `Remove ${name} from ${svc}? Its connections are no longer balanced to it.`,
      confirmLabel: 'Remove',
      danger: true,
      run: async () => {
        await call('DELETE', `/services/${encodeURIComponent(svc)}/servers/${encodeURIComponent(server.id)}`);
        return `${name} removed from ${svc}.`;
      },
    },
  };
}

function matches(item: ServiceItem, q: string): boolean {
  const s = item.s;
  if (s.id.toLowerCase().includes(q) || hostPort(s.host, s.port).includes(q)) return true;
  return s.servers.some((v) => hostPort(v.host, v.port).includes(q));
}

function Applied({ item, hosts }: { item: ServiceItem; hosts: Host[] }) {
  if (hosts.length === 0) return <Badge kind="muted">no agent</Badge>;
  const lagging = hosts.filter((h) => h.appliedRevision < item.rev);
  if (lagging.length === 0) return <Badge kind="ok">✓ applied on {hosts.length}</Badge>;
  return (
    <Badge kind="warn">
      {hosts.length - lagging.length}/{hosts.length} · waiting for {lagging.map((h) => h.id).join(', ')}
    </Badge>
  );
}

export function ServicesView({ store, version, ask }: ViewProps) {
  const [q, setQ] = useState('');
  const [page, setPage] = useState(0);
  const ids = store.serviceIds();
  const query = q.trim().toLowerCase();
  const shown = useMemo(() => (query ? ids.filter((id) => matches(store.services.get(id) as ServiceItem, query)) : ids), [ids, query, query ? version : 0]);
  const last = Math.max(0, Math.ceil(shown.length / PAGE) - 1);
  const p = Math.min(page, last);
  const reports = store.reportsByService();
  return (
    <section aria-labelledby="services-title">
      <div class="section-head">
        <h2 id="services-title">L4 services</h2>
        <Search id="service-search" label="Search services" value={q} onInput={(v) => (setQ(v), setPage(0))} />
      </div>
      {!store.complete && (
        <p class="hint" role="status">
          Loading services: {store.services.size.toLocaleString()} of {store.totalServices.toLocaleString()}…
        </p>
      )}
      {shown.length === 0 ? (
        <p class="empty">{ids.length === 0 ? 'No L4 services yet. Create one with POST /services or `switchyard service add`.' : 'No service matches.'}</p>
      ) : (
        <>
          <table class="grid services">
            <thead>
              <tr>
                <th scope="col">Service</th>
                <th scope="col">Servers and weights</th>
                <th scope="col">Hosts</th>
                <th scope="col">Reports</th>
              </tr>
            </thead>
            <tbody>
              {shown.slice(p * PAGE, (p + 1) * PAGE).map((id) => {
                const item = store.services.get(id) as ServiceItem;
                const s = item.s;
                const rs = reports.get(id) ?? [];
                const errors = rs.filter((r) => r.level === 'error');
                return (
                  <tr key={id} data-service={id}>
                    <th scope="row">
                      <span class="mono strong">{hostPort(s.host, s.port)}</span>
                      <span class="sub">
                        {s.type.toUpperCase()} · {s.scheduler}
                        {s.persistence ? ` · sticky ${s.persistence}s` : ''}
                      </span>
                      <span class="sub mono">{id}</span>
                    </th>
                    <td>
                      {s.servers.length === 0 ? (
                        <span class="muted">no servers</span>
                      ) : (
                        <ul class="servers">
                          {s.servers.map((v) => {
                            const a = serverActions(item, v);
                            const name = hostPort(v.host, v.port);
                            return (
                              <li key={v.id} data-server={v.id}>
                                <span class="mono">{name}</span>
                                <span class={v.weight === 0 ? 'weight drained' : 'weight'} title="weight">
                                  {v.weight === 0 ? 'drained' : `w ${v.weight}`}
                                </span>
                                <span class="actions">
                                  <button type="button" class="link" onClick={() => ask(a.weight)} aria-label={`Set weight of ${name} in ${id}`}>
                                    Weight
                                  </button>
                                  <button type="button" class="link" disabled={v.weight === 0} onClick={() => ask(a.drain)} aria-label={`Drain ${name} in ${id}`}>
                                    Drain
                                  </button>
                                  <button type="button" class="link danger" onClick={() => ask(a.remove)} aria-label={`Remove ${name} from ${id}`}>
                                    Remove
                                  </button>
                                </span>
                              </li>
                            );
                          })}
                        </ul>
                      )}
                    </td>
                    <td>
                      <Applied item={item} hosts={store.hostsFor(item)} />
                    </td>
                    <td>
                      {rs.length === 0 ? (
                        <span class="muted">none</span>
                      ) : (
                        <details>
                          <summary>
                            {errors.length > 0 && <Badge kind="bad">{errors.length} error{errors.length > 1 ? 's' : ''}</Badge>}
                            {rs.length > errors.length && <Badge kind="warn">{rs.length - errors.length} warning{rs.length - errors.length > 1 ? 's' : ''}</Badge>}
                          </summary>
                          <ul class="reports">
                            {rs.map((r, i) => (
                              <li key={i}>
                                <strong>{r.host}</strong>: {r.message}
                              </li>
                            ))}
                          </ul>
                        </details>
                      )}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
          <Pager page={p} total={shown.length} onPage={setPage} label="Services" />
        </>
      )}
    </section>
  );
}

// ---------- hosts ----------

export function HostsView({ store, now }: ViewProps) {
  const hosts = [...store.hosts.values()].sort((a, b) => (a.id < b.id ? -1 : 1));
  return (
    <section aria-labelledby="hosts-title">
      <div class="section-head">
        <h2 id="hosts-title">Hosts and agents</h2>
        <p class="hint">Latest L4 change at revision {store.l4Revision.toLocaleString()}.</p>
      </div>
      {hosts.length === 0 ? (
        <p class="empty">No agent has registered. Start one with `switchyard agent` on each host.</p>
      ) : (
        <table class="grid">
          <thead>
            <tr>
              <th scope="col">Host</th>
              <th scope="col">Agent</th>
              <th scope="col">Dataplane</th>
              <th scope="col">Applied revision</th>
              <th scope="col">Last sync</th>
              <th scope="col">Services</th>
              <th scope="col">Errors / warnings</th>
            </tr>
          </thead>
          <tbody>
            {hosts.map((h) => {
              const behind = h.appliedRevision < store.l4Revision;
              return (
                <tr key={h.id} data-host={h.id}>
                  <th scope="row" class="mono strong">
                    {h.id}
                  </th>
                  <td>{h.alive ? <Badge kind="ok">alive</Badge> : <Badge kind="bad">down</Badge>}</td>
                  <td>{h.dataplane ?? '—'}</td>
                  <td>
                    <span class="mono">{h.appliedRevision.toLocaleString()}</span>{' '}
                    {behind ? <Badge kind="warn">behind</Badge> : <Badge kind="ok">current</Badge>}
                  </td>
                  <td>
                    <time dateTime={h.lastSync ?? undefined}>{ago(h.lastSync, now)}</time>
                  </td>
                  <td>{h.services.toLocaleString()}</td>
                  <td>
                    {h.errors.length + h.warnings.length === 0 ? (
                      <span class="muted">none</span>
                    ) : (
                      <details>
                        <summary>
                          {h.errors.length > 0 && <Badge kind="bad">{plural(h.errors.length, 'error')}</Badge>}
                          {h.warnings.length > 0 && <Badge kind="warn">{plural(h.warnings.length, 'warning')}</Badge>}
                        </summary>
                        <ul class="reports">
                          {[...h.errors, ...h.warnings].map((r, i) => (
                            <li key={i}>
                              <span class="mono">{r.serviceId}</span>: {r.message}
                            </li>
                          ))}
                        </ul>
                      </details>
                    )}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </section>
  );
}

// ---------- Portmaster ----------

const SHOWN_HOLDERS = 100;

export function PortsView({ store, ask, now }: ViewProps) {
  const services = [...store.pm.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
  return (
    <section aria-labelledby="ports-title">
      <div class="section-head">
        <h2 id="ports-title">Port allocation (Portmaster)</h2>
      </div>
      {services.length === 0 && <p class="empty">No port service. Create one with POST /v1/services.</p>}
      <div class="cards">
        {services.map((svc) => {
          const size = svc.end - svc.start + 1;
          const used = svc.offers.length + svc.instances.length;
          const pct = (100 * used) / size;
          return (
            <article class="card" key={svc.name} aria-labelledby={`pm-${svc.name}`} data-pm={svc.name}>
              <header>
                <h3 id={`pm-${svc.name}`} class="mono">
                  {svc.name}
                </h3>
                <span class="sub">
                  ports {svc.start}–{svc.end}
                  {svc.description ? ` · ${svc.description}` : ''}
                </span>
              </header>
              <div class="usage">
                <div
                  class={`bar${pct >= 90 ? ' full' : pct >= 70 ? ' high' : ''}`}
                  role="meter"
                  aria-label={`Ports used in ${svc.name}`}
                  aria-valuemin={0}
                  aria-valuemax={size}
                  aria-valuenow={used}
                  aria-valuetext={`${used} of ${size} ports in use`}
                >
                  <span style={{ width: `${Math.min(100, pct)}%` }} />
                </div>
                <span class="sub">
                  {used.toLocaleString()} of {size.toLocaleString()} in use ({pct < 1 && used > 0 ? '<1' : Math.round(pct)}%) · {svc.instances.length} instances ·{' '}
                  {svc.offers.length} open offers
                </span>
              </div>
              {svc.instances.length > 0 && (
                <details>
                  <summary>Instances ({svc.instances.length.toLocaleString()})</summary>
                  <table class="grid compact">
                    <thead>
                      <tr>
                        <th scope="col">Port</th>
                        <th scope="col">Instance</th>
                        <th scope="col">Since</th>
                        <th scope="col">
                          <span class="visually-hidden">Actions</span>
                        </th>
                      </tr>
                    </thead>
                    <tbody>
                      {svc.instances.slice(0, SHOWN_HOLDERS).map((i) => (
                        <tr key={i.port}>
                          <td class="mono">{i.port}</td>
                          <td>{i.name}</td>
                          <td>{ago(i.created, now)}</td>
                          <td>
                            <button
                              type="button"
                              class="link danger"
                              aria-label={`Release port ${i.port} of ${svc.name}`}
                              onClick={() =>
                                ask({
                                  title: 'Release port',
                                  body: `Release port ${i.port} of ${svc.name}, held by instance ${i.name}? The port can then be offered to another instance.`,
                                  confirmLabel: 'Release',
                                  danger: true,
                                  run: async () => {
                                    await call('DELETE', `/v1/services/${encodeURIComponent(svc.name)}/ports/${i.port}`);
                                    return `Port ${i.port} of ${svc.name} released.`;
                                  },
                                })
                              }
                            >
                              Release
                            </button>
                          </td>
                        </tr>
                      ))}
                    </tbody>
                  </table>
                  {svc.instances.length > SHOWN_HOLDERS && <p class="hint">First {SHOWN_HOLDERS} shown; GET /v1/services/{svc.name}/ports lists all.</p>}
                </details>
              )}
              {svc.offers.length > 0 && (
                <details>
                  <summary>Open offers ({svc.offers.length.toLocaleString()})</summary>
                  <ul class="plain">
                    {svc.offers.slice(0, SHOWN_HOLDERS).map((o) => (
                      <li key={o.port}>
                        <span class="mono">{o.port}</span> → {o.name} <span class="sub">offered {ago(o.created, now)}</span>
                      </li>
                    ))}
                  </ul>
                </details>
              )}
            </article>
          );
        })}
      </div>
    </section>
  );
}

// ---------- Leviathan ----------

function StateBadge({ state }: { state: string }) {
  const kind = state === 'ready' ? 'ok' : state === 'error' ? 'bad' : state === 'preparing' || state === 'destroy' ? 'warn' : 'muted';
  return <Badge kind={kind}>{state}</Badge>;
}

export function NetworksView({ store }: ViewProps) {
  const { cens, cins, containers } = store.lev;
  const hostOf = new Map(containers.map((c) => [c.contID, c.hostID]));
  return (
    <section aria-labelledby="networks-title">
      <div class="section-head">
        <h2 id="networks-title">Container networks (Leviathan)</h2>
      </div>
      <h3>CENs</h3>
      {cens.length === 0 ? (
        <p class="empty">No CEN. Import some with POST /cen/import or `switchyard cen import`.</p>
      ) : (
        <table class="grid">
          <thead>
            <tr>
              <th scope="col">CEN</th>
              <th scope="col">Wiring</th>
              <th scope="col">Status</th>
              <th scope="col">Containers (host)</th>
              <th scope="col">Per host</th>
            </tr>
          </thead>
          <tbody>
            {cens.map((c) => (
              <tr key={c.cenID} data-cen={c.cenID}>
                <th scope="row" class="mono strong">
                  {c.cenID}
                </th>
                <td>{c.wiring_type ?? '—'}</td>
                <td>
                  <StateBadge state={c.status} />
                </td>
                <td>
                  {c.contIDs.map((id) => (
                    <span class="chip" key={id}>
                      {id} <span class="sub">@ {hostOf.get(id) ?? '?'}</span>
                    </span>
                  ))}
                </td>
                <td>
                  {Object.entries(c.hosts).map(([h, s]) => (
                    <span class="chip" key={h}>
                      {h} <StateBadge state={s} />
                    </span>
                  ))}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <h3>CINs</h3>
      {cins.length === 0 ? (
        <p class="empty">No CIN.</p>
      ) : (
        <table class="grid">
          <thead>
            <tr>
              <th scope="col">CIN</th>
              <th scope="col">CENs</th>
              <th scope="col">Subnet</th>
              <th scope="col">Status</th>
              <th scope="col">Addresses</th>
            </tr>
          </thead>
          <tbody>
            {cins.map((c) => (
              <tr key={c.cinID} data-cin={c.cinID}>
                <th scope="row" class="mono strong">
                  {c.cinID}
                </th>
                <td>{c.cenIDs.join(', ')}</td>
                <td class="mono">
                  {c.subnet ?? '—'}
                  {c.gateway && <span class="sub">gw {c.gateway}</span>}
                </td>
                <td>
                  <StateBadge state={c.status} />
                </td>
                <td>
                  {c.addresses.length === 0 ? (
                    <span class="muted">none</span>
                  ) : (
                    <ul class="plain">
                      {c.addresses.map((a) => (
                        <li key={`${a.containerID}/${a.cenID}`}>
                          <span class="mono">{a.ipaddress}</span> {a.containerID} <span class="sub">via {a.cenID} @ {hostOf.get(a.containerID) ?? '?'}</span>
                        </li>
                      ))}
                    </ul>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

// ---------- providers ----------

export function ProvidersView({ store }: ViewProps) {
  const [q, setQ] = useState('');
  const [page, setPage] = useState(0);
  const query = q.trim().toLowerCase();
  const all = [...store.providers.values()].filter((p) => !query || p.name.includes(query) || p.host.includes(query)).sort((a, b) => (a.name < b.name ? -1 : 1));
  const p = Math.min(page, Math.max(0, Math.ceil(all.length / PAGE) - 1));
  return (
    <section aria-labelledby="providers-title">
      <div class="section-head">
        <h2 id="providers-title">Providers and DNS names</h2>
        <Search id="provider-search" label="Search providers" value={q} onInput={(v) => (setQ(v), setPage(0))} />
      </div>
      {all.length === 0 ? (
        <p class="empty">{store.providers.size === 0 ? 'No provider is connected (GET /provide) and no SkyDNS record exists.' : 'No provider matches.'}</p>
      ) : (
        <>
          <table class="grid">
            <thead>
              <tr>
                <th scope="col">DNS name</th>
                <th scope="col">Target</th>
                <th scope="col">Kind</th>
              </tr>
            </thead>
            <tbody>
              {all.slice(p * PAGE, (p + 1) * PAGE).map((r) => (
                <tr key={r.key}>
                  <th scope="row" class="mono">
                    {r.name}
                  </th>
                  <td class="mono">{hostPort(r.host, r.port)}</td>
                  <td>{r.live ? <Badge kind="ok">connected</Badge> : <Badge kind="muted">static record</Badge>}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <Pager page={p} total={all.length} onPage={setPage} label="Providers" />
        </>
      )}
    </section>
  );
}
