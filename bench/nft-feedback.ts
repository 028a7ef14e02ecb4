/**
 * The nftables connection feedback's cost (issue 14 §1): N wlc services × 5
 * servers in a namespace, C DNAT'ed connections in its conntrack table
 * (created with `conntrack -I --dst-nat`, spread over the services), and the
 * real agent process (`switchyard agent --dataplane nftables`). CPU is the
 * agent process's own plus its children's (conntrack, nft), from
 * /proc/<pid>/stat, over the same idle window:
 *
 *  1. baseline: the agent with `--nft-feedback-interval 0` (no feedback), idle;
 *  2. the feedback at the interval, counts unchanged (a round reads and
 *     decides, nothing to write);
 *  3. the same with churn: every second K held connections close and K new
 *     ones open elsewhere, so picks change and are written;
 *  and, in the bench process, the CPU of one `conntrack -L --dst-nat` dump of
 *  the same table (the cost per round of counting by dumps instead of events).
 *
 *   node --conditions=source --import tsx bench/nft-feedback.ts [--services 10000] [--conns 1000] [--interval 250] [--seconds 10] [--churn 10]
 *
 * Needs root and conntrack-tools (it creates the namespace sylfbench-<random> and removes it).
 */
import { execFile, execFileSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { parseArgs } from 'node:util';
import { ServiceInput, toService } from '@switchyard/shared';
import { buildCoordinator } from '../packages/coordinator/src/index.js';
import { ConntrackAdapter } from '../packages/agent/src/adapters/conntrack.js';
import { ExecaRunner } from '../packages/agent/src/exec/runner.js';
import { benchEtcd, freePort, preloadServices, startSwitchyard, stop } from './lib.js';

const run = promisify(execFile);
const { values } = parseArgs({
  options: {
    services: { type: 'string', default: '10000' },
    conns: { type: 'string', default: '1000' },
    interval: { type: 'string', default: '250' },
    seconds: { type: 'string', default: '10' },
    churn: { type: 'string', default: '10' },
  },
});
const N = Number(values.services);
const CONNS = Number(values.conns);
const INTERVAL = Number(values.interval);
const SECONDS = Number(values.seconds);
const CHURN = Number(values.churn);
const NS = `sylfbench-${randomBytes(2).toString('hex')}`;
const TABLE = 'sylfbench';
const HZ = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());

const vip = (i: number) => `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
const serverHost = (i: number, k: number) => `10.200.${k}.${(i % 250) + 1}`;
function service(i: number) {
  return { host: vip(i), port: 80, scheduler: 'wlc', servers: [1, 2, 3, 4, 5].map((k) => ({ host: serverHost(i, k), port: 8080, forwarder: 'm', weight: 1 })) };
}

/** CPU seconds of a process and its reaped children (conntrack, nft). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 14-17 of stat (utime, stime, cutime, cstime); f[0] is field 3.
  return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / HZ;
}

async function metrics(url: string): Promise<string> {
  return (await fetch(url)).text();
}

function metric(text: string, name: string, labels = ''): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name}${labels} `) || (labels === '' && line.startsWith(`${name}{`))) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

interface Conn {
  sport: number;
  service: number;
  server: number;
}

async function addConn(c: Conn): Promise<void> {
  await run('ip', ['netns', 'exec', NS, 'conntrack', '-I', '-p', 'tcp', '-s', '10.250.0.1', '-d', vip(c.service), '--sport', String(c.sport), '--dport', '80', '--dst-nat', `${serverHost(c.service, c.server)}:8080`, '--state', 'ESTABLISHED', '-t', '3600', '-u', 'ASSURED']);
}

async function deleteConn(c: Conn): Promise<void> {
  await run('ip', ['netns', 'exec', NS, 'conntrack', '-D', '-p', 'tcp', '-s', '10.250.0.1', '-d', vip(c.service), '--sport', String(c.sport), '--dport', '80']);
}

async function pool<T>(items: T[], n: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (next < items.length) await fn(items[next++]);
  }));
}

async function startAgent(etcdUrl: string, prefix: string, interval: number, preloadRev: number): Promise<{ child: ChildProcess; url: string; startMs: number }> {
  const port = await freePort();
  const t0 = performance.now();
  const child = await startSwitchyard(
    ['agent', '--host-id', `fb-${interval}`, '--etcd', etcdUrl, '--prefix', prefix, '--dataplane', 'nftables', '--netns', NS, '--nft-table', TABLE, '--nft-feedback-interval', `${interval}ms`, '--metrics-listen', `127.0.0.1:${port}`, '--log-level', 'warn'],
    /running/,
  );
  const url = `http://127.0.0.1:${port}/metrics`;
  while (metric(await metrics(url), 'switchyard_agent_applied_revision') < preloadRev) await new Promise((r) => setTimeout(r, 100));
  return { child, url, startMs: performance.now() - t0 };
}

/** Waits until the feedback's pick changes have not moved for two seconds. */
async function settled(url: string): Promise<number> {
  let last = -1;
  for (;;) {
    const now = metric(await metrics(url), 'switchyard_agent_feedback_pick_changes_total');
    if (now === last) return now;
    last = now;
    await new Promise((r) => setTimeout(r, 2000));
  }
}

interface Window {
  cpuPerSec: number;
  rounds: number;
  changes: number;
  passes: number;
}

async function measure(pid: number, url: string, during?: () => Promise<void>): Promise<Window> {
  const m0 = await metrics(url);
  const c0 = cpuSeconds(pid);
  const t0 = performance.now();
  const end = t0 + SECONDS * 1000;
  while (performance.now() < end) {
    const tick = performance.now();
    if (during) await during();
    await new Promise((r) => setTimeout(r, Math.max(0, 1000 - (performance.now() - tick))));
  }
  const c1 = cpuSeconds(pid);
  const secs = (performance.now() - t0) / 1000;
  const m1 = await metrics(url);
  const d = (name: string, labels = '') => metric(m1, name, labels) - metric(m0, name, labels);
  return {
    cpuPerSec: (c1 - c0) / secs,
    rounds: d('switchyard_agent_feedback_rounds_total'),
    changes: d('switchyard_agent_feedback_pick_changes_total'),
    passes: d('switchyard_agent_sync_duration_seconds_count', '{role="l4",full="false"}'),
  };
}

async function main(): Promise<void> {
  execFileSync('ip', ['netns', 'add', NS]);
  const etcd = await benchEtcd();
  const lines: string[] = [];
  try {
    const prefix = '/bench-feedback';
    const coord = await buildCoordinator({ etcd: [etcd.url], prefix, listen: { host: '127.0.0.1', port: 0 }, logLevel: 'silent' });
    const services = Array.from({ length: N }, (_, i) => toService(ServiceInput.parse(service(i))));
    const preloadRev = await preloadServices(coord.ctx.etcd, coord.ctx.keys, services);
    await coord.close();

    // 1. Baseline: the same agent without the feedback.
    const base = await startAgent(etcd.url, prefix, 0, preloadRev);
    process.stderr.write(`baseline agent applied ${N} services in ${(base.startMs / 1000).toFixed(1)} s\n`);
    await new Promise((r) => setTimeout(r, 3000));
    const idle = await measure(base.child.pid as number, base.url);
    await stop(base.child);
    process.stderr.write(`baseline ${JSON.stringify(idle)}\n`);

    // C connections, spread over the services and their servers.
    const conns: Conn[] = Array.from({ length: CONNS }, (_, j) => ({ sport: 20000 + j, service: (j * 7919) % N, server: (j % 5) + 1 }));
    const t0 = performance.now();
    await pool(conns, 4, addConn);
    process.stderr.write(`${CONNS} conntrack entries in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
    const listed = (await run('ip', ['netns', 'exec', NS, 'conntrack', '-L', '-f', 'ipv4', '--dst-nat'], { maxBuffer: 64 << 20 })).stdout.split('\n').filter(Boolean).length;

    // The alternative: a dump per round (what the feedback does without events), in this process.
    const adapter = new ConntrackAdapter(new ExecaRunner({ netns: NS }));
    const selfCpu = () => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1e6;
    };
    const kids = () => {
      const st = readFileSync('/proc/self/stat', 'utf8');
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      return (Number(f[13]) + Number(f[14])) / HZ;
    };
    const DUMPS = 20;
    const d0 = selfCpu() + kids();
    for (let i = 0; i < DUMPS; i++) await adapter.dnatConnections(4);
    const dumpMs = ((selfCpu() + kids() - d0) * 1000) / DUMPS;
    process.stderr.write(`dump: ${dumpMs.toFixed(1)} ms CPU each\n`);

    // 2. The feedback, counts unchanged.
    const fb = await startAgent(etcd.url, prefix, INTERVAL, preloadRev);
    const firstChanges = await settled(fb.url);
    process.stderr.write(`feedback agent: ${firstChanges} picks set after start\n`);
    const steady = await measure(fb.child.pid as number, fb.url);
    process.stderr.write(`steady ${JSON.stringify(steady)}\n`);

    // 3. Churn: every second CHURN connections close and as many open on another server of another service.
    let sport = 40000;
    let victim = 0;
    const churned = await measure(fb.child.pid as number, fb.url, async () => {
      for (let k = 0; k < CHURN; k++) {
        const i = victim++ % conns.length;
        await deleteConn(conns[i]);
        conns[i] = { sport: sport++, service: (conns[i].service + 1) % N, server: (conns[i].server % 5) + 1 };
        await addConn(conns[i]);
      }
    });
    process.stderr.write(`churn ${JSON.stringify(churned)}\n`);
    await stop(fb.child);

    const load = execFileSync('uptime', { encoding: 'utf8' }).trim();
    const pct = (x: number) => `${(x * 100).toFixed(2)} %`;
    const perRound = (w: Window) => (w.rounds > 0 ? `${(((w.cpuPerSec - idle.cpuPerSec) * SECONDS * 1000) / w.rounds).toFixed(1)} ms` : '—');
    lines.push(
      `${N.toLocaleString('en')} wlc services × 5 servers, ${CONNS.toLocaleString('en')} DNAT'ed connections in conntrack (${listed} listed by \`conntrack -L --dst-nat\`), interval ${INTERVAL} ms, ${SECONDS} s windows. CPU = the agent process + its children (conntrack, nft), one core = 100 %. Load: \`${load}\`.`,
      '',
      '| window | agent CPU | above baseline | feedback rounds | CPU per round (above baseline) | picks changed | incremental passes |',
      '| --- | --- | --- | --- | --- | --- | --- |',
      `| baseline: \`--nft-feedback-interval 0\`, idle | ${pct(idle.cpuPerSec)} | — | — | — | — | ${idle.passes} |`,
      `| feedback, counts unchanged | ${pct(steady.cpuPerSec)} | ${pct(steady.cpuPerSec - idle.cpuPerSec)} | ${steady.rounds} | ${perRound(steady)} | ${steady.changes} | ${steady.passes} |`,
      `| feedback, ${CHURN} connections replaced per second | ${pct(churned.cpuPerSec)} | ${pct(churned.cpuPerSec - idle.cpuPerSec)} | ${churned.rounds} | ${perRound(churned)} | ${churned.changes} | ${churned.passes} |`,
      '',
      `The alternative, a \`conntrack -L --dst-nat\` dump every round (what the feedback falls back to without events), measured in the bench process over ${DUMPS} dumps of the same table: **${dumpMs.toFixed(1)} ms CPU per dump** (node + \`ip netns exec conntrack\`), i.e. ${pct(dumpMs / INTERVAL)} of a core at one dump per ${INTERVAL} ms.`,
      '',
      `First start with the feedback: ${firstChanges.toLocaleString('en')} services got a pick (every service is tracked; those whose pick equals the plain weights too).`,
    );
  } finally {
    await etcd.cleanup();
    execFileSync('ip', ['netns', 'del', NS]);
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

await main();
