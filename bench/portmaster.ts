/**
 * Issue 4's figures: offers per second at concurrency 1 and 64, on ranges of
 * 100 and 40,000 ports, next to raw etcd transactions of the same shape from
 * Node, all against one real etcd in the same run.
 *
 *  - offers: POST /v1/services/:name/offers through the coordinator's full
 *    request path (routing, zod validation, serialisation) via inject(), no
 *    socket: 201 with the lowest free port, one etcd transaction each.
 *  - raw: etcd3 `kv.txn` with the offer's shape (compare mod==, create==0,
 *    create==0; put ×3 on a lease), same client settings, same concurrency.
 *  - Every measured offer can succeed: the 100-port figure fills fresh
 *    100-port services one after another; the 40,000-port service is
 *    pre-filled (straight into etcd) so that the measured offers take exactly
 *    its last ports (32,500+ held before the first one, the range full after
 *    the last) — a scan of the range would show.
 *  - Rounds alternate raw / 100 / 40,000 so drift on a noisy machine hits all.
 *  - After each run: zero duplicates (ports returned are distinct and etcd
 *    holds exactly one port key per 201).
 *
 * Run: node --conditions=source --import tsx bench/portmaster.ts [--rounds 5] [--n1 300] [--n64 1500]
 */
import { parseArgs } from 'node:util';
import type { Etcd3 } from 'etcd3';
import { buildCoordinator, type Coordinator } from '../packages/coordinator/src/index.js';
import { cmp, createEtcdClient, keyspace, op } from '../packages/shared/src/index.js';
import { benchEtcd, fmt, median, runMain } from './lib.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '5' }, n1: { type: 'string', default: '300' }, n64: { type: 'string', default: '1500' } } });
const ROUNDS = Number(values.rounds);
const COUNT: Record<number, number> = { 1: Number(values.n1), 64: Number(values.n64) };
const CONCURRENCY = [1, 64];
const BIG = { start: 5000, size: 40_000 };

/** Runs `n` jobs with at most `c` in flight; returns jobs per second. */
async function rate(n: number, c: number, job: (i: number) => Promise<void>): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(c, n) }, async () => {
      for (let i = next++; i < n; i = next++) await job(i);
    }),
  );
  return n / ((performance.now() - t0) / 1000);
}

// ---------- raw etcd transactions ----------

async function rawRound(etcd: Etcd3, round: number, n: number, c: number): Promise<number> {
  const base = `/bench-raw/${c}/${round}`;
  const lease = String((await etcd.leaseClient.leaseGrant({ TTL: 1800 })).ID);
  await etcd.put(`${base}/service`).value('{}');
  const svcRev = Number((await etcd.get(`${base}/service`).exec()).kvs[0].mod_revision);
  return rate(n, c, async (i) => {
    const port = `${base}/ports/${String(i).padStart(5, '0')}`;
    const name = `${base}/names/i${i}`;
    const offer = `${base}/offers/${i}`;
    const value = JSON.stringify({ name: `i${i}`, created: new Date().toISOString(), secret: '6f8ffc86-d98a-49ba-848a-a7cbaaea9360' });
    const res = await etcd.kv.txn({
      compare: [cmp.modIs(`${base}/service`, svcRev), cmp.absent(port), cmp.absent(name)],
      success: [op.put(port, value, lease), op.put(name, `{"port":${i}}`, lease), op.put(offer, value, lease)],
      failure: [],
    });
    if (!res.succeeded) throw new Error('raw txn failed');
  });
}

// ---------- offers through the coordinator ----------

interface OfferRun {
  rate: number;
  ports: { service: string; port: number }[];
}

async function offerRound(co: Coordinator, services: string[], perService: number, n: number, c: number, round: number): Promise<OfferRun> {
  const ports: { service: string; port: number }[] = [];
  const r = await rate(n, c, async (i) => {
    const service = services[Math.floor(i / perService)];
    const res = await co.app.inject({ method: 'POST', url: `/v1/services/${service}/offers`, payload: { name: `r${round}-i${i}` } });
    if (res.statusCode !== 201) throw new Error(`offer ${i} on ${service}: ${res.statusCode} ${res.body}`);
    ports.push({ service, port: (JSON.parse(res.body) as { port: number }).port });
  });
  return { rate: r, ports };
}

async function post(co: Coordinator, url: string, payload: Record<string, unknown>): Promise<void> {
  const res = await co.app.inject({ method: 'POST', url, payload });
  if (res.statusCode !== 201) throw new Error(`${url}: ${res.statusCode} ${res.body}`);
}

/** Writes `count` instance port keys (and names) of `service` straight into etcd, 500 ports a transaction. */
async function prefill(etcd: Etcd3, prefix: string, service: string, start: number, count: number): Promise<void> {
  const keys = keyspace(prefix).pm;
  const created = new Date().toISOString();
  for (let from = 0; from < count; from += 500) {
    const ops = [];
    for (let i = from; i < Math.min(count, from + 500); i++) {
      ops.push(op.put(keys.port(service, start + i), JSON.stringify({ name: `pre-${i}`, created })));
      ops.push(op.put(keys.name(service, `pre-${i}`), JSON.stringify({ port: start + i })));
    }
    await etcd.kv.txn({ compare: [], success: ops, failure: [] });
  }
}

/** Zero duplicates: distinct answers, and etcd holds exactly the answered ports (plus the pre-filled ones). */
async function checkNoDuplicates(etcd: Etcd3, prefix: string, answered: { service: string; port: number }[], prefilled: number): Promise<void> {
  const distinct = new Set(answered.map((a) => `${a.service}/${a.port}`));
  if (distinct.size !== answered.length) throw new Error(`DUPLICATE ports answered: ${answered.length - distinct.size}`);
  const held = await etcd.getAll().prefix(`${keyspace(prefix).pm.mirrored}ports/`).count();
  if (held !== answered.length + prefilled) throw new Error(`etcd holds ${held} port keys, expected ${answered.length + prefilled}`);
}

async function main(): Promise<void> {
  const etcdServer = await benchEtcd();
  const etcd = createEtcdClient({ hosts: [etcdServer.url] });
  const results: Record<string, number[]> = {};
  const push = (k: string, v: number) => (results[k] ??= []).push(v);
  let duplicatesChecked = 0;
  const prefilledBy: Record<number, number> = {};
  try {
    for (const c of CONCURRENCY) {
      const n = COUNT[c];
      // 100-port services, enough for every round.
      const smallPrefix = `/bench-pm-small-${c}`;
      const small = await buildCoordinator({ etcd: [etcdServer.url], prefix: smallPrefix, logLevel: 'silent' }, { etcd });
      const perRound = Math.ceil(n / 100);
      const smallNames = Array.from({ length: perRound * ROUNDS }, (_, i) => `small-${i}`);
      for (const [i, name] of smallNames.entries()) await post(small, '/v1/services', { name, start: 1100 + i * 100, end: 1100 + i * 100 + 99 });
      // One 40,000-port service, 36,000 held before the first measured offer.
      const bigPrefix = `/bench-pm-big-${c}`;
      const prefilled = BIG.size - n * ROUNDS;
      if (prefilled < 0) throw new Error(`--rounds × n (${n * ROUNDS}) exceeds the ${BIG.size} ports of the big range`);
      prefilledBy[c] = prefilled;
      await prefill(etcd, bigPrefix, 'big', BIG.start, prefilled);
      const big = await buildCoordinator({ etcd: [etcdServer.url], prefix: bigPrefix, logLevel: 'silent' }, { etcd });
      await post(big, '/v1/services', { name: 'big', start: BIG.start, end: BIG.start + BIG.size - 1 });
      const smallAnswers: OfferRun['ports'] = [];
      const bigAnswers: OfferRun['ports'] = [];
      for (let round = 0; round < ROUNDS; round++) {
        push(`raw-${c}`, await rawRound(etcd, round, n, c));
        const s = await offerRound(small, smallNames.slice(round * perRound, (round + 1) * perRound), 100, n, c, round);
        push(`small-${c}`, s.rate);
        smallAnswers.push(...s.ports);
        const b = await offerRound(big, ['big'], Infinity, n, c, round);
        push(`big-${c}`, b.rate);
        bigAnswers.push(...b.ports);
        if (b.ports.some((p) => p.port < BIG.start + prefilled)) throw new Error('big range: an offer got a pre-filled port');
      }
      await checkNoDuplicates(etcd, smallPrefix, smallAnswers, 0);
      await checkNoDuplicates(etcd, bigPrefix, bigAnswers, prefilled);
      const full = await big.app.inject({ method: 'POST', url: '/v1/services/big/offers', payload: { name: 'one-too-many' } });
      if (JSON.parse(full.body).port?.[0] !== 'Port range has been completely utilized.') throw new Error(`big range should be full: ${full.body}`);
      duplicatesChecked += smallAnswers.length + bigAnswers.length;
      await small.close();
      await big.close();
    }
  } finally {
    etcd.close();
    await etcdServer.cleanup();
  }

  const lines = [
    `Command: \`node --conditions=source --import tsx bench/portmaster.ts --rounds ${ROUNDS} --n1 ${COUNT[1]} --n64 ${COUNT[64]}\``,
    '',
    `Median of ${ROUNDS} rounds; offers per second (each a 201 with a distinct port). Ratio = offers ÷ raw etcd transactions at the same concurrency.`,
    '',
    '| concurrency | raw etcd txn/s | offers/s, 100-port range | ratio | offers/s, 40,000-port range | ratio | 40k ÷ 100 |',
    '|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const c of CONCURRENCY) {
    const raw = median(results[`raw-${c}`]);
    const small = median(results[`small-${c}`]);
    const big = median(results[`big-${c}`]);
    lines.push(`| ${c} | ${fmt(raw)} | ${fmt(small)} | ${fmt(small / raw, 2)} | ${fmt(big)} | ${fmt(big / raw, 2)} | ${fmt(big / small, 2)} |`);
  }
  lines.push('', `40,000-port range: ${CONCURRENCY.map((c) => `${fmt(prefilledBy[c])} ports held before the first measured offer at concurrency ${c}`).join(', ')}; the measured offers take the rest, and one more offer is refused with "Port range has been completely utilized.".`);
  lines.push('', `Duplicates: 0 (checked ${fmt(duplicatesChecked)} offers: answers distinct, etcd holds exactly one port key per 201).`);
  lines.push('', `Rounds (offers/s): ${CONCURRENCY.map((c) => ['raw', 'small', 'big'].map((k) => `${k}-${c}: ${results[`${k}-${c}`].map((x) => fmt(x)).join(', ')}`).join('; ')).join('; ')}`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

runMain(main);
