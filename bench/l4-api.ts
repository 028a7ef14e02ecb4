/**
 * Issue 2's figures, each next to its baseline in the same run:
 *  1. POST /services throughput vs raw etcd3 puts of the same JSON from Node,
 *     same concurrency.
 *  2. GET /services/:id with 1,000 services stored vs a bare fastify route
 *     returning the same JSON, same load generator (wrk).
 *  3. PUT /services of 10,000 services: time.
 * Rounds alternate the two sides so drift on a noisy machine hits both.
 * POST group-commits concurrent creates (packages/shared/src/etcd/group-commit.ts),
 * which is why it can beat one raw put per request.
 *
 * Run: node --conditions=source --import tsx bench/l4-api.ts [--rounds 3] [--seconds 5] [--concurrency 32]
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawn } from 'node:child_process';
import { Etcd3 } from 'etcd3';
import { parseArgs } from 'node:util';
import { benchEtcd, fmt, freePort, getServicesLua, median, startSwitchyard, stop, wrk } from './lib.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '3' }, seconds: { type: 'string', default: '5' }, concurrency: { type: 'string', default: '32' } } });
const ROUNDS = Number(values.rounds);
const SECONDS = Number(values.seconds);
const C = Number(values.concurrency);

const service = (i: number) => ({
  id: `tcp-10_${(i >> 16) & 255}_${(i >> 8) & 255}_${i & 255}-80`,
  host: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
  port: 80,
  type: 'tcp',
  scheduler: 'wlc',
  persistence: 0,
  netmask: '',
  servers: [],
});

/**
 * Raw etcd3 writes of the same JSON from Node at the same concurrency: a plain
 * put (the baseline), and the create-if-absent transaction POST itself
 * needs for Portal's idempotence (what etcd can do for this request at best).
 */
async function raw(url: string, round: number, kind: 'put' | 'txn'): Promise<number> {
  const etcd = new Etcd3({ hosts: url });
  let next = 0;
  let done = 0;
  const deadline = performance.now() + SECONDS * 1000;
  await Promise.all(
    Array.from({ length: C }, async () => {
      while (performance.now() < deadline) {
        const s = service(next++);
        const key = `/raw-${kind}${round}/l4/services/${s.id}`;
        if (kind === 'put') await etcd.put(key).value(JSON.stringify(s));
        else await etcd.if(key, 'Create', '==', 0).then(etcd.put(key).value(JSON.stringify(s))).else(etcd.get(key)).commit();
        done++;
      }
    }),
  );
  etcd.close();
  return done / SECONDS;
}

// wrk is single-threaded here (-t1) so one Lua counter makes every body unique.
const postLua = (round: number) => `
counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  local body = string.format('{"host":"10.%d.%d.%d","port":%d}', ${round}, math.floor(counter / 65536) % 256, math.floor(counter / 256) % 256, counter % 256 + 1)
  return wrk.format(nil, "/services", nil, body)
end
`;


async function main() {
  const etcd = await benchEtcd();
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const coordinator = await startSwitchyard(['coordinator', '--etcd', etcd.url, '--listen', `127.0.0.1:${port}`, '--prefix', '/bench', '--log-level', 'warn'], /coordinator listening at/);
  await new Promise((r) => setTimeout(r, 500));
  const tmp = mkdtempSync(join(tmpdir(), 'sy-bench-'));
  const out: string[] = [];
  try {
    // ---- 1. POST vs raw puts
    const rawPut: number[] = [];
    const rawTxn: number[] = [];
    const post: number[] = [];
    const postP99: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      rawPut.push(await raw(etcd.url, r, 'put'));
      rawTxn.push(await raw(etcd.url, r, 'txn'));
      const w = wrk(`${base}/services`, { connections: C, seconds: SECONDS, lua: postLua(r + 1) });
      if (w.non2xx > 0) throw new Error(`POST /services: ${w.non2xx} non-2xx answers`);
      post.push(w.requestsPerSec);
      postP99.push(w.p99ms);
    }
    out.push(`### POST /services vs raw etcd3 puts (concurrency ${C}, ${ROUNDS} rounds × ${SECONDS} s)`);
    out.push('| | median ops/s | rounds |', '|---|---|---|');
    out.push(`| raw etcd3 put of the service JSON (Node) | ${fmt(median(rawPut))} | ${rawPut.map((x) => fmt(x)).join(', ')} |`);
    out.push(`| raw etcd3 create-if-absent txn of the same JSON (Node) | ${fmt(median(rawTxn))} | ${rawTxn.map((x) => fmt(x)).join(', ')} |`);
    out.push(`| POST /services through the coordinator (wrk; median p99 ${median(postP99).toFixed(1)} ms) | ${fmt(median(post))} | ${post.map((x) => fmt(x)).join(', ')} |`);
    out.push(`| **ratio to raw put** (goal ≥ 0.8) | **${(median(post) / median(rawPut)).toFixed(2)}×** | ${post.map((p, i) => (p / rawPut[i]).toFixed(2)).join(', ')} |`);
    out.push(`| ratio to raw txn | ${(median(post) / median(rawTxn)).toFixed(2)}× | ${post.map((p, i) => (p / rawTxn[i]).toFixed(2)).join(', ')} |`, '');

    // ---- 2. GET /services/:id with 1,000 stored vs bare fastify
    const thousand = Array.from({ length: 1000 }, (_, i) => ({ host: `10.200.${i >> 8}.${i & 255}`, port: 80, servers: [{ host: '10.201.0.1', port: 8080 }, { host: '10.201.0.2', port: 8080 }] }));
    const put = await fetch(`${base}/services`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(thousand) });
    if (!put.ok) throw new Error(`PUT 1,000: ${put.status} ${await put.text()}`);
    const stored = (await put.json()) as { id: string }[];
    const file = join(tmp, 'services.json');
    writeFileSync(file, JSON.stringify(stored));
    const barePort = await freePort();
    const bare = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./bare-fastify.ts', import.meta.url)), file, String(barePort)], { stdio: ['ignore', 'ignore', 'pipe'] });
    await new Promise<void>((resolve, reject) => {
      bare.stderr?.on('data', (d) => String(d).includes('listening') && resolve());
      bare.once('exit', (c) => reject(new Error(`bare fastify exited ${c}`)));
    });
    const lua = getServicesLua(stored.map((s) => s.id));
    const bareRps: number[] = [];
    const getRps: number[] = [];
    const getP99: number[] = [];
    const bareP99: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const b = wrk(`http://127.0.0.1:${barePort}`, { connections: C, seconds: SECONDS, lua });
      const g = wrk(base, { connections: C, seconds: SECONDS, lua });
      if (g.non2xx > 0 || b.non2xx > 0) throw new Error(`GET: non-2xx answers (${g.non2xx}, ${b.non2xx})`);
      bareRps.push(b.requestsPerSec);
      getRps.push(g.requestsPerSec);
      bareP99.push(b.p99ms);
      getP99.push(g.p99ms);
    }
    await stop(bare);
    out.push(`### GET /services/:id, 1,000 services stored, vs a bare fastify route (wrk, ${C} connections, ${ROUNDS} rounds × ${SECONDS} s)`);
    out.push('| | median req/s | median p99 | rounds |', '|---|---|---|---|');
    out.push(`| bare fastify returning the same JSON from a Map | ${fmt(median(bareRps))} | ${median(bareP99).toFixed(2)} ms | ${bareRps.map((x) => fmt(x)).join(', ')} |`);
    out.push(`| coordinator (watch-fed mirror, read-your-writes) | ${fmt(median(getRps))} | ${median(getP99).toFixed(2)} ms | ${getRps.map((x) => fmt(x)).join(', ')} |`);
    out.push(`| **ratio** (goal ≥ 0.8) | **${(median(getRps) / median(bareRps)).toFixed(2)}×** | | ${getRps.map((g, i) => (g / bareRps[i]).toFixed(2)).join(', ')} |`, '');

    // ---- 3. PUT /services of 10,000
    const tenK = JSON.stringify(Array.from({ length: 10_000 }, (_, i) => ({ host: `10.100.${i >> 8}.${i & 255}`, port: 80 })));
    const putMs: number[] = [];
    const listMs: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const t0 = performance.now();
      const res = await fetch(`${base}/services`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: tenK });
      await res.arrayBuffer();
      putMs.push(performance.now() - t0);
      if (!res.ok) throw new Error(`PUT 10,000: ${res.status}`);
      const t1 = performance.now();
      const list = (await (await fetch(`${base}/services`)).json()) as unknown[];
      listMs.push(performance.now() - t1);
      if (list.length !== 10_000) throw new Error(`GET /services after PUT: ${list.length}`);
    }
    out.push(`### PUT /services with 10,000 services (${(tenK.length / 1024).toFixed(0)} KiB body), ${ROUNDS} runs`);
    out.push('| | median | runs |', '|---|---|---|');
    out.push(`| PUT /services (one etcd transaction) | ${fmt(median(putMs))} ms | ${putMs.map((x) => fmt(x)).join(', ')} ms |`);
    out.push(`| then GET /services (10,000) | ${fmt(median(listMs))} ms | ${listMs.map((x) => fmt(x)).join(', ')} ms |`, '');
  } finally {
    await stop(coordinator);
    await etcd.cleanup();
    rmSync(tmp, { recursive: true, force: true });
  }
  process.stdout.write(`${out.join('\n')}\n`);
}

await main();
