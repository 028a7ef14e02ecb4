/**
 * Direct routing on nftables (issue 14 §1): what the netdev table costs the
 * kernel next to the inet (DNAT) table, for the same services.
 *  1. one `nft -f -` of the full plan from an empty kernel, N services × 5
 *     servers: all forwarder m (DNAT, the baseline), all g over IPv4 (global
 *     slot maps), all g over IPv6 (one chain per service, slots in the rule)
 *     — a g service also keeps its inet DNAT, so g rows write both tables;
 *  2. with N present, one service's servers changed: the incremental script
 *     the agent would apply, timed the same way.
 * The planner, renderer and nft are the agent's own; only the agent's loop
 * and etcd are left out (bench/agent-apply.ts times those).
 *
 *   node --conditions=source --import tsx bench/nft-dr.ts [--services 1000,10000] [--rounds 2]
 *
 * Needs root (it creates the namespace sydrbench-<random>, with a veth for
 * the ingress hook, and removes it).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { ServiceInput, toService, type Service } from '@switchyard/shared';
import { emptyObserved, observedOf, planTables, renderNftScript, serviceObjects, type NftObserved, type ServiceObjects } from '../packages/agent/src/l4/nftables/index.js';
import { median } from './lib.js';

const { values } = parseArgs({ options: { services: { type: 'string', default: '1000,10000' }, rounds: { type: 'string', default: '2' } } });
const SIZES = String(values.services).split(',').map(Number);
const ROUNDS = Number(values.rounds);
const NS = `sydrbench-${randomBytes(2).toString('hex')}`;
const DEV = 'eth1';
const TABLE = 'switchyard';

type Kind = 'm4' | 'g4' | 'g6';

function service(i: number, kind: Kind, servers = 5): Service {
  const v6 = kind === 'g6';
  const host = v6 ? `2001:db8:${(i >> 8) & 255}::${(i & 255) + 1}` : `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
  const port = 80;
  return toService(
    ServiceInput.parse({
      host,
      port,
      scheduler: 'wrr',
      servers: Array.from({ length: servers }, (_, k) => ({
        host: v6 ? `2001:db8:ff${k}::${(i % 250) + 1}` : `10.200.${k + 1}.${(i % 250) + 1}`,
        port: kind === 'm4' ? 8080 : port,
        forwarder: kind === 'm4' ? 'm' : 'g',
        weight: k + 1,
      })),
    }),
  );
}

const nft = (input: string) => execFileSync('ip', ['netns', 'exec', NS, 'nft', '-f', '-'], { input, stdio: ['pipe', 'ignore', 'pipe'] });

function timed(fn: () => void): number {
  const t = performance.now();
  fn();
  return performance.now() - t;
}

function objectsOf(services: Service[]): Map<string, ServiceObjects> {
  return new Map(services.map((s) => [s.id, serviceObjects(s, { drDevice: DEV }).objects]));
}

/** The model of what the full plan wrote (what the agent keeps after a pass). */
function modelOf(objects: Map<string, ServiceObjects>, family: 'inet' | 'netdev', after: NftObserved): NftObserved {
  const services = new Map();
  for (const [id, o] of objects) {
    const part = family === 'netdev' && o.family !== 'netdev' ? o.dr : o.family === family ? o : undefined;
    if (part) services.set(id, observedOf(part));
  }
  return { ...after, services };
}

function skeleton(objects: Map<string, ServiceObjects>, family: 'inet' | 'netdev'): NftObserved {
  // Everything the full plan created, as the agent's model records it.
  const ops = planTables({ desired: objects, observed: emptyObserved(), observedDr: emptyObserved(), drDevice: DEV }).filter((o) => (o.family ?? 'inet') === family);
  const m = emptyObserved();
  m.table = true;
  if (family === 'netdev') m.device = DEV;
  for (const op of ops) {
    if (op.kind === 'add-map') m.maps.add(op.name);
    if (op.kind === 'add-chain' && op.base) m.baseChains.set(op.name, 0);
    if (op.kind === 'add-chain' && op.name.startsWith('grp.')) m.groups.set(op.name, 0);
    if (op.kind === 'add-rule' && m.baseChains.has(op.chain)) m.baseChains.set(op.chain, (m.baseChains.get(op.chain) ?? 0) + 1);
    if (op.kind === 'add-rule' && m.groups.has(op.chain)) m.groups.set(op.chain, (m.groups.get(op.chain) ?? 0) + 1);
  }
  return m;
}

async function main(): Promise<void> {
  execFileSync('ip', ['netns', 'add', NS]);
  try {
    execFileSync('ip', ['-n', NS, 'link', 'add', DEV, 'type', 'veth', 'peer', 'name', `${DEV}p`]);
    console.log(`load average before: ${execFileSync('uptime', { encoding: 'utf8' }).trim()}\n`);
    console.log('| services × 5 | forwarders | full plan, one nft -f (median) | rounds | full script lines | one service changed, nft -f (median) | its lines |');
    console.log('| --- | --- | --- | --- | --- | --- | --- |');
    for (const n of SIZES) {
      for (const kind of ['m4', 'g4', 'g6'] as const) {
        const services = Array.from({ length: n }, (_, i) => service(i, kind));
        const objects = objectsOf(services);
        const full = renderNftScript(TABLE, planTables({ desired: objects, observed: emptyObserved(), observedDr: emptyObserved(), drDevice: DEV }));
        const fulls: number[] = [];
        const changes: number[] = [];
        let changeLines = 0;
        for (let r = 0; r < ROUNDS; r++) {
          fulls.push(timed(() => nft(full)));
          // One service's servers change (5 → 4, other weights): the incremental script.
          const id = services[n >> 1].id;
          const changed = new Map(objects);
          changed.set(id, serviceObjects({ ...services[n >> 1], servers: services[n >> 1].servers.slice(1) }, { drDevice: DEV }).objects);
          const script = renderNftScript(
            TABLE,
            planTables({ desired: changed, observed: modelOf(objects, 'inet', skeleton(objects, 'inet')), observedDr: modelOf(objects, 'netdev', skeleton(objects, 'netdev')), scope: new Set([id]), drDevice: DEV }),
          );
          changeLines = script.split('\n').filter(Boolean).length;
          changes.push(timed(() => nft(script)));
          nft(`delete table inet ${TABLE}\ndelete table netdev ${TABLE}\n`);
        }
        const label = kind === 'm4' ? 'm, IPv4 (DNAT, baseline)' : kind === 'g4' ? 'g, IPv4 (netdev, global maps)' : 'g, IPv6 (netdev, chain per service)';
        console.log(`| ${n.toLocaleString('en')} | ${label} | ${median(fulls).toFixed(0)} ms | ${fulls.map((x) => x.toFixed(0)).join(', ')} | ${full.split('\n').filter(Boolean).length.toLocaleString('en')} | ${median(changes).toFixed(1)} ms | ${changeLines} |`);
      }
    }
    console.log(`\nload average after: ${execFileSync('uptime', { encoding: 'utf8' }).trim()}`);
  } finally {
    execFileSync('ip', ['netns', 'del', NS]);
  }
}

await main();
