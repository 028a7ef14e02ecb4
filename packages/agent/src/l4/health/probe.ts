/**
 * The probes themselves, in-process: a TCP connect, or an HTTP GET whose
 * status must equal `expect`. No shell and no process per check — thousands
 * run concurrently on the event loop. Every probe ends within its timeout and
 * never throws.
 */
import { request } from 'node:http';
import { connect } from 'node:net';

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

function tcpProbe(spec: ProbeSpec): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const socket = connect({ host: spec.host, port: spec.port });
    const timer = setTimeout(() => done(fail(`tcp connect timed out after ${spec.timeoutMs} ms`)), spec.timeoutMs);
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
  return spec.type === 'http' ? httpProbe(spec) : tcpProbe(spec);
}

/** Probes from this process's own network namespace. */
export class LocalProber implements Prober {
  probe(spec: ProbeSpec): Promise<ProbeResult> {
    return runProbe(spec);
  }
  async close(): Promise<void> {}
}
