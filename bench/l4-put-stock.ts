/**
 * Issue 12 §1: PUT /services of 10,000 services, each with two servers, on an
 * etcd with its default limits (no flags: 128 operations and 1.5 MiB per
 * request), next to a baseline measured in the same run: raw etcd3
 * transactions from Node writing the same stored bytes (the same JSON under
 * the same keys), chunked the same way (chunkPuts, 4 in flight) — the least
 * any correct client needs on this etcd. Rounds alternate the two sides.
 *
 * Run: node --conditions=source --import tsx bench/l4-put-stock.ts [--rounds 5]
 */
import { parseArgs } from 'node:util';
import { Etcd3 } from 'etcd3';
import { chunkPuts, ServiceInput, toService } from '@switchyard/shared';
import { benchEtcd, fmt, freePort, median, runMain, startSwitchyard, stop } from './lib.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '5' } } });
const ROUNDS = Number(values.rounds);
const N = 10_000;

/** Round `r`'s set: a different port each round, so every PUT replaces all 10,000. */
function set(r: number) {
  return Array.from({ length: N }, (_, i) => ({
    host: `10.${(i >> 8) & 255}.${i & 255}.1`,
    port: 1000 + r,
    servers: [
      { host: `172.16.${(i >> 8) & 255}.${i & 255}`, port: 8080 },
      { host: `172.17.${(i >> 8) & 255}.${i & 255}`, port: 8080 },
    ],
  }));
}

async function main(): Promise<void> {
  const etcd = await benchEtcd();
  const port = await freePort();
  const coordinator = await startSwitchyard(['coordinator', '--etcd', etcd.url, '--listen', `127.0.0.1:${port}`, '--prefix', '/bench-stock', '--log-level', 'warn'], /coordinator listening at/);
  const base = `http://127.0.0.1:${port}`;
  const raw = new Etcd3({ hosts: etcd.url });
  const putMs: number[] = [];
  const rawMs: number[] = [];
  let bodyKiB = 0;
  try {
    for (let r = 0; r < ROUNDS; r++) {
      const input = set(r);
      const body = JSON.stringify(input);
      bodyKiB = body.length / 1024;
      // Baseline: the same stored JSON under keys of the same length, 4 chunks in flight.
      const stored = input.map((s) => toService(ServiceInput.parse(s)));
      const t0 = performance.now();
      const chunks = chunkPuts(stored.map((s) => [`/bench-raw/l4/sets/${r.toString(16).padStart(16, '0')}/${s.id}`, JSON.stringify(s)]));
      let next = 0;
      await Promise.all(
        Array.from({ length: 4 }, async () => {
          while (next < chunks.length) await raw.kv.txn({ compare: [], success: chunks[next++], failure: [] });
        }),
      );
      rawMs.push(performance.now() - t0);
      await raw.delete().prefix('/bench-raw/');

      const t1 = performance.now();
      const res = await fetch(`${base}/services`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body });
      await res.arrayBuffer();
      putMs.push(performance.now() - t1);
      if (!res.ok) throw new Error(`PUT ${N}: ${res.status}`);
      const list = (await (await fetch(`${base}/services`)).json()) as unknown[];
      if (list.length !== N) throw new Error(`GET /services after PUT: ${list.length}`);
    }
  } finally {
    raw.close();
    await stop(coordinator);
    await etcd.cleanup();
  }
  const out = [
    `### PUT /services, 10,000 services with 2 servers each (${bodyKiB.toFixed(0)} KiB body), etcd with default limits, ${ROUNDS} rounds`,
    '| | median | rounds |',
    '|---|---|---|',
    `| baseline: raw etcd3 txns of the same stored JSON, 128 puts each, 4 in flight | ${fmt(median(rawMs))} ms | ${rawMs.map((x) => fmt(x)).join(', ')} ms |`,
    `| PUT /services (generation in chunks + switch), request to answer | ${fmt(median(putMs))} ms | ${putMs.map((x) => fmt(x)).join(', ')} ms |`,
    `| **ratio** (PUT / baseline) | **${(median(putMs) / median(rawMs)).toFixed(2)}×** | ${putMs.map((p, i) => (p / rawMs[i]).toFixed(2)).join(', ')} |`,
    '',
  ];
  process.stdout.write(`${out.join('\n')}\n`);
}

runMain(main);
