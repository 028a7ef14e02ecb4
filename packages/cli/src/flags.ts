/**
 * Flags for every command. Each flag has an environment variable
 * (SWITCHYARD_<NAME>) and a default, and `--help` is generated from the same
 * specs; precedence is flag, then environment, then default. Durations accept
 * 500ms, 5s, 30m, 2h or bare seconds.
 *
 * The daemons' flags are not written here at all: `flagsFromSchema` reads them
 * off the zod config schema the daemon validates (coordinator/agent
 * `config.ts`): every key with a description is a flag, named after the key
 * (`offerTtlMs` → `--offer-ttl`), with the schema's default. Adding a flag to a
 * daemon means adding a described key to its schema.
 */
import { parseArgs } from 'node:util';
import type { z } from 'zod';
import { formatDuration, formatListen, parseDuration, parseListen } from '@switchyard/shared';

/** `listen`: HOST:PORT or [v6]:PORT, becoming `{host, port}`. */
export type FlagKind = 'string' | 'int' | 'duration' | 'bool' | 'list' | 'listen';

export interface FlagSpec {
  name: string;
  kind: FlagKind;
  help: string;
  /** The default as text, as a user would type it (shown by --help). */
  default?: string;
  /** Environment variable; defaults to SWITCHYARD_<NAME_IN_CAPS>. Set to '' for none. */
  env?: string;
  /** Single-letter alias, e.g. 'h'. */
  short?: string;
  /** The only values allowed. */
  choices?: readonly string[];
  /** The config key this flag sets (flags read from a schema). */
  key?: string;
}

export type FlagValue = string | number | boolean | string[] | { host: string; port: number } | undefined;
export type FlagValues = Record<string, FlagValue>;

export class UsageError extends Error {}

export function envName(spec: FlagSpec): string {
  return spec.env ?? `SWITCHYARD_${spec.name.toUpperCase().replace(/-/g, '_')}`;
}

function convert(spec: FlagSpec, raw: string, source: string): FlagValue {
  if (spec.choices && !spec.choices.includes(raw)) throw new UsageError(`${source}: "${raw}" is not one of ${spec.choices.join('|')}`);
  switch (spec.kind) {
    case 'string':
      return raw;
    case 'int': {
      if (!/^-?\d+$/.test(raw)) throw new UsageError(`${source}: "${raw}" is not a whole number`);
      return Number(raw);
    }
    case 'duration':
    case 'listen':
      try {
        return spec.kind === 'duration' ? parseDuration(raw) : parseListen(raw);
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
}

/** node:util's codes → our wording, with the flag it is about. */
function usageError(e: unknown): UsageError {
  const { code, message } = e as { code?: string; message: string };
  const flag = /'(-[^' ]+)/.exec(message)?.[1];
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') return new UsageError(`unknown flag ${flag}`);
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && /argument missing|ambiguous/.test(message)) return new UsageError(`${flag} needs a value`);
  return new UsageError(message);
}

/** Parses argv against the specs; precedence: flag, then environment, then default. */
export function parseFlags(argv: string[], specs: FlagSpec[], env: NodeJS.ProcessEnv = process.env): Parsed {
  const names = new Set(specs.map((s) => s.name));
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = { help: { type: 'boolean', short: 'h' } };
  for (const s of specs) {
    options[s.name] = { type: s.kind === 'bool' ? 'boolean' : 'string', ...(s.short ? { short: s.short } : {}) };
    // --no-X turns a true default or environment value off.
    if (s.kind === 'bool' && !names.has(`no-${s.name}`)) options[`no-${s.name}`] = { type: 'boolean' };
  }
  let parsed: { values: Record<string, string | boolean | undefined>; positionals: string[] };
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true }) as typeof parsed;
  } catch (e) {
    throw usageError(e);
  }
  const values: FlagValues = {};
  for (const spec of specs) {
    const given = parsed.values[spec.name];
    if (parsed.values[`no-${spec.name}`] && !names.has(`no-${spec.name}`)) values[spec.name] = false;
    else if (typeof given === 'boolean') values[spec.name] = given;
    else if (given !== undefined) values[spec.name] = convert(spec, given, `--${spec.name}`);
    else {
      const e = envName(spec);
      const fromEnv = e ? env[e] : undefined;
      if (fromEnv !== undefined && fromEnv !== '') values[spec.name] = convert(spec, fromEnv, e);
      else if (spec.default !== undefined) values[spec.name] = convert(spec, spec.default, `default of --${spec.name}`);
    }
  }
  return { values, positionals: parsed.positionals, help: Boolean(parsed.values.help) };
}

export function helpText(usage: string, description: string, specs: FlagSpec[]): string {
  const rows = specs.map((s) => {
    const left = `  ${s.short ? `-${s.short}, ` : ''}--${s.name}${s.kind === 'bool' ? '' : ` <${s.choices ? s.choices.join('|') : s.kind}>`}`;
    const extra = [s.default !== undefined ? `default ${s.default === '' ? '""' : s.default}` : undefined, envName(s) ? `env ${envName(s)}` : undefined]
      .filter(Boolean)
      .join(', ');
    return `${left.padEnd(30)} ${s.help}${extra ? ` (${extra})` : ''}`;
  });
  return `Usage: ${usage}\n\n${description}\n\nFlags:\n${rows.join('\n')}\n  -h, --help                     this help\n`;
}

// ---- flags read off a daemon's zod config schema ----

type AnySchema = z.ZodType & { def: { type: string; innerType?: AnySchema; defaultValue?: unknown; shape?: Record<string, unknown> }; options?: readonly string[] };

/** `offerTtlMs` → `offer-ttl`: keys in milliseconds are durations, and say so in their type, not their flag. */
function flagName(key: string): string {
  return key.replace(/Ms$/, '').replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

function kindOf(key: string, schema: AnySchema): FlagKind {
  switch (schema.def.type) {
    case 'number':
      return key.endsWith('Ms') ? 'duration' : 'int';
    case 'boolean':
      return 'bool';
    case 'array':
      return 'list';
    case 'object':
      // The one object shape a config holds is a listen address.
      if (schema.def.shape && 'host' in schema.def.shape && 'port' in schema.def.shape) return 'listen';
      break;
    case 'string':
    case 'enum':
      return 'string';
  }
  throw new Error(`config key ${key}: no flag kind for a ${schema.def.type}`);
}

function defaultText(kind: FlagKind, value: unknown): string {
  switch (kind) {
    case 'duration':
      return formatDuration(value as number);
    case 'list':
      return (value as string[]).join(',');
    case 'listen':
      return formatListen(value as { host: string; port: number });
    default:
      return String(value);
  }
}

/**
 * The flags of a daemon: one per described key of its config schema, with the
 * schema's default (a function default, like the hostname, is evaluated now).
 */
export function flagsFromSchema(schema: z.ZodObject): FlagSpec[] {
  const specs: FlagSpec[] = [];
  for (const [key, field] of Object.entries(schema.shape) as [string, AnySchema][]) {
    if (!field.description) continue;
    let inner = field;
    let def: unknown;
    while (inner.def.type === 'default' || inner.def.type === 'optional') {
      if (inner.def.type === 'default') def = inner.def.defaultValue;
      inner = inner.def.innerType as AnySchema;
    }
    const kind = kindOf(key, inner);
    specs.push({
      name: flagName(key),
      key,
      kind,
      help: field.description,
      ...(def !== undefined ? { default: defaultText(kind, def) } : {}),
      ...(inner.def.type === 'enum' ? { choices: inner.options } : {}),
    });
  }
  return specs;
}

/** The config input the flags describe: each schema flag's value under its key. */
export function configFrom(specs: FlagSpec[], values: FlagValues): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const s of specs) if (s.key && values[s.name] !== undefined) out[s.key] = values[s.name];
  return out;
}

/** Common flags of the API client commands. */
export const clientFlags: FlagSpec[] = [
  { name: 'api', kind: 'string', default: 'http://127.0.0.1:8443', help: 'coordinator URL' },
  { name: 'token', kind: 'string', help: 'X-AUTH-TOKEN to send' },
  { name: 'json', kind: 'bool', default: 'false', help: 'print raw JSON (the default output is JSON too, pretty-printed)' },
  { name: 'insecure', kind: 'bool', default: 'false', help: 'accept any TLS certificate (self-signed coordinators)' },
];
