/**
 * Agent benchmarks (issue 3):
 *  1. one change, REST write → host applied (status appliedRevision ≥ the
 *     write's X-Switchyard-Revision), with N services × 5 servers present,
 *     for the dry-run and nftables dataplanes (nftables in a namespace);
 *     baseline in the same run: the REST write alone;
 *  2. the first full sync of N × 5 from an empty kernel (nftables);
 *  3. agent RSS idle with N services, next to a bare `node` process;
 *  4. at the largest N (nftables): the same changes, back to back for 8 s,
 *     with a full resync (table read back) every 2 s instead of every 60 s.
 *
 *   node --conditions=source --import tsx bench/agent-apply.ts [--services 1000,10000] [--changes 60]
 *
 * Needs root (it creates the namespace syl4bench-<random> and removes it).
 */
import { spawn, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { atomically, chunkPuts, INITIAL_GENERATION, ServiceInput, toService } from '@switchyard/shared';
import { buildCoordinator } from '../packages/coordinator/src/index.js';
import { startAgent, type RunningAgent } from '../packages/agent/src/index.js';
import { benchEtcd, median, percentile } from './lib.js';

const { values } = parseArgs({ options: { services: { type: 'string', default: '1000,10000' }, changes: { type: 'string', default: '60' } } });
const SIZES = String(values.services).split(',').map(Number);
const CHANGES = Number(values.changes);
const NS = `syl4bench-${randomBytes(2).toString('hex')}`;

function service(i: number) {
  return {
    host: `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`,
    port: 80,
    scheduler: 'wrr',
    servers: [1, 2, 3, 4, 5].map((k) => ({ host: `10.200.${k}.${(i % 250) + 1}`, port: 8080, forwarder: 'm', weight: 1 })),
  };
}

const ms = (x: number) => `${x.toFixed(1)} ms`;

async function waitApplied(agent: RunningAgent, rev: number): Promise<void> {
  const deadline = Date.now() + 120_000;
  while ((agent.status.written?.appliedRevision ?? 0) < rev) {
    if (Date.now() > deadline) throw new Error(`agent did not apply revision ${rev} (at ${agent.status.written?.appliedRevision})`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

function rssKiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
}

async function idleRss(etcdUrl: string, prefix: string): Promise<{ agent: number; bare: number }> {
  const cli = fileURLToPath(new URL('../packages/cli/src/main.ts', import.meta.url));
  const args = ['--conditions=source', '--import', 'tsx'];
  const agent = spawn(process.execPath, [...args, cli, 'agent', '--host-id', 'rss', '--etcd', etcdUrl, '--prefix', prefix, '--dataplane', 'dry-run', '--log-level', 'warn'], { stdio: 'ignore' });
  const bare = spawn(process.execPath, [...args, '-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 15_000));
  const out = { agent: rssKiB(agent.pid as number), bare: rssKiB(bare.pid as number) };
  agent.kill('SIGTERM');
  bare.kill('SIGTERM');
  return out;
}

/** Phase 4: changes back to back for 8 s while the agent reads its table back every 2 s. */
async function changesDuringResync(coord: Awaited<ReturnType<typeof buildCoordinator>>, etcdUrl: string, prefix: string, n: number, preloadRev: number): Promise<number[]> {
  const agent = await startAgent({ hostId: 'bench-resync', etcd: [etcdUrl], prefix, dataplane: 'nftables', netns: NS, nftTable: `syl4r${n}`, resyncMs: 2000, logLevel: 'silent', flushOnExit: true });
  const latencies: number[] = [];
  try {
    await waitApplied(agent, preloadRev);
    const end = performance.now() + 8000;
    for (let c = 0; performance.now() < end; c++) {
      const svc = service((c * 7919 + 13) % n);
      const id = `tcp-${svc.host.replace(/\./g, '_')}-80`;
      const start = performance.now();
      const res = await coord.app.inject({ method: 'PUT', url: `/services/${id}/servers`, payload: c % 2 === 0 ? svc.servers.slice(0, 4) : svc.servers });
      if (res.statusCode !== 200) throw new Error(`PUT ${id}: ${res.statusCode} ${res.body}`);
      await waitApplied(agent, Number(res.headers['x-switchyard-revision']));
      latencies.push(performance.now() - start);
    }
  } finally {
    await agent.stop();
  }
  if (process.env.BENCH_DEBUG) process.stderr.write(`during resync ${latencies.map((x) => x.toFixed(0)).join(' ')}\n`);
  return latencies;
}

async function main(): Promise<void> {
  execFileSync('ip', ['netns', 'add', NS]);
  const etcd = await benchEtcd();
  const rows: string[] = [];
  const extra: string[] = [];
  try {
    for (const n of SIZES) {
      const prefix = `/bench-agent-${n}`;
      const coord = await buildCoordinator({ etcd: [etcd.url], prefix, listen: { host: '127.0.0.1', port: 0 }, logLevel: 'silent' });
      // Preload straight into etcd (valid Service JSON, in the initial
      // generation, in transactions under etcd's default limits): nobody reads yet.
      const services = Array.from({ length: n }, (_, i) => toService(ServiceInput.parse(service(i))));
      let preloadRev = 0;
      for (const chunk of chunkPuts(services.map((s) => [coord.ctx.keys.l4.service(INITIAL_GENERATION, s.id), JSON.stringify(s)]))) {
        preloadRev = Number((await atomically(coord.ctx.etcd, chunk)).header.revision);
      }
      for (const dataplane of ['dry-run', 'nftables'] as const) {
        const table = `syl4b${n}`;
        const t0 = performance.now();
        const agent = await startAgent({ hostId: `bench-${dataplane}`, etcd: [etcd.url], prefix, dataplane, netns: NS, nftTable: table, logLevel: 'silent', flushOnExit: true });
        await waitApplied(agent, preloadRev);
        const full = performance.now() - t0;
        process.stderr.write(`${n} ${dataplane}: first full sync ${full.toFixed(0)} ms\n`);
        const latencies: number[] = [];
        const writes: number[] = [];
        for (let c = 0; c < CHANGES; c++) {
          const i = (c * 7919) % n;
          const svc = service(i);
          const id = `tcp-${svc.host.replace(/\./g, '_')}-80`;
          // Alternate between 4 and 5 servers: a real change every time.
          const servers = c % 2 === 0 ? svc.servers.slice(0, 4) : svc.servers;
          const start = performance.now();
          const res = await coord.app.inject({ method: 'PUT', url: `/services/${id}/servers`, payload: servers });
          if (res.statusCode !== 200) throw new Error(`PUT ${id}: ${res.statusCode} ${res.body}`);
          writes.push(performance.now() - start);
          await waitApplied(agent, Number(res.headers['x-switchyard-revision']));
          latencies.push(performance.now() - start);
        }
        await agent.stop();
        if (process.env.BENCH_DEBUG) process.stderr.write(`${dataplane} ${latencies.map((x) => x.toFixed(0)).join(' ')}\n`);
        rows.push(
          `| ${n.toLocaleString('en')} × 5 | ${dataplane} | ${ms(median(latencies))} | ${ms(percentile(latencies, 99))} | ${ms(median(writes))} | ${(median(latencies) / median(writes)).toFixed(1)}× |`,
        );
        if (dataplane === 'nftables') extra.push(`| ${n.toLocaleString('en')} × 5 | ${(full / 1000).toFixed(2)} s |`);
        process.stderr.write(`${rows.at(-1)}\n`);
      }
      if (n === Math.max(...SIZES)) {
        const during = await changesDuringResync(coord, etcd.url, prefix, n, preloadRev);
        extra.push(
          `\nChanges during frequent full resyncs (${n.toLocaleString('en')} × 5, nftables, resync every 2 s, ${during.length} changes back to back over 8 s): p50 ${ms(median(during))}, p99 ${ms(percentile(during, 99))}, max ${ms(Math.max(...during))}.`,
        );
        process.stderr.write(`${extra.at(-1)}\n`);
        const rss = await idleRss(etcd.url, prefix);
        extra.push(`\nAgent RSS idle with ${n.toLocaleString('en')} services (dry-run, from sources via tsx): **${(rss.agent / 1024).toFixed(0)} MiB**; a bare \`node --import tsx\` process: ${(rss.bare / 1024).toFixed(0)} MiB (${(rss.agent / rss.bare).toFixed(1)}×).`);
      }
      await coord.close();
    }
  } finally {
    await etcd.cleanup();
    execFileSync('ip', ['netns', 'del', NS]);
  }
  process.stdout.write(
    [
      '### One change, REST write → host applied',
      '',
      `${CHANGES} changes (PUT /services/:id/servers, alternating 4 and 5 servers) one after the other; "write alone" is the same REST write's own latency (the baseline, measured in the same run).`,
      '',
      '| services present | dataplane | p50 | p99 | write alone (p50) | p50 / write |',
      '| --- | --- | --- | --- | --- | --- |',
      ...rows,
      '',
      '### Full sync from an empty kernel (nftables, agent start → status applied)',
      '',
      '| services | time |',
      '| --- | --- |',
      ...extra,
      '',
    ].join('\n'),
  );
}

await main();
