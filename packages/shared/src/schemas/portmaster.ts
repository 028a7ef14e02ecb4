/**
 * Port allocation as django-portmaster defines it: services own port ranges,
 * instances take ports through offers that must be accepted.
 *
 * One schema per resource: the coordinator answers with `PmService`/`PmOffer`/
 * `PmInstance`, parses etcd values with the `*Record` schemas, documents
 * bodies with the `*Input` schemas, and reads bodies field by field as Django
 * REST framework does (`readServiceFields`, `readOfferName`), so that errors
 * come back in DRF's shape and words.
 */
import { z } from 'zod';
import { errorRegistry, SwitchyardError, type ErrorCode } from '../errors.js';
import { isSafeName } from '../names.js';

/**
 * The ports a range may use, inclusive. Portmaster refuses a bound when
 * `value < 1024 or value >= 49152` (serializers.py), i.e. it allows exactly
 * 1024–49151: no privileged port, nothing of the IANA ephemeral range
 * (49152–65535). Its README's "(>49152)" is off by one; the code wins.
 */
export const PM_PORT_MIN = 1024;
export const PM_PORT_MAX = 49151;

/** Portmaster's name columns are 64 characters; ours are also key segments, so safe tokens only. */
const token = (what: string) => z.string().refine((s) => isSafeName(s, 64), { message: `${what}: ${errorRegistry.PM_BAD_NAME.message}` });

export const PmServiceName = token('service name');
export const PmInstanceName = token('instance name');

/** Django REST framework's IntegerField also takes numeric strings ("5000", what form bodies carry). */
const integer = z.union([z.int(), z.string()]);

/**
 * The documented bodies (OpenAPI). Bodies are read by `readServiceFields` /
 * `readOfferName` below, with Django REST framework's semantics and messages.
 */
export const PmServiceInput = z.object({
  name: PmServiceName,
  description: z.string().nullable().optional(),
  start: integer,
  end: integer,
});

/** PATCH /v1/services/:name: any subset; `name`, when given, must be the service's own. */
export const PmServicePatch = PmServiceInput.partial();

export const PmService = z.object({
  name: z.string(),
  description: z.string().nullable(),
  start: z.int(),
  end: z.int(),
});
export type PmService = z.infer<typeof PmService>;

export const PmOfferInput = z.object({ name: PmInstanceName });

export const PmOffer = z.object({
  service: z.string(),
  name: z.string(),
  port: z.int(),
  secret: z.string(),
  created: z.string(),
});
export type PmOffer = z.infer<typeof PmOffer>;

export const PmInstance = z.object({
  service: z.string(),
  name: z.string(),
  port: z.int(),
  created: z.string(),
});
export type PmInstance = z.infer<typeof PmInstance>;

// ---------- etcd values ----------

/** Value of `pm/ranges`: every service's range, the guard all service writes compare. */
export const PmRangesRecord = z.record(z.string(), z.object({ start: z.int(), end: z.int() }));
export type PmRangesRecord = z.infer<typeof PmRangesRecord>;

/** Value of `pm/ports/<service>/<port>`: who holds the port. `secret` present = an open offer. */
export const PmPortRecord = z.object({
  name: z.string(),
  created: z.string(),
  secret: z.string().optional(),
});
export type PmPortRecord = z.infer<typeof PmPortRecord>;

/** Value of `pm/names/<service>/<instance>`. */
export const PmNameRecord = z.object({ port: z.int() });

/** Value of `pm/offers/<service>/<secret>`. */
export const PmOfferRecord = PmOffer;

// ---------- rules ----------

/** Do two inclusive ranges share a port? */
export function rangesOverlap(a: { start: number; end: number }, b: { start: number; end: number }): boolean {
  return a.start <= b.end && b.start <= a.end;
}

/**
 * A stored ISO time as Django REST framework prints a DateTimeField:
 * microseconds when there is a fraction ("…18.365000Z"), none when it is zero.
 */
export function drfDateTime(iso: string): string {
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?Z$/.exec(iso);
  if (!m) return iso;
  const fraction = (m[2] ?? '').padEnd(6, '0').slice(0, 6);
  return /^0*$/.test(fraction) ? `${m[1]}Z` : `${m[1]}.${fraction}Z`;
}

/** All digits → a port number; anything else → an instance name (Portmaster's `isdecimal()`). */
export function parsePortOrName(text: string): { port: number } | { name: string } {
  return /^\d+$/.test(text) ? { port: Number(text) } : { name: text };
}

// ---------- request bodies, as Django REST framework reads them ----------
//
// Portmaster's clients index its error bodies, which Django REST framework
// (DRF) builds: `{"<field>": ["<message>"]}` for field errors, collected over
// every field; `{"non_field_errors": [...]}` for the serializer's own checks,
// which only run once every field is valid; a bare list for a
// ValidationError raised in a view. The functions below read a body with
// DRF's field semantics (the DRF of Portmaster's time, 3.6/3.7) so the same
// body gets the same answer, word for word.

/** An error body on a Portmaster route: field → messages, or a bare list of messages. */
export type PmErrorBody = Record<string, string[]> | string[];

/** A 4xx on a Portmaster route whose body is DRF's, not `{error, code}`. */
export class PmRefusal extends SwitchyardError {
  constructor(
    code: ErrorCode,
    readonly body: PmErrorBody,
  ) {
    super(code, Array.isArray(body) ? body.join(' ') : Object.entries(body).map(([k, v]) => `${k}: ${v.join(' ')}`).join('; '));
  }
}

/** DRF's default field messages (rest_framework/fields.py, serializers.py). */
export const DRF_MESSAGES = {
  required: 'This field is required.',
  null: 'This field may not be null.',
  blank: 'This field may not be blank.',
  notString: 'Not a valid string.',
  integer: 'A valid integer is required.',
  integerTooLong: 'String value too large.',
  noData: 'No data provided',
} as const;

const NON_FIELD = 'non_field_errors';

/** `{field: [message]}` from the registry's message for `code`. */
export function pmFieldRefusal(code: ErrorCode, field: string): PmRefusal {
  return new PmRefusal(code, { [field]: [errorRegistry[code].message] });
}

/** `{"non_field_errors": [message]}`: a serializer-level check failed. */
export function pmNonFieldRefusal(code: ErrorCode): PmRefusal {
  return new PmRefusal(code, { [NON_FIELD]: [errorRegistry[code].message] });
}

/** Field errors, in the serializer's field order (DRF keeps them in an OrderedDict). */
export class PmFieldErrors {
  private readonly byField = new Map<string, string[]>();
  constructor(private readonly order: readonly string[]) {}
  add(field: string, message: string): void {
    const list = this.byField.get(field) ?? [];
    list.push(message);
    this.byField.set(field, list);
  }
  has(field: string): boolean {
    return this.byField.has(field);
  }
  get empty(): boolean {
    return this.byField.size === 0;
  }
  /** The collected errors (plus `extra`, if given) as a PM_INVALID refusal, or undefined if there are none. */
  refusal(extra?: { field: string; message: string }): PmRefusal | undefined {
    if (this.empty && !extra) return undefined;
    const body: Record<string, string[]> = {};
    for (const f of new Set([...this.order, ...this.byField.keys(), ...(extra ? [extra.field] : [])])) {
      const list = [...(this.byField.get(f) ?? []), ...(extra?.field === f ? [extra.message] : [])];
      if (list.length) body[f] = list;
    }
    return new PmRefusal('PM_INVALID', body);
  }

  /** Throws the refusal, if there are errors. */
  throwIfAny(extra?: { field: string; message: string }): void {
    const r = this.refusal(extra);
    if (r) throw r;
  }
}

/** Python's `type(x).__name__` for what a JSON body decodes to. */
function pythonTypeName(v: unknown): string {
  if (Array.isArray(v)) return 'list';
  if (typeof v === 'string') return 'str';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'number') return Number.isInteger(v) ? 'int' : 'float';
  return 'dict';
}

/**
 * The body as a dictionary, as DRF's Serializer demands one: no body is `{}`
 * (DRF does not parse an empty body), `null` is "No data provided", anything
 * else that is not an object is "Expected a dictionary".
 */
export function pmBodyObject(body: unknown): Record<string, unknown> {
  if (body === undefined) return {};
  if (body === null) throw new PmRefusal('PM_INVALID', { [NON_FIELD]: [DRF_MESSAGES.noData] });
  if (typeof body !== 'object' || Array.isArray(body)) {
    throw new PmRefusal('PM_INVALID', { [NON_FIELD]: [`Invalid data. Expected a dictionary, but got ${pythonTypeName(body)}.`] });
  }
  return body as Record<string, unknown>;
}

/** Why a field failed, or its value; `skip` = absent in a partial update. */
type FieldResult<T> = { value: T } | { error: string } | { skip: true };

interface FieldOptions {
  required: boolean;
  allowNull: boolean;
  /** PATCH: an absent field is left as it is. */
  partial: boolean;
}

function emptyValues<T>(v: unknown, o: FieldOptions): FieldResult<T | null> | undefined {
  if (v === undefined) {
    if (o.partial) return { skip: true };
    if (o.required) return { error: DRF_MESSAGES.required };
    return { skip: true };
  }
  if (v === null) return o.allowNull ? { value: null } : { error: DRF_MESSAGES.null };
  return undefined;
}

/**
 * DRF's CharField: blank (after trimming) before anything else, then
 * required/null, then strings and numbers become their text, trimmed; then
 * the validators, whose messages are all collected.
 */
function charField(
  v: unknown,
  o: FieldOptions & { allowBlank: boolean; maxLength?: number; validate?: (s: string) => string | undefined },
): { value?: string | null; errors: string[]; skip?: true } {
  if (v === '' || (typeof v === 'string' && v.trim() === '')) return o.allowBlank ? { value: '', errors: [] } : { errors: [DRF_MESSAGES.blank] };
  const empty = emptyValues<string>(v, o);
  if (empty) return 'skip' in empty ? { skip: true, errors: [] } : 'error' in empty ? { errors: [empty.error] } : { value: empty.value, errors: [] };
  if (typeof v !== 'string' && typeof v !== 'number') return { errors: [DRF_MESSAGES.notString] };
  const text = String(v).trim();
  const errors: string[] = [];
  if (o.maxLength !== undefined && [...text].length > o.maxLength) errors.push(`Ensure this field has no more than ${o.maxLength} characters.`);
  // Switchyard's own check (names are key segments) adds nothing to a length error.
  const own = errors.length ? undefined : o.validate?.(text);
  if (own) errors.push(own);
  return errors.length ? { errors } : { value: text, errors };
}

/**
 * DRF's IntegerField: `int(re.sub(r'\.0*\s*$', '', str(data)))`, so "5000",
 * " 5000 ", "5000.0" and 5000.0 are 5000; 5000.5, "50x", true are not integers.
 */
function integerField(v: unknown, o: FieldOptions): FieldResult<number | null> {
  const empty = emptyValues<number>(v, o);
  if (empty) return empty;
  if (typeof v === 'number') return Number.isInteger(v) ? { value: v } : { error: DRF_MESSAGES.integer };
  if (typeof v !== 'string') return { error: DRF_MESSAGES.integer };
  if (v.length > 1000) return { error: DRF_MESSAGES.integerTooLong };
  const m = /^\s*([+-]?\d+(?:_\d+)*)\s*$/.exec(v.replace(/\.0*\s*$/, ''));
  return m ? { value: Number(m[1].replace(/_/g, '')) } : { error: DRF_MESSAGES.integer };
}

/** Portmaster's `validate_start`/`validate_end`: `value < 1024 or value >= 49152` is refused. */
export function inReservedRange(port: number): boolean {
  return port < PM_PORT_MIN || port > PM_PORT_MAX;
}

/** A service body read field by field: the values that passed, and every field error. */
export interface PmServiceFields {
  values: { name?: string; description?: string | null; start?: number; end?: number };
  errors: PmFieldErrors;
}

const SERVICE_FIELDS = ['name', 'description', 'start', 'end'] as const;

/**
 * ServiceSerializer's field stage (name, description, start, end): DRF's
 * field checks, then Portmaster's `validate_start`/`validate_end` on fields
 * that passed. Uniqueness of the name needs the store; the repository adds it.
 */
export function readServiceFields(body: unknown, partial: boolean): PmServiceFields {
  const data = pmBodyObject(body);
  const errors = new PmFieldErrors(SERVICE_FIELDS);
  const values: PmServiceFields['values'] = {};
  const name = charField(data.name, {
    required: true,
    allowNull: false,
    allowBlank: false,
    partial,
    maxLength: 64,
    validate: (s) => (isSafeName(s, 64) ? undefined : errorRegistry.PM_BAD_NAME.message),
  });
  for (const e of name.errors) errors.add('name', e);
  if (name.value !== undefined && name.value !== null) values.name = name.value;
  const description = charField(data.description, { required: false, allowNull: true, allowBlank: true, partial });
  for (const e of description.errors) errors.add('description', e);
  if (description.value !== undefined) values.description = description.value;
  for (const field of ['start', 'end'] as const) {
    const r = integerField(data[field], { required: true, allowNull: false, partial });
    if ('error' in r) errors.add(field, r.error);
    else if ('value' in r && r.value !== null) {
      if (inReservedRange(r.value)) errors.add(field, errorRegistry.PM_RESERVED_RANGE.message);
      else values[field] = r.value;
    }
  }
  return { values, errors };
}

/** OfferSerializer's `name` (the view fills in service and port): its value, or its errors. */
export function readOfferName(body: unknown): { name?: string; errors: PmFieldErrors } {
  const data = pmBodyObject(body);
  const errors = new PmFieldErrors(['service', 'name', 'port']);
  const r = charField(data.name, {
    required: true,
    allowNull: false,
    allowBlank: false,
    partial: false,
    maxLength: 64,
    validate: (s) => (isSafeName(s, 64) ? undefined : errorRegistry.PM_BAD_NAME.message),
  });
  for (const e of r.errors) errors.add('name', e);
  return { ...(typeof r.value === 'string' ? { name: r.value } : {}), errors };
}
