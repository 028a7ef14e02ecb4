/**
 * The built-in DNS responder, asked with `dig` over UDP and TCP, answering
 * from records that real /provide websockets put into a real etcd.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { promisify } from 'node:util';
import * as dnsPacket from 'dns-packet';
import { Etcd3 } from 'etcd3';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { Responder } from '../../packages/coordinator/src/dns/responder.js';
import { DnsServer } from '../../packages/coordinator/src/dns/server.js';
import { Zone } from '../../packages/coordinator/src/dns/zone.js';
import { testCoordinator } from '../helpers/coordinator.js';
import { freePort, sharedEtcdUrl } from '../helpers/etcd.js';
import { eventually } from '../helpers/eventually.js';
import { provide, terminateProviders } from '../helpers/providers.js';

const run = promisify(execFile);

interface Dig {
  status: string;
  flags: string[];
  answer: string[][];
  authority: string[][];
  additional: string[][];
}

/** `dig` with its sections parsed into whitespace-split records. */
async function dig(port: number, args: string[]): Promise<Dig> {
  const out: Dig = { status: '', flags: [], answer: [], authority: [], additional: [] };
  // Once for the header (status, flags), once for the records.
  const { stdout: header } = await run('dig', ['@127.0.0.1', '-p', String(port), '+time=2', '+tries=1', '+noall', '+comments', ...args]);
  out.status = /status: (\w+)/.exec(header)?.[1] ?? '';
  out.flags = (/;; flags: ([a-z ]+);/.exec(header)?.[1] ?? '').trim().split(/\s+/);
  const { stdout: sections } = await run('dig', ['@127.0.0.1', '-p', String(port), '+time=2', '+tries=1', '+noall', '+answer', '+authority', '+additional', ...args]);
  for (const line of sections.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 5 || line.startsWith(';')) continue;
    const section = f[3] === 'SOA' ? out.authority : header.includes('ANSWER: 0') || !isAnswerName(f[0], args) ? out.additional : out.answer;
    section.push(f);
  }
  return out;
}

/** The answer section's owner is the query name (last argument). */
function isAnswerName(owner: string, args: string[]): boolean {
  const q = args[args.length - 1].toLowerCase().replace(/\.?$/, '.');
  return owner.toLowerCase() === q;
}


describe('dns responder', () => {
  let c: Coordinator;
  let base: string;
  let dnsPort: number;
  let etcd: Etcd3;
  const label = `t${randomBytes(5).toString('hex')}`;
  const root = `${label}.test.local`;
  const dir = `/skydns/local/test/${label}/`;

  async function recordCount(): Promise<number> {
    return (await etcd.getAll().prefix(dir).keys()).length;
  }

  beforeAll(async () => {
    dnsPort = await freePort();
    c = await testCoordinator('dns', { dnsRoot: root, providerTtlMs: 2000, dnsListen: { host: '127.0.0.1', port: dnsPort } });
    base = await c.listen();
    etcd = new Etcd3({ hosts: sharedEtcdUrl() });
    await provide(base, 'service=web&port=80&host=10.0.0.1&weight=100');
    await provide(base, 'service=web&port=81&host=10.0.0.2&weight=300');
    await provide(base, 'service=web&port=82&host=10.0.0.3&priority=2');
    await provide(base, 'service=db&port=5432&host=fd00::1&category=services,prod');
    await eventually(async () => ((await recordCount()) === 4 ? true : undefined));
    // The responder's own watch must have seen them too.
    await eventually(async () => ((await dig(dnsPort, ['SRV', `web.services.${root}`])).answer.length === 3 ? true : undefined));
  });
  afterAll(async () => {
    terminateProviders();
    await c.close();
    etcd.close();
  });

  it('answers SRV as SkyDNS does: weight share per priority, target = record name, address in additional', async () => {
    const r = await dig(dnsPort, ['SRV', `web.services.${root}`]);
    expect(r.status).toBe('NOERROR');
    expect(r.flags).toContain('aa');
    const srv = r.answer.map((f) => ({ ttl: Number(f[1]), prio: Number(f[4]), weight: Number(f[5]), port: Number(f[6]), target: f[7] }));
    srv.sort((a, b) => a.port - b.port);
    expect(srv.map((s) => [s.prio, s.weight, s.port])).toEqual([
      [1, 25, 80],
      [1, 75, 81],
      [2, 100, 82],
    ]);
    for (const s of srv) {
      // skyapi's record id (a sha1 of what the provider is): 40 hex without a prefix.
      expect(s.target).toMatch(new RegExp(`^[0-9a-f]{40}\\.web\\.services\\.${label}\\.test\\.local\\.$`));
      // Records on the coordinator lease carry the provider TTL.
      expect(s.ttl).toBe(2);
    }
    const glue = Object.fromEntries(r.additional.filter((f) => f[3] === 'A').map((f) => [f[0], f[4]]));
    expect(glue[srv[0].target]).toBe('10.0.0.1');
    expect(glue[srv[1].target]).toBe('10.0.0.2');
    expect(glue[srv[2].target]).toBe('10.0.0.3');
  });

  it('answers A and AAAA with the providers\' addresses', async () => {
    const a = await dig(dnsPort, ['A', `web.services.${root}`]);
    expect(a.answer.map((f) => f[4]).sort()).toEqual(['10.0.0.1', '10.0.0.2', '10.0.0.3']);
    // category=services,prod, left to right: db.services.prod.<root>.
    const aaaa = await dig(dnsPort, ['AAAA', `db.services.prod.${root}`]);
    expect(aaaa.answer.map((f) => f[4])).toEqual(['fd00::1']);
    // Names are case-insensitive; the question comes back as asked.
    const mixed = await dig(dnsPort, ['A', `WEB.Services.${root.toUpperCase()}`]);
    expect(mixed.answer).toHaveLength(3);
  });

  it('answers wildcards: * matches one label, at any depth below', async () => {
    const web = await dig(dnsPort, ['SRV', `*.services.${root}`]);
    expect(web.answer).toHaveLength(3);
    const all = await dig(dnsPort, ['SRV', `*.*.${root}`]);
    expect(all.answer).toHaveLength(4);
    const prod = await dig(dnsPort, ['SRV', `*.services.prod.${root}`]);
    expect(prod.answer.map((f) => f[6])).toEqual(['5432']);
    const one = await dig(dnsPort, ['A', `*.web.services.${root}`]);
    expect(one.answer.map((f) => f[4]).sort()).toEqual(['10.0.0.1', '10.0.0.2', '10.0.0.3']);
    const none = await dig(dnsPort, ['SRV', `*.nothing.services.${root}`]);
    expect(none.status).toBe('NXDOMAIN');
  });

  it('says NXDOMAIN for names it does not have, NODATA for types it does not have, REFUSED outside its zone', async () => {
    const nx = await dig(dnsPort, ['SRV', `nope.services.${root}`]);
    expect(nx.status).toBe('NXDOMAIN');
    expect(nx.answer).toHaveLength(0);
    expect(nx.authority[0][3]).toBe('SOA');
    const nodata = await dig(dnsPort, ['AAAA', `web.services.${root}`]);
    expect(nodata.status).toBe('NOERROR');
    expect(nodata.answer).toHaveLength(0);
    expect(nodata.authority[0][3]).toBe('SOA');
    const refused = await dig(dnsPort, ['A', 'example.com']);
    expect(refused.status).toBe('REFUSED');
  });

  it('answers over TCP too', async () => {
    const r = await dig(dnsPort, ['+tcp', 'SRV', `web.services.${root}`]);
    expect(r.answer).toHaveLength(3);
  });

  it('sets TC on a UDP answer that does not fit, and gives the whole answer over TCP', async () => {
    const many = await Promise.all(Array.from({ length: 30 }, (_, i) => provide(base, `service=many&port=${3000 + i}&host=10.0.1.${i + 1}`)));
    await eventually(async () => ((await dig(dnsPort, ['+tcp', 'SRV', `many.services.${root}`])).answer.length === 30 ? true : undefined));
    const udp = await dig(dnsPort, ['+noedns', '+ignore', 'SRV', `many.services.${root}`]);
    expect(udp.flags).toContain('tc');
    expect(udp.answer.length).toBeLessThan(30);
    expect(udp.answer.length).toBeGreaterThan(0);
    // dig's default: EDNS, retry over TCP on TC.
    const full = await dig(dnsPort, ['SRV', `many.services.${root}`]);
    expect(full.answer).toHaveLength(30);
    many.forEach((ws) => ws.close());
  });

  it('forgets a provider as soon as its socket closes', async () => {
    const ws = await provide(base, 'service=brief&port=1&host=10.9.9.9');
    await eventually(async () => ((await dig(dnsPort, ['A', `brief.services.${root}`])).answer.length === 1 ? true : undefined));
    ws.close();
    const r = await eventually(async () => {
      const d = await dig(dnsPort, ['A', `brief.services.${root}`]);
      return d.status === 'NXDOMAIN' ? d : undefined;
    }, 2000);
    expect(r.answer).toHaveLength(0);
  });
});

/**
 * The TCP side of the DNS sockets on its own (real sockets, a zone filled
 * in memory): a client that pipelines queries and does not read must not
 * make the server queue answers without bound, and idle connections go.
 */
describe('dns over tcp: flow control and idle connections', () => {
  const root = 'flow.test.local';
  const zone = new Zone({ root, leasedTtl: 10 });
  // 200 providers: a ~10 KB SRV answer to a ~40 byte query.
  for (let i = 0; i < 200; i++) {
    const key = `/skydns/local/test/flow/services/big/r${i}`;
    zone.set(key, key.split('/').filter(Boolean).slice(1), { host: `10.1.${i >> 8}.${i & 255}`, port: 1000 + i }, true);
  }
  const servers: DnsServer[] = [];
  const clients: Socket[] = [];
  afterAll(async () => {
    clients.forEach((s) => s.destroy());
    await Promise.all(servers.map((s) => s.close()));
  });

  async function serve(tcpIdleMs: number): Promise<{ server: DnsServer; port: number }> {
    const server = new DnsServer(new Responder(zone), pino({ level: 'silent' }), { tcpIdleMs });
    servers.push(server);
    return { server, port: await server.listen('127.0.0.1', 0) };
  }

  function dial(port: number): Promise<Socket> {
    const sock = connect(port, '127.0.0.1');
    clients.push(sock);
    return new Promise((resolve, reject) => {
      sock.once('connect', () => resolve(sock));
      sock.once('error', reject);
    });
  }

  function frames(n: number): Buffer {
    const q = dnsPacket.encode({ type: 'query', id: 1, questions: [{ type: 'SRV', name: `big.services.${root}`, class: 'IN' }] });
    const one = Buffer.allocUnsafe(2 + q.length);
    one.writeUInt16BE(q.length, 0);
    q.copy(one, 2);
    return Buffer.concat(Array.from({ length: n }, () => one));
  }

  function closedWithin(sock: Socket, ms: number): Promise<boolean> {
    if (sock.destroyed) return Promise.resolve(true);
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(false), ms);
      sock.once('close', () => {
        clearTimeout(t);
        resolve(true);
      });
    });
  }

  it('stops reading while a client does not read its answers, and answers every query once it does', async () => {
    const { server, port } = await serve(60_000);
    const sock = await dial(port);
    sock.pause();
    const n = 2000;
    // ~20 MB of answers if the server queued them all.
    sock.write(frames(n));
    await eventually(() => (server.stats.tcpPauses >= 1 ? true : undefined), 10_000);
    // Blocked on a full socket: what it holds is the high-water mark plus one answer.
    expect(server.stats.tcpMaxPendingBytes).toBeLessThan(128 * 1024);
    expect(server.stats.tcpAnswers).toBeLessThan(n);
    // The client reads: every query gets its answer, in order, none dropped.
    let got = 0;
    let buf = Buffer.alloc(0);
    sock.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const msg = dnsPacket.decode(buf.subarray(2, 2 + buf.readUInt16BE(0)));
        expect(msg.answers).toHaveLength(200);
        buf = buf.subarray(2 + buf.readUInt16BE(0));
        got++;
      }
    });
    sock.resume();
    await eventually(() => (got === n ? true : undefined), 30_000);
    expect(server.stats.tcpMaxPendingBytes).toBeLessThan(128 * 1024);
    sock.destroy();
  }, 60_000);

  it('closes a connection that stays silent, and one whose client stopped reading', async () => {
    const { server, port } = await serve(300);
    const silent = await dial(port);
    // Never closed without the idle timeout; 300 ms plus a loaded machine's slack.
    expect(await closedWithin(silent, 10_000)).toBe(true);

    const stuck = await dial(port);
    stuck.pause();
    const before = server.stats.tcpPauses;
    stuck.write(frames(2000));
    await eventually(() => (server.stats.tcpPauses > before ? true : undefined), 10_000);
    expect(server.tcpConnections).toBe(1);
    // The paused client would not notice the close until it reads: ask the server.
    await eventually(() => (server.tcpConnections === 0 ? true : undefined), 10_000);
  }, 30_000);
});
