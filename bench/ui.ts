/**
 * Issue 13's dashboard figure: first render of /ui in Debian's chromium with
 * 10,000 L4 services (2 servers each) in etcd, next to the same page over an
 * empty cluster, in the same run and the same browser, rounds alternating.
 *
 * "First render" is the page's own clock (performance.now(), from navigation
 * start) at the first animation frame where the feed is live and the first
 * page of services is in the DOM (for the empty cluster: the empty-state
 * message). Also printed: the snapshot's size on the wire.
 *
 * Run: npm run build && node --conditions=source --import tsx bench/ui.ts [--rounds 5] [--services 10000]
 */
import { parseArgs } from 'node:util';
import { buildCoordinator, type Coordinator } from '../packages/coordinator/src/index.js';
import { launchChromium } from '../test/helpers/browser.js';
import { benchEtcd, fmt, median, runMain } from './lib.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '5' }, services: { type: 'string', default: '10000' } } });
const ROUNDS = Number(values.rounds);
const N = Number(values.services);

const service = (i: number) => ({
  host: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
  port: 80,
  servers: [
    { host: `10.200.${(i >> 8) & 255}.${i & 255}`, port: 8080, weight: 5 },
    { host: `10.201.${(i >> 8) & 255}.${i & 255}`, port: 8080, weight: 5 },
  ],
});

async function coordinator(etcdUrl: string, prefix: string): Promise<{ c: Coordinator; base: string }> {
  const c = await buildCoordinator({ etcd: [etcdUrl], prefix, listen: { host: '127.0.0.1', port: 0 }, logLevel: 'silent', dnsRoot: `${prefix.slice(1)}.bench` });
  return { c, base: await c.listen() };
}

runMain(async () => {
  const etcd = await benchEtcd();
  const browser = await launchChromium();
  try {
    const full = await coordinator(etcd.url, '/bench-ui-full');
    const empty = await coordinator(etcd.url, '/bench-ui-empty');
    const t = Date.now();
    // POSTs, 32 at a time (one PUT of all of them would exceed the 1 MiB body limit).
    let next = 0;
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        while (next < N) {
          const r = await full.c.app.inject({ method: 'POST', url: '/services', payload: service(next++) });
          if (r.statusCode !== 200) throw new Error(`POST /services: ${r.statusCode} ${r.body.slice(0, 200)}`);
        }
      }),
    );
    console.error(`stored ${N} services in ${Date.now() - t} ms`);
    const ts = performance.now();
    const snapshotBytes = Buffer.byteLength(await snapshotText(full.base));
    const snapshotMs = performance.now() - ts;

    const measure = async (base: string, expectRows: boolean): Promise<number> => {
      const page = await browser.context.newPage();
      await page.goto(`${base}/ui`, { waitUntil: 'commit' });
      const handle = await page.waitForFunction(
        (rows) => {
          const live = document.querySelector('[data-conn="live"]');
          const ready = rows ? document.querySelectorAll('tr[data-service]').length > 0 : document.querySelector('main .empty') !== null;
          return live && ready ? performance.now() : false;
        },
        expectRows,
        { polling: 'raf', timeout: 30_000 },
      );
      const ms = (await handle.jsonValue()) as number;
      if (expectRows && (await page.locator('tr[data-service]').count()) !== 50) throw new Error('expected a first page of 50 services');
      await page.close();
      return ms;
    };

    // One warm-up each (browser start, first compile of the bundle).
    await measure(empty.base, false);
    await measure(full.base, true);
    const e: number[] = [];
    const f: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      e.push(await measure(empty.base, false));
      f.push(await measure(full.base, true));
    }
    console.log(`### /ui first render, ${fmt(N)} services × 2 servers vs an empty cluster (chromium headless, ${ROUNDS} rounds)`);
    console.log('| | median | rounds |');
    console.log('|---|---|---|');
    console.log(`| empty cluster (baseline) | ${fmt(median(e))} ms | ${e.map((x) => fmt(x)).join(', ')} ms |`);
    console.log(`| ${fmt(N)} services | **${fmt(median(f))} ms** | ${f.map((x) => fmt(x)).join(', ')} ms |`);
    console.log(`| difference | ${fmt(median(f) - median(e))} ms | |`);
    console.log(`\nsnapshot on the wire: ${fmt(snapshotBytes / 1024)} KiB, received by a Node ws client ${fmt(snapshotMs)} ms after it connected`);
    await full.c.close();
    await empty.c.close();
  } finally {
    await browser.close();
    await etcd.cleanup();
  }
});

/** The snapshot's messages, as a page gets them. */
async function snapshotText(base: string): Promise<string> {
  const { default: WebSocket } = await import('ws');
  const ws = new WebSocket(`${base.replace(/^http/, 'ws')}/ui/feed`);
  let text = '';
  await new Promise<void>((resolve, reject) => {
    ws.on('message', (d) => {
      text += d.toString();
      const m = JSON.parse(d.toString()) as { t: string; last?: boolean; services: unknown[]; totalServices?: number };
      if ((m.t === 'services' && m.last) || (m.t === 'snapshot' && m.services.length === m.totalServices)) resolve();
    });
    ws.once('error', reject);
  });
  ws.close();
  return text;
}
