/**
 * `switchyard ports …`: Portmaster's port allocation, spoken to the
 * coordinator's Portmaster-compatible API (/v1/services…).
 *
 *   ports service add NAME --start S --end E [--description D]
 *   ports service list | show NAME | set NAME [--start --end --description] | remove NAME
 *   ports offer SERVICE INSTANCE [--accept]
 *   ports accept|reject SERVICE SECRET
 *   ports list SERVICE [--offers]
 *   ports find|release SERVICE PORT_OR_INSTANCE
 */
import { ApiClient, print } from '../client.js';
import { clientFlags, helpText, parseFlags, UsageError, type FlagSpec, type FlagValues } from '../flags.js';

const serviceFields: FlagSpec[] = [
  { name: 'start', kind: 'int', help: 'first port of the range (1024–49151)', env: '' },
  { name: 'end', kind: 'int', help: 'last port of the range, inclusive (1024–49151)', env: '' },
  { name: 'description', kind: 'string', help: 'free text', env: '' },
];

const portFlags: FlagSpec[] = [
  { name: 'accept', kind: 'bool', default: 'false', help: 'offer: accept the offer at once (prints the instance)', env: '' },
  { name: 'offers', kind: 'bool', default: 'false', help: 'list: the open offers instead of the allocated ports', env: '' },
];

const USAGE = `switchyard ports service add|list|show|set|remove …
       switchyard ports offer SERVICE INSTANCE [--accept]
       switchyard ports accept|reject SERVICE SECRET
       switchyard ports list SERVICE [--offers]
       switchyard ports find|release SERVICE PORT_OR_INSTANCE`;

const DESCRIPTION = `Port allocation (Portmaster API). A service owns a port range; an instance
asks for an offer of the lowest free port, then accepts it (or it expires
after the coordinator's --offer-ttl). PORT_OR_INSTANCE: all digits = a port.`;

function need(pos: string[], n: number, usage: string): string[] {
  if (pos.length < n) throw new UsageError(`usage: ${usage}`);
  if (pos.length > n) throw new UsageError(`unexpected argument "${pos[n]}" (usage: ${usage})`);
  return pos;
}

const enc = encodeURIComponent;
const svcPath = (name: string) => `/v1/services/${enc(name)}`;

export const portsSpecs = [...clientFlags, ...serviceFields, ...portFlags];

export async function portsCommand(argv: string[]): Promise<void> {
  const [verb, ...rest] = argv;
  const specs = portsSpecs;
  const { values, positionals, help } = parseFlags(rest, specs);
  if (help || !verb || verb.startsWith('-')) {
    process.stdout.write(helpText(USAGE, DESCRIPTION, specs));
    if (!verb && !help) throw new UsageError('missing subcommand');
    return;
  }
  const api = ApiClient.fromFlags(values);
  switch (verb) {
    case 'service':
      return serviceVerb(api, positionals, values);
    case 'offer': {
      const [service, instance] = need(positionals, 2, 'switchyard ports offer SERVICE INSTANCE [--accept]');
      const offer = await api.request<{ secret: string }>('POST', `${svcPath(service)}/offers`, { name: instance });
      if (!values.accept) return print(values, offer.data);
      return print(values, (await api.request('POST', `${svcPath(service)}/offers/${enc(offer.data.secret)}/accept`)).data);
    }
    case 'accept': {
      const [service, secret] = need(positionals, 2, 'switchyard ports accept SERVICE SECRET');
      return print(values, (await api.request('POST', `${svcPath(service)}/offers/${enc(secret)}/accept`)).data);
    }
    case 'reject': {
      const [service, secret] = need(positionals, 2, 'switchyard ports reject SERVICE SECRET');
      await api.request('POST', `${svcPath(service)}/offers/${enc(secret)}/reject`);
      process.stderr.write(`offer ${secret} rejected\n`);
      return;
    }
    case 'list': {
      const [service] = need(positionals, 1, 'switchyard ports list SERVICE [--offers]');
      return print(values, (await api.request('GET', `${svcPath(service)}/${values.offers ? 'offers' : 'ports'}`)).data);
    }
    case 'find': {
      const [service, which] = need(positionals, 2, 'switchyard ports find SERVICE PORT_OR_INSTANCE');
      return print(values, (await api.request('GET', `${svcPath(service)}/ports/${enc(which)}`)).data);
    }
    case 'release': {
      const [service, which] = need(positionals, 2, 'switchyard ports release SERVICE PORT_OR_INSTANCE');
      await api.request('DELETE', `${svcPath(service)}/ports/${enc(which)}`);
      process.stderr.write(`released ${which} of ${service}\n`);
      return;
    }
    default:
      throw new UsageError(`unknown subcommand "ports ${verb}"\nusage: ${USAGE}`);
  }
}

async function serviceVerb(api: ApiClient, positionals: string[], values: FlagValues): Promise<void> {
  const [verb, ...pos] = positionals;
  const fields = () => {
    const out: Record<string, unknown> = {};
    for (const f of ['start', 'end', 'description']) if (values[f] !== undefined) out[f] = values[f];
    return out;
  };
  switch (verb) {
    case 'add': {
      const [name] = need(pos, 1, 'switchyard ports service add NAME --start S --end E [--description D]');
      if (values.start === undefined || values.end === undefined) throw new UsageError('ports service add needs --start and --end');
      return print(values, (await api.request('POST', '/v1/services', { name, ...fields() })).data);
    }
    case 'list':
      need(pos, 0, 'switchyard ports service list');
      return print(values, (await api.request('GET', '/v1/services')).data);
    case 'show': {
      const [name] = need(pos, 1, 'switchyard ports service show NAME');
      return print(values, (await api.request('GET', svcPath(name))).data);
    }
    case 'set': {
      const [name] = need(pos, 1, 'switchyard ports service set NAME [--start S] [--end E] [--description D]');
      const current = (await api.request<Record<string, unknown>>('GET', svcPath(name))).data;
      return print(values, (await api.request('PUT', svcPath(name), { ...current, ...fields() })).data);
    }
    case 'remove': {
      const [name] = need(pos, 1, 'switchyard ports service remove NAME');
      await api.request('DELETE', svcPath(name));
      process.stderr.write(`service ${name} removed with its offers and ports\n`);
      return;
    }
    default:
      throw new UsageError(`usage: switchyard ports service add|list|show|set|remove …${verb ? ` (unknown "${verb}")` : ''}`);
  }
}
