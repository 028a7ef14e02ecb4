/**
 * Full syncs of N services × 5 servers on nftables (issue 14 §1), with the
 * agent as users run it (`node packages/cli/dist/main.js agent`, a process of
 * its own; run `npm run build` first) in a namespace of its own:
 *
 *  1. the first sync: agent start → its status in etcd says applied (node's
 *     start, the list of N services, the plan, `nft -f`);
 *  2. a full resync from an empty kernel: another process deletes the
 *     agent's table right after a full pass; the next periodic resync
 *     (`--resync 2s`) reads the kernel back, finds nothing and loads it all;
 *  3. a full resync with nothing to do (nobody touched the table: compared
 *     against the model, nothing read back, nothing written);
 *
 * next to the floor, measured in the same run: `nft -f` of the same script
 * alone. A resync's duration is the gap between two `lastFullSync`
 * timestamps in the host's status minus the resync period (the agent sets its
 * next resync timer when a full pass ends), so it covers reading the kernel
 * back, planning and applying. After each resync from empty the table is
 * counted: every service's elements are back.
 *
 *   node --conditions=source --import tsx bench/full-sync.ts [--services 10000] [--rounds 5]
 *
 * Needs root (it makes and removes the namespace syfs-<random>).
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { Etcd3 } from 'etcd3';
import { keyspace, ServiceInput, toService } from '@switchyard/shared';
import { emptyObserved, planNft, renderNftScript, serviceObjects } from '../packages/agent/src/l4/nftables/index.js';
import { agentLaunch, benchEtcd, benchServiceInput, median, preloadServices, runMain, stop } from './lib.js';

const { values } = parseArgs({ options: { services: { type: 'string', default: '10000' }, rounds: { type: 'string', default: '5' } } });
const N = Number(values.services);
const ROUNDS = Number(values.rounds);
const RESYNC_MS = 2000;
const r = randomBytes(2).toString('hex');
const NS = `syfs-${r}`;
const TABLE = `syfs${r}`;
const CLI = fileURLToPath(new URL('../packages/cli/dist/main.js', import.meta.url));

const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));
const inNs = (args: string[], input?: string) => execFileSync('ip', ['netns', 'exec', NS, ...args], { ...(input !== undefined ? { input } : {}), maxBuffer: 1 << 30 });
const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
const load = () => loadavg()[0].toFixed(1);

interface Status {
  appliedRevision?: number;
  lastFullSync?: string;
}

runMain(async () => {
  execFileSync('ip', ['netns', 'add', NS]);
  const server = await benchEtcd();
  const etcd = new Etcd3({ hosts: server.url });
  let agent: ChildProcess | undefined;
  try {
    const prefix = '/bench-full-sync';
    const keys = keyspace(prefix);
    const services = Array.from({ length: N }, (_, i) => toService(ServiceInput.parse(benchServiceInput(i))));
    const rev = await preloadServices(etcd, keys, services);

    // The floor: nft -f of the same script alone, into an empty namespace table.
    const script = renderNftScript(`${TABLE}a`, planNft({ desired: new Map(services.map((x) => [x.id, serviceObjects(x).objects])), observed: emptyObserved() }));
    const alone: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const t = performance.now();
      inNs(['nft', '-f', '-'], script);
      alone.push(performance.now() - t);
      inNs(['nft', 'delete', 'table', 'inet', `${TABLE}a`]);
    }

    const hostId = `fs-${r}`;
    const status = async (): Promise<Status> => JSON.parse((await etcd.get(keys.hosts.status(hostId)).string()) ?? '{}') as Status;
    const t0 = performance.now();
    const { nodeArgs, env } = agentLaunch();
    agent = spawn(
      process.execPath,
      [...nodeArgs, CLI, 'agent', '--host-id', hostId, '--etcd', server.url, '--prefix', prefix, '--dataplane', 'nftables', '--netns', NS, '--nft-table', TABLE, '--resync', `${RESYNC_MS}ms`, '--flush-on-exit', '--log-level', 'warn'],
      { stdio: ['ignore', 'ignore', 'inherit'], env },
    );
    for (;;) {
      if ((await status()).appliedRevision! >= rev) break;
      if (performance.now() - t0 > 120_000) throw new Error('the agent did not apply the services in 2 min');
      await sleep(5);
    }
    const first = performance.now() - t0;

    /** Waits for the next full pass to end; its lastFullSync. */
    const nextFull = async (after: string): Promise<string> => {
      const deadline = performance.now() + 30_000;
      for (;;) {
        const st = await status();
        if (st.lastFullSync && st.lastFullSync !== after) return st.lastFullSync;
        if (performance.now() > deadline) throw new Error('no full resync in 30 s');
        await sleep(5);
      }
    };
    const gap = (a: string, b: string) => Date.parse(b) - Date.parse(a) - RESYNC_MS;
    const elements = () => (inNs(['nft', 'list', 'map', 'inet', TABLE, 'backends4_tcp']).toString().match(/ : \d/g) ?? []).length;

    let last = await nextFull((await status()).lastFullSync ?? '');
    const trusted: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const next = await nextFull(last);
      trusted.push(gap(last, next));
      last = next;
    }
    const empty: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      // Right after a full pass: the table goes, and the next resync finds the kernel empty.
      inNs(['nft', 'delete', 'table', 'inet', TABLE]);
      const next = await nextFull(last);
      empty.push(gap(last, next));
      const count = elements();
      if (count !== N * 5) throw new Error(`after the resync the table holds ${count} backends, not ${N * 5}`);
      last = await nextFull(next); // a pass with nothing to do, so the next round starts right after a pass again
    }

    const rows = [
      `| ${N.toLocaleString('en')} × 5 | first sync: agent start → applied (node start, list, plan, nft -f) | **${s(first)}** | — | ${load()} |`,
      `| ${N.toLocaleString('en')} × 5 | full resync from an empty kernel (median of ${ROUNDS}) | **${s(median(empty))}** | ${empty.map((x) => x.toFixed(0)).join(', ')} ms | ${load()} |`,
      `| ${N.toLocaleString('en')} × 5 | full resync, nothing changed (median of ${ROUNDS}) | ${s(median(trusted))} | ${trusted.map((x) => x.toFixed(0)).join(', ')} ms | ${load()} |`,
      `| ${N.toLocaleString('en')} × 5 | the floor: \`nft -f\` of the same script alone (median of ${ROUNDS}) | ${s(median(alone))} | ${alone.map((x) => x.toFixed(0)).join(', ')} ms | ${load()} |`,
    ];
    process.stdout.write(['| services | what | median | each | load |', '| --- | --- | --- | --- | --- |', ...rows, ''].join('\n'));
  } finally {
    if (agent) await stop(agent);
    etcd.close();
    await server.cleanup();
    execFileSync('ip', ['netns', 'del', NS]);
  }
});
