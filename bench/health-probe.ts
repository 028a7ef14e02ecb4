/**
 * What one TCP health check costs the checker (issue 15): the light check on
 * libuv's TCP handle (`lightTcpProbe`, what the agent uses) against the
 * net.Socket one (`tcpProbe`, its fallback), alternating rounds in the same
 * run. Each round runs N checks against one loopback listener (a child
 * process, so its accept work is not counted), at most 100 in flight. The listener's accept queue holds 4,096 (node's
 * default 511 overflowed: a check completes its handshake in the kernel
 * whether or not the listener has accepted the last ones, the light check
 * outran a node listener, and each dropped SYN cost a 1 s retransmit); CPU is
 * this process's (user + system) per check, and the V8 heap's size after the
 * round says how much garbage the checks left.
 *
 *   node --conditions=source --import tsx bench/health-probe.ts [--checks 60000] [--rounds 3]
 */
import { spawn } from 'node:child_process';
import { getHeapStatistics } from 'node:v8';
import { parseArgs } from 'node:util';
import { lightTcpProbe, tcpProbe, type ProbeResult, type ProbeSpec } from '../packages/agent/src/l4/health/probe.js';
import { median, runMain } from './lib.js';

const { values } = parseArgs({ options: { checks: { type: 'string', default: '60000' }, rounds: { type: 'string', default: '3' } } });
const N = Number(values.checks);
const ROUNDS = Number(values.rounds);
const IN_FLIGHT = 100;

const LISTENER = `
const s = require('node:net').createServer((c) => { c.on('error', () => {}); c.destroy(); });
s.listen({ port: 0, host: '127.0.0.1', backlog: 4096 }, () => console.log(s.address().port));
`;

async function round(probe: (spec: ProbeSpec) => Promise<ProbeResult>, port: number): Promise<{ usPerCheck: number; failed: number; heapMiB: number; perSec: number }> {
  const spec: ProbeSpec = { type: 'tcp', host: '127.0.0.1', port, timeoutMs: 2000 };
  let started = 0;
  let failed = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (started < N) {
        started++;
        if (!(await probe(spec)).ok) failed++;
      }
    }),
  );
  const cpu = process.cpuUsage(cpu0);
  const wall = performance.now() - t0;
  return { usPerCheck: (cpu.user + cpu.system) / N, failed, heapMiB: getHeapStatistics().total_heap_size / 1048576, perSec: (N / wall) * 1000 };
}

runMain(async () => {
  const listener = spawn(process.execPath, ['-e', LISTENER], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const port = Number(await new Promise<string>((resolve) => listener.stdout.once('data', (d: Buffer) => resolve(String(d)))));
    const results = { light: [] as Awaited<ReturnType<typeof round>>[], socket: [] as Awaited<ReturnType<typeof round>>[] };
    for (let i = 0; i < ROUNDS; i++) {
      results.light.push(await round((s) => lightTcpProbe(s), port));
      results.socket.push(await round(tcpProbe, port));
    }
    const row = (name: string, rs: Awaited<ReturnType<typeof round>>[]) =>
      `| ${name} | ${N.toLocaleString('en')} × ${ROUNDS} | **${median(rs.map((r) => r.usPerCheck)).toFixed(1)} µs** (${rs.map((r) => r.usPerCheck.toFixed(1)).join(', ')}) | ${Math.round(median(rs.map((r) => r.perSec))).toLocaleString('en')} | ${median(rs.map((r) => r.heapMiB)).toFixed(0)} MiB | ${rs.reduce((n, r) => n + r.failed, 0)} |`;
    process.stdout.write(
      [
        '| TCP check | checks | CPU per check (median; rounds) | checks/s, 100 in flight | V8 heap after a round | failed |',
        '| --- | --- | --- | --- | --- | --- |',
        row('libuv handle (`lightTcpProbe`, the agent)', results.light),
        row('net.Socket (`tcpProbe`, the fallback)', results.socket),
        '',
      ].join('\n'),
    );
  } finally {
    listener.kill();
  }
});
