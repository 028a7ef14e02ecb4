/**
 * Flags for every command from one table: each flag has an environment
 * variable (SWITCHYARD_<NAME>) and a documented default, and `--help` is
 * generated from the same table. Durations accept 500ms, 5s, 30m, 2h or bare
 * seconds.
 */
import { parseDuration } from '@switchyard/shared';

export type FlagKind = 'string' | 'int' | 'duration' | 'bool' | 'list';

export interface FlagSpec {
  name: string;
  kind: FlagKind;
  help: string;
  default?: string;
  /** Environment variable; defaults to SWITCHYARD_<NAME_IN_CAPS>. Set to '' for none. */
  env?: string;
  /** Single-letter alias, e.g. 'h'. */
  short?: string;
}

export type FlagValue = string | number | boolean | string[] | undefined;
export type FlagValues = Record<string, FlagValue>;

export class UsageError extends Error {}

export function envName(spec: FlagSpec): string {
  return spec.env ?? `SWITCHYARD_${spec.name.toUpperCase().replace(/-/g, '_')}`;
}

function convert(spec: FlagSpec, raw: string, source: string): FlagValue {
  switch (spec.kind) {
    case 'string':
      return raw;
    case 'int': {
      if (!/^-?\d+$/.test(raw)) throw new UsageError(`${source}: "${raw}" is not a whole number`);
      return Number(raw);
    }
    case 'duration':
      try {
        return parseDuration(raw);
      } catch (e) {
        throw new UsageError(`${source}: ${(e as Error).message}`);
      }
    case 'bool':
      if (/^(1|true|yes|on)$/i.test(raw)) return true;
      if (/^(0|false|no|off|)$/i.test(raw)) return false;
      throw new UsageError(`${source}: "${raw}" is not true or false`);
    case 'list':
      return raw.split(',').map((s) => s.trim()).filter(Boolean);
  }
}

export interface Parsed {
  values: FlagValues;
  positionals: string[];
  help: boolean;
  /** Flags given on the command line or in the environment (not defaults). */
  given: Set<string>;
}

/** Parses argv against the specs; precedence: flag, then environment, then default. */
export function parseFlags(argv: string[], specs: FlagSpec[], env: NodeJS.ProcessEnv = process.env): Parsed {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const byShort = new Map(specs.filter((s) => s.short).map((s) => [s.short as string, s]));
  const values: FlagValues = {};
  const given = new Set<string>();
  const positionals: string[] = [];
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (arg === '--help' || arg === '-h') {
      help = true;
      continue;
    }
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      let name = arg.slice(2, eq < 0 ? undefined : eq);
      let negated = false;
      if (!byName.has(name) && name.startsWith('no-') && byName.get(name.slice(3))?.kind === 'bool') {
        name = name.slice(3);
        negated = true;
      }
      const spec = byName.get(name);
      if (!spec) throw new UsageError(`unknown flag --${name}`);
      let raw: string;
      if (eq >= 0) raw = arg.slice(eq + 1);
      else if (spec.kind === 'bool') raw = negated ? 'false' : 'true';
      else {
        if (i + 1 >= argv.length) throw new UsageError(`--${name} needs a value`);
        raw = argv[++i];
      }
      values[spec.name] = convert(spec, raw, `--${name}`);
      given.add(spec.name);
      continue;
    }
    if (/^-[A-Za-z]$/.test(arg) && byShort.has(arg.slice(1))) {
      const spec = byShort.get(arg.slice(1)) as FlagSpec;
      if (spec.kind === 'bool') values[spec.name] = true;
      else {
        if (i + 1 >= argv.length) throw new UsageError(`${arg} needs a value`);
        values[spec.name] = convert(spec, argv[++i], arg);
      }
      given.add(spec.name);
      continue;
    }
    positionals.push(arg);
  }
  for (const spec of specs) {
    if (values[spec.name] !== undefined) continue;
    const e = envName(spec);
    const fromEnv = e ? env[e] : undefined;
    if (fromEnv !== undefined && fromEnv !== '') {
      values[spec.name] = convert(spec, fromEnv, e);
      given.add(spec.name);
    } else if (spec.default !== undefined) {
      values[spec.name] = convert(spec, spec.default, `default of --${spec.name}`);
    }
  }
  return { values, positionals, help, given };
}

export function helpText(usage: string, description: string, specs: FlagSpec[]): string {
  const rows = specs.map((s) => {
    const left = `  ${s.short ? `-${s.short}, ` : ''}--${s.name}${s.kind === 'bool' ? '' : ` <${s.kind}>`}`;
    const extra = [s.default !== undefined ? `default ${s.default === '' ? '""' : s.default}` : undefined, envName(s) ? `env ${envName(s)}` : undefined]
      .filter(Boolean)
      .join(', ');
    return `${left.padEnd(30)} ${s.help}${extra ? ` (${extra})` : ''}`;
  });
  return `Usage: ${usage}\n\n${description}\n\nFlags:\n${rows.join('\n')}\n  -h, --help                     this help\n`;
}

/** Common flags of the API client commands. */
export const clientFlags: FlagSpec[] = [
  { name: 'api', kind: 'string', default: 'http://127.0.0.1:8443', help: 'coordinator URL' },
  { name: 'token', kind: 'string', help: 'X-AUTH-TOKEN to send' },
  { name: 'json', kind: 'bool', default: 'false', help: 'print raw JSON (the default output is JSON too, pretty-printed)' },
  { name: 'insecure', kind: 'bool', default: 'false', help: 'accept any TLS certificate (self-signed coordinators)' },
];
