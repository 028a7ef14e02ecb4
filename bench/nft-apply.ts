/**
 * The nftables apply paths alone (issue 14), at N services × 5 servers in a
 * namespace of its own, each next to its baseline in the same run:
 *  - the first load of the whole table: elements grouped by map (what the
 *    agent renders now) vs one `add element` statement per service and map;
 *  - one change (a service's elements deleted and re-added): a new `nft -f -`
 *    per change vs the persistent `nft -i` session;
 *  - how long starting a command blocks the caller's event loop: spawned
 *    from this process vs from the helper process.
 *
 *   node --conditions=source --import tsx bench/nft-apply.ts [--services 10000] [--rounds 20]
 *
 * Needs root (creates and removes the namespace synftb-<random>).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { ServiceInput, toService } from '@switchyard/shared';
import { ExecaRunner } from '../packages/agent/src/exec/runner.js';
import { emptyObserved, NftExecutor, observedOf, planNft, planService, renderNftScript, serviceObjects, sortOps, type NftOp } from '../packages/agent/src/l4/nftables/index.js';
import { benchServiceInput, median, percentile } from './lib.js';

const { values } = parseArgs({ options: { services: { type: 'string', default: '10000' }, rounds: { type: 'string', default: '20' } } });
const N = Number(values.services);
const ROUNDS = Number(values.rounds);
const NS = `synftb-${randomBytes(2).toString('hex')}`;
const TABLE = 'synftb';

const service = (i: number, servers = 5) => toService(ServiceInput.parse(benchServiceInput(i, servers)));

const nft = (script: string) => execFileSync('ip', ['netns', 'exec', NS, 'nft', '-f', '-'], { input: script });
const timed = (f: () => void) => {
  const t = performance.now();
  f();
  return performance.now() - t;
};
const ms = (xs: number[]) => `${median(xs).toFixed(1)} ms (p99 ${percentile(xs, 99).toFixed(1)})`;

async function main(): Promise<void> {
  execFileSync('ip', ['netns', 'add', NS]);
  const out: string[] = [`load average at start: ${loadavg()[0].toFixed(1)}`, ''];
  try {
    const objects = new Map(Array.from({ length: N }, (_, i) => service(i)).map((s) => [s.id, serviceObjects(s).objects]));
    const ops = planNft({ desired: objects, observed: emptyObserved() });
    const grouped = renderNftScript(TABLE, ops);
    // Before: elements in service order, so each service's elements of each map are a statement of their own.
    const perService = renderNftScript(TABLE, [
      ...ops.filter((op) => op.kind !== 'add-element'),
      ...[...objects.values()].flatMap((o) => o.elements.map((element): NftOp => ({ kind: 'add-element', element }))),
    ]);
    const load = { grouped: [] as number[], perService: [] as number[] };
    for (let r = 0; r < 3; r++) {
      for (const [k, script] of [['perService', perService], ['grouped', grouped]] as const) {
        load[k].push(timed(() => nft(script)));
        nft(`delete table inet ${TABLE}\n`);
      }
    }
    out.push(`| first load of ${N.toLocaleString('en')} × 5 (3 rounds) | one statement per service and map (${perService.split('\n').length - 1} lines): ${ms(load.perService)} | grouped by map (${grouped.split('\n').length - 1} lines): ${ms(load.grouped)} |`);

    nft(grouped);
    // The group chain of a 4-server service (the changes alternate between 5 and 4 servers).
    const g4 = serviceObjects(service(0, 4)).objects.groups[0];
    nft(`add chain inet ${TABLE} ${g4.name}\nadd rule inet ${TABLE} ${g4.name} ${g4.rules[0]}\n`);
    const runner = new ExecaRunner({ netns: NS });
    const spawned = new NftExecutor(runner, { table: TABLE, netns: NS, persistent: false });
    const session = new NftExecutor(runner, { table: TABLE, netns: NS });
    const one = { spawned: [] as number[], session: [] as number[] };
    for (let r = 0; r < ROUNDS; r++) {
      const i = (r * 7919) % N;
      const a = serviceObjects(service(i)).objects;
      const b = serviceObjects(service(i, 4)).objects;
      for (const [k, exec] of [['spawned', spawned], ['session', session]] as const) {
        const o = (have: typeof a, want: typeof a) => {
          const list: NftOp[] = [];
          planService(want, observedOf(have), list);
          return sortOps(list);
        };
        let t = performance.now();
        await exec.apply(o(a, b));
        one[k].push(performance.now() - t);
        t = performance.now();
        await exec.apply(o(b, a));
        one[k].push(performance.now() - t);
      }
    }
    session.close();
    out.push(`| one change at ${N.toLocaleString('en')} × 5 (${ROUNDS * 2} applies each) | new \`nft -f -\` per change: ${ms(one.spawned)} | persistent \`nft -i\`: ${ms(one.session)} |`);

    const helper = new ExecaRunner({ netns: NS, helper: true });
    const blocked = { direct: [] as number[], helper: [] as number[] };
    for (let r = 0; r < ROUNDS; r++) {
      for (const [k, rn] of [['direct', runner], ['helper', helper]] as const) {
        const t = performance.now();
        const p = rn.run('true', []);
        blocked[k].push(performance.now() - t);
        await p;
      }
    }
    helper.close();
    out.push(`| event loop blocked by starting one command (\`ip netns exec … true\`, ${ROUNDS} each) | spawned from this process: ${ms(blocked.direct)} | from the helper process: ${ms(blocked.helper)} |`);
  } finally {
    execFileSync('ip', ['netns', 'del', NS]);
  }
  out.push('', `load average at end: ${loadavg()[0].toFixed(1)}`);
  process.stdout.write(`| what | before | after |\n| --- | --- | --- |\n${out.filter((l) => l.startsWith('|')).join('\n')}\n\n${out.filter((l) => l.startsWith('load')).join('; ')}\n`);
}

await main();
