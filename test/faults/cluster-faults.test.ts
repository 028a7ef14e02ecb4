/**
 * The cluster fault suite (issue #12 §4): a real 3-member etcd cluster, two
 * coordinators as real child processes (the built CLI) sharing one prefix,
 * and a closed-loop writer alternating between them. After each fault the
 * state is read straight from etcd and compared with the answers:
 *
 *   lost                       answered 200, absent from etcd
 *   answered-5xx-but-applied   answered 503 (ETCD_UNAVAILABLE: not applied), present in etcd
 *   5xx                        every 503/504 (a 504 that was applied is honest: OUTCOME_UNKNOWN)
 *   window                     longest stretch without a successful write while the fault lasted
 *
 * The table is printed at the end (BENCHMARKS.md, "Issue 12 — the cluster fault suite").
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEtcdClient, keyspace, INITIAL_GENERATION, type EtcdClient } from '@switchyard/shared';
import { startAgent } from '../../packages/agent/src/index.js';
import { freePort } from '../../packages/cli/src/embedded-etcd.js';
import { startCli } from '../helpers/cli.js';
import { startEtcdCluster, type ClusterMember, type EtcdCluster } from '../helpers/etcd-cluster.js';
import { B1, B2, count, L4Lab, request, VIP } from '../helpers/l4-topology.js';
import { startTcpProxy } from '../helpers/tcp-proxy.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Answer {
  /** HTTP status; 0 = no answer (connection refused or reset: outcome unknown if it was sent). */
  status: number;
  code?: string;
  at: number;
  host: string;
  coordinator: number;
}

interface Row {
  scenario: string;
  acked: number;
  lost: number;
  fiveXxApplied: number;
  fiveXx: number;
  fiveXxCodes: string;
  noAnswer: number;
  windowMs: number;
  note: string;
}

interface CoordinatorProcess {
  port: number;
  base: string;
  child?: ChildProcess;
}

let cluster: EtcdCluster;
let direct: EtcdClient;
const prefix = `/sy-cluster-faults/${randomBytes(4).toString('hex')}`;
const keys = keyspace(prefix);
const coordinators: CoordinatorProcess[] = [];
const rows: Row[] = [];

async function startCoordinator(c: CoordinatorProcess): Promise<void> {
  const args = ['coordinator', '--etcd', cluster.urls.join(','), '--listen', `127.0.0.1:${c.port}`, '--prefix', prefix, '--log-level', 'error'];
  const { child, ready } = startCli(args, /coordinator listening at/, {}, 30_000, { built: true });
  await ready;
  c.child = child;
}

/** A real agent process (nftables dataplane in the lab's balancer namespace). */
async function startAgentProcess(hostId: string, netns: string, table: string): Promise<ChildProcess> {
  const args = ['agent', '--host-id', hostId, '--etcd', cluster.urls.join(','), '--prefix', prefix, '--dataplane', 'nftables', '--netns', netns, '--nft-table', table, '--log-level', 'error'];
  const { child, ready } = startCli(args, /agent ".*" running/, {}, 30_000, { built: true });
  await ready;
  return child;
}

async function appliedRevision(hostId: string): Promise<number> {
  const r = await fetch(`${coordinators[1].base}/hosts/${hostId}`);
  return r.ok ? ((await r.json()) as { appliedRevision?: number }).appliedRevision ?? 0 : 0;
}

async function post(k: number, url: string, payload: unknown, method = 'POST'): Promise<number> {
  const r = await fetch(`${coordinators[k].base}${url}`, { method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(payload) });
  expect(r.status, await r.clone().text()).toBe(200);
  return Number(r.headers.get('x-switchyard-revision'));
}

async function killCoordinator(c: CoordinatorProcess, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  const p = c.child;
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise((r) => p.once('exit', r));
  p.kill(signal);
  await exited;
}

/** The hosts of every L4 service stored in etcd now, read straight from etcd. */
async function storedHosts(): Promise<Set<string>> {
  const gen = (await direct.get(keys.l4.current).string()) ?? INITIAL_GENERATION;
  const all = await direct.getAll().prefix(keys.l4.set(gen)).strings();
  return new Set(Object.values(all).map((v) => (JSON.parse(v) as { host: string }).host));
}

let seq = 0;
/** A host no scenario used before: 10.<scenario>.<i/250>.<i%250+1>. */
function nextHost(scenario: number): string {
  const i = seq++;
  return `10.${100 + scenario}.${Math.floor(i / 250) % 250}.${(i % 250) + 1}`;
}

/**
 * Closed-loop writer: one POST /services at a time, alternating between the
 * coordinators; a coordinator that refused a connection is skipped for 300 ms.
 */
function runWriter(scenario: number, until: () => boolean): { answers: Answer[]; done: Promise<void> } {
  const answers: Answer[] = [];
  const downUntil = [0, 0];
  const done = (async () => {
    let turn = 0;
    while (!until()) {
      let k = turn++ % coordinators.length;
      if (performance.now() < downUntil[k]) k = (k + 1) % coordinators.length;
      const host = nextHost(scenario);
      try {
        const r = await fetch(`${coordinators[k].base}/services`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ host, port: 80, type: 'tcp' }),
          signal: AbortSignal.timeout(10_000),
        });
        const body = (await r.json().catch(() => ({}))) as { code?: string };
        answers.push({ status: r.status, code: body.code, at: performance.now(), host, coordinator: k });
      } catch {
        answers.push({ status: 0, at: performance.now(), host, coordinator: k });
        downUntil[k] = performance.now() + 300;
        await sleep(5);
      }
    }
  })();
  return { answers, done };
}

/** Longest stretch without a 200 between `from` and `to` (ms, performance.now()). */
function longestWindow(answers: Answer[], from: number, to: number): number {
  const ok = answers.filter((a) => a.status === 200).map((a) => a.at);
  let last = from;
  let longest = 0;
  for (const t of ok) {
    if (t < from) continue;
    if (t > to) {
      longest = Math.max(longest, t - last);
      return longest;
    }
    longest = Math.max(longest, t - last);
    last = t;
  }
  return Math.max(longest, to - last);
}

/** Cluster healthy again, then the answers checked against etcd. */
async function settle(scenario: string, answers: Answer[], windowMs: number, note = ''): Promise<Row> {
  await cluster.waitForLeader();
  await sleep(1500);
  const stored = await storedHosts();
  const acked = answers.filter((a) => a.status === 200);
  const row: Row = {
    scenario,
    acked: acked.length,
    lost: acked.filter((a) => !stored.has(a.host)).length,
    fiveXxApplied: answers.filter((a) => a.status === 503 && stored.has(a.host)).length,
    fiveXx: answers.filter((a) => a.status >= 500).length,
    fiveXxCodes: [503, 504].map((s) => [s, answers.filter((a) => a.status === s).length]).filter(([, n]) => n > 0).map(([s, n]) => `${n}×${s}`).join(', '),
    noAnswer: answers.filter((a) => a.status === 0).length,
    windowMs: Math.round(windowMs),
    note,
  };
  rows.push(row);
  const unexpected = answers.filter((a) => a.status !== 200 && a.status !== 0 && a.status !== 503 && a.status !== 504);
  expect(unexpected, JSON.stringify(unexpected.slice(0, 3))).toEqual([]);
  for (const a of answers.filter((x) => x.status === 503)) expect(a.code).toBe('ETCD_UNAVAILABLE');
  for (const a of answers.filter((x) => x.status === 504)) expect(a.code).toBe('OUTCOME_UNKNOWN');
  return row;
}

async function restartDead(): Promise<void> {
  for (const m of cluster.members) if (m.process && (m.process.exitCode !== null || m.process.signalCode !== null)) await cluster.restart(m);
  await cluster.waitForLeader();
}

/** Polls until a different member leads; the time it was seen. */
async function electedAfter(old: ClusterMember): Promise<number> {
  for (;;) {
    try {
      if ((await cluster.leader()) !== old) return performance.now();
    } catch {
      // election under way
    }
    await sleep(20);
  }
}

beforeAll(async () => {
  cluster = await startEtcdCluster(3);
  direct = createEtcdClient({ hosts: cluster.urls });
  for (let i = 0; i < 2; i++) {
    const port = await freePort();
    coordinators.push({ port, base: `http://127.0.0.1:${port}` });
  }
  await Promise.all(coordinators.map(startCoordinator));
}, 90_000);

afterAll(async () => {
  if (rows.length) {
    const lines = [
      '| scenario | acknowledged writes | lost | answered-5xx-but-applied | 5xx | no answer | longest window without a successful write | note |',
      '|---|---|---|---|---|---|---|---|',
      ...rows.map((r) => `| ${r.scenario} | ${r.acked} | ${r.lost} | ${r.fiveXxApplied} | ${r.fiveXx}${r.fiveXxCodes ? ` (${r.fiveXxCodes})` : ''} | ${r.noAnswer} | ${r.windowMs} ms | ${r.note} |`),
    ];
    process.stderr.write(`\ncluster fault suite:\n${lines.join('\n')}\n`);
  }
  await Promise.all(coordinators.map((c) => killCoordinator(c, 'SIGTERM')));
  direct?.close();
  await cluster?.stop();
}, 60_000);

describe('cluster faults, two coordinator processes, writes checked against etcd', () => {
  it('kill -9 the leader: nothing lost, no 503 applied, window ≤ election + 0.3 s', async () => {
    const leader = await cluster.leader();
    let stop = false;
    const w = runWriter(1, () => stop);
    await sleep(1000);
    const killedAt = performance.now();
    await cluster.kill(leader);
    const electedAt = await electedAfter(leader);
    await sleep(2500);
    stop = true;
    await w.done;
    const window = longestWindow(w.answers, killedAt - 1000, performance.now());
    const election = electedAt - killedAt;
    await restartDead();
    const row = await settle('kill -9 the etcd leader', w.answers, window, `election ${Math.round(election)} ms`);
    expect(row.lost).toBe(0);
    expect(row.fiveXxApplied).toBe(0);
    expect(w.answers.filter((a) => a.status === 503 && a.at > electedAt)).toEqual([]);
    expect(window, `window ${Math.round(window)} ms, election ${Math.round(election)} ms`).toBeLessThanOrEqual(election + 300);
  });

  it('kill -9 a coordinator: the writer goes on through the other, nothing lost', async () => {
    let stop = false;
    const w = runWriter(2, () => stop);
    await sleep(1000);
    const killedAt = performance.now();
    await killCoordinator(coordinators[0]);
    await sleep(2000);
    const end = performance.now();
    await startCoordinator(coordinators[0]);
    await sleep(1000);
    stop = true;
    await w.done;
    const window = longestWindow(w.answers, killedAt, end);
    const row = await settle('kill -9 a coordinator (restarted)', w.answers, window);
    expect(row.lost).toBe(0);
    expect(row.fiveXxApplied).toBe(0);
    expect(row.fiveXx).toBe(0);
    expect(w.answers.filter((a) => a.status === 200 && a.coordinator === 0 && a.at > end).length, 'writes through the restarted coordinator').toBeGreaterThan(0);
    expect(window).toBeLessThan(1000);
  });

  it('freeze every member ~3 s: no 503 applied, nothing lost, writes resume', async () => {
    let stop = false;
    const w = runWriter(3, () => stop);
    await sleep(1000);
    const frozenAt = performance.now();
    for (const m of cluster.members) cluster.freeze(m);
    await sleep(3000);
    for (const m of cluster.members) cluster.thaw(m);
    const thawedAt = performance.now();
    await sleep(2500);
    stop = true;
    await w.done;
    const window = longestWindow(w.answers, frozenAt, performance.now());
    const row = await settle('SIGSTOP every member 3 s', w.answers, window, `resumed ${Math.round(window - (thawedAt - frozenAt))} ms after SIGCONT`);
    expect(row.lost).toBe(0);
    expect(row.fiveXxApplied).toBe(0);
    expect(w.answers.filter((a) => a.status === 200 && a.at > thawedAt).length).toBeGreaterThan(0);
  });

  it('freeze one follower ~5 s: no 5xx, no stall > 1 s', async () => {
    const follower = await cluster.follower();
    let stop = false;
    const w = runWriter(4, () => stop);
    await sleep(1000);
    const frozenAt = performance.now();
    cluster.freeze(follower);
    await sleep(5000);
    cluster.thaw(follower);
    const thawedAt = performance.now();
    await sleep(1000);
    stop = true;
    await w.done;
    const window = longestWindow(w.answers, frozenAt, thawedAt);
    const row = await settle('SIGSTOP one follower 5 s', w.answers, window);
    expect(row.lost).toBe(0);
    expect(row.fiveXx).toBe(0);
    expect(row.noAnswer).toBe(0);
    expect(window).toBeLessThan(1000);
  });

  it('kill -9 an agent under real traffic (nftables in namespaces): no connection fails, an established one survives, a change made meanwhile applies on restart', async () => {
    const lab = new L4Lab('sycf');
    const table = `sycf${lab.r}`;
    const hostId = `cf-nft-${lab.r}`;
    let agent: ChildProcess | undefined;
    let held: ChildProcess | undefined;
    try {
      await lab.setup();
      agent = await startAgentProcess(hostId, lab.ns.lb, table);
      const server = (host: string) => ({ host, port: 8080, forwarder: 'm', weight: 1 });
      const rev0 = await post(0, '/services', { host: VIP, port: 80, scheduler: 'rr', servers: [server(B1), server(B2)] });
      await expect.poll(() => appliedRevision(hostId), { timeout: 15_000, interval: 100 }).toBeGreaterThanOrEqual(rev0);
      expect(count(await request(lab.ns.c, VIP, 80, 4))).toEqual({ b1: 2, b2: 2 });

      // One connection held open across the kill and the restart.
      const h = spawn('ip', ['netns', 'exec', lab.ns.c, '/usr/bin/python3', lab.clientScript, VIP, '80', '1', '--keep'], { stdio: ['pipe', 'pipe', 'ignore'] });
      held = h;
      const lines: string[] = [];
      h.stdout.on('data', (d) => lines.push(...String(d).split('\n').filter(Boolean)));
      await expect.poll(() => lines.length, { timeout: 5000 }).toBe(1);

      // Real traffic: new connections through the VIP, one python client after another.
      let stop = false;
      const traffic: string[] = [];
      const flowing = (async () => {
        while (!stop) traffic.push(...(await request(lab.ns.c, VIP, 80, 5)));
      })();
      const w = runWriter(6, () => stop);
      await sleep(1000);
      const p = agent;
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGKILL');
      await exited;
      const beforeDown = traffic.length;
      // A change while no agent runs: a second VIP, b1 only.
      const VIP2 = '10.98.2.101';
      const rev = await post(1, '/services', { host: VIP2, port: 80, scheduler: 'rr', servers: [server(B1)] });
      await sleep(1500);
      const duringDown = traffic.length - beforeDown;
      const restartAt = performance.now();
      agent = await startAgentProcess(hostId, lab.ns.lb, table);
      const readyAfter = performance.now() - restartAt;
      // In the kernel: the new VIP balances (the restarted agent applied the change).
      await expect.poll(async () => (await request(lab.ns.c, VIP2, 80, 1))[0], { timeout: 15_000, interval: 50 }).toBe('b1');
      const inKernelAfter = performance.now() - restartAt;
      // And reported: GET /hosts/:id says so.
      await expect.poll(() => appliedRevision(hostId), { timeout: 15_000, interval: 50 }).toBeGreaterThanOrEqual(rev);
      const appliedAfter = performance.now() - restartAt;
      await sleep(1000);
      stop = true;
      await Promise.all([flowing, w.done]);

      h.stdin.end('\n');
      await expect.poll(() => lines.length, { timeout: 5000 }).toBe(2);
      const failed = traffic.filter((t) => !/^b[12]$/.test(t));
      const row = await settle(
        'kill -9 an agent under traffic (restarted)',
        w.answers,
        longestWindow(w.answers, restartAt - 2500, performance.now()),
        `${traffic.length} new connections through the VIP (${duringDown} while no agent ran), ${failed.length} failed; held connection kept its backend (${lines[0]} → ${lines[1]}); change made while down: in the kernel ${Math.round(inKernelAfter)} ms, reported applied ${Math.round(appliedAfter)} ms after the restart began (process ready at ${Math.round(readyAfter)} ms)`,
      );
      expect(failed, JSON.stringify(count(failed))).toEqual([]);
      expect(duringDown).toBeGreaterThan(0);
      expect(lines[1]).toBe(lines[0]);
      expect(count(await request(lab.ns.c, VIP2, 80, 3))).toEqual({ b1: 3 });
      expect(row.lost).toBe(0);
      expect(row.fiveXx).toBe(0);
    } finally {
      held?.kill('SIGKILL');
      if (agent && agent.exitCode === null && agent.signalCode === null) {
        const a = agent;
        const exited = new Promise((r) => a.once('exit', r));
        a.kill('SIGTERM');
        await exited;
      }
      await lab.teardown();
    }
  }, 90_000);

  it('compact etcd while an agent is cut off: it re-lists and reports the latest revision', async () => {
    const member = cluster.members[0];
    const url = new URL(member.url);
    const proxy = await startTcpProxy({ host: url.hostname, port: Number(url.port) });
    const agent = await startAgent({ hostId: 'cf-agent', etcd: [proxy.url], prefix, dataplane: 'dry-run', logLevel: 'silent' });
    const applied = async () => {
      const r = await fetch(`${coordinators[1].base}/hosts/cf-agent`);
      return r.ok ? ((await r.json()) as { appliedRevision: number }).appliedRevision : 0;
    };
    try {
      const first = await fetch(`${coordinators[1].base}/services`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ host: '10.199.0.1', port: 80, type: 'tcp' }) });
      expect(first.status).toBe(200);
      const firstRev = Number(first.headers.get('x-switchyard-revision'));
      await expect.poll(applied, { timeout: 10_000 }).toBeGreaterThanOrEqual(firstRev);

      proxy.partition();
      let stop = false;
      const w = runWriter(5, () => stop);
      await sleep(1500);
      stop = true;
      await w.done;
      const lastRev = Number((await direct.get(keys.l4.current).exec()).header.revision);
      // Every event the agent missed is compacted away: its watch cannot resume.
      await direct.kv.compact({ revision: String(lastRev), physical: true });
      const healedAt = performance.now();
      proxy.heal();
      await expect.poll(applied, { timeout: 15_000, interval: 50 }).toBeGreaterThanOrEqual(lastRev);
      const caughtUp = performance.now() - healedAt;
      const row = await settle('compact etcd while an agent is cut off', w.answers, 0, `agent re-listed, applied rev ${lastRev} ${Math.round(caughtUp)} ms after reconnect`);
      expect(row.lost).toBe(0);
      expect(row.fiveXx).toBe(0);
      expect(caughtUp).toBeLessThan(10_000);
    } finally {
      await agent.stop();
      await proxy.close();
    }
  });
});
