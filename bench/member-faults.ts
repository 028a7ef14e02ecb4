/**
 * Member failures under a closed-loop writer, on a real 3-member etcd on
 * loopback (test/helpers/etcd-cluster.ts), one coordinator (in process,
 * driven through inject(): the figures are etcd's and the client's, not
 * HTTP's).
 *
 * Each scenario runs the writer (POST /services/:id/servers, then GET of the
 * service: read-your-writes) for a baseline period, then the fault, then
 * the recovery, and reports next to the baseline measured in the same run:
 *
 *  - frozen follower (SIGSTOP for FREEZE_S s): writes/s before vs during, the
 *    longest single request, 5xx answers;
 *  - leader kill (SIGKILL): etcd's election time (kill → a member names the
 *    new leader, polled every 20 ms), the window without a successful write
 *    (kill → first success), 503s after the election, 504s, and whether every
 *    acknowledged write is stored.
 *
 *   node --conditions=source --import tsx bench/member-faults.ts [FREEZE_S=10]
 *
 * Appends its figures as markdown to bench/results/member-faults.md.
 */
import { appendFileSync, mkdirSync } from 'node:fs';
import { buildCoordinator, type Coordinator } from '../packages/coordinator/src/index.js';
import { startEtcdCluster, type EtcdCluster } from '../test/helpers/etcd-cluster.js';
import { fmt, runMain } from './lib.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Sample {
  at: number;
  ms: number;
  status: number;
  host?: string;
}

function writer(c: Coordinator, svc: string, until: () => boolean, out: Sample[]): Promise<void> {
  let i = 0;
  return (async () => {
    while (!until()) {
      const host = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${(i & 255) || 1}`;
      i++;
      const t0 = performance.now();
      const w = await c.app.inject({ method: 'POST', url: `/services/${svc}/servers`, payload: { host, port: 80 } });
      const t1 = performance.now();
      out.push({ at: t1, ms: t1 - t0, status: w.statusCode, host });
      const r = await c.app.inject({ method: 'GET', url: `/services/${svc}` });
      const t2 = performance.now();
      out.push({ at: t2, ms: t2 - t1, status: r.statusCode });
    }
  })();
}

async function coordinator(cluster: EtcdCluster, name: string): Promise<{ c: Coordinator; svc: string }> {
  const c = await buildCoordinator({ etcd: cluster.urls, prefix: `/bench-faults/${name}-${Date.now()}`, listen: { host: '127.0.0.1', port: 0 }, logLevel: 'silent' });
  const r = await c.app.inject({ method: 'POST', url: '/services', payload: { host: '10.255.0.1', port: 80, type: 'tcp' } });
  return { c, svc: r.json<{ id: string }>().id };
}

function rate(samples: Sample[], from: number, to: number): number {
  return samples.filter((s) => s.host && s.status === 200 && s.at >= from && s.at < to).length / ((to - from) / 1000);
}

async function frozenFollower(cluster: EtcdCluster, freezeS: number): Promise<string> {
  const { c, svc } = await coordinator(cluster, 'freeze');
  const samples: Sample[] = [];
  let done = false;
  const run = writer(c, svc, () => done, samples);
  const t0 = performance.now();
  await sleep(3000);
  const follower = await cluster.follower();
  const frozeAt = performance.now();
  cluster.freeze(follower);
  await sleep(freezeS * 1000);
  cluster.thaw(follower);
  const thawedAt = performance.now();
  await sleep(2000);
  done = true;
  await run;
  await c.close();
  const during = samples.filter((s) => s.at >= frozeAt && s.at < thawedAt);
  const longest = Math.max(...during.map((s) => s.ms));
  const fivexx = samples.filter((s) => s.status >= 500).length;
  return `| frozen follower (SIGSTOP ${freezeS} s) | ${fmt(rate(samples, t0, frozeAt))} | ${fmt(rate(samples, frozeAt, thawedAt))} | ${fmt(longest)} ms | ${fivexx} | — |`;
}

async function leaderKill(cluster: EtcdCluster): Promise<string> {
  const { c, svc } = await coordinator(cluster, 'kill');
  const samples: Sample[] = [];
  let done = false;
  const run = writer(c, svc, () => done, samples);
  const t0 = performance.now();
  await sleep(3000);
  const leader = await cluster.leader();
  const killedAt = performance.now();
  await cluster.kill(leader);
  let electedAt = 0;
  while (!electedAt) {
    try {
      if ((await cluster.leader()) !== leader) electedAt = performance.now();
    } catch {
      // electing
    }
    if (!electedAt) await sleep(20);
  }
  await sleep(3000);
  done = true;
  await run;
  const firstOk = samples.find((s) => s.host && s.status === 200 && s.at > killedAt)?.at ?? NaN;
  const after503 = samples.filter((s) => s.status === 503 && s.at > electedAt).length;
  const n504 = samples.filter((s) => s.status === 504).length;
  const stored = new Set((await c.app.inject({ method: 'GET', url: `/services/${svc}` })).json<{ servers: { host: string }[] }>().servers.map((s) => s.host));
  const lost = samples.filter((s) => s.host && s.status === 200 && !stored.has(s.host)).length;
  await c.close();
  await cluster.restart(leader);
  await cluster.waitForLeader();
  return (
    `| leader kill (SIGKILL) | ${fmt(rate(samples, t0, killedAt))} | election ${fmt(electedAt - killedAt)} ms | window ${fmt(firstOk - killedAt)} ms ` +
    `(election + ${fmt(firstOk - electedAt)} ms) | 503 after election: ${after503}, 504: ${n504} | lost ${lost} |`
  );
}

runMain(async () => {
  const freezeS = Number(process.argv[2] ?? 10);
  const cluster = await startEtcdCluster(3);
  try {
    const rows = [await frozenFollower(cluster, freezeS), await leaderKill(cluster)];
    const table = [
      `### member faults (${new Date().toISOString()})`,
      '',
      '| scenario | writes/s before (baseline) | during / election | longest request / write window | 5xx | lost |',
      '|---|---|---|---|---|---|',
      ...rows,
      '',
    ].join('\n');
    console.log(table);
    mkdirSync('bench/results', { recursive: true });
    appendFileSync('bench/results/member-faults.md', table + '\n');
  } finally {
    await cluster.stop();
  }
});
