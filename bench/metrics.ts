/**
 * Issue 13's cost of metrics: GET /services/:id throughput of a coordinator
 * with metrics on (the default: every request counted and timed) vs one
 * started with --no-metrics, both over the same etcd and the same 1,000
 * services, same load generator (wrk). Rounds alternate the two sides so
 * drift on a noisy machine hits both. Goal: on ≥ 0.95× off.
 *
 * Throughput on a shared 2-core machine swings 3× between rounds, so the
 * bench also reads each coordinator's CPU time (/proc utime + stime) over
 * every round: CPU per request is what metrics add, and it hardly moves when
 * a neighbour steals cycles. A CPU-bound server's throughput is the inverse
 * of it, so off's CPU per request ÷ on's is the throughput ratio an idle
 * machine would show.
 *
 * Run: node --conditions=source --import tsx bench/metrics.ts [--rounds 5] [--seconds 5] [--concurrency 32]
 */
import { parseArgs } from 'node:util';
import { benchEtcd, cpuMs, fmt, freePort, getServicesLua, median, runMain, startSwitchyard, stop, wrk } from './lib.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '5' }, seconds: { type: 'string', default: '5' }, concurrency: { type: 'string', default: '32' } } });
const ROUNDS = Number(values.rounds);
const SECONDS = Number(values.seconds);
const C = Number(values.concurrency);


async function coordinator(etcdUrl: string, extra: string[]): Promise<{ base: string; child: Awaited<ReturnType<typeof startSwitchyard>> }> {
  const port = await freePort();
  const child = await startSwitchyard(['coordinator', '--etcd', etcdUrl, '--listen', `127.0.0.1:${port}`, '--prefix', '/bench', '--log-level', 'warn', ...extra], /coordinator listening at/);
  return { base: `http://127.0.0.1:${port}`, child };
}

async function main() {
  const etcd = await benchEtcd();
  const on = await coordinator(etcd.url, []);
  const off = await coordinator(etcd.url, ['--no-metrics']);
  const out: string[] = [];
  try {
    const thousand = Array.from({ length: 1000 }, (_, i) => ({ host: `10.200.${i >> 8}.${i & 255}`, port: 80, servers: [{ host: '10.201.0.1', port: 8080 }, { host: '10.201.0.2', port: 8080 }] }));
    // Written through a third coordinator that then goes away: the process that
    // handled the 1,000-service PUT stays measurably slower afterwards (its
    // heap), which would bias whichever side took it (seen: 27 µs a request).
    const writer = await coordinator(etcd.url, ['--no-metrics']);
    const put = await fetch(`${writer.base}/services`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(thousand) });
    if (!put.ok) throw new Error(`PUT 1,000: ${put.status} ${await put.text()}`);
    const ids = ((await put.json()) as { id: string }[]).map((s) => s.id);
    await stop(writer.child);
    // Both must answer every id before the clock starts (the other one learns them from its watch).
    for (const side of [on, off]) {
      for (;;) {
        const list = (await (await fetch(`${side.base}/services`)).json()) as unknown[];
        if (list.length === 1000) break;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    if ((await fetch(`${off.base}/metrics`)).status !== 404) throw new Error('--no-metrics still serves /metrics');
    const lua = getServicesLua(ids);
    const onRps: number[] = [];
    const offRps: number[] = [];
    const onP99: number[] = [];
    const offP99: number[] = [];
    const onCpuUs: number[] = [];
    const offCpuUs: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      // Alternate which side goes first, too.
      const order = r % 2 === 0 ? ([off, on] as const) : ([on, off] as const);
      for (const side of order) {
        const cpu0 = cpuMs(side.child.pid as number);
        const w = wrk(side.base, { connections: C, seconds: SECONDS, lua });
        if (w.non2xx > 0) throw new Error(`GET: ${w.non2xx} non-2xx answers`);
        (side === on ? onCpuUs : offCpuUs).push(((cpuMs(side.child.pid as number) - cpu0) * 1000) / w.requests);
        (side === on ? onRps : offRps).push(w.requestsPerSec);
        (side === on ? onP99 : offP99).push(w.p99ms);
      }
    }
    // The metrics side did count them: the scrape shows the route pattern with every request.
    const text = await (await fetch(`${on.base}/metrics`)).text();
    const counted = /^switchyard_http_requests_total\{route="\/services\/:id",method="GET",status="200"\} (\d+)/m.exec(text);
    if (!counted || Number(counted[1]) === 0) throw new Error('the metrics side counted no GET /services/:id');

    out.push(`### GET /services/:id with metrics on vs --no-metrics, 1,000 services stored (wrk, ${C} connections, ${ROUNDS} rounds × ${SECONDS} s)`);
    out.push('| | median req/s | median p99 | rounds |', '|---|---|---|---|');
    out.push(`| --no-metrics | ${fmt(median(offRps))} | ${median(offP99).toFixed(2)} ms | ${offRps.map((x) => fmt(x)).join(', ')} |`);
    out.push(`| metrics on (default) | ${fmt(median(onRps))} | ${median(onP99).toFixed(2)} ms | ${onRps.map((x) => fmt(x)).join(', ')} |`);
    const ratios = onRps.map((x, i) => x / offRps[i]);
    out.push(`| **ratio on/off** (goal ≥ 0.95) | **${(median(onRps) / median(offRps)).toFixed(2)}×** (median of round ratios ${median(ratios).toFixed(2)}×) | | ${ratios.map((x) => x.toFixed(2)).join(', ')} |`);
    const cpuRatios = offCpuUs.map((x, i) => x / onCpuUs[i]);
    out.push('', '| | median CPU per request | rounds |', '|---|---|---|');
    out.push(`| --no-metrics | ${median(offCpuUs).toFixed(1)} µs | ${offCpuUs.map((x) => x.toFixed(1)).join(', ')} |`);
    out.push(`| metrics on (default) | ${median(onCpuUs).toFixed(1)} µs | ${onCpuUs.map((x) => x.toFixed(1)).join(', ')} |`);
    out.push(`| **off ÷ on** (= throughput ratio when CPU-bound; goal ≥ 0.95) | **${(median(offCpuUs) / median(onCpuUs)).toFixed(3)}×** (median of round ratios ${median(cpuRatios).toFixed(3)}×) | ${cpuRatios.map((x) => x.toFixed(2)).join(', ')} |`);
    out.push('', `(${counted[1]} GET /services/:id counted by the metrics side, under route="/services/:id")`, '');
  } finally {
    await stop(on.child);
    await stop(off.child);
    await etcd.cleanup();
  }
  process.stdout.write(`${out.join('\n')}\n`);
}

runMain(main);
