/**
 * `switchyard service …` and `switchyard server …`: Portal's CLI, spoken to
 * the coordinator's Portal-compatible API.
 */
import { serviceId, type Protocol } from '@switchyard/shared';
import { ApiClient, print } from '../client.js';
import { clientFlags, helpText, parseFlags, UsageError, type FlagSpec, type FlagValues } from '../flags.js';
import { finishWrite, l4Waiter, writeFlags as waitFlags } from '../progress.js';
import { importFile } from './import.js';

const serviceFields: FlagSpec[] = [
  { name: 'host', kind: 'string', help: 'virtual IP of the service', env: '' },
  { name: 'port', kind: 'int', help: 'port of the service', env: '' },
  { name: 'type', kind: 'string', help: 'tcp or udp (default tcp)', env: '' },
  { name: 'scheduler', kind: 'string', help: 'rr|wrr|lc|wlc|lblc|lblcr|dh|sh|sed|nq (default wlc)', env: '' },
  { name: 'persistence', kind: 'int', help: 'persistence timeout in seconds (default 0)', env: '' },
  { name: 'netmask', kind: 'string', help: 'persistence netmask (default "")', env: '' },
  { name: 'hosts', kind: 'list', help: 'pin the service to these agent host ids (default: all)', env: '' },
  { name: 'health', kind: 'string', help: 'check the real servers: tcp, http[:PATH] (default path /healthz) or none', env: '' },
  { name: 'health-interval', kind: 'string', help: 'time between checks of one server (default 2s)', env: '' },
  { name: 'health-timeout', kind: 'string', help: 'a check that takes longer fails (default 1s)', env: '' },
  { name: 'health-rise', kind: 'int', help: 'successes in a row that bring a server back (default 2)', env: '' },
  { name: 'health-fall', kind: 'int', help: 'failures in a row that take a server out (default 3)', env: '' },
  { name: 'health-expect', kind: 'int', help: 'http: the status a healthy server answers (default 200)', env: '' },
  { name: 'health-port', kind: 'int', help: "probe this port instead of each server's (required for udp)", env: '' },
];

/**
 * `--health http:/healthz` and the `--health-*` details as the service's
 * `health` field (validated by the coordinator's schema), merged over
 * `current` so `service set --health-interval 5s` keeps the rest.
 */
export function healthFrom(values: FlagValues, current?: Record<string, unknown>): Record<string, unknown> | undefined {
  const details = pick(values, { 'health-interval': 'interval', 'health-timeout': 'timeout', 'health-rise': 'rise', 'health-fall': 'fall', 'health-expect': 'expect', 'health-port': 'port' });
  if (values.health === undefined && Object.keys(details).length === 0) return undefined;
  const out: Record<string, unknown> = { ...(current ?? {}) };
  if (values.health !== undefined) {
    const text = String(values.health);
    const colon = text.indexOf(':');
    const type = colon < 0 ? text : text.slice(0, colon);
    if (!['tcp', 'http', 'none'].includes(type)) throw new UsageError(`--health: "${type}" is not tcp, http or none`);
    out.type = type;
    delete out.path;
    if (type !== 'http') delete out.expect;
    if (colon >= 0) {
      if (type !== 'http') throw new UsageError('--health: only http takes a path (http:/healthz)');
      out.path = text.slice(colon + 1);
    }
  } else if (out.type === undefined) {
    throw new UsageError('--health-* details need --health tcp|http[:PATH]');
  }
  return { ...out, ...details };
}

const serverFields: FlagSpec[] = [
  { name: 'host', kind: 'string', help: 'real server IP', env: '' },
  { name: 'port', kind: 'int', help: 'real server port', env: '' },
  { name: 'forwarder', kind: 'string', help: 'g (gatewaying), i (ipip) or m (masquerading) (default g)', env: '' },
  { name: 'weight', kind: 'int', help: 'weight; 0 stops new connections (default 1)', env: '' },
  { name: 'upper', kind: 'int', help: 'upper connection threshold (default 0 = none)', env: '' },
  { name: 'lower', kind: 'int', help: 'lower connection threshold (default 0)', env: '' },
];

function pick(values: FlagValues, map: Record<string, string>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [flag, field] of Object.entries(map)) if (values[flag] !== undefined) out[field] = values[flag];
  return out;
}

const serviceMap = { host: 'host', port: 'port', type: 'type', scheduler: 'scheduler', persistence: 'persistence', netmask: 'netmask', hosts: 'hosts' };
const serverMap = { host: 'host', port: 'port', forwarder: 'forwarder', weight: 'weight', upper: 'upper_threshold', lower: 'lower_threshold' };

function need(pos: string[], n: number, usage: string): string[] {
  if (pos.length < n) throw new UsageError(`usage: ${usage}`);
  return pos;
}

/** A service id from a positional or from --type/--host/--port. */
function idFrom(pos: string | undefined, values: FlagValues): string {
  if (pos) return pos;
  if (values.host && values.port) return serviceId({ type: (values.type as Protocol) ?? 'tcp', host: String(values.host), port: Number(values.port) });
  throw new UsageError('give a service id, or --host and --port (and --type) to name it');
}

export const serviceSpecs = [...clientFlags, ...serviceFields, ...waitFlags];
export const serverSpecs = [...clientFlags, ...serverFields, ...waitFlags];

export async function serviceCommand(argv: string[]): Promise<void> {
  const [verb, ...rest] = argv;
  const specs = serviceSpecs;
  const usage = 'switchyard service add|list|show|set|remove [ID] [flags] | import FILE';
  const { values, positionals, help } = parseFlags(rest, specs);
  if (help || !verb || verb.startsWith('-')) {
    process.stdout.write(helpText(usage, 'Manage L4 virtual services (Portal API). `import FILE` replaces the whole set atomically, as PUT /services does.', specs));
    if (!verb && !help) throw new UsageError('missing subcommand');
    return;
  }
  const api = ApiClient.fromFlags(values);
  switch (verb) {
    case 'add': {
      const health = healthFrom(values);
      const r = await api.request('POST', '/services', { ...pick(values, serviceMap), ...(health ? { health } : {}) });
      return finishWrite(api, values, r);
    }
    case 'list':
      return print(values, (await api.request('GET', '/services')).data);
    case 'show':
      return print(values, (await api.request('GET', `/services/${encodeURIComponent(idFrom(positionals[0], values))}`)).data);
    case 'set': {
      const [id] = need(positionals, 1, 'switchyard service set ID [--host … --port … …]');
      const current = (await api.request<Record<string, unknown>>('GET', `/services/${encodeURIComponent(id)}`)).data;
      const { servers: _servers, id: _id, ...fields } = current;
      const health = healthFrom(values, current.health as Record<string, unknown> | undefined);
      const r = await api.request('PUT', `/services/${encodeURIComponent(id)}`, { ...fields, ...pick(values, serviceMap), ...(health ? { health } : {}) });
      return finishWrite(api, values, r);
    }
    case 'remove': {
      const r = await api.request('DELETE', `/services/${encodeURIComponent(idFrom(positionals[0], values))}`);
      return finishWrite(api, values, r);
    }
    case 'import': {
      // The whole set, replaced atomically: what PUT /services does.
      const [file] = need(positionals, 1, 'switchyard service import FILE (a JSON list of services, as PUT /services takes; - for stdin)');
      return importFile(api, values, file, {
        method: 'PUT',
        path: '/services',
        count: (body) => (Array.isArray(body) ? body.length : undefined),
        what: 'services',
        expect: 'a JSON list of services',
        prepareWait: async () => l4Waiter(api, values),
      });
    }
    default:
      throw new UsageError(`unknown subcommand "service ${verb}" (${usage})`);
  }
}

export async function serverCommand(argv: string[]): Promise<void> {
  const [verb, ...rest] = argv;
  const specs = serverSpecs;
  const usage = 'switchyard server add|list|show|remove SERVICE_ID [SERVER_ID] [flags]';
  const { values, positionals, help } = parseFlags(rest, specs);
  if (help || !verb || verb.startsWith('-')) {
    process.stdout.write(helpText(usage, 'Manage the real servers of an L4 service (Portal API).', specs));
    if (!verb && !help) throw new UsageError('missing subcommand');
    return;
  }
  const api = ApiClient.fromFlags(values);
  const svc = (id: string) => `/services/${encodeURIComponent(id)}/servers`;
  switch (verb) {
    case 'add': {
      const [id] = need(positionals, 1, 'switchyard server add SERVICE_ID --host H --port P [flags]');
      const r = await api.request('POST', svc(id), pick(values, serverMap));
      return finishWrite(api, values, r);
    }
    case 'list': {
      const [id] = need(positionals, 1, 'switchyard server list SERVICE_ID');
      return print(values, (await api.request('GET', svc(id))).data);
    }
    case 'show': {
      const [id, sid] = need(positionals, 2, 'switchyard server show SERVICE_ID SERVER_ID');
      return print(values, (await api.request('GET', `${svc(id)}/${encodeURIComponent(sid)}`)).data);
    }
    case 'remove': {
      const [id, sid] = need(positionals, 2, 'switchyard server remove SERVICE_ID SERVER_ID');
      const r = await api.request('DELETE', `${svc(id)}/${encodeURIComponent(sid)}`);
      return finishWrite(api, values, r);
    }
    default:
      throw new UsageError(`unknown subcommand "server ${verb}" (${usage})`);
  }
}

export async function hostsCommand(argv: string[]): Promise<void> {
  const [verb, ...rest] = argv;
  const usage = 'switchyard hosts list|show [ID]';
  const { values, positionals, help } = parseFlags(rest, clientFlags);
  if (help || !verb || verb.startsWith('-')) {
    process.stdout.write(helpText(usage, 'Agents and the revision each has applied.', clientFlags));
    if (!verb && !help) throw new UsageError('missing subcommand');
    return;
  }
  const api = ApiClient.fromFlags(values);
  if (verb === 'list') return print(values, (await api.request('GET', '/hosts')).data);
  if (verb === 'show') {
    const [id] = need(positionals, 1, 'switchyard hosts show ID');
    return print(values, (await api.request('GET', `/hosts/${encodeURIComponent(id)}`)).data);
  }
  throw new UsageError(`unknown subcommand "hosts ${verb}" (${usage})`);
}
