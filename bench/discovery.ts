/**
 * 10,000 concurrent /provide websockets on one coordinator (a child
 * process, the real CLI) over a private etcd. Measures, each next to a
 * baseline taken in the same run:
 *
 *  - connect rate                vs a bare `ws` server (child process) doing nothing
 *  - coordinator memory / conn   RSS delta over the idle coordinator's RSS
 *  - etcd writes while idle      over an idle window with N providers vs with none
 *                                (revision delta, mvcc put/delete/txn counters, raft proposals, lease renewals)
 *  - all records gone after the last close  vs the same deletes sent one RPC per record
 *
 * "All records gone after the last close" is timed across processes, so that
 * no busy event loop stretches it: the client side (this process) notes when
 * its last socket was closed (the last `close` event of the N sockets it
 * terminated), and a separate watcher process, watching the records' prefix
 * in etcd, notes when it saw the last delete. Both clocks are
 * `performance.timeOrigin + performance.now()` (the same wall clock, sub-ms
 * resolution). The watcher also counts the transactions (distinct etcd
 * revisions) the deletes came in.
 *
 *   node --conditions=source --import tsx bench/discovery.ts [N] [idleSeconds]
 *
 * BENCH_CLI=dist runs the built CLI (`npx tsc -b packages/cli` first) instead of the
 * sources through tsx; BENCH_COORDINATOR_NODE_ARGS adds node flags to the
 * coordinator (e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`).
 *
 * Needs `ulimit -n` above N + 1000 (each of the two processes holds N sockets;
 * this machine allows 20000).
 *
 * Appends its figures as markdown to bench/results/discovery.md.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Etcd3 } from 'etcd3';
import { WebSocket } from 'ws';
import { freePort, startEtcd } from '../packages/cli/src/embedded-etcd.js';
import { CLI_MAIN, NODE_ARGS } from '../test/helpers/cli.js';
import { runMain, startChild } from './lib.js';

const N = Number(process.argv[2] ?? 10_000);
const IDLE_S = Number(process.argv[3] ?? 30);
const CONCURRENCY = 200;
const DIST_MAIN = fileURLToPath(new URL('../packages/cli/dist/main.js', import.meta.url));
const RESULTS = fileURLToPath(new URL('./results/discovery.md', import.meta.url));

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitHttp(url: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await fetch(url);
      if (r.status < 500) return;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`${url} not up`);
    await sleep(100);
  }
}

/** Opens `n` websockets, `CONCURRENCY` handshakes in flight; resolves with the sockets and the elapsed ms. */
async function connectAll(url: (i: number) => string, n: number): Promise<{ sockets: WebSocket[]; ms: number }> {
  const sockets: WebSocket[] = new Array(n);
  let next = 0;
  const t0 = performance.now();
  async function worker() {
    while (next < n) {
      const i = next++;
      sockets[i] = await new Promise<WebSocket>((resolve, reject) => {
        const ws = new WebSocket(url(i), { perMessageDeflate: false });
        ws.once('open', () => resolve(ws));
        ws.once('error', reject);
      });
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return { sockets, ms: performance.now() - t0 };
}

async function closeAll(sockets: WebSocket[]): Promise<void> {
  await Promise.all(
    sockets.map(
      (ws) =>
        new Promise<void>((resolve) => {
          if (ws.readyState === ws.CLOSED) return resolve();
          ws.once('close', () => resolve());
          ws.terminate();
        }),
    ),
  );
}

async function metrics(url: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const want = [
    'etcd_mvcc_put_total',
    'etcd_mvcc_delete_total',
    'etcd_mvcc_txn_total',
    'etcd_server_proposals_committed_total',
    'etcd_debugging_lease_renewed_total',
    'etcd_debugging_mvcc_current_revision',
  ];
  const out: Record<string, number> = {};
  for (const name of want) {
    const m = new RegExp(`^${name} ([0-9.e+]+)$`, 'm').exec(text);
    out[name] = m ? Number(m[1]) : NaN;
  }
  return out;
}

function delta(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.keys(a).map((k) => [k, b[k] - a[k]]));
}

/** When the watcher saw the deletes of all N records: epoch ms, and in how many revisions. */
interface DeleteWatch {
  first: number;
  last: number;
  revisions: number;
  deletes: number;
  /** Per etcd revision (transaction): when it was seen (epoch ms) and how many deletes it held. */
  txns: [number, number][];
}

// A separate process: its event loop does nothing but receive watch events.
const DELETE_WATCHER = `
import { Etcd3 } from 'etcd3';
const now = () => performance.timeOrigin + performance.now();
const client = new Etcd3({ hosts: process.env.ETCD });
const n = Number(process.env.N);
const start = Number((await client.get('/').exec()).header.revision) + 1;
let first = 0, last = 0, deletes = 0;
const revisions = new Map();
const watcher = await client.watch().prefix(process.env.PREFIX).startRevision(String(start)).create();
watcher.on('delete', (kv) => {
  const t = now();
  if (deletes === 0) first = t;
  last = t;
  deletes++;
  const r = String(kv.mod_revision);
  const seen = revisions.get(r);
  if (seen) seen[1]++;
  else revisions.set(r, [t, 1]);
  if (deletes === n) {
    process.stdout.write(JSON.stringify({ first, last, revisions: revisions.size, deletes, txns: [...revisions.values()] }) + '\\n');
    process.exit(0);
  }
});
process.stdout.write('ready\\n');
`;

/** Starts the watcher; resolves once its watch is established, with a promise of its figures. */
async function watchDeletes(etcdUrl: string, prefix: string, n: number): Promise<{ done: Promise<DeleteWatch> }> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', DELETE_WATCHER], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ETCD: etcdUrl, PREFIX: prefix, N: String(n) },
  });
  let out = '';
  child.stdout?.setEncoding('utf8');
  await new Promise<void>((resolve, reject) => {
    child.stdout?.on('data', (d: string) => {
      out += d;
      if (out.startsWith('ready\n')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`delete watcher exited ${code}`)));
  });
  // Wrapped: an async function returning a bare promise would wait for it.
  const done = new Promise<DeleteWatch>((resolve, reject) => {
    child.once('exit', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (code === 0 && line) resolve(JSON.parse(line) as DeleteWatch);
      else reject(new Error(`delete watcher exited ${code}: ${out}`));
    });
  });
  return { done };
}

const epochMs = () => performance.timeOrigin + performance.now();

const BARE_WS_SERVER = `
import { WebSocketServer } from 'ws';
const wss = new WebSocketServer({ port: Number(process.env.PORT), host: '127.0.0.1' });
wss.on('connection', (ws) => ws.on('error', () => {}));
`;

async function main() {
  const dataDir = mkdtempSync(join(tmpdir(), 'sy-bench-disco-'));
  const etcd = await startEtcd({ dataDir });
  const client = new Etcd3({ hosts: etcd.url });
  const children: ChildProcess[] = [];
  try {
    // ---- baseline: bare ws server ----
    const barePort = await freePort();
    const bare = startChild(['--input-type=module', '-e', BARE_WS_SERVER], { PORT: String(barePort) });
    children.push(bare);
    await waitHttp(`http://127.0.0.1:${barePort}/`).catch(() => sleep(500));
    await sleep(300);
    const bareRss0 = rssKiB(bare.pid as number);
    const bareConn = await connectAll(() => `ws://127.0.0.1:${barePort}/`, N);
    await sleep(1000);
    const bareRss1 = rssKiB(bare.pid as number);
    await closeAll(bareConn.sockets);
    bare.kill('SIGKILL');

    // ---- the coordinator ----
    // The shipped CLI (dist, after `npx tsc -b packages/cli`) with BENCH_CLI=dist; else the sources through tsx.
    const cliArgs = process.env.BENCH_CLI === 'dist' ? [DIST_MAIN] : [...NODE_ARGS, CLI_MAIN];
    const port = await freePort();
    const root = 'bench.local';
    const dir = '/skydns/local/bench/';
    const coord = startChild([
      // e.g. BENCH_COORDINATOR_NODE_ARGS=--cpu-prof to profile the coordinator.
      ...(process.env.BENCH_COORDINATOR_NODE_ARGS?.split(' ').filter(Boolean) ?? []),
      ...cliArgs,
      'coordinator',
      '--etcd', etcd.url,
      '--listen', `127.0.0.1:${port}`,
      '--dns-root', root,
      '--provider-ttl', '10s',
      '--ping-interval', '10s',
      '--log-level', 'warn',
    ]);
    children.push(coord);
    await waitHttp(`http://127.0.0.1:${port}/healthz`);
    await sleep(2000);
    const pid = coord.pid as number;
    const rss0 = rssKiB(pid);

    // Baseline idle window: coordinator with no providers.
    const m0 = await metrics(etcd.url);
    await sleep(IDLE_S * 1000);
    const m1 = await metrics(etcd.url);
    const idleEmpty = delta(m0, m1);

    // Connect N providers across 100 services.
    const conn = await connectAll((i) => `ws://127.0.0.1:${port}/provide?service=svc${i % 100}&port=${10000 + (i % 50000)}&host=10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, N);
    const tConnected = performance.now();
    for (;;) {
      const count = Number(await client.getAll().prefix(dir).count());
      if (count === N) break;
      await sleep(20);
    }
    const allWrittenMs = performance.now() - tConnected;
    await sleep(3000);
    const rss1 = rssKiB(pid);

    // Idle window with N providers (spans pings every 10 s and lease keep-alives).
    const m2 = await metrics(etcd.url);
    await sleep(IDLE_S * 1000);
    const m3 = await metrics(etcd.url);
    const idleFull = delta(m2, m3);
    const rss2 = rssKiB(pid);
    const stillOpen = conn.sockets.filter((s) => s.readyState === s.OPEN).length;

    // Close all: from the client's last close to the watcher's last delete.
    const deleted = await watchDeletes(etcd.url, dir, N);
    const tTerminate = epochMs();
    let tLastClientClose = 0;
    const closing = Promise.all(
      conn.sockets.map(
        (ws) =>
          new Promise<void>((resolve) => {
            ws.once('close', () => {
              tLastClientClose = epochMs();
              resolve();
            });
          }),
      ),
    );
    for (const ws of conn.sockets) ws.terminate();
    const tTerminated = epochMs();
    await closing;
    const gone = await deleted.done;
    const left = Number(await client.getAll().prefix(dir).count());
    if (left !== 0) throw new Error(`${left} records left after the watcher saw ${gone.deletes} deletes`);
    const goneMs = gone.last - tLastClientClose;
    process.stderr.write(`delete transactions (ms after the first terminate(), deletes): ${gone.txns.map(([t, n]) => `${(t - tTerminate).toFixed(0)}:${n}`).join(' ')}\n`);
    coord.kill('SIGTERM');
    await new Promise((r) => coord.once('exit', r));

    // Baseline for removal: the same number of records, deleted one RPC each (100 in flight).
    const keys = Array.from({ length: N }, (_, i) => `/bench-baseline/rec/${i}`);
    for (let i = 0; i < N; i += 1000) {
      await client.kv.txn({ compare: [], success: keys.slice(i, i + 1000).map((k) => ({ request_put: { key: Buffer.from(k), value: Buffer.from('{}') } })), failure: [] });
    }
    let k = 0;
    const tb = performance.now();
    await Promise.all(
      Array.from({ length: 100 }, async () => {
        while (k < N) await client.delete().key(keys[k++]).exec();
      }),
    );
    const baselineDeleteMs = performance.now() - tb;

    const perConnKiB = (rss1 - rss0) / N;
    const barePerConnKiB = (bareRss1 - bareRss0) / N;
    const line = (label: string, d: Record<string, number>) =>
      `| ${label} | ${d.etcd_debugging_mvcc_current_revision} | ${d.etcd_mvcc_put_total} | ${d.etcd_mvcc_delete_total} | ${d.etcd_mvcc_txn_total} | ${d.etcd_server_proposals_committed_total} | ${d.etcd_debugging_lease_renewed_total} |`;
    const md = `
## discovery: ${N} concurrent providers — ${new Date().toISOString()}

\`node --conditions=source --import tsx bench/discovery.ts ${N} ${IDLE_S}\` (${process.arch}, Node ${process.version}, etcd private, coordinator = CLI child process)

| figure | switchyard | baseline | goal |
|---|---|---|---|
| connect rate (${CONCURRENCY} handshakes in flight) | ${((N / conn.ms) * 1000).toFixed(0)} conn/s (${(conn.ms / 1000).toFixed(2)} s) | bare \`ws\` server: ${((N / bareConn.ms) * 1000).toFixed(0)} conn/s | — |
| all ${N} records in etcd after the last handshake | ${allWrittenMs.toFixed(0)} ms | — | — |
| memory per connection (RSS delta / N) | ${perConnKiB.toFixed(2)} KiB (RSS ${(rss0 / 1024).toFixed(0)} → ${(rss1 / 1024).toFixed(0)} MiB; ${(rss2 / 1024).toFixed(0)} MiB after idling) | bare \`ws\` server: ${barePerConnKiB.toFixed(2)} KiB | ≤ 10 KiB |
| etcd writes/s while ${N} providers idle ${IDLE_S} s | ${(idleFull.etcd_mvcc_put_total / IDLE_S).toFixed(2)} puts/s, ${idleFull.etcd_debugging_mvcc_current_revision} revisions | no providers: ${(idleEmpty.etcd_mvcc_put_total / IDLE_S).toFixed(2)} puts/s, ${idleEmpty.etcd_debugging_mvcc_current_revision} revisions | none beyond keep-alives |
| providers still connected after the idle window (pings every 10 s) | ${stillOpen} / ${N} | — | all |
| all records gone after the last close (client's last \`close\` → watcher's last delete) | ${goneMs.toFixed(0)} ms | ${N} single-key deletes (100 in flight): ${baselineDeleteMs.toFixed(0)} ms | ≤ 1000 ms |

Close phase, on one clock (ms after the first \`terminate()\`): last \`terminate()\` returned ${(tTerminated - tTerminate).toFixed(0)}, client's last \`close\` event ${(tLastClientClose - tTerminate).toFixed(0)}, first delete seen by the watcher ${(gone.first - tTerminate).toFixed(0)}, last delete ${(gone.last - tTerminate).toFixed(0)}; ${gone.deletes} deletes in ${gone.revisions} etcd revisions (transactions).

Idle-window deltas of etcd's own counters (/metrics):

| window | revisions | mvcc puts | mvcc deletes | txns | raft proposals | lease renewals |
|---|---|---|---|---|---|---|
${line(`${N} providers, ${IDLE_S} s`, idleFull)}
${line(`no providers, ${IDLE_S} s`, idleEmpty)}
`;
    process.stdout.write(md);
    mkdirSync(join(RESULTS, '..'), { recursive: true });
    appendFileSync(RESULTS, md);
  } finally {
    for (const c of children) c.kill('SIGKILL');
    client.close();
    await etcd.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

runMain(main);
