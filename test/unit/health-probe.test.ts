/**
 * The TCP check itself, over loopback with real sockets: the light check on
 * libuv's TCP handle (what the agent uses) and the net.Socket one (its
 * fallback) answer the same — connected, refused, timed out, IPv6 — and a connected
 * check ends with a RST, so the server sees a reset and this host keeps no
 * TIME_WAIT socket per check.
 */
import { execFileSync, spawn } from 'node:child_process';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lightTcpChecks, lightTcpProbe, tcpProbe, type ProbeSpec } from '../../packages/agent/src/l4/health/probe.js';

let server: Server;
let port = 0;
let closedPort = 0;
const resets: string[] = [];

function listen(host: string): Promise<Server> {
  return new Promise((resolve) => {
    const s = createServer((sock: Socket) => {
      sock.on('error', (e: NodeJS.ErrnoException) => resets.push(e.code ?? e.message));
      sock.on('end', () => resets.push('FIN'));
    });
    s.listen(0, host, () => resolve(s));
  });
}

beforeAll(async () => {
  server = await listen('::');
  port = (server.address() as { port: number }).port;
  const gone = await listen('127.0.0.1');
  closedPort = (gone.address() as { port: number }).port;
  await new Promise((r) => gone.close(r));
});

afterAll(async () => {
  await new Promise((r) => server.close(r));
});

const spec = (host: string, p: number): ProbeSpec => ({ type: 'tcp', host, port: p, timeoutMs: 1000 });
const timeWaits = (p: number) => execFileSync('ss', ['-tanH', 'state', 'time-wait', `( sport = :${p} or dport = :${p} )`]).toString().trim().split('\n').filter(Boolean).length;

describe.each([
  ['light (libuv handle)', lightTcpProbe],
  ['net.Socket', tcpProbe],
] as const)('TCP check: %s', (_name, probe) => {
  it('connects to a listener (IPv4 and IPv6) and ends with a RST: no TIME_WAIT left', async () => {
    resets.length = 0;
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => probe(spec(i % 2 ? '::1' : '127.0.0.1', port))));
    expect(results.every((r) => r.ok)).toBe(true);
    await expect.poll(() => resets.length).toBe(20);
    expect(resets.every((r) => r === 'ECONNRESET')).toBe(true);
    expect(timeWaits(port)).toBe(0);
  });

  it('gives up after its timeout: a listener whose accept queue is full drops the SYN', async () => {
    // A listener that never accepts, backlog 0: one connection fills its queue, later SYNs are dropped.
    const py = spawn('python3', ['-c', "import socket, time\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen(0)\nprint(s.getsockname()[1], flush=True)\ntime.sleep(60)"]);
    const fillers: Socket[] = [];
    try {
      const full = Number(await new Promise<string>((resolve) => py.stdout.once('data', (d: Buffer) => resolve(String(d)))));
      for (let i = 0; i < 3; i++) fillers.push(connect(full, '127.0.0.1').on('error', () => undefined));
      await new Promise((r) => setTimeout(r, 200));
      const t = performance.now();
      expect(await probe({ ...spec('127.0.0.1', full), timeoutMs: 300 })).toEqual({ ok: false, error: 'tcp connect timed out after 300 ms' });
      expect(performance.now() - t).toBeGreaterThanOrEqual(290);
    } finally {
      for (const f of fillers) f.destroy();
      py.kill();
    }
  });

  it('says why it failed: a port nobody listens on is refused', async () => {
    expect(await probe(spec('127.0.0.1', closedPort))).toEqual({ ok: false, error: 'tcp connect: ECONNREFUSED' });
    expect(await probe(spec('::1', closedPort))).toEqual({ ok: false, error: 'tcp connect: ECONNREFUSED' });
  });
});

it('this Node has the binding the light check uses (else the agent falls back to net.Socket)', () => {
  expect(lightTcpChecks).toBe(true);
});

it('without the binding, the light check is the net.Socket one', async () => {
  expect(await lightTcpProbe(spec('127.0.0.1', closedPort), null)).toEqual({ ok: false, error: 'tcp connect: ECONNREFUSED' });
});
