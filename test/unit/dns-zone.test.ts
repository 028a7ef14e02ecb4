/** The zone and responder as pure logic: SkyDNS's answer rules, TTLs, truncation, malformed input. */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as dnsPacket from 'dns-packet';
import { describe, expect, it } from 'vitest';
import { Responder, parseQuestion } from '../../packages/coordinator/src/dns/responder.js';
import { srvWeights, Zone } from '../../packages/coordinator/src/dns/zone.js';
import type { SkyDnsRecord } from '../../packages/shared/src/index.js';

function zoneWith(records: [string, SkyDnsRecord, boolean?][]): Zone {
  const zone = new Zone({ root: 'skydns.local', leasedTtl: 10 });
  for (const [key, rec, leased] of records) zone.set(key, key.split('/').filter(Boolean).slice(1), rec, leased ?? true);
  return zone;
}

function ask(responder: Responder, name: string, type: dnsPacket.RecordType, opts: { edns?: number; tcp?: boolean; id?: number } = {}) {
  const query = dnsPacket.encode({
    type: 'query',
    id: opts.id ?? 4242,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type, name, class: 'IN' }],
    ...(opts.edns ? { additionals: [{ type: 'OPT', name: '.', udpPayloadSize: opts.edns, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }] } : {}),
  });
  const out = responder.respond(query, opts.tcp ? 'tcp' : 'udp');
  if (!out) throw new Error('no response');
  return { bytes: out, packet: dnsPacket.decode(out), rcode: rcodeOf(out) };
}

const RCODES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'];
function rcodeOf(bytes: Buffer): string {
  return RCODES[bytes[3] & 0x0f];
}

function ttlOf(a: dnsPacket.Answer | undefined): number | undefined {
  return a && 'ttl' in a ? a.ttl : undefined;
}

describe('srvWeights (SkyDNS: share of the priority group, 0 counts as 100)', () => {
  it('splits 100 by weight within each priority', () => {
    expect(srvWeights([{ record: { host: 'a', weight: 100, priority: 1 } }, { record: { host: 'b', weight: 300, priority: 1 } }, { record: { host: 'c', priority: 2 } }])).toEqual([25, 75, 100]);
    expect(srvWeights([{ record: { host: 'a', weight: 1 } }, { record: { host: 'b', weight: 2 } }])).toEqual([33, 66]);
  });
});

describe('Zone and Responder', () => {
  const zone = zoneWith([
    ['/skydns/local/skydns/services/web/a', { host: '10.0.0.1', port: 80, priority: 1, weight: 100 }],
    ['/skydns/local/skydns/services/web/b', { host: '10.0.0.1', port: 81, priority: 1, weight: 100 }],
    ['/skydns/local/skydns/services/static/s', { host: '10.0.0.9', port: 80, ttl: 30 }, false],
    ['/skydns/local/skydns/services/alias/x', { host: 'db.example.com', port: 5432 }],
    ['/skydns/local/skydns/services/capped/y', { host: '10.0.0.8', ttl: 300 }],
  ]);
  const responder = new Responder(zone);

  it('answers SRV with one TTL per RRset, targets named after the records, glue in additional', () => {
    const { packet } = ask(responder, 'web.services.skydns.local', 'SRV');
    expect(packet.id).toBe(4242);
    expect(packet.flags! & dnsPacket.RECURSION_DESIRED).toBeTruthy();
    expect(packet.flags! & dnsPacket.AUTHORITATIVE_ANSWER).toBeTruthy();
    expect(packet.answers?.map((a) => (a.type === 'SRV' ? [a.ttl, a.data.weight, a.data.port, a.data.target] : []))).toEqual([
      [10, 50, 80, 'a.web.services.skydns.local'],
      [10, 50, 81, 'b.web.services.skydns.local'],
    ]);
    expect(packet.additionals?.map((a) => [a.name, a.type, 'data' in a ? a.data : undefined])).toEqual([
      ['a.web.services.skydns.local', 'A', '10.0.0.1'],
      ['b.web.services.skydns.local', 'A', '10.0.0.1'],
    ]);
  });

  it('folds duplicate addresses in A answers', () => {
    const { packet } = ask(responder, 'web.services.skydns.local', 'A');
    expect(packet.answers?.map((a) => ('data' in a ? a.data : undefined))).toEqual(['10.0.0.1']);
  });

  it('uses the record ttl, the lease TTL as a cap, and 3600 for neither', () => {
    expect(ttlOf(ask(responder, 'static.services.skydns.local', 'A').packet.answers?.[0])).toBe(30);
    expect(ttlOf(ask(responder, 'capped.services.skydns.local', 'A').packet.answers?.[0])).toBe(10);
    const plain = new Responder(zoneWith([['/skydns/local/skydns/p/q', { host: '10.1.1.1' }, false]]));
    expect(ttlOf(ask(plain, 'q.p.skydns.local', 'A').packet.answers?.[0])).toBe(3600);
  });

  it('answers a lone host-name record with a CNAME, and SRV with the name as target', () => {
    const a = ask(responder, 'alias.services.skydns.local', 'A').packet;
    expect(a.answers?.map((r) => [r.type, 'data' in r ? r.data : undefined])).toEqual([['CNAME', 'db.example.com']]);
    const srv = ask(responder, 'alias.services.skydns.local', 'SRV').packet;
    expect(srv.answers?.[0].type === 'SRV' && srv.answers[0].data.target).toBe('db.example.com');
    expect(srv.additionals).toHaveLength(0);
  });

  it('distinguishes NXDOMAIN, NODATA and REFUSED', () => {
    const nx = ask(responder, 'nope.services.skydns.local', 'A');
    expect(nx.rcode).toBe('NXDOMAIN');
    expect(nx.packet.authorities?.[0].type).toBe('SOA');
    const nodata = ask(responder, 'web.services.skydns.local', 'AAAA');
    expect(nodata.rcode).toBe('NOERROR');
    expect(nodata.packet.answers).toHaveLength(0);
    expect(ask(responder, 'example.com', 'A').rcode).toBe('REFUSED');
    expect(ask(responder, 'skydns.local', 'SOA').packet.answers?.[0].type).toBe('SOA');
  });

  it('forgets cached answers when a record under the name changes, and only those', () => {
    const z = zoneWith([['/skydns/local/skydns/s/a/1', { host: '10.0.0.1', port: 1 }]]);
    const r = new Responder(z);
    expect(ask(r, 'a.s.skydns.local', 'A').packet.answers).toHaveLength(1);
    z.set('/skydns/local/skydns/s/a/2', ['local', 'skydns', 's', 'a', '2'], { host: '10.0.0.2', port: 1 }, true);
    expect(ask(r, 'a.s.skydns.local', 'A').packet.answers).toHaveLength(2);
    z.delete('/skydns/local/skydns/s/a/1');
    z.delete('/skydns/local/skydns/s/a/2');
    expect(ask(r, 'a.s.skydns.local', 'A').rcode).toBe('NXDOMAIN');
    expect(z.size).toBe(0);
  });

  it('truncates an oversized UDP answer with TC and as many records as fit; TCP gets all', () => {
    const many = zoneWith(Array.from({ length: 50 }, (_, i): [string, SkyDnsRecord] => [`/skydns/local/skydns/services/big/id${i}`, { host: `10.0.1.${i}`, port: 1000 + i }]));
    const r = new Responder(many);
    const udp = ask(r, 'big.services.skydns.local', 'SRV');
    expect(udp.bytes.length).toBeLessThanOrEqual(512);
    expect(udp.packet.flag_tc).toBe(true);
    expect(udp.packet.answers!.length).toBeGreaterThan(0);
    const edns = ask(r, 'big.services.skydns.local', 'SRV', { edns: 1232 });
    expect(edns.bytes.length).toBeLessThanOrEqual(1232);
    expect(edns.packet.answers!.length).toBeGreaterThan(udp.packet.answers!.length);
    const tcp = ask(r, 'big.services.skydns.local', 'SRV', { tcp: true });
    expect(tcp.packet.flag_tc).toBe(false);
    expect(tcp.packet.answers).toHaveLength(50);
  });

  it('answers FORMERR to garbage and drops responses', () => {
    const garbage = Buffer.from([1, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 200]);
    expect(rcodeOf(responder.respond(garbage, 'udp') ?? Buffer.alloc(4))).toBe('FORMERR');
    const response = dnsPacket.encode({ type: 'response', id: 1, questions: [{ type: 'A', name: 'web.services.skydns.local' }] });
    expect(responder.respond(response, 'udp')).toBeUndefined();
    expect(responder.respond(Buffer.alloc(5), 'udp')).toBeUndefined();
  });

  it('parses the question and the EDNS size without decoding the rest', () => {
    const q = dnsPacket.encode({ type: 'query', id: 1, questions: [{ type: 'SRV', name: 'A.b.C' }], additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1400, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }] });
    expect(parseQuestion(q)).toMatchObject({ labels: ['a', 'b', 'c'], qtype: 33, qclass: 1, ednsSize: 1400 });
  });

  it('is SERVFAIL until the zone has been loaded', () => {
    const r = new Responder(zone, () => false);
    expect(ask(r, 'web.services.skydns.local', 'A').rcode).toBe('SERVFAIL');
  });
});

describe('the dns module\'s dependencies', () => {
  // Dependencies run one way: the responder serves any SkyDNS record,
  // whoever wrote it, so it must not depend on the discovery feature.
  it('imports nothing from discovery/', () => {
    const dir = fileURLToPath(new URL('../../packages/coordinator/src/dns/', import.meta.url));
    const offenders = readdirSync(dir)
      .filter((f) => f.endsWith('.ts'))
      .flatMap((f) => [...readFileSync(join(dir, f), 'utf8').matchAll(/from\s+'([^']+)'/g)].map((m) => `${f}: ${m[1]}`))
      .filter((line) => /\/discovery\//.test(line));
    expect(offenders).toEqual([]);
  });
});
