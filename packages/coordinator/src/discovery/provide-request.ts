/**
 * From a `/provide` upgrade request to what a provider connection writes:
 * pure, so the parameter rules are unit-tested without sockets or etcd.
 */
import { describeProvideError, encodeProviderRecord, fail, ProvideQuery, skydns, type ProviderRecord, type SwitchyardError } from '@switchyard/shared';

export interface ProvideRequest {
  service: string;
  /** Left to right, as given (`services,production` → foo.services.production.<root>). */
  categories: string[];
  record: ProviderRecord;
  /** The record's JSON, as written to etcd. */
  value: string;
  /** `lb=<serviceId>`, and the weight only when the client gave one (else the L4 default). */
  lb?: { serviceId: string; weight?: number };
}

/** `::ffff:10.0.0.1` (an IPv4 peer on a dual-stack socket) → `10.0.0.1`. */
export function peerHost(remoteAddress: string | undefined): string | undefined {
  if (!remoteAddress) return undefined;
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(remoteAddress);
  return m ? m[1] : remoteAddress;
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
  return {
    service: q.service,
    categories: q.category,
    record,
    value: encodeProviderRecord(record),
    ...(q.lb ? { lb: { serviceId: q.lb, ...('weight' in raw ? { weight: q.weight } : {}) } } : {}),
  };
}

/** The etcd key of one provider's record. */
export function recordKey(root: string, req: Pick<ProvideRequest, 'service' | 'categories'>, id: string): string {
  return skydns.recordKey(root.toLowerCase(), req.categories, req.service, id);
}
