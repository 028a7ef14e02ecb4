/**
 * The probes themselves, in-process: a TCP connect, or an HTTP GET whose
 * status must equal `expect`. No shell and no process per check — thousands
 * run concurrently on the event loop. Every probe ends within its timeout and
 * never throws. A TCP check goes through libuv's TCP handle directly
 * (`lightTcpProbe`), not a net.Socket: at 25,000 checks a second that is
 * the difference between a checker that keeps its schedule and one that
 * runs seconds late (BENCHMARKS.md, issue 15).
 */
import { request } from 'node:http';
import { connect } from 'node:net';
import { getSystemErrorName } from 'node:util';

export interface ProbeSpec {
  type: 'tcp' | 'http';
  host: string;
  port: number;
  /** HTTP only. */
  path?: string;
  expect?: number;
  timeoutMs: number;
}

export type ProbeResult = { ok: true } | { ok: false; error: string };

/** Runs probes somewhere (this process, or a worker inside a network namespace). */
export interface Prober {
  /** Resolves with the result, or undefined when no verdict could be had (the prober itself failed). */
  probe(spec: ProbeSpec): Promise<ProbeResult | undefined>;
  close(): Promise<void>;
}

const fail = (error: string): ProbeResult => ({ ok: false, error });
const timedOut = (spec: ProbeSpec) => fail(`tcp connect timed out after ${spec.timeoutMs} ms`);

/** libuv's TCP handle as Node's `tcp_wrap` binding exposes it (what net.Socket wraps). */
interface TcpHandle {
  connect(req: TcpConnectReq, address: string, port: number): number;
  connect6(req: TcpConnectReq, address: string, port: number): number;
  /** Closes with a RST (uv_tcp_close_reset); non-zero when it cannot (then `close`). */
  reset(cb: () => void): number;
  close(cb?: () => void): void;
}
interface TcpConnectReq {
  oncomplete: (status: number) => void;
}
interface TcpWrap {
  TCP: new (type: number) => TcpHandle;
  TCPConnectWrap: new () => TcpConnectReq;
  constants: { SOCKET: number };
}

/**
 * The binding, when this Node has it with every method the light check uses
 * (`process.binding` is deprecated — DEP0111, documentation-only — but kept;
 * where it goes, checks fall back to net.Socket).
 */
function loadTcpWrap(): TcpWrap | null {
  try {
    const b = (process as unknown as { binding(name: string): Partial<TcpWrap> }).binding('tcp_wrap');
    const proto = b.TCP?.prototype as Partial<TcpHandle> | undefined;
    if (typeof b.TCPConnectWrap !== 'function' || typeof b.constants?.SOCKET !== 'number' || !proto) return null;
    if (![proto.connect, proto.connect6, proto.reset, proto.close].every((f) => typeof f === 'function')) return null;
    return b as TcpWrap;
  } catch {
    return null;
  }
}

const tcpWrap = loadTcpWrap();

/** Whether TCP checks go through libuv's handle directly (false: net.Socket). */
export const lightTcpChecks = tcpWrap !== null;

/**
 * A TCP check on libuv's handle, without net.Socket's stream and emitter:
 * ~15 µs of CPU per check instead of ~35 (bench/health-probe.ts; 10,000 × 5
 * every 2 s is 25,000 checks a second). A connected check ends with a RST,
 * as below.
 */
export function lightTcpProbe(spec: ProbeSpec, b: TcpWrap | null = tcpWrap): Promise<ProbeResult> {
  if (!b) return tcpProbe(spec);
  return new Promise((resolve) => {
    const handle = new b.TCP(b.constants.SOCKET);
    const req = new b.TCPConnectWrap();
    let settled = false;
    const finish = (r: ProbeResult) => {
      settled = true;
      clearTimeout(timer);
      resolve(r);
    };
    const timer = setTimeout(() => {
      if (settled) return;
      finish(timedOut(spec));
      handle.close(); // its connect then completes with ECANCELED, ignored below
    }, spec.timeoutMs);
    req.oncomplete = (status) => {
      if (settled) return;
      if (status === 0) {
        if (handle.reset(() => undefined) !== 0) handle.close();
        finish({ ok: true });
      } else {
        handle.close();
        finish(fail(`tcp connect: ${getSystemErrorName(status)}`));
      }
    };
    const err = spec.host.includes(':') ? handle.connect6(req, spec.host, spec.port) : handle.connect(req, spec.host, spec.port);
    if (err !== 0) {
      handle.close();
      finish(fail(`tcp connect: ${getSystemErrorName(err)}`));
    }
  });
}

/** A TCP check through net.Socket (where the binding is missing). */
export function tcpProbe(spec: ProbeSpec): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const socket = connect({ host: spec.host, port: spec.port });
    const timer = setTimeout(() => done(timedOut(spec)), spec.timeoutMs);
    function done(r: ProbeResult) {
      clearTimeout(timer);
      socket.removeAllListeners();
      socket.on('error', () => undefined);
      // A connected probe ends with a RST, as HAProxy's checks do: a FIN
      // would leave one TIME_WAIT socket per check on this host (25,000 a
      // second at 10,000 × 5 every 2 s, past the kernel's tcp_max_tw_buckets).
      if (r.ok) socket.resetAndDestroy();
      else socket.destroy();
      resolve(r);
    }
    socket.once('connect', () => done({ ok: true }));
    socket.once('error', (e: NodeJS.ErrnoException) => done(fail(`tcp connect: ${e.code ?? e.message}`)));
  });
}

function httpProbe(spec: ProbeSpec): Promise<ProbeResult> {
  return new Promise((resolve) => {
    let settled = false;
    const host = spec.host.includes(':') ? `[${spec.host}]` : spec.host;
    const req = request({ host: spec.host, port: spec.port, path: spec.path ?? '/', method: 'GET', agent: false, headers: { host: `${host}:${spec.port}`, 'user-agent': 'switchyard-health', connection: 'close' } });
    const timer = setTimeout(() => done(fail(`http GET ${spec.path} timed out after ${spec.timeoutMs} ms`)), spec.timeoutMs);
    function done(r: ProbeResult) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      resolve(r);
    }
    req.once('response', (res) => {
      res.resume();
      const expect = spec.expect ?? 200;
      done(res.statusCode === expect ? { ok: true } : fail(`http GET ${spec.path} answered ${res.statusCode}, expected ${expect}`));
    });
    req.on('error', (e: NodeJS.ErrnoException) => done(fail(`http GET ${spec.path}: ${e.code ?? e.message}`)));
    req.end();
  });
}

export function runProbe(spec: ProbeSpec): Promise<ProbeResult> {
  return spec.type === 'http' ? httpProbe(spec) : lightTcpProbe(spec);
}

/** Probes from this process's own network namespace. */
export class LocalProber implements Prober {
  probe(spec: ProbeSpec): Promise<ProbeResult> {
    return runProbe(spec);
  }
  async close(): Promise<void> {}
}
