/**
 * Runs INSIDE the test VM (see ipvs.test.ts): drives the agent's ipvs
 * dataplane — planner, executor and a real `ExecaRunner` — against the VM's
 * real IPVS through the phases of ipvs-scenario.ts, and reports what the
 * kernel shows after each as one `SY-VM-RESULT {json}` line. It asserts
 * nothing itself: the vitest file on the host does.
 *
 *   node --conditions=source --import tsx /work/main/test/vm/ipvs-guest.ts   (by hand; slow)
 *   node /run/sy-vm/ipvs-guest.mjs                                          (the test: bundled on the host)
 */
import { ServiceInput, toService } from '../../packages/shared/src/schemas/l4.js';
import { desiredVirtuals, IpvsExecutor, ipvsadmLine, planIpvs, type IpvsOp } from '../../packages/agent/src/l4/ipvs/index.js';
import { ExecaRunner } from '../../packages/agent/src/exec/runner.js';
import { effectiveService, HealthChecker, LocalProber, targetsOf } from '../../packages/agent/src/l4/health/index.js';
import { DEVICE, EMPTY, FULL, HEALTH, INCREMENTAL, TRAFFIC, WEIGHT0, type ServiceSpec } from './ipvs-scenario.js';

/** Time from process start until the dataplane's modules were loaded (tsx under emulation is slow). */
const loadMs = Math.round(performance.now());

export interface PhaseReport {
  name: string;
  /** The plan, one op a line: the `ipvsadm -R` line, or `ip add-address A` / `ip delete-address A`. */
  ops: string[];
  reports: string[];
  applyError?: string;
  applyMs: number;
  /** Raw kernel state after the apply. */
  rules: string;
  thresholds: string;
  addresses: string[];
  deviceKind?: string;
  /** The plan made right after the apply, from a fresh observation: empty when the kernel converged. */
  replan: string[];
}

export interface TrafficReport {
  label: string;
  /** One answer per request ('' when it failed), and the failures' stderr. */
  answers: string[];
  errors: string[];
  /** `Conns` of the traffic service from `ipvsadm -Ln --stats --exact` (-1 when the service is absent). */
  conns: number;
}

/** The health phase: the agent's checker and overlay driving the real IPVS. */
export interface HealthReport {
  /** Kill of backend-1's server → the rule with weight 0 applied (ms). */
  downMs: number;
  /** backend-1's server listening again → the rule with its weight back applied (ms). */
  upMs: number;
  /** `ipvsadm -Sn` while it was down. */
  rulesDown: string;
  trafficDown: TrafficReport;
  trafficUp: TrafficReport;
  error?: string;
}

export interface GuestResult {
  loadMs: number;
  phases: PhaseReport[];
  traffic: TrafficReport[];
  health?: HealthReport;
  totalMs: number;
}

const runner = new ExecaRunner({ timeoutMs: 120_000 });
const exec = new IpvsExecutor(runner, { device: DEVICE });

const render = (op: IpvsOp) => ipvsadmLine(op) ?? `ip ${op.kind} ${'address' in op ? op.address : ''}`;

let owned = new Set<string>();
let draining = new Map<string, number>();

async function plan(specs: ServiceSpec[]) {
  return planServices(specs.map((s) => toService(ServiceInput.parse(s))));
}

async function planServices(services: ReturnType<typeof toService>[]) {
  const { virtuals, reports } = desiredVirtuals(services);
  const observed = await exec.observe();
  const connections = await exec.connections();
  const p = planIpvs({ desired: virtuals, observed: observed.virtuals, observedAddresses: observed.addresses, owned, draining, connections });
  return { plan: p, reports: reports.map((r) => `${r.level} ${r.serviceId}: ${r.message}`) };
}

async function phase(name: string, specs: ServiceSpec[]): Promise<PhaseReport> {
  const { plan: p, reports } = await plan(specs);
  const started = performance.now();
  let applyError: string | undefined;
  try {
    await exec.apply(p.ops);
    owned = p.owned;
    draining = p.draining;
  } catch (e) {
    applyError = e instanceof Error ? e.message : String(e);
  }
  const applyMs = Math.round(performance.now() - started);
  const [rules, thresholds, addrs, link] = await Promise.all([
    runner.run('ipvsadm', ['-Sn']),
    runner.run('ipvsadm', ['-Ln', '--thresholds']),
    runner.run('ip', ['-j', 'addr', 'show', 'dev', DEVICE], { allowFail: true }),
    runner.run('ip', ['-j', '-d', 'link', 'show', 'dev', DEVICE], { allowFail: true }),
  ]);
  const addrInfo = addrs.exitCode === 0 ? (JSON.parse(addrs.stdout) as { addr_info?: { local: string; scope?: string }[] }[]) : [];
  const linkInfo = link.exitCode === 0 ? (JSON.parse(link.stdout) as { linkinfo?: { info_kind?: string } }[]) : [];
  const replan = (await plan(specs)).plan.ops.map(render);
  return {
    name,
    ops: p.ops.map(render),
    reports,
    ...(applyError ? { applyError } : {}),
    applyMs,
    rules: rules.stdout,
    thresholds: thresholds.stdout,
    addresses: addrInfo.flatMap((l) => (l.addr_info ?? []).filter((a) => a.scope !== 'link').map((a) => a.local)).sort(),
    ...(linkInfo[0]?.linkinfo?.info_kind ? { deviceKind: linkInfo[0].linkinfo.info_kind } : {}),
    replan,
  };
}

async function serviceConns(): Promise<number> {
  const stats = await runner.run('ipvsadm', ['-Ln', '--stats', '--exact', '-t', `${TRAFFIC.vip}:80`], { allowFail: true });
  const m = /^TCP\s+\S+\s+(\d+)/m.exec(stats.stdout);
  return m ? Number(m[1]) : -1;
}

async function traffic(label: string, requests: number, connsBefore: number): Promise<TrafficReport> {
  const answers: string[] = [];
  const errors: string[] = [];
  for (let i = 0; i < requests; i++) {
    // curl, not busybox wget: the static busybox's wget segfaults on Debian 12.
    const res = await runner.run('curl', ['-sS', '-m', '5', `http://${TRAFFIC.vip}/`], { netns: TRAFFIC.clientNs, allowFail: true });
    answers.push(res.exitCode === 0 ? res.stdout.trim() : '');
    if (res.exitCode !== 0) errors.push(`exit ${res.exitCode}: ${res.stderr.trim()}`);
  }
  // IPVS folds its per-CPU counters into the totals every 2 s (the estimator
  // timer), so wait until they show this round's connections (or give up after 10 s).
  const want = Math.max(connsBefore, 0) + answers.filter(Boolean).length;
  let conns = await serviceConns();
  for (let t = 0; conns >= 0 && conns < want && t < 20; t++) {
    await new Promise((r) => setTimeout(r, 500));
    conns = await serviceConns();
  }
  return { label, answers, errors, conns };
}

const until = async (what: string, fn: () => boolean, timeoutMs = 30_000) => {
  const deadline = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

/**
 * The L4 role's glue in miniature: the checker's pick changes re-plan the
 * effective services (health/overlay.ts) and apply them, one pass at a time.
 */
async function healthPhase(): Promise<HealthReport> {
  const services = HEALTH.map((s) => toService(ServiceInput.parse(s)));
  const checked = services.find((s) => s.host === TRAFFIC.vip)!;
  const [b1, b2] = checked.servers.map((s) => s.id);
  let pass = Promise.resolve();
  let passes = 0;
  const applyEffective = async () => {
    const { plan: p } = await planServices(services.map((s) => effectiveService(s, (id) => checker.state(s.id, id)).service));
    await exec.apply(p.ops);
    owned = p.owned;
    draining = p.draining;
    passes++;
  };
  const checker = new HealthChecker({
    prober: new LocalProber(),
    concurrency: 16,
    onChange: (_id, pickChanged) => {
      if (pickChanged) pass = pass.then(applyEffective);
    },
  });
  const report: HealthReport = { downMs: -1, upMs: -1, rulesDown: '', trafficDown: { label: 'health-down', answers: [], errors: [], conns: 0 }, trafficUp: { label: 'health-up', answers: [], errors: [], conns: 0 } };
  try {
    checker.setService(checked.id, targetsOf(checked, () => false));
    await applyEffective();
    await until('both backends checked healthy', () => checker.state(checked.id, b1) === 'healthy' && checker.state(checked.id, b2) === 'healthy');
    const [ns1] = TRAFFIC.backends;
    const pids = (await runner.run('ip', ['netns', 'pids', ns1.ns])).stdout.split('\n').filter(Boolean);
    const killed = Date.now();
    for (const pid of pids) await runner.run('kill', ['-9', pid], { allowFail: true });
    let before = passes;
    await until('backend-1 out of the pick', () => checker.state(checked.id, b1) === 'unhealthy');
    await pass;
    if (passes === before) throw new Error('no pass applied the unhealthy server');
    report.downMs = Date.now() - killed;
    report.rulesDown = (await runner.run('ipvsadm', ['-Sn'])).stdout;
    report.trafficDown = await traffic('health-down', 4, -1);
    await runner.run('ip', ['netns', 'exec', ns1.ns, 'busybox', 'httpd', '-p', `${ns1.address}:${TRAFFIC.port}`, '-h', '/tmp/www-0']);
    const listening = Date.now();
    before = passes;
    await until('backend-1 back in the pick', () => checker.state(checked.id, b1) === 'healthy');
    await pass;
    if (passes === before) throw new Error('no pass applied the recovered server');
    report.upMs = Date.now() - listening;
    report.trafficUp = await traffic('health-up', 4, -1);
  } catch (e) {
    report.error = e instanceof Error ? e.message : String(e);
  } finally {
    await checker.stop();
    // No pass of this phase may run into the next one.
    await pass;
  }
  return report;
}

async function main(): Promise<GuestResult> {
  const phases: PhaseReport[] = [];
  const flows: TrafficReport[] = [];
  phases.push(await phase('full', FULL));
  flows.push(await traffic('full', 4, 0));
  phases.push(await phase('incremental', INCREMENTAL));
  flows.push(await traffic('incremental', 2, flows[0].conns));
  phases.push(await phase('weight0', WEIGHT0));
  flows.push(await traffic('weight0', 4, flows[1].conns));
  const health = await healthPhase();
  phases.push(await phase('empty', EMPTY));
  flows.push(await traffic('empty', 1, -1));
  return { loadMs, phases, traffic: flows, health, totalMs: Math.round(performance.now()) };
}

main().then(
  (r) => {
    process.stdout.write(`SY-VM-RESULT ${JSON.stringify(r)}\n`);
  },
  (e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  },
);
