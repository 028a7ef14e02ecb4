/**
 * `switchyard cen …` and `switchyard cin …`: Leviathan's container networks,
 * spoken to the coordinator's Leviathan-compatible API (/cen…, /cin…).
 *
 *   cen import FILE | make ID… | destroy ID… | list | show ID | remove ID
 *   cin import FILE | make ID… | destroy ID… | show ID
 */
import { ApiClient, print } from '../client.js';
import { clientFlags, helpText, parseFlags, UsageError } from '../flags.js';
import { importFile } from './import.js';

// No --wait here: a host reports one applied revision, the lowest of its
// roles', and the L4 role's moves only with L4 changes, so a Leviathan write's
// revision is never reached by a host idle in L4. Follow CEN/CIN status
// (`cen show`) instead.
export const leviathanSpecs = [...clientFlags];
const specs = leviathanSpecs;
const enc = encodeURIComponent;

function need(pos: string[], min: number, usage: string): string[] {
  if (pos.length < min) throw new UsageError(`usage: ${usage}`);
  return pos;
}

export async function cenCommand(argv: string[]): Promise<void> {
  const [verb, ...rest] = argv;
  const usage = 'switchyard cen import FILE | make ID… | destroy ID… | list | show ID | remove ID';
  const { values, positionals, help } = parseFlags(rest, specs);
  if (help || !verb || verb.startsWith('-')) {
    process.stdout.write(helpText(usage, 'Container edge networks (Leviathan API). A CEN file is {"cenList":[{"cenID","containerIDs"}]}; import is one transaction.', specs));
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
      });
    }
    case 'make':
    case 'destroy': {
      const ids = need(positionals, 1, `switchyard cen ${verb} ID…`);
      const r = await api.request('POST', `/cen/${verb}`, ids);
      return print(values, r.data);
    }
    case 'list':
      return print(values, (await api.request('GET', '/cen')).data);
    case 'show': {
      const [id] = need(positionals, 1, 'switchyard cen show ID');
      return print(values, (await api.request('GET', `/cen/${enc(id)}`)).data);
    }
    case 'remove': {
      const [id] = need(positionals, 1, 'switchyard cen remove ID');
      const r = await api.request('DELETE', `/cen/${enc(id)}`);
      return print(values, r.data);
    }
    default:
      throw new UsageError(`unknown subcommand "cen ${verb}" (${usage})`);
  }
}

export async function cinCommand(argv: string[]): Promise<void> {
  const [verb, ...rest] = argv;
  const usage = 'switchyard cin import FILE | make ID… | destroy ID… | show ID';
  const { values, positionals, help } = parseFlags(rest, specs);
  if (help || !verb || verb.startsWith('-')) {
    process.stdout.write(helpText(usage, 'Container interconnect networks (Leviathan API). A CIN file is {"cin1": ["cen1", …]}.', specs));
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
      });
    }
    case 'make':
    case 'destroy': {
      const ids = need(positionals, 1, `switchyard cin ${verb} ID…`);
      const r = await api.request('POST', `/cin/${verb}`, ids);
      return print(values, r.data);
    }
    case 'show': {
      const [id] = need(positionals, 1, 'switchyard cin show ID');
      return print(values, (await api.request('GET', `/cin/${enc(id)}`)).data);
    }
    default:
      throw new UsageError(`unknown subcommand "cin ${verb}" (${usage})`);
  }
}
