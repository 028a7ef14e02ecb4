/**
 * The SkyDNS zone in memory: records by name, and the answers to queries,
 * encoded once and kept until a record under that name changes.
 *
 * Names follow SkyDNS (skynetservices/skydns server.go, backends/etcd):
 *  - a name answers with every record at or below it: `foo.services.<root>`
 *    has all of foo's providers, `services.<root>` every service's;
 *  - SRV: priority and port from the record; weight is the record's share of
 *    its priority group, floor(100 × weight / Σ weights) with 0 counting as
 *    100; the target of an IP host is the record's own name (`<id>.foo…`)
 *    with its A/AAAA in the additional section, a host name is the target
 *    itself;
 *  - A/AAAA: the IP hosts of the records (duplicates folded); a single
 *    record with a host name answers with a CNAME to it;
 *  - a label `*` (or `any`) matches any one label;
 *  - TTL: the record's `ttl` if set, capped by its lease TTL when it is on a
 *    lease (SkyDNS takes the smaller of the key's TTL and the record's); a
 *    record without either gets SkyDNS's default of 3600 s;
 *  - a name with no record is NXDOMAIN, a name with records but none of the
 *    type is NODATA; both carry the zone's SOA, whose minimum (the negative
 *    TTL) is short because a provider can appear at any moment.
 *
 * The answer bytes (without the question, which is copied from each query)
 * are cached on the name's node; a change clears the caches of the nodes on
 * its path only, so one churning service does not flush everybody's answers.
 */
import { isIP } from 'node:net';
import * as dnsPacket from 'dns-packet';
import type { Answer, Packet } from 'dns-packet';
import type { SkyDnsRecord } from '@switchyard/shared';

export const QTYPE = { A: 1, NS: 2, CNAME: 5, SOA: 6, AAAA: 28, SRV: 33, OPT: 41, ANY: 255 } as const;
export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

export interface ZoneOptions {
  /** The zone apex, e.g. `skydns.local`. */
  root: string;
  /** TTL of records on a lease (the provider TTL), s. */
  leasedTtl: number;
  /** TTL of records with neither a lease nor a ttl, s (SkyDNS: 3600). */
  defaultTtl?: number;
  /** SOA TTL and minimum: how long resolvers cache "no such name", s. */
  negativeTtl?: number;
  /** EDNS UDP payload size this server advertises. */
  ednsSize?: number;
}

interface Entry {
  key: string;
  /** Owner name of the record itself (`<id>.foo.services.<root>`), lower case. */
  name: string;
  record: SkyDnsRecord;
  ttl: number;
}

class Node {
  readonly children = new Map<string, Node>();
  /** Records whose key is exactly this name (by etcd key). */
  records?: Map<string, Entry>;
  /** Number of records at or below this node. */
  count = 0;
  cache?: Map<number, Encoded>;
  constructor(readonly parent?: Node, readonly label?: string) {}
}

/** A response without its question: header (id 0, QDCOUNT 0) + sections. */
export class Encoded {
  readonly bytes: Buffer;
  private truncated = new Map<number, Buffer>();
  constructor(private readonly packet: Packet) {
    this.bytes = dnsPacket.encode(packet);
  }

  /** The largest prefix of the answers that fits `limit` bytes with `questionLength`, TC set if any was cut. */
  fit(limit: number, questionLength: number): Buffer {
    const room = limit - questionLength;
    if (this.bytes.length <= room) return this.bytes;
    const cached = this.truncated.get(room);
    if (cached) return cached;
    const opt = (this.packet.additionals ?? []).filter((a) => a.type === 'OPT');
    const answers = this.packet.answers ?? [];
    const without = { ...this.packet, additionals: opt };
    let out: Buffer;
    if (dnsPacket.encodingLength(without) <= room) {
      // Dropping additional data needs no TC (RFC 2181 §9).
      out = dnsPacket.encode(without);
    } else {
      let lo = 0;
      let hi = answers.length;
      while (lo < hi) {
        const mid = Math.ceil((lo + hi) / 2);
        if (dnsPacket.encodingLength({ ...without, answers: answers.slice(0, mid), authorities: [] }) <= room) lo = mid;
        else hi = mid - 1;
      }
      out = dnsPacket.encode({
        ...without,
        flags: (this.packet.flags ?? 0) | dnsPacket.TRUNCATED_RESPONSE,
        answers: answers.slice(0, lo),
        authorities: [],
      });
    }
    if (this.truncated.size < 8) this.truncated.set(room, out);
    return out;
  }
}

const WILDCARDS = new Set(['*', 'any']);
const MAX_SIDE_CACHE = 10_000;

export class Zone {
  readonly root: string;
  private readonly rootLabels: string[];
  private readonly apex = new Node();
  private readonly byKey = new Map<string, { node: Node; entry: Entry }>();
  /** Answers to wildcard names and to names that do not exist; cleared on any change. */
  private readonly sideCache = new Map<string, Encoded>();
  private readonly leasedTtl: number;
  private readonly defaultTtl: number;
  private readonly negativeTtl: number;
  private readonly ednsSize: number;

  constructor(opts: ZoneOptions) {
    this.root = opts.root.toLowerCase().replace(/\.$/, '');
    this.rootLabels = this.root.split('.').filter(Boolean).reverse();
    this.leasedTtl = opts.leasedTtl;
    this.defaultTtl = opts.defaultTtl ?? 3600;
    this.negativeTtl = opts.negativeTtl ?? Math.min(60, opts.leasedTtl);
    this.ednsSize = opts.ednsSize ?? 1232;
  }

  get size(): number {
    return this.byKey.size;
  }

  /**
   * Adds or replaces the record at `labels` (the key's path under /skydns,
   * apex first, e.g. [local, skydns, services, foo, <id>]).
   */
  set(key: string, labels: string[], record: SkyDnsRecord, leased: boolean): void {
    const path = this.relative(labels);
    if (!path) return;
    this.delete(key);
    let node = this.apex;
    for (const label of path) {
      let next = node.children.get(label);
      if (!next) {
        next = new Node(node, label);
        node.children.set(label, next);
      }
      node = next;
    }
    const ttl = record.ttl ? (leased ? Math.min(record.ttl, this.leasedTtl) : record.ttl) : leased ? this.leasedTtl : this.defaultTtl;
    const entry: Entry = { key, name: [...path].reverse().concat([...this.rootLabels].reverse()).join('.'), record, ttl };
    (node.records ??= new Map()).set(key, entry);
    this.byKey.set(key, { node, entry });
    for (let n: Node | undefined = node; n; n = n.parent) {
      n.count++;
      n.cache = undefined;
    }
    this.sideCache.clear();
  }

  delete(key: string): void {
    const found = this.byKey.get(key);
    if (!found) return;
    this.byKey.delete(key);
    const { node } = found;
    node.records?.delete(key);
    for (let n: Node | undefined = node; n; n = n.parent) {
      n.count--;
      n.cache = undefined;
      if (n.count === 0 && n.parent && n.label !== undefined) n.parent.children.delete(n.label);
    }
    this.sideCache.clear();
  }

  /** Path below the apex, lower case, or undefined if the key is outside the zone. */
  private relative(labels: string[]): string[] | undefined {
    if (labels.length < this.rootLabels.length) return undefined;
    for (let i = 0; i < this.rootLabels.length; i++) if (labels[i].toLowerCase() !== this.rootLabels[i]) return undefined;
    return labels.slice(this.rootLabels.length).map((l) => l.toLowerCase());
  }

  /**
   * The answer to (name, type), or undefined when the name is outside the
   * zone (the caller refuses it). `labels` are the query's labels in wire
   * order (`foo`, `services`, `skydns`, `local`), lower case.
   */
  answer(labels: string[], qtype: number, edns: boolean): Encoded | undefined {
    const reversed = [...labels].reverse();
    const path = this.relative(reversed);
    if (!path) return undefined;
    const slot = qtype * 2 + (edns ? 1 : 0);
    const name = labels.join('.');
    if (path.some((l) => WILDCARDS.has(l))) {
      const id = `${slot}:${name}`;
      let hit = this.sideCache.get(id);
      if (!hit) {
        hit = this.build(name, qtype, edns, this.match(path), path.length === 0);
        if (this.sideCache.size >= MAX_SIDE_CACHE) this.sideCache.clear();
        this.sideCache.set(id, hit);
      }
      return hit;
    }
    let node: Node | undefined = this.apex;
    for (const label of path) {
      node = node.children.get(label);
      if (!node) break;
    }
    if (!node) {
      const id = `${slot}:${name}`;
      let hit = this.sideCache.get(id);
      if (!hit) {
        hit = this.build(name, qtype, edns, undefined, false);
        if (this.sideCache.size >= MAX_SIDE_CACHE) this.sideCache.clear();
        this.sideCache.set(id, hit);
      }
      return hit;
    }
    node.cache ??= new Map();
    let hit = node.cache.get(slot);
    if (!hit) {
      hit = this.build(name, qtype, edns, collect(node), node === this.apex);
      node.cache.set(slot, hit);
    }
    return hit;
  }

  /** Records matching a path with wildcards: every label equal or wild, at any depth below. */
  private match(path: string[]): Entry[] {
    const out: Entry[] = [];
    const walk = (node: Node, i: number) => {
      if (i === path.length) {
        out.push(...collect(node));
        return;
      }
      if (WILDCARDS.has(path[i])) for (const child of node.children.values()) walk(child, i + 1);
      else {
        const child = node.children.get(path[i]);
        if (child) walk(child, i + 1);
      }
    };
    walk(this.apex, 0);
    return out.sort(byKey);
  }

  private soa(): Answer {
    return {
      type: 'SOA',
      name: this.root,
      ttl: this.negativeTtl,
      data: {
        mname: `ns.dns.${this.root}`,
        rname: `hostmaster.${this.root}`,
        // SkyDNS's serial: the current hour.
        serial: Math.floor(Date.now() / 3_600_000) * 3600 % 2 ** 32,
        refresh: 28800,
        retry: 7200,
        expire: 604800,
        minimum: this.negativeTtl,
      },
    };
  }

  /** `entries` undefined = the name does not exist. */
  private build(name: string, qtype: number, edns: boolean, entries: Entry[] | undefined, isApex: boolean): Encoded {
    const opt: Answer[] = edns ? [{ type: 'OPT', name: '.', udpPayloadSize: this.ednsSize, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }] : [];
    const packet = (rcode: number, answers: Answer[], authorities: Answer[], additionals: Answer[]): Encoded =>
      new Encoded({ type: 'response', id: 0, flags: dnsPacket.AUTHORITATIVE_ANSWER | rcode, questions: [], answers, authorities, additionals: [...additionals, ...opt] });

    if (!entries || (entries.length === 0 && !isApex)) return packet(RCODE.NXDOMAIN, [], [this.soa()], []);
    let answers: Answer[] = [];
    let additionals: Answer[] = [];
    if (qtype === QTYPE.SRV) ({ answers, additionals } = srvAnswers(name, entries));
    else if (qtype === QTYPE.A || qtype === QTYPE.AAAA) answers = addressAnswers(name, entries, qtype === QTYPE.A ? 4 : 6);
    else if (qtype === QTYPE.SOA && isApex) answers = [this.soa()];
    if (answers.length === 0) return packet(RCODE.NOERROR, [], [this.soa()], []);
    return packet(RCODE.NOERROR, answers, [], additionals);
  }
}

function byKey(a: Entry, b: Entry): number {
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

function collect(node: Node): Entry[] {
  const out: Entry[] = [];
  const walk = (n: Node) => {
    if (n.records) out.push(...n.records.values());
    for (const c of n.children.values()) walk(c);
  };
  walk(node);
  return out.sort(byKey);
}

/** One TTL per RRset (RFC 2181 §5.2): the smallest of its records'. */
function minTtl(entries: Entry[]): number {
  let t = Infinity;
  for (const e of entries) if (e.ttl < t) t = e.ttl;
  return t === Infinity ? 0 : t;
}

export function srvWeights(entries: { record: SkyDnsRecord }[]): number[] {
  const sums = new Map<number, number>();
  for (const { record } of entries) {
    const p = record.priority ?? 0;
    sums.set(p, (sums.get(p) ?? 0) + (record.weight || 100));
  }
  return entries.map(({ record }) => Math.floor((100 / (sums.get(record.priority ?? 0) as number)) * (record.weight || 100)));
}

function srvAnswers(name: string, entries: Entry[]): { answers: Answer[]; additionals: Answer[] } {
  const ttl = minTtl(entries);
  const weights = srvWeights(entries);
  const answers: Answer[] = [];
  const additionals: Answer[] = [];
  entries.forEach((e, i) => {
    const family = isIP(e.record.host);
    const target = family ? e.name : e.record.host.replace(/\.$/, '');
    answers.push({
      type: 'SRV',
      name,
      ttl,
      data: { priority: e.record.priority ?? 0, weight: weights[i], port: e.record.port ?? 0, target },
    });
    if (family === 4) additionals.push({ type: 'A', name: target, ttl: e.ttl, data: e.record.host });
    if (family === 6) additionals.push({ type: 'AAAA', name: target, ttl: e.ttl, data: e.record.host });
  });
  return { answers, additionals };
}

function addressAnswers(name: string, entries: Entry[], family: 4 | 6): Answer[] {
  const withIp = entries.filter((e) => isIP(e.record.host) === family);
  if (withIp.length === 0) {
    // A lone record with a host name: the name is an alias of that host.
    if (entries.length === 1 && isIP(entries[0].record.host) === 0) {
      return [{ type: 'CNAME', name, ttl: entries[0].ttl, data: entries[0].record.host.replace(/\.$/, '') }];
    }
    return [];
  }
  const ttl = minTtl(withIp);
  const seen = new Set<string>();
  const out: Answer[] = [];
  for (const e of withIp) {
    if (seen.has(e.record.host)) continue;
    seen.add(e.record.host);
    out.push({ type: family === 4 ? 'A' : 'AAAA', name, ttl, data: e.record.host });
  }
  return out;
}
