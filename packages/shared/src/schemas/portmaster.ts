/**
 * Port allocation as django-portmaster defines it: services own port ranges,
 * instances take ports through offers that must be accepted.
 *
 * One schema per resource: the coordinator validates REST bodies with the
 * `*Input` schemas, answers with `PmService`/`PmOffer`/`PmInstance`, parses
 * etcd values with the `*Record` schemas, and the OpenAPI document comes from
 * the same objects.
 */
import { z } from 'zod';
import { fail } from '../errors.js';
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
const token = (what: string) =>
  z.string().refine((s) => isSafeName(s, 64), {
    message: `${what} must be 1–64 characters of A–Z, a–z, 0–9, "_", "." or "-", starting with a letter or digit`,
  });

export const PmServiceName = token('service name');
export const PmInstanceName = token('instance name');

/** Portmaster's IntegerField also takes numeric strings ("5000"); so do we. */
const portNumber = z.union([z.int(), z.string().regex(/^\d{1,5}$/).transform(Number)]).pipe(z.int().min(0).max(65535));

const description = z.string().max(4096).nullable();

export const PmServiceInput = z.object({
  name: PmServiceName,
  description: description.optional(),
  start: portNumber,
  end: portNumber,
});
export type PmServiceInput = z.output<typeof PmServiceInput>;

/** PUT /v1/services/:name. `name`, when given, must be the service's own (renaming is not supported). */
export const PmServiceUpdate = PmServiceInput.extend({ name: PmServiceName.optional() });
export type PmServiceUpdate = z.output<typeof PmServiceUpdate>;

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

/**
 * Portmaster's range checks, in its order: each bound inside 1024–49151
 * (field validators run first), then start below end.
 */
export function checkRange(start: number, end: number): void {
  if (start < PM_PORT_MIN || start > PM_PORT_MAX || end < PM_PORT_MIN || end > PM_PORT_MAX) throw fail('PM_RESERVED_RANGE');
  if (start >= end) throw fail('PM_START_LOWER');
}

/** Do two inclusive ranges share a port? */
export function rangesOverlap(a: { start: number; end: number }, b: { start: number; end: number }): boolean {
  return a.start <= b.end && b.start <= a.end;
}

/** All digits → a port number; anything else → an instance name (Portmaster's `isdecimal()`). */
export function parsePortOrName(text: string): { port: number } | { name: string } {
  return /^\d+$/.test(text) ? { port: Number(text) } : { name: text };
}
