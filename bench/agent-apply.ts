/**
 * Agent benchmarks (issues 3 and 14):
 *  1. one change as a client sees it, with N services × 5 servers present,
 *     for the dry-run and nftables dataplanes (nftables in a namespace), in
 *     three legs: the REST write; write → the agent's status key in etcd
 *     says applied; status in etcd → GET /hosts/:id says applied;
 *  2. the first full sync of N × 5 from an empty kernel (nftables), next to
 *     `nft -f` of the same script alone (the floor);
 *  3. agent RSS idle with N services, next to a bare `node` process;
 *  4. at the largest N (nftables): one change every 50 ms measured while
 *     100 changes/s of background churn are written and a full resync runs
 *     every 2 s instead of every 60 s.
 * Phases 1 and 4 run twice in the same run: with the agent's settings of
 * before issue 14 (one `nft -f` per pass, ≥ 20 ms between passes, every
 * resync reads the table back, commands spawned from the agent itself) as
 * the baseline, then with the defaults.
 *
 *   node --conditions=source --import tsx bench/agent-apply.ts [--services 1000,10000] [--changes 60] [--skip-rss] [--churn-only] [--skip-churn] [--settle ms] [--settings before,after] [--agent-process]
 *
 * --agent-process runs phase 4's agent as users run it, a process of its own
 * (`node packages/cli/dist/main.js agent`: run `npm run build` first), and
 * reads "applied" from its status key in etcd; otherwise the agent runs in
 * this process, next to the coordinator and the churn (one event loop and
 * one heap for all three).
 *
 * Needs root (it creates the namespace syl4bench-<random> and removes it).
 */
import { spawn, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { ServiceInput, toService, type Service } from '@switchyard/shared';
import { buildCoordinator } from '../packages/coordinator/src/index.js';
import { startAgent, type AgentConfigInput, type RunningAgent } from '../packages/agent/src/index.js';
import { emptyObserved, planNft, renderNftScript, serviceObjects } from '../packages/agent/src/l4/nftables/index.js';
import { agentLaunch, benchEtcd, benchServiceInput, median, percentile, preloadServices } from './lib.js';

const { values } = parseArgs({
  options: { services: { type: 'string', default: '1000,10000' }, changes: { type: 'string', default: '60' }, 'skip-rss': { type: 'boolean', default: false }, 'churn-only': { type: 'boolean', default: false }, 'agent-process': { type: 'boolean', default: false }, 'skip-churn': { type: 'boolean', default: false }, settle: { type: 'string', default: '300' }, settings: { type: 'string', default: 'before,after' } },
});
const SIZES = String(values.services).split(',').map(Number);
const CHANGES = Number(values.changes);
const NS = `syl4bench-${randomBytes(2).toString('hex')}`;

/** The agent's settings before issue 14 (the baseline of phases 1 and 4). */
const BEFORE: Partial<AgentConfigInput> = { nftPersistent: false, spawnHelper: false, minSyncIntervalMs: 20, syncBurst: 1 };
const SETTINGS = [
  { key: 'before', name: 'before (nft -f, 20 ms interval, read-back)', config: BEFORE },
  { key: 'after', name: 'after (defaults)', config: {} },
  { key: 'i0', name: 'defaults, minSyncIntervalMs 0', config: { minSyncIntervalMs: 0 } },
  { key: 'i5', name: 'defaults, minSyncIntervalMs 5', config: { minSyncIntervalMs: 5 } },
].filter((s) => String(values.settings).split(',').includes(s.key));

const service = (i: number) => benchServiceInput(i);

const ms = (x: number) => `${x.toFixed(1)} ms`;
const load = () => loadavg()[0].toFixed(1);
const sleep = (t: number) => new Promise((r) => setTimeout(r, t));
type Coord = Awaited<ReturnType<typeof buildCoordinator>>;

/** What says which revision an agent has applied: the in-process agent, or its status key in etcd. */
type Applied = RunningAgent | { applied(): number };

async function waitApplied(agent: Applied, rev: number): Promise<void> {
  const deadline = Date.now() + 120_000;
  const at = () => ('applied' in agent ? agent.applied() : (agent.status.written?.appliedRevision ?? 0));
  while (at() < rev) {
    if (Date.now() > deadline) throw new Error(`agent did not apply revision ${rev} (at ${at()})`);
    await sleep(1);
  }
}

/** The agent as its own process (the built CLI), with "applied" read from its status key through an etcd watch. */
async function agentProcess(coord: Coord, etcdUrl: string, prefix: string, hostId: string, table: string): Promise<{ applied(): number; stop(): Promise<void> }> {
  let applied = 0;
  const watcher = await coord.ctx.etcd
    .watch()
    .key(coord.ctx.keys.hosts.status(hostId))
    .create();
  watcher.on('put', (kv) => {
    applied = Math.max(applied, (JSON.parse(kv.value.toString()) as { appliedRevision: number }).appliedRevision);
  });
  const cli = fileURLToPath(new URL('../packages/cli/dist/main.js', import.meta.url));
  const { nodeArgs, env } = agentLaunch();
  const child = spawn(process.execPath, [...nodeArgs, cli, 'agent', '--host-id', hostId, '--etcd', etcdUrl, '--prefix', prefix, '--dataplane', 'nftables', '--netns', NS, '--nft-table', table, '--resync', '2s', '--flush-on-exit', '--log-level', 'warn'], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env,
  });
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  return {
    applied: () => applied,
    async stop() {
      child.kill('SIGTERM');
      await exited;
      await watcher.cancel();
    },
  };
}

async function waitVisible(coord: Coord, hostId: string, rev: number): Promise<void> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const res = await coord.app.inject({ method: 'GET', url: `/hosts/${hostId}` });
    if (res.statusCode === 200 && (res.json() as { appliedRevision: number }).appliedRevision >= rev) return;
    if (Date.now() > deadline) throw new Error(`GET /hosts/${hostId} did not show revision ${rev}`);
    await sleep(1);
  }
}

/** One change to service i (4 servers on even c, 5 on odd: a real change every time); its revision. */
async function change(coord: Coord, i: number, c: number): Promise<number> {
  const svc = service(i);
  const id = `tcp-${svc.host.replace(/\./g, '_')}-80`;
  const res = await coord.app.inject({ method: 'PUT', url: `/services/${id}/servers`, payload: c % 2 === 0 ? svc.servers.slice(0, 4) : svc.servers });
  if (res.statusCode !== 200) throw new Error(`PUT ${id}: ${res.statusCode} ${res.body}`);
  return Number(res.headers['x-switchyard-revision']);
}

interface Legs {
  total: number[];
  write: number[];
  toStatus: number[];
  toApi: number[];
}

/** Phase 1: CHANGES changes one after the other, each timed in its three legs. */
async function oneChange(coord: Coord, agent: RunningAgent, hostId: string, n: number): Promise<Legs> {
  const legs: Legs = { total: [], write: [], toStatus: [], toApi: [] };
  for (let c = 0; c < CHANGES; c++) {
    const t0 = performance.now();
    const rev = await change(coord, (c * 7919) % n, c);
    const t1 = performance.now();
    await waitApplied(agent, rev);
    const t2 = performance.now();
    await waitVisible(coord, hostId, rev);
    const t3 = performance.now();
    legs.write.push(t1 - t0);
    legs.toStatus.push(t2 - t1);
    legs.toApi.push(t3 - t2);
    legs.total.push(t3 - t0);
    // A client's next write comes a little later, not in the same millisecond.
    await sleep(5);
  }
  return legs;
}

/** Phase 4: one measured change every 50 ms while 100 changes/s of churn are written and a full resync runs every 2 s. */
async function changesDuringResync(coord: Coord, etcdUrl: string, prefix: string, n: number, preloadRev: number, config: Partial<AgentConfigInput>): Promise<number[]> {
  const hostId = 'bench-resync';
  const logLevel = (process.env.BENCH_LOG ?? 'silent') as 'silent';
  const agent = values['agent-process']
    ? await agentProcess(coord, etcdUrl, prefix, hostId, `syl4r${n}`)
    : await startAgent({ hostId, etcd: [etcdUrl], prefix, dataplane: 'nftables', netns: NS, nftTable: `syl4r${n}`, resyncMs: 2000, logLevel, logFormat: 'json', flushOnExit: true, ...config });
  const latencies: number[] = [];
  const writes: number[] = [];
  let churning = true;
  let churnFailures = 0;
  let failures = 0;
  try {
    await waitApplied(agent, preloadRev);
    // Background churn: 100 changes/s, open loop (nobody waits for them to apply). A write the
    // overloaded machine's etcd refuses (503) is counted, not fatal.
    const churn = (async () => {
      for (let c = 0; churning; c++) {
        const next = performance.now() + 10;
        await change(coord, (c * 104_729 + 7) % n, c).catch(() => churnFailures++);
        await sleep(Math.max(0, next - performance.now()));
      }
    })();
    const end = performance.now() + 8000;
    for (let c = 0; performance.now() < end; c++) {
      const start = performance.now();
      const rev = await change(coord, (c * 7919 + 13) % n, c).catch(() => undefined);
      if (rev === undefined) failures++;
      else {
        const written = performance.now();
        await waitApplied(agent, rev);
        latencies.push(performance.now() - start);
        writes.push(written - start);
      }
      await sleep(Math.max(0, start + 50 - performance.now()));
    }
    churning = false;
    await churn;
    if (process.env.BENCH_DEBUG) process.stderr.write(`during resync: ${latencies.map((x) => x.toFixed(0)).join(' ')}\nof which the REST write: ${writes.map((x) => x.toFixed(0)).join(' ')}\n`);
    if (failures + churnFailures > 0) process.stderr.write(`writes refused (503) during phase 4: ${failures} measured, ${churnFailures} churn\n`);
  } finally {
    churning = false;
    await agent.stop();
  }
  return latencies;
}

function nftAlone(services: Service[], table: string): number {
  const objects = new Map(services.map((s) => [s.id, serviceObjects(s).objects]));
  const script = renderNftScript(table, planNft({ desired: objects, observed: emptyObserved() }));
  const t = performance.now();
  execFileSync('ip', ['netns', 'exec', NS, 'nft', '-f', '-'], { input: script });
  const took = performance.now() - t;
  execFileSync('ip', ['netns', 'exec', NS, 'nft', 'delete', 'table', 'inet', table]);
  return took;
}

function rssKiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
}

async function idleRss(etcdUrl: string, prefix: string): Promise<{ agent: number; bare: number }> {
  const cli = fileURLToPath(new URL('../packages/cli/src/main.ts', import.meta.url));
  const args = ['--conditions=source', '--import', 'tsx'];
  const agent = spawn(process.execPath, [...args, cli, 'agent', '--host-id', 'rss', '--etcd', etcdUrl, '--prefix', prefix, '--dataplane', 'dry-run', '--log-level', 'warn'], { stdio: 'ignore' });
  const bare = spawn(process.execPath, [...args, '-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  await sleep(15_000);
  const out = { agent: rssKiB(agent.pid as number), bare: rssKiB(bare.pid as number) };
  agent.kill('SIGTERM');
  bare.kill('SIGTERM');
  return out;
}

const dist = (xs: number[]) => `${ms(median(xs))} · ${ms(percentile(xs, 99))}`;

async function main(): Promise<void> {
  execFileSync('ip', ['netns', 'add', NS]);
  const etcd = await benchEtcd();
  const rows: string[] = [];
  const fulls: string[] = [];
  const extra: string[] = [];
  const log = (line: string) => process.stderr.write(`${line}\n`);
  try {
    for (const n of SIZES) {
      const prefix = `/bench-agent-${n}`;
      const coord = await buildCoordinator({ etcd: [etcd.url], prefix, listen: { host: '127.0.0.1', port: 0 }, logLevel: 'silent' });
      // Preload straight into etcd (valid Service JSON, in the initial
      // generation, in transactions under etcd's default limits): nobody reads yet.
      const services = Array.from({ length: n }, (_, i) => toService(ServiceInput.parse(service(i))));
      const preloadRev = await preloadServices(coord.ctx.etcd, coord.ctx.keys, services);
      for (const dataplane of values['churn-only'] ? [] : (['dry-run', 'nftables'] as const)) {
        for (const s of SETTINGS) {
          const hostId = `bench-${dataplane}-${s.key}`;
          const table = `syl4b${n}`;
          const t0 = performance.now();
          const agent = await startAgent({ hostId, etcd: [etcd.url], prefix, dataplane, netns: NS, nftTable: table, logLevel: 'silent', flushOnExit: true, ...s.config });
          await waitApplied(agent, preloadRev);
          const full = performance.now() - t0;
          // --settle: let the agent's start-up work (e.g. nft monitor printing the first load) end first.
          await sleep(Number(values.settle));
          const l1 = load();
          const legs = await oneChange(coord, agent, hostId, n);
          await agent.stop();
          if (process.env.BENCH_DEBUG) log(`${dataplane} ${s.key} totals in order: ${legs.total.map((x) => x.toFixed(0)).join(' ')}`);
          rows.push(
            `| ${n.toLocaleString('en')} × 5 | ${dataplane} | ${s.name} | **${dist(legs.total)}** | ${dist(legs.write)} | ${dist(legs.toStatus)} | ${dist(legs.toApi)} | ${l1} |`,
          );
          log(rows.at(-1) as string);
          if (dataplane === 'nftables') {
            const alone = nftAlone(services, `syl4a${n}`);
            fulls.push(`| ${n.toLocaleString('en')} × 5 | ${s.name} | **${(full / 1000).toFixed(2)} s** | ${(alone / 1000).toFixed(2)} s | ${load()} |`);
            log(fulls.at(-1) as string);
          }
        }
      }
      if (n === Math.max(...SIZES)) {
        // Its own process runs with the defaults (the settings of before are not all flags).
        for (const s of values['skip-churn'] ? [] : SETTINGS.filter((x) => !values['agent-process'] || x.key === 'after')) {
          const l = load();
          const during = await changesDuringResync(coord, etcd.url, prefix, n, preloadRev, s.config);
          extra.push(
            `| ${n.toLocaleString('en')} × 5 | ${s.name} | ${during.length} | ${ms(median(during))} | **${ms(percentile(during, 99))}** | ${ms(Math.max(...during))} | ${l} |`,
          );
          log(extra.at(-1) as string);
        }
        if (!values['skip-rss']) {
          const rss = await idleRss(etcd.url, prefix);
          extra.push(`\nAgent RSS idle with ${n.toLocaleString('en')} services (dry-run, from sources via tsx): **${(rss.agent / 1024).toFixed(0)} MiB**; a bare \`node --import tsx\` process: ${(rss.bare / 1024).toFixed(0)} MiB (${(rss.agent / rss.bare).toFixed(1)}×).`);
        }
      }
      await coord.close();
    }
  } finally {
    await etcd.cleanup();
    execFileSync('ip', ['netns', 'del', NS]);
  }
  process.stdout.write(
    [
      '### One change as a client sees it: REST write → GET /hosts/:id shows it applied',
      '',
      `${CHANGES} changes (PUT /services/:id/servers, alternating 4 and 5 servers) one after the other, 5 ms apart; p50 · p99 of each leg: the REST write; write answered → the agent's status key in etcd has the revision; status in etcd → GET /hosts/:id shows it (polled every 1 ms, in process).`,
      '',
      '| services present | dataplane | agent settings | total | REST write | → status in etcd | → visible via GET /hosts/:id | load |',
      '| --- | --- | --- | --- | --- | --- | --- | --- |',
      ...rows,
      '',
      '### Full sync from an empty kernel (nftables, agent start → status applied)',
      '',
      '| services | agent settings | agent start → applied | `nft -f` of the same script alone | load |',
      '| --- | --- | --- | --- | --- |',
      ...fulls,
      '',
      '### One change while full resyncs run (nftables, resync every 2 s, 100 changes/s of background churn, one measured change every 50 ms for 8 s; REST write → status applied)',
      '',
      '| services | agent settings | changes | p50 | p99 | max | load |',
      '| --- | --- | --- | --- | --- | --- | --- |',
      ...extra,
      '',
    ].join('\n'),
  );
}

await main();
