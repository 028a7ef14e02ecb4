/**
 * The built-in DNS responder (`--dns-listen`): a watch-fed mirror of the
 * SkyDNS records under the zone (`/skydns/<root reversed>/`), a zone that
 * answers from it, and the UDP/TCP sockets. Any SkyDNS record under the root
 * is served, whoever wrote it; records on a lease get the provider TTL.
 */
import { parseSkyDnsRecord, PrefixMirror, skydns, type MirrorChange, type SkyDnsRecord } from '@switchyard/shared';
import type { CoordinatorContext, Feature } from '../context.js';
import { leaseSeconds } from '../store/lease-ttl.js';
import { Responder } from './responder.js';
import { DnsServer } from './server.js';
import { Zone } from './zone.js';

export function dnsFeature(ctx: CoordinatorContext, listen: { host: string; port: number }): Feature {
  const log = ctx.log.child({ component: 'dns' });
  const zone = new Zone({ root: ctx.config.dnsRoot, leasedTtl: leaseSeconds(ctx.config.providerTtlMs) });
  let synced = false;
  const responder = new Responder(zone, () => synced);
  const server = new DnsServer(responder, log);
  const mirror = new PrefixMirror<SkyDnsRecord>(ctx.etcd, {
    prefix: skydns.dirForName(zone.root),
    parse: (_key, value) => parseSkyDnsRecord(value),
    onInvalid: (key, err) => log.warn({ key, err: (err as Error)?.message }, 'ignoring a SkyDNS record that does not parse'),
  });
  mirror.on('change', (c: MirrorChange<SkyDnsRecord>) => {
    if (c.type === 'delete') return zone.delete(c.key);
    const labels = skydns.labelsOfKey(c.key);
    if (labels) zone.set(c.key, labels, c.entry.value, c.entry.lease !== '0');
  });
  mirror.once('resync', () => {
    synced = true;
    log.info({ records: zone.size, revision: mirror.revision }, 'dns zone loaded');
  });

  return {
    name: 'dns',
    async start() {
      void mirror.start();
      await server.listen(listen.host, listen.port);
    },
    async stop() {
      await server.close();
      await mirror.stop();
    },
  };
}
