/**
 * Service discovery, skyapi-compatible.
 *
 * `ProvideQuery` is the query string of `GET /provide` (skyapi's parameters,
 * plus Switchyard's `lb`); `ProviderRecord` is the value written to etcd,
 * exactly the four fields skyapi writes; `SkyDnsRecord` is how any SkyDNS
 * record under /skydns is read back (SkyDNS and CoreDNS write more fields and
 * omit zero values, so reading is lenient where writing is exact).
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { canonicalIp } from './l4.js';

/**
 * One DNS label as a service or category name. Lower-cased on the way in:
 * DNS names are case-insensitive, etcd keys are not, and a record under
 * `Foo` could never be found by a resolver that asks for `foo`. A dot would
 * make the name deeper than its key, a slash would break the key.
 */
const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;
const HOSTNAME = /^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$/;

export function isDnsLabel(s: string): boolean {
  return LABEL.test(s);
}

/** Canonical form of a provider host: an IP literal, or a lower-case host name without trailing dot. */
export function canonicalHost(host: string): string | undefined {
  const ip = canonicalIp(host);
  if (ip !== undefined) return ip;
  const name = host.toLowerCase().replace(/\.$/, '');
  return HOSTNAME.test(name) && !/^[0-9.]+$/.test(name) ? name : undefined;
}

/** Hosts that mean "wherever this connection comes from", as in skyapi. */
export function isUnspecifiedHost(host: string): boolean {
  return host === '' || host === '0.0.0.0' || host === '::' || host === '[::]';
}

const required = (name: string) => ({
  error: (iss: { input: unknown }) => (iss.input === undefined ? `${name} is required` : `${name} must be a string`),
});

function wholeNumber(name: string, min: number, max: number) {
  return z
    .string(required(name))
    .regex(/^\d{1,10}$/, { error: `${name} must be a whole number` })
    .transform(Number)
    .pipe(z.int().min(min, { error: `${name} must be at least ${min}` }).max(max, { error: `${name} must be at most ${max}` }));
}

const label = (name: string) =>
  z
    .string(required(name))
    .transform((s) => s.toLowerCase())
    .refine(isDnsLabel, { error: `${name} must be a DNS label (letters, digits, "-" or "_", at most 63)` });

/**
 * `GET /provide?service=foo&port=9999[&category=a,b][&host=h][&priority=1][&weight=100][&prefix=p][&lb=id]`.
 * `host` is left undefined when absent or unspecified (0.0.0.0, ::): the
 * caller fills in the connection's peer address. Unknown parameters (such as
 * X-AUTH-TOKEN) are ignored.
 */
export const ProvideQuery = z.object({
  service: label('service'),
  port: wholeNumber('port', 1, 65535),
  category: z
    .string()
    .default('services')
    .transform((s) => s.split(',').map((c) => c.trim().toLowerCase()))
    .refine((cs) => cs.every(isDnsLabel), {
      error: 'category must be a comma-separated list of DNS labels (letters, digits, "-" or "_", at most 63 each)',
    }),
  host: z
    .string()
    .optional()
    .transform((h, ctx) => {
      if (h === undefined || isUnspecifiedHost(h)) return undefined;
      const c = canonicalHost(h.replace(/^\[(.*)\]$/, '$1'));
      if (c === undefined) ctx.addIssue({ code: 'custom', message: 'host must be an IP address or a host name' });
      return c;
    }),
  priority: wholeNumber('priority', 0, 65535).default(1),
  weight: wholeNumber('weight', 0, 65535).default(100),
  /**
   * skyapi's `Opts.Prefix`: the record id becomes `<prefix>-<20 hex>`. Empty
   * means none, as in skyapi (its Go client sends none then). Lower-cased like
   * every other label; at most 38 characters so that the id, with room for a
   * duplicate's suffix, stays one DNS label (63).
   */
  prefix: z
    .string()
    .optional()
    .transform((p) => (p ? p.toLowerCase() : undefined))
    .refine((p) => p === undefined || (p.length <= 38 && isDnsLabel(p)), {
      error: 'prefix must be a DNS label of at most 38 characters (letters, digits, "-" or "_")',
    }),
  lb: z.string().min(1, { error: 'lb must name an L4 service' }).optional(),
});
export type ProvideQuery = z.output<typeof ProvideQuery>;

/** Human-readable summary of why a /provide query was refused. */
export function describeProvideError(error: z.ZodError): string {
  return error.issues.map((i) => i.message).join('; ');
}

/** The value a provider connection writes: what skyapi writes, and what SkyDNS/CoreDNS read. */
export interface ProviderRecord {
  host: string;
  port: number;
  priority: number;
  weight: number;
}

/** Fixed field order, so equal records are equal strings. */
export function encodeProviderRecord(r: ProviderRecord): string {
  return JSON.stringify({ host: r.host, port: r.port, priority: r.priority, weight: r.weight });
}

/**
 * Any SkyDNS record (msg.Service). Zero values are omitted by SkyDNS's
 * writers, so every field but host is optional; unknown fields are dropped.
 */
export const SkyDnsRecord = z.object({
  host: z.string().min(1),
  port: z.int().min(0).max(65535).optional(),
  priority: z.int().min(0).max(65535).optional(),
  weight: z.int().min(0).max(65535).optional(),
  /** Seconds; SkyDNS takes the smaller of this and the key's own TTL. */
  ttl: z.int().min(0).max(2 ** 31 - 1).optional(),
});
export type SkyDnsRecord = z.infer<typeof SkyDnsRecord>;

/** Parses an etcd value under /skydns; throws on anything SkyDNS would not read. */
export function parseSkyDnsRecord(value: Buffer | string): SkyDnsRecord {
  return SkyDnsRecord.parse(JSON.parse(value.toString()));
}

/** 4, 6, or 0 for a host name. */
export function hostFamily(host: string): 0 | 4 | 6 {
  const f = isIP(host);
  return f === 4 ? 4 : f === 6 ? 6 : 0;
}
