/**
 * DNS queries per second through the coordinator's built-in responder
 * (`--dns-listen`, a CLI child process over a private etcd, records put by
 * real /provide websockets), measured with dnsperf next to a baseline in the
 * same run: a trivial dns-packet UDP responder (a Node child process) that
 * decodes each query and answers one fixed A record.
 *
 *   node --conditions=source --import tsx bench/dns.ts [seconds]
 *
 * Needs `dnsperf` (apt-get install -y dnsperf). Appends markdown to
 * bench/results/discovery.md.
 */
import { execFile, type ChildProcess } from 'node:child_process';
import { appendFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { WebSocket } from 'ws';
import { freePort, startEtcd } from '../packages/cli/src/embedded-etcd.js';
import { runMain, startChild } from './lib.js';
import { CLI_MAIN, NODE_ARGS } from '../test/helpers/cli.js';

const SECONDS = Number(process.argv[2] ?? 15);
const SERVICES = 10;
const PER_SERVICE = 3;
const RESULTS = fileURLToPath(new URL('./results/discovery.md', import.meta.url));
const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const BASELINE = `
import dgram from 'node:dgram';
import dnsPacket from 'dns-packet';
const sock = dgram.createSocket('udp4');
sock.on('message', (msg, rinfo) => {
  const q = dnsPacket.decode(msg);
  const out = dnsPacket.encode({ type: 'response', id: q.id, flags: dnsPacket.AUTHORITATIVE_ANSWER, questions: q.questions,
    answers: [{ type: 'A', name: q.questions[0].name, ttl: 10, data: '10.0.0.1' }] });
  sock.send(out, rinfo.port, rinfo.address);
});
sock.bind(Number(process.env.PORT), '127.0.0.1');
`;

interface Perf {
  qps: number;
  sent: number;
  completed: number;
  lost: number;
  rcodes: string;
  latencyMs: number;
}

async function dnsperf(port: number, file: string): Promise<Perf> {
  const { stdout } = await run('dnsperf', ['-s', '127.0.0.1', '-p', String(port), '-d', file, '-l', String(SECONDS), '-c', '8', '-q', '200', '-t', '2'], {
    maxBuffer: 16 * 1024 * 1024,
  });
  const num = (re: RegExp) => Number(re.exec(stdout)?.[1] ?? NaN);
  return {
    qps: num(/Queries per second:\s+([\d.]+)/),
    sent: num(/Queries sent:\s+(\d+)/),
    completed: num(/Queries completed:\s+(\d+)/),
    lost: num(/Queries lost:\s+(\d+)/),
    rcodes: /Response codes:\s+(.*)/.exec(stdout)?.[1] ?? '',
    latencyMs: num(/Average Latency \(s\):\s+([\d.]+)/) * 1000,
  };
}

async function digOk(port: number, name: string): Promise<boolean> {
  try {
    const { stdout } = await run('dig', ['@127.0.0.1', '-p', String(port), '+short', '+time=1', '+tries=1', 'A', name]);
    return stdout.trim().length > 0;
  } catch {
    return false;
  }
}

async function main() {
  const dataDir = mkdtempSync(join(tmpdir(), 'sy-bench-dns-'));
  const etcd = await startEtcd({ dataDir });
  const children: ChildProcess[] = [];
  const sockets: WebSocket[] = [];
  try {
    const root = 'bench.local';
    const queries = join(dataDir, 'queries.txt');
    const lines: string[] = [];
    for (let s = 0; s < SERVICES; s++) lines.push(`web${s}.services.${root} SRV`, `web${s}.services.${root} A`);
    lines.push(`nope.services.${root} A`, `*.services.${root} A`);
    writeFileSync(queries, `${lines.join('\n')}\n`);

    // ---- baseline ----
    const basePort = await freePort();
    const base = startChild(['--input-type=module', '-e', BASELINE], { PORT: String(basePort) });
    children.push(base);
    while (!(await digOk(basePort, 'x.example'))) await sleep(100);
    const baseline = await dnsperf(basePort, queries);
    base.kill('SIGKILL');

    // ---- the coordinator ----
    const port = await freePort();
    const dnsPort = await freePort();
    const coord = startChild([
      ...NODE_ARGS, CLI_MAIN, 'coordinator',
      '--etcd', etcd.url,
      '--listen', `127.0.0.1:${port}`,
      '--dns-root', root,
      '--dns-listen', `127.0.0.1:${dnsPort}`,
      '--log-level', 'warn',
    ]);
    children.push(coord);
    for (;;) {
      try {
        if ((await fetch(`http://127.0.0.1:${port}/healthz`)).ok) break;
      } catch {
        // not up yet
      }
      await sleep(100);
    }
    for (let s = 0; s < SERVICES; s++) {
      for (let i = 0; i < PER_SERVICE; i++) {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/provide?service=web${s}&port=${8000 + i}&host=10.1.${s}.${i + 1}`);
        await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
        sockets.push(ws);
      }
    }
    while (!(await digOk(dnsPort, `web${SERVICES - 1}.services.${root}`))) await sleep(50);
    const ours = await dnsperf(dnsPort, queries);

    const row = (label: string, p: Perf) =>
      `| ${label} | ${p.qps.toFixed(0)} | ${p.completed}/${p.sent} | ${p.lost} | ${p.latencyMs.toFixed(2)} | ${p.rcodes} |`;
    const md = `
## dns: queries per second with dnsperf — ${new Date().toISOString()}

\`node --conditions=source --import tsx bench/dns.ts ${SECONDS}\` → \`dnsperf -l ${SECONDS} -c 8 -q 200\` over UDP, 127.0.0.1 (goal ≥ 20,000 q/s on this 2-core machine)

Query mix: SRV and A for ${SERVICES} services with ${PER_SERVICE} providers each, one NXDOMAIN name, one wildcard.
Baseline: a dns-packet UDP responder that decodes each query and answers one fixed A record (same dnsperf settings, same query file).

| responder | queries/s | completed/sent | lost | avg latency ms | response codes |
|---|---|---|---|---|---|
${row('switchyard coordinator (--dns-listen)', ours)}
${row('baseline: trivial dns-packet responder', baseline)}
`;
    process.stdout.write(md);
    mkdirSync(join(RESULTS, '..'), { recursive: true });
    appendFileSync(RESULTS, md);
  } finally {
    sockets.forEach((s) => s.terminate());
    for (const c of children) c.kill('SIGKILL');
    await etcd.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

runMain(main);
