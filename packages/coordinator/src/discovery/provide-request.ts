/**
 * From a `/provide` upgrade request to what a provider connection writes:
 * pure, so the parameter rules are unit-tested without sockets or etcd.
 */
import { createHash } from 'node:crypto';
import { describeProvideError, encodeProviderRecord, fail, isUnspecifiedHost, ProvideQuery, skydns, type ProviderRecord, type SwitchyardError } from '@switchyard/shared';

export interface ProvideRequest {
  service: string;
  /** Left to right, as given (`services,production` → foo.services.production.<root>). */
  categories: string[];
  record: ProviderRecord;
  /** The record's JSON, as written to etcd. */
  value: string;
  /**
   * skyapi's record id for this provider: the same every time the same
   * process (service, categories, host, port) connects, so the SRV target
   * name is stable across reconnects.
   */
  id: string;
  /** `lb=<serviceId>`, and the weight only when the client gave one (else the L4 default). */
  lb?: { serviceId: string; weight?: number };
}

/** `::ffff:10.0.0.1` (an IPv4 peer on a dual-stack socket) → `10.0.0.1`. */
export function peerHost(remoteAddress: string | undefined): string | undefined {
  if (!remoteAddress) return undefined;
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(remoteAddress);
  return m ? m[1] : remoteAddress;
}

/**
 * The record id skyapi gives a provider (its server's parseConnData): the hex
 * sha1 of service, category, host and port written one after another, as
 * received — before any lower-casing, so a client gets the very id skyapi
 * gave it. Several categories are hashed as Go's `%#v` prints the list
 * (`[]string{"a", "b"}`), one as itself. With a prefix the id is
 * `<prefix>-<first 20 hex>`, without one the whole 40.
 */
export function skyapiRecordId(identity: { service: string; category: string; host: string; port: number }, prefix?: string): string {
  const categories = identity.category.split(',');
  const category = categories.length === 1 ? categories[0] : `[]string{${categories.map((c) => JSON.stringify(c)).join(', ')}}`;
  const hex = createHash('sha1').update(`${identity.service}${category}${identity.host}${identity.port}`).digest('hex');
  return prefix ? `${prefix}-${hex.slice(0, 20)}` : hex;
}

export function parseProvideRequest(url: string, remoteAddress: string | undefined): ProvideRequest | SwitchyardError {
  const params = new URL(url, 'http://provide.invalid').searchParams;
  const raw: Record<string, string> = {};
  // First occurrence wins, as Go's url.Values.Get does in skyapi.
  for (const [k, v] of params) if (!(k in raw)) raw[k] = v;
  const parsed = ProvideQuery.safeParse(raw);
  if (!parsed.success) return fail('INVALID', describeProvideError(parsed.error));
  const q = parsed.data;
  const host = q.host ?? peerHost(remoteAddress);
  if (!host) return fail('INVALID', 'host is not given and the connection has no peer address');
  const record: ProviderRecord = { host, port: q.port, priority: q.priority, weight: q.weight };
  const id = skyapiRecordId(
    {
      service: raw.service,
      category: raw.category || 'services',
      // skyapi hashes the host as given, or the peer's when it was unspecified.
      host: raw.host !== undefined && !isUnspecifiedHost(raw.host) ? raw.host : host,
      port: q.port,
    },
    q.prefix,
  );
  return {
    service: q.service,
    categories: q.category,
    record,
    value: encodeProviderRecord(record),
    id,
    ...(q.lb ? { lb: { serviceId: q.lb, ...('weight' in raw ? { weight: q.weight } : {}) } } : {}),
  };
}

/** The etcd key of one provider's record. */
export function recordKey(root: string, req: Pick<ProvideRequest, 'service' | 'categories'>, id: string): string {
  return skydns.recordKey(root.toLowerCase(), req.categories, req.service, id);
}
