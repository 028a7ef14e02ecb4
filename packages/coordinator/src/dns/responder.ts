/**
 * One DNS query in, one response out, from the zone's cached answers.
 *
 * The hot path does not decode the whole message: it reads the header, the
 * one question (whose bytes are copied into the response unchanged, so the
 * client's letter case survives — resolvers using 0x20 randomisation check
 * it) and, if present, the EDNS OPT record for the client's UDP size. The
 * response is the cached answer with the id, RD bit and question patched in.
 * Everything else (record encoding) goes through dns-packet.
 */
import * as dnsPacket from 'dns-packet';
import { QTYPE, RCODE, type Encoded, type Zone } from './zone.js';

const HEADER = 12;
/** RFC 1035 §4.2.1: without EDNS a UDP answer is at most 512 bytes. */
const CLASSIC_UDP = 512;
const MAX_UDP = 4096;
const MAX_TCP = 65535;

export interface Question {
  labels: string[];
  qtype: number;
  qclass: number;
  /** Offset just past the question. */
  end: number;
  /** The EDNS UDP payload size, if the query carries an OPT record. */
  ednsSize?: number;
}

/** Parses the single question (and a trailing OPT). Undefined for anything malformed. */
export function parseQuestion(msg: Buffer): Question | undefined {
  if (msg.length < HEADER + 5) return undefined;
  const labels: string[] = [];
  let o = HEADER;
  let nameLength = 1;
  for (;;) {
    if (o >= msg.length) return undefined;
    const len = msg[o];
    if (len === 0) {
      o++;
      break;
    }
    // Compression pointers and extended labels have no business in a question.
    if (len > 63 || o + 1 + len > msg.length) return undefined;
    nameLength += len + 1;
    if (nameLength > 255) return undefined;
    labels.push(msg.toString('latin1', o + 1, o + 1 + len).toLowerCase());
    o += 1 + len;
  }
  if (o + 4 > msg.length) return undefined;
  const q: Question = { labels, qtype: msg.readUInt16BE(o), qclass: msg.readUInt16BE(o + 2), end: o + 4 };
  // An OPT record right after the question (no answer/authority in a query).
  if (msg.readUInt16BE(6) === 0 && msg.readUInt16BE(8) === 0 && msg.readUInt16BE(10) >= 1) {
    const p = q.end;
    if (p + 11 <= msg.length && msg[p] === 0 && msg.readUInt16BE(p + 1) === QTYPE.OPT) q.ednsSize = msg.readUInt16BE(p + 3);
  }
  return q;
}

const bareCache = new Map<number, Buffer>();
/** A response with only a header (and the question copied in): FORMERR, NOTIMP, REFUSED. */
function bare(rcode: number): Buffer {
  let b = bareCache.get(rcode);
  if (!b) {
    b = dnsPacket.encode({ type: 'response', id: 0, flags: rcode, questions: [] });
    bareCache.set(rcode, b);
  }
  return b;
}

/** header of `body` + question bytes of `query` + sections of `body`, with the query's id and RD bit. */
function assemble(query: Buffer, questionEnd: number, body: Buffer): Buffer {
  const qlen = questionEnd - HEADER;
  const out = Buffer.allocUnsafe(body.length + qlen);
  body.copy(out, 0, 0, HEADER);
  out[0] = query[0];
  out[1] = query[1];
  // RD is copied from the query (RFC 1035 §4.1.1); the opcode stays QUERY.
  out[2] = (out[2] & 0xfe) | (query[2] & 0x01);
  out.writeUInt16BE(qlen > 0 ? 1 : 0, 4);
  query.copy(out, HEADER, HEADER, questionEnd);
  body.copy(out, HEADER + qlen, HEADER);
  return out;
}

export type Transport = 'udp' | 'tcp';

export class Responder {
  /** Counters for logs and benchmarks. */
  readonly stats = { queries: 0, refused: 0, malformed: 0, truncated: 0 };

  /**
   * `ready` says whether the zone has been filled from etcd at least once;
   * before that every query gets SERVFAIL (not a false NXDOMAIN that
   * resolvers would cache). Afterwards a lost etcd does not stop answers:
   * the last known records are served.
   */
  constructor(
    private readonly zone: Zone,
    private readonly ready: () => boolean = () => true,
    /** Told of every answer sent: the question type (0 when there is none) and the response code (metrics). */
    private readonly onAnswer?: (qtype: number, rcode: number) => void,
  ) {}

  /** The response to `query`, or undefined to drop it (not a query at all). */
  respond(query: Buffer, transport: Transport): Buffer | undefined {
    if (query.length < HEADER) return undefined;
    // A response (QR set) is never answered: no reflection loops.
    if (query[2] & 0x80) return undefined;
    this.stats.queries++;
    const q = parseQuestion(query);
    const out = this.answer(query, q, transport);
    this.onAnswer?.(q?.qtype ?? 0, out[3] & 0x0f);
    return out;
  }

  private answer(query: Buffer, q: Question | undefined, transport: Transport): Buffer {
    const opcode = (query[2] >> 3) & 0x0f;
    if (opcode !== 0) return assemble(query, q ? q.end : HEADER, bare(RCODE.NOTIMP));
    if (!q || query.readUInt16BE(4) !== 1) {
      this.stats.malformed++;
      return assemble(query, HEADER, bare(RCODE.FORMERR));
    }
    if (!this.ready()) return assemble(query, q.end, bare(RCODE.SERVFAIL));
    let answer: Encoded | undefined;
    if (q.qclass === 1 || q.qclass === 255) answer = this.zone.answer(q.labels, q.qtype, q.ednsSize !== undefined);
    if (!answer) {
      // Not our zone (or not class IN): we are authoritative, not a resolver.
      this.stats.refused++;
      return assemble(query, q.end, bare(RCODE.REFUSED));
    }
    const limit = transport === 'tcp' ? MAX_TCP : q.ednsSize !== undefined ? Math.min(MAX_UDP, Math.max(CLASSIC_UDP, q.ednsSize)) : CLASSIC_UDP;
    const body = answer.fit(limit, q.end - HEADER);
    if (body !== answer.bytes) this.stats.truncated++;
    return assemble(query, q.end, body);
  }
}
