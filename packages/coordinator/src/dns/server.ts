/**
 * The DNS sockets: UDP and TCP on the same address and port (RFC 7766: a
 * server that truncates over UDP must answer over TCP). TCP messages carry a
 * two-byte length prefix; several queries may arrive on one connection, in
 * any fragmentation.
 *
 * TCP flow control: a client may pipeline queries and never read the
 * answers (RFC 7766 §6.2.1 allows pipelining; nothing obliges it to read).
 * Answers are written only while the socket accepts them: once write()
 * reports a full buffer, reading stops until 'drain', so the kernel's window
 * pushes back on the client and a connection holds at most the socket's
 * high-water mark plus one answer in memory. A connection with no traffic
 * either way (idle, or a client that stopped reading) is closed after
 * `tcpIdleMs` (RFC 7766 §6.2.3: servers may close idle connections).
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, isIP, type Server as TcpServer, type Socket } from 'node:net';
import type { FastifyBaseLogger } from 'fastify';
import type { Responder } from './responder.js';

/** A partial message (2 + 65,535 bytes) plus one read (64 KiB). */
const MAX_TCP_BUFFERED = 2 + 65_535 + 65_536;

export interface DnsServerOptions {
  /** TCP connections with no traffic either way are closed after this long (ms). Default 10,000. */
  tcpIdleMs?: number;
  /** Kernel receive buffer for the UDP socket: bursts beyond it are dropped. */
  udpRecvBuffer?: number;
}

export class DnsServer {
  private udp?: UdpSocket;
  private tcp?: TcpServer;
  private readonly conns = new Set<Socket>();
  /** Counters for tests and benchmarks. `tcpMaxPendingBytes`: most answer bytes ever queued on one connection. */
  readonly stats = { tcpAnswers: 0, tcpPauses: 0, tcpMaxPendingBytes: 0 };

  /** Open TCP connections. */
  get tcpConnections(): number {
    return this.conns.size;
  }

  constructor(
    private readonly responder: Responder,
    private readonly log: FastifyBaseLogger,
    private readonly opts: DnsServerOptions = {},
  ) {}

  /**
   * Binds UDP first (port 0 picks one), then TCP on the same port. Resolves
   * to the port. With port 0 the port UDP got may be taken for TCP (by an
   * outgoing connection's ephemeral port, say): then both are tried again.
   */
  async listen(host: string, port: number): Promise<number> {
    for (let attempt = 1; ; attempt++) {
      const udp = await this.bindUdp(host, port);
      const bound = udp.address().port;
      try {
        await this.listenTcp(host, bound);
      } catch (err) {
        await new Promise<void>((resolve) => udp.close(() => resolve()));
        if (port === 0 && (err as NodeJS.ErrnoException).code === 'EADDRINUSE' && attempt < 10) continue;
        throw err;
      }
      this.udp = udp;
      this.log.info({ host, port: bound }, 'dns responder listening (udp, tcp)');
      return bound;
    }
  }

  private async bindUdp(host: string, port: number): Promise<UdpSocket> {
    const udp = createSocket({ type: isIP(host) === 6 ? 'udp6' : 'udp4', reuseAddr: false });
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(port, host, () => {
        udp.off('error', reject);
        resolve();
      });
    });
    try {
      udp.setRecvBufferSize(this.opts.udpRecvBuffer ?? 4 * 1024 * 1024);
    } catch {
      // Capped by net.core.rmem_max: keep the kernel's size.
    }
    udp.on('error', (err) => this.log.warn({ err: err.message }, 'dns udp socket error'));
    udp.on('message', (msg, rinfo) => {
      let out: Buffer | undefined;
      try {
        out = this.responder.respond(msg, 'udp');
      } catch (err) {
        this.log.error({ err }, 'dns query failed');
        return;
      }
      if (out) udp.send(out, rinfo.port, rinfo.address);
    });
    return udp;
  }

  private async listenTcp(host: string, port: number): Promise<void> {
    const tcp = createServer((sock) => this.serveTcp(sock));
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', reject);
      tcp.listen(port, host, () => {
        tcp.off('error', reject);
        resolve();
      });
    });
    tcp.on('error', (err) => this.log.warn({ err: err.message }, 'dns tcp server error'));
    this.tcp = tcp;
  }

  private serveTcp(sock: Socket): void {
    this.conns.add(sock);
    sock.setNoDelay(true);
    sock.setTimeout(this.opts.tcpIdleMs ?? 10_000, () => sock.destroy());
    let buf: Buffer = Buffer.alloc(0);
    let blocked = false;
    const onDrain = () => {
      blocked = false;
      sock.resume();
      answer();
    };
    // Answers the complete queries in `buf` until it runs out or the socket is full.
    const answer = () => {
      while (!blocked && buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (buf.length < 2 + len) break;
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        let out: Buffer | undefined;
        try {
          out = this.responder.respond(msg, 'tcp');
        } catch (err) {
          this.log.error({ err }, 'dns query failed');
        }
        if (!out) {
          sock.destroy();
          return;
        }
        const frame = Buffer.allocUnsafe(2 + out.length);
        frame.writeUInt16BE(out.length, 0);
        out.copy(frame, 2);
        const ok = sock.write(frame);
        this.stats.tcpAnswers++;
        if (sock.writableLength > this.stats.tcpMaxPendingBytes) this.stats.tcpMaxPendingBytes = sock.writableLength;
        if (!ok) {
          blocked = true;
          this.stats.tcpPauses++;
          sock.pause();
          sock.once('drain', onDrain);
        }
      }
    };
    sock.on('data', (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      // Reading stops while blocked, so at most one read's worth arrives on
      // top of a partial message; anything more is not a DNS client.
      if (buf.length > MAX_TCP_BUFFERED) {
        sock.destroy();
        return;
      }
      answer();
    });
    sock.on('error', () => sock.destroy());
    sock.on('close', () => this.conns.delete(sock));
  }

  async close(): Promise<void> {
    for (const s of this.conns) s.destroy();
    const udp = this.udp;
    const tcp = this.tcp;
    this.udp = undefined;
    this.tcp = undefined;
    await Promise.all([
      udp ? new Promise<void>((resolve) => udp.close(() => resolve())) : undefined,
      tcp ? new Promise<void>((resolve) => tcp.close(() => resolve())) : undefined,
    ]);
  }
}
