/**
 * Make and destroy 100 CENs × 10 containers on one host, through the
 * topology planner and executor on the real kernel, in each mode, in the
 * same run:
 *
 *   netlink     the agent's default: the host context in one `ip -batch -`
 *               per stage, every container namespace read and changed by
 *               ONE netns-helper process, host links deleted as one group,
 *               host veth ends left to the kernel when their namespace goes
 *   batched     the previous default (baseline): one `ip -j -d -batch -`
 *               per namespace to read, one `ip -n NS -batch -` per
 *               namespace to change, host links deleted one by one
 *   per-object  one command per op (only when asked: it takes minutes)
 *
 * "make" ends when the commands have run (the agent then reports every CEN
 * ready); "destroy" ends when the kernel holds none of it: no namespace of
 * the bench left, no veth and no bridge left in the host context (a deleted
 * namespace's veths go asynchronously, in the kernel's cleanup_net). The
 * host's network is a namespace of its own; every name starts with "blv";
 * everything is removed at the end even on failure.
 *
 *   node --conditions=source --import tsx bench/leviathan.ts [cens] [containersPerCen] [modes, default batched,netlink]
 *
 * Writes bench/results/leviathan.md.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import type { StoredCen, StoredContainer } from '@switchyard/shared';
import { ExecaRunner, type RunOptions, type Runner } from '../packages/agent/src/exec/runner.js';
import { commandsFor, desiredFor, execute, observeTopology, plan, type ExecMode } from '../packages/agent/src/leviathan/index.js';

const CENS = Number(process.argv[2] ?? 100);
const PER = Number(process.argv[3] ?? 10);
const MODES = (process.argv[4] ?? 'batched,netlink').split(',') as ExecMode[];
const HOST = 'blv-host';

/** Counts the processes each phase starts. */
class CountingRunner implements Runner {
  count = 0;
  private readonly inner = new ExecaRunner();
  run(cmd: string, args: string[], opts?: RunOptions) {
    this.count++;
    return this.inner.run(cmd, args, opts);
  }
}
const runner = new CountingRunner();

const sh = (args: string[]) => execFileSync('ip', args, { encoding: 'utf8' });
const benchNamespaces = () => sh(['netns', 'list']).split('\n').map((l) => l.split(' ')[0]).filter((n) => n.startsWith('blv'));
function cleanup(): void {
  const names = benchNamespaces();
  if (names.length > 0) execFileSync('ip', ['-force', '-batch', '-'], { input: names.map((n) => `netns del ${n}`).join('\n') + '\n', stdio: ['pipe', 'ignore', 'ignore'] });
}

/** Resolves once no container namespace, veth or bridge of the bench is left; returns the polls it took. */
async function kernelHoldsNone(): Promise<number> {
  for (let polls = 1; ; polls++) {
    const ns = benchNamespaces().filter((n) => n !== HOST).length;
    const links = (JSON.parse(sh(['-n', HOST, '-j', 'link', 'show'])) as { ifname: string }[]).filter((l) => /^sy[bvx]/.test(l.ifname)).length;
    if (ns === 0 && links === 0) return polls;
    if (polls > 6000) throw new Error(`still ${ns} namespaces and ${links} links`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const cens: StoredCen[] = [];
const containers: StoredContainer[] = [];
for (let c = 0; c < CENS; c++) {
  const ids = Array.from({ length: PER }, (_, i) => `blv${c}x${i}`);
  cens.push({ cenID: `blv${c}`, contIDs: ids, wiring: 'bridge', made: true, vni: 1000 + c });
  for (const id of ids) containers.push({ containerID: id, host: 'h', tag: null, defaultRoute: null, cpoolID: null });
}
const knownCens = new Set(cens.map((c) => c.cenID));
const want = desiredFor({ hostId: 'h', underlays: new Map(), cens, cins: [], containers });
const none = desiredFor({ hostId: 'h', underlays: new Map(), cens: [], cins: [], containers: [] });

async function round(mode: ExecMode) {
  const reader = mode === 'netlink' ? 'netlink' : 'ip';
  const created = new Set(containers.map((c) => c.containerID));
  runner.count = 0;
  let t = performance.now();
  let o = await observeTopology(runner, HOST, want.namespaces, reader);
  const makeObserve = performance.now() - t;
  const makeOps = plan(want, o, { created: new Set(), knownCens });
  const makeCmds = commandsFor(makeOps, mode, HOST);
  await execute(runner, makeCmds);
  const make = performance.now() - t;
  const makeProcs = runner.count;

  runner.count = 0;
  t = performance.now();
  o = await observeTopology(runner, HOST, want.namespaces, reader);
  const residual = plan(want, o, { created, knownCens }).length;
  const verify = performance.now() - t;
  const verifyProcs = runner.count;

  runner.count = 0;
  t = performance.now();
  o = await observeTopology(runner, HOST, want.namespaces, reader);
  const destroyObserve = performance.now() - t;
  const destroyOps = plan(none, o, { created, knownCens });
  const destroyCmds = commandsFor(destroyOps, mode, HOST);
  await execute(runner, destroyCmds);
  const destroyCommands = performance.now() - t;
  const destroyProcs = runner.count;
  const polls = await kernelHoldsNone();
  const destroy = performance.now() - t;
  return {
    mode,
    make,
    makeObserve,
    makeOps: makeOps.length,
    makeCmds: makeCmds.length,
    makeProcs,
    verify,
    verifyProcs,
    residual,
    destroy,
    destroyObserve,
    destroyCommands,
    destroyOps: destroyOps.length,
    destroyCmds: destroyCmds.length,
    destroyProcs,
    polls,
  };
}

/** What profiling found (2026-12-02, this machine; process and kernel costs measured with 200–1,000 namespaces). */
const PROFILE = [
  '## Where the time goes',
  '',
  '- **Processes.** A process costs ~20 ms here (fork + exec, and `ip -n NS` adds a private mount namespace and a sysfs mount;',
  '  `ip link show lo` × 200 took 4.2 s, `ip -n NS link show lo` × 200 4.5 s). The batched mode starts one `ip` per container',
  '  namespace to read and another to change it: ~1,000 processes per phase, ~20–27 s. `ip -batch` takes no per-line `-n`',
  '  (iproute2 6.1: `Object "-n" is unknown`), and `ip -all netns exec` forks one `ip` per namespace too.',
  '- **The netns helper** (packages/agent/src/adapters/netns-helper.ts): one python3 process opens a NETLINK_ROUTE socket inside',
  '  each namespace (setns only for the socket() call; the socket stays bound to that namespace) and reads or changes all of',
  '  them: 1,000 empty namespaces read in 0.17 s. Two traps: a 1 MiB recv buffer per call made the same read 1.5 s (64 KiB now),',
  '  and a pyenv shim as `python3` costs ~0.6 s per start (the helper runs /usr/bin/python3, ~0.07 s).',
  '- **Making, in the kernel:** 1,000 `netns add` in one batch 0.7–3.5 s; 100 bridges + 1,000 veths with the peer created',
  '  directly in its namespace, one batch, 0.7–2.4 s (both grow with the machine\'s load: it is CPU work, setup_net per namespace).',
  '  Links up, addresses and routes inside the 1,000 namespaces through the helper: 0.6–0.9 s.',
  '- **Destroying, in the kernel:** deleting veths one by one waits an RCU grace period each (200 veths: 4.2 s); deleting the',
  '  namespaces instead (one batch) takes their veths with them in the kernel\'s batched cleanup_net (200: all gone in 0.21 s).',
  '  Bridges are the floor: each deletion waits ~18 ms under RTNL (100 bridges one by one 3.6 s; as one `link del group` 1.7 s;',
  '  4 processes in parallel no faster), so the netlink mode moves the host links to a group and deletes the group.',
  '',
];

async function main() {
  cleanup();
  sh(['netns', 'add', HOST]);
  try {
    const load = loadavg().map((l) => l.toFixed(2)).join(', ');
    const rows = [];
    for (const mode of MODES) {
      const r = await round(mode);
      if (r.residual !== 0) throw new Error(`${mode}: ${r.residual} ops left after make`);
      rows.push(r);
      console.log(JSON.stringify(r));
    }
    const loadAfter = loadavg().map((l) => l.toFixed(2)).join(', ');
    const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
    const base = rows.find((r) => r.mode === 'batched');
    const fast = rows.find((r) => r.mode === 'netlink');
    const md = [
      '# Leviathan topology: make and destroy, netlink helper vs one process per namespace',
      '',
      `Command: \`node --conditions=source --import tsx bench/leviathan.ts ${CENS} ${PER} ${MODES.join(',')}\``,
      '',
      `${CENS} CENs × ${PER} containers = ${CENS * PER} container namespaces (created by the agent), ${CENS} bridges, ${CENS * PER} veths, on one host`,
      `whose network is the namespace \`${HOST}\`. Make = observe + plan + run the commands; destroy = observe + plan + run the commands`,
      '+ wait until the kernel holds none of it (no namespace, no veth, no bridge of the bench). Processes: every command started, reads included.',
      `Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version}, ${new Date().toISOString().slice(0, 10)}; load average (1, 5, 15 min) ${load} before, ${loadAfter} after.`,
      '',
      '| mode | make | (of which observe) | commands / processes | destroy until none left | (observe, commands) | commands / processes | check after make (observe + plan) |',
      '| --- | --- | --- | --- | --- | --- | --- | --- |',
      ...rows.map(
        (r) =>
          `| ${r.mode} | ${s(r.make)} | ${s(r.makeObserve)} | ${r.makeCmds} / ${r.makeProcs} (${r.makeOps} ops) | ${s(r.destroy)} | ${s(r.destroyObserve)}, ${s(r.destroyCommands - r.destroyObserve)} | ${r.destroyCmds} / ${r.destroyProcs} (${r.destroyOps} ops) | ${s(r.verify)} (${r.verifyProcs} processes), ${r.residual} ops left |`,
      ),
      '',
      ...(base && fast ? [`netlink against batched, same run: make ${(base.make / fast.make).toFixed(1)}× faster, destroy ${(base.destroy / fast.destroy).toFixed(1)}× faster, check ${(base.verify / fast.verify).toFixed(1)}× faster.`, ''] : []),
      ...PROFILE,
    ].join('\n');
    writeFileSync(new URL('./results/leviathan.md', import.meta.url), md);
    console.log(md);
  } finally {
    cleanup();
  }
}

main().catch((e) => {
  console.error(e);
  cleanup();
  process.exit(1);
});
