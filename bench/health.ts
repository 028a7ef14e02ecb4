/**
 * Health checks at scale (issue 15): 10,000 services × 5 real servers, each
 * checked over TCP every 2 s (25,000 probes/s), by one agent process.
 *
 * Two runs of the same agent (dry-run dataplane, as a child process of the
 * real CLI) over the same services, in the same bench:
 *   baseline  the services without `health`;
 *   checks    the same services with `health: {type: tcp, interval: 2s, timeout: 1s}`.
 * For each: the agent's CPU (utime + stime over a 20 s window, as % of one
 * core), its RSS at the end, the probes it ran in the window (its
 * switchyard_agent_health_checks_total, against the 25,000/s the schedule
 * asks for), and the latency of unrelated changes (REST write → the agent's
 * status in etcd shows the write's revision) while the checks run. Every
 * server is 127.a.b.c:PORT; one listener on 0.0.0.0:PORT (another child
 * process, whose CPU is reported too: on a real network the backends are
 * other machines) accepts them all.
 *
 * The agent is the built CLI (`npm run build` first), as users run it.
 *
 * `--backends 0,1000` runs the checks once per value: 0 gives every server
 * its own address (50,000 endpoints, the worst case); B > 0 draws the 5
 * servers of service i from B backends (i mod B), as when many VIPs front one
 * pool — servers checked the same way then share a probe.
 *
 *   node --conditions=source --import tsx bench/health.ts [--services 10000] [--changes 60] [--backends 0,1000]
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Etcd3 } from 'etcd3';
import { AgentStatus, atomically, op, ServiceInput, toService } from '@switchyard/shared';
import { buildCoordinator } from '../packages/coordinator/src/index.js';
import { benchEtcd, cpuMs, freePort, median, percentile, runMain, startChild, startSwitchyard, stop } from './lib.js';

const { values } = parseArgs({ options: { services: { type: 'string', default: '10000' }, changes: { type: 'string', default: '60' }, backends: { type: 'string', default: '0,1000' } } });
const BACKENDS = String(values.backends).split(',').map(Number);
const N = Number(values.services);
const CHANGES = Number(values.changes);
const WINDOW_MS = 20_000;

const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024;

function service(i: number, port: number, health: boolean, backends = 0) {
  const j = backends > 0 ? i % backends : i;
  return {
    host: `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`,
    port: 80,
    scheduler: 'wrr',
    servers: [1, 2, 3, 4, 5].map((k) => ({ host: `127.${k}.${(j >> 8) & 255}.${j & 255}`, port, forwarder: 'm', weight: 1 })),
    ...(health ? { health: { type: 'tcp', interval: '2s', timeout: '1s' } } : {}),
  };
}

interface Run {
  label: string;
  cpuPct: number;
  listenerPct: number;
  probesPerSec: number;
  /** Probes that did not answer ok in the window (every server is up: each one is a false failure). */
  failed: number;
  delayS: number;
  rss: number;
  p50: number;
  p99: number;
  checked: number;
  healthy: number;
  probes: number;
}

/** The agent's probes so far, and how late its checks start, from its /metrics. */
async function checkerMetrics(metricsUrl: string): Promise<{ probes: number; failed: number; delayS: number; distinct: number }> {
  const text = await (await fetch(metricsUrl)).text();
  let probes = 0;
  let failed = 0;
  for (const m of text.matchAll(/^switchyard_agent_health_checks_total\{([^}]*)\} (\d+)/gm)) {
    probes += Number(m[2]);
    if (!m[1].includes('result="ok"')) failed += Number(m[2]);
  }
  const delayS = Number(/^switchyard_agent_health_check_delay_seconds (\S+)/m.exec(text)?.[1] ?? 0);
  const distinct = Number(/^switchyard_agent_health_probes (\S+)/m.exec(text)?.[1] ?? 0);
  return { probes, failed, delayS, distinct };
}

async function run(label: string, health: boolean, etcdUrl: string, port: number, listenerPid: number, backends = 0): Promise<Run> {
  const prefix = `/bench-health-${label}`;
  const coord = await buildCoordinator({ etcd: [etcdUrl], prefix, listen: { host: '127.0.0.1', port: 0 }, logLevel: 'silent' });
  const etcd = new Etcd3({ hosts: etcdUrl });
  const hostId = `bench-${label}`;
  try {
    const services = Array.from({ length: N }, (_, i) => toService(ServiceInput.parse(service(i, port, health, backends))));
    // Preloaded straight into etcd under the current generation, in transactions etcd's default limits take.
    const gen = coord.l4.generation().id;
    for (let i = 0; i < services.length; i += 100) {
      await atomically(coord.ctx.etcd, services.slice(i, i + 100).map((s) => op.put(coord.ctx.keys.l4.service(gen, s.id), JSON.stringify(s))));
    }
    const metricsPort = await freePort();
    const metricsUrl = `http://127.0.0.1:${metricsPort}/metrics`;
    // The built CLI, as users run it (run `npm run build` first): from the sources, tsx would load into the checker's thread too.
    const agent = await startSwitchyard(
      ['agent', '--host-id', hostId, '--etcd', etcdUrl, '--prefix', prefix, '--dataplane', 'dry-run', '--log-level', 'info', '--metrics-listen', `127.0.0.1:${metricsPort}`],
      /agent started/,
      {},
      { built: true, ...(process.env.BENCH_DEBUG ? { onOutput: (d: string) => process.stderr.write(d) } : {}) },
    );
    const pid = agent.pid as number;
    const statusKey = coord.ctx.keys.hosts.status(hostId);
    const status = async () => {
      const text = await etcd.get(statusKey).string();
      return text ? AgentStatus.parse(JSON.parse(text)) : undefined;
    };
    const applied = async (rev: number) => {
      const deadline = Date.now() + 60_000;
      while (((await status())?.appliedRevision ?? 0) < rev) {
        if (Date.now() > deadline) throw new Error(`${label}: revision ${rev} not applied`);
        await new Promise((r) => setTimeout(r, 1));
      }
    };
    // Settle: everything applied, and (with checks) every server checked once.
    const t0 = Date.now();
    for (;;) {
      const s = await status();
      if (s && s.services === N && (!health || (s.health && s.health.unknown === 0 && s.health.healthy + s.health.unhealthy === N * 5))) break;
      if (Date.now() - t0 > 120_000) throw new Error(`${label}: did not settle: ${JSON.stringify(s?.health ?? s?.services)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const c0 = cpuMs(pid);
    const l0 = cpuMs(listenerPid);
    const { probes: p0, failed: f0 } = await checkerMetrics(metricsUrl);
    const w0 = performance.now();
    const latencies: number[] = [];
    const gap = WINDOW_MS / CHANGES;
    for (let c = 0; c < CHANGES; c++) {
      const svc = service((c * 7919) % N, port, health, backends);
      const id = `tcp-${svc.host.replace(/\./g, '_')}-80`;
      const start = performance.now();
      const res = await coord.app.inject({ method: 'PUT', url: `/services/${id}/servers`, payload: c % 2 === 0 ? svc.servers.slice(0, 4) : svc.servers });
      if (res.statusCode !== 200) throw new Error(`PUT ${id}: ${res.statusCode} ${res.body}`);
      await applied(Number(res.headers['x-switchyard-revision']));
      latencies.push(performance.now() - start);
      const wait = w0 + (c + 1) * gap - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
    const windowMs = performance.now() - w0;
    const cpuPct = ((cpuMs(pid) - c0) / windowMs) * 100;
    const listenerPct = ((cpuMs(listenerPid) - l0) / windowMs) * 100;
    const end = await checkerMetrics(metricsUrl);
    const probesPerSec = (end.probes - p0) / (windowMs / 1000);
    const s = await status();
    const out = { label, cpuPct, listenerPct, probesPerSec, failed: end.failed - f0, delayS: end.delayS, rss: rssMiB(pid), p50: median(latencies), p99: percentile(latencies, 99), checked: s?.health ? s.health.healthy + s.health.unhealthy + s.health.unknown : 0, healthy: s?.health?.healthy ?? 0, probes: end.distinct };
    process.stderr.write(`${JSON.stringify(out)}\n`);
    await stop(agent);
    return out;
  } finally {
    etcd.close();
    await coord.close();
  }
}

runMain(async () => {
  const etcd = await benchEtcd();
  const port = await freePort();
  // A deep accept queue: handshakes complete in the kernel faster than one node process accepts in bursts.
  const listener = startChild(['-e', `require('node:net').createServer((s) => s.destroy()).listen({ port: ${port}, host: '0.0.0.0', backlog: 4096 })`]);
  try {
    await new Promise((r) => setTimeout(r, 500));
    const lpid = listener.pid as number;
    const rows = [await run('baseline', false, etcd.url, port, lpid)];
    for (const b of BACKENDS) rows.push(await run(b > 0 ? `checks-${b}-backends` : 'checks', true, etcd.url, port, lpid, b));
    process.stdout.write(
      [
        `### Health checks: ${N.toLocaleString('en')} services × 5 servers, TCP every 2 s`,
        '',
        `Agent: dry-run dataplane, one process; ${CHANGES} unrelated changes (PUT /services/:id/servers) spread over ${WINDOW_MS / 1000} s while checks run; CPU over that window.`,
        '',
        '| run | servers checked | distinct probes | healthy | probes/s (asked) | probes not ok | check delay | agent CPU (% of one core) | listener CPU | agent RSS | change p50 | change p99 |',
        '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
        ...rows.map((r) => `| ${r.label} | ${r.checked.toLocaleString('en')} | ${r.probes.toLocaleString('en')} | ${r.healthy.toLocaleString('en')} | ${r.probesPerSec.toFixed(0)} (${(r.probes / 2).toFixed(0)}) | ${r.failed} | ${r.delayS.toFixed(1)} s | ${r.cpuPct.toFixed(0)} % | ${r.listenerPct.toFixed(0)} % | ${r.rss.toFixed(0)} MiB | ${r.p50.toFixed(1)} ms | ${r.p99.toFixed(1)} ms |`),
        '',
      ].join('\n'),
    );
  } finally {
    listener.kill('SIGKILL');
    await etcd.cleanup();
  }
});
