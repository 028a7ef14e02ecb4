/**
 * `switchyard cen …` and `switchyard cin …`: Leviathan's container networks,
 * spoken to the coordinator's Leviathan-compatible API (/cen…, /cin…).
 *
 *   cen import FILE | make ID… | destroy ID… | list | show ID | remove ID
 *   cin import FILE | make ID… | destroy ID… | list | show ID
 *
 * Every write takes --wait (leviathan-wait.ts).
 */
import { ApiClient, print } from '../client.js';
import { clientFlags, helpText, parseFlags, UsageError, type FlagValues } from '../flags.js';
import { finishWrite, writeFlags } from '../progress.js';
import { importFile } from './import.js';
import { prepareLevWait, type LevKind } from './leviathan-wait.js';

export const leviathanSpecs = [...clientFlags, ...writeFlags];
const specs = leviathanSpecs;
const enc = encodeURIComponent;

const WAIT_HELP = `--wait: after a write, wait until every host that holds its objects (before or
after it) has applied it: that host's agent's topology report (GET /leviathan/hosts)
reaches the write's revision. An error the agent reports for that revision ends
the wait at once; after --wait-timeout it exits 1 naming the hosts that lag and
their objects.`;

function need(pos: string[], min: number, usage: string): string[] {
  if (pos.length < min) throw new UsageError(`usage: ${usage}`);
  return pos;
}

/** make, destroy, remove: the write (its ids in the body for POSTs), its answer, and with --wait the wait. */
async function write(api: ApiClient, values: FlagValues, kind: LevKind, ids: string[], method: 'POST' | 'DELETE', path: string): Promise<void> {
  const wait = await prepareLevWait(api, values, { kind, ids });
  const r = await api.request(method, path, method === 'POST' ? ids : undefined);
  return wait ? finishWrite(api, values, r, wait) : print(values, r.data);
}

export async function cenCommand(argv: string[]): Promise<void> {
  const [verb, ...rest] = argv;
  const usage = 'switchyard cen import FILE | make ID… | destroy ID… | list | show ID | remove ID';
  const { values, positionals, help } = parseFlags(rest, specs);
  if (help || !verb || verb.startsWith('-')) {
    process.stdout.write(helpText(usage, `Container edge networks (Leviathan API). A CEN file is {"cenList":[{"cenID","containerIDs"}]};
import is one transaction.\n\n${WAIT_HELP} import --wait waits on every host with a container the file
names: its agent makes the containers' namespaces, made CEN or not.`, specs));
    if (!verb && !help) throw new UsageError('missing subcommand');
    return;
  }
  const api = ApiClient.fromFlags(values);
  switch (verb) {
    case 'import': {
      const [file] = need(positionals, 1, 'switchyard cen import FILE (- for stdin)');
      return importFile(api, values, file, {
        method: 'POST',
        path: '/cen/import',
        count: (b) => (b && typeof b === 'object' && Array.isArray((b as { cenList?: unknown }).cenList) ? (b as { cenList: unknown[] }).cenList.length : undefined),
        what: 'CENs',
        expect: 'a CEN file ({"cenList": [...]})',
        prepareWait: (b) => prepareLevWait(api, values, { kind: 'cen', ids: (b as { cenList: { cenID?: unknown }[] }).cenList.map((e) => e?.cenID).filter((id) => typeof id === 'string'), placing: true }),
      });
    }
    case 'make':
    case 'destroy':
      return write(api, values, 'cen', need(positionals, 1, `switchyard cen ${verb} ID…`), 'POST', `/cen/${verb}`);
    case 'list':
      return print(values, (await api.request('GET', '/cen')).data);
    case 'show': {
      const [id] = need(positionals, 1, 'switchyard cen show ID');
      return print(values, (await api.request('GET', `/cen/${enc(id)}`)).data);
    }
    case 'remove': {
      const [id] = need(positionals, 1, 'switchyard cen remove ID');
      return write(api, values, 'cen', [id], 'DELETE', `/cen/${enc(id)}`);
    }
    default:
      throw new UsageError(`unknown subcommand "cen ${verb}" (${usage})`);
  }
}

export async function cinCommand(argv: string[]): Promise<void> {
  const [verb, ...rest] = argv;
  const usage = 'switchyard cin import FILE | make ID… | destroy ID… | list | show ID';
  const { values, positionals, help } = parseFlags(rest, specs);
  if (help || !verb || verb.startsWith('-')) {
    process.stdout.write(helpText(usage, `Container interconnect networks (Leviathan API). A CIN file is {"cin1": ["cen1", …]}.\n\n${WAIT_HELP} An import changes hosts only for CINs already made (a CIN has no
hosts until made), so import --wait mostly has nothing to wait for.`, specs));
    if (!verb && !help) throw new UsageError('missing subcommand');
    return;
  }
  const api = ApiClient.fromFlags(values);
  switch (verb) {
    case 'import': {
      const [file] = need(positionals, 1, 'switchyard cin import FILE (- for stdin)');
      return importFile(api, values, file, {
        method: 'POST',
        path: '/cin/import',
        count: (b) => (b && typeof b === 'object' && !Array.isArray(b) ? Object.keys(b).length : undefined),
        what: 'CINs',
        expect: 'a CIN file ({"cin1": ["cen1", …]})',
        prepareWait: (b) => prepareLevWait(api, values, { kind: 'cin', ids: Object.keys(b as object) }),
      });
    }
    case 'make':
    case 'destroy':
      return write(api, values, 'cin', need(positionals, 1, `switchyard cin ${verb} ID…`), 'POST', `/cin/${verb}`);
    case 'list':
      return print(values, (await api.request('GET', '/cin')).data);
    case 'show': {
      const [id] = need(positionals, 1, 'switchyard cin show ID');
      return print(values, (await api.request('GET', `/cin/${enc(id)}`)).data);
    }
    default:
      throw new UsageError(`unknown subcommand "cin ${verb}" (${usage})`);
  }
}
