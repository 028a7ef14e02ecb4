/**
 * The health checker's worker thread: the scheduler and every probe run
 * here, so 25,000 TCP connects a second never delay the agent's sync loop
 * (which keeps its own thread) — only their results cross over, and only
 * when something changed.
 *
 * Protocol (`threaded.ts` is the other side): in `set` (a batch of services'
 * targets) and `stop`; out `updates` (targets whose state, since or last
 * error changed, and removed ones, with the probe counters), `log`, `stopped`.
 */
import { readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import { HealthChecker } from './checker.js';
import { NetnsProber } from './netns-prober.js';
import { LocalProber } from './probe.js';
import type { TargetHealth } from './state.js';
import type { CheckerWorkerData, FromWorker, ToWorker, Update } from './threaded.js';

/** The checker thread's nice value (the agent's own is usually 0). */
const CHECKER_NICE = 10;

const port = parentPort!;

// Applying desired state comes before probing it: on a busy host this thread
// yields the CPU to the sync loop (and to etcd, and the coordinator if it
// shares the host), and checks start late instead — which the delay gauge
// shows. Linux keeps a nice value per thread; /proc/thread-self names ours.
try {
  setPriority(Number(readlinkSync('/proc/thread-self').split('/').pop()), CHECKER_NICE);
} catch {
  /* not Linux, or not allowed: the thread runs at the agent's priority */
}
const { concurrency, netns } = workerData as CheckerWorkerData;
const send = (m: FromWorker) => port.postMessage(m);

const log = {
  warn: (obj: Record<string, unknown>, msg: string) => send({ t: 'log', level: 'warn', obj, msg }),
};

/** What the other side last heard of each target: `state|since|lastError`. */
const told = new Map<string, string>();
let outbox: Update[] = [];
let flushing = false;
let lastStats = '';

function flush(): void {
  flushing = false;
  const stats = { ...checker.stats };
  const delayMs = checker.delayMs;
  const probes = checker.probes;
  const statsText = `${stats.ok}|${stats.failed}|${stats.inconclusive}|${delayMs}|${probes}`;
  if (outbox.length === 0 && statsText === lastStats) return;
  lastStats = statsText;
  send({ t: 'updates', items: outbox, stats, delayMs, probes });
  outbox = [];
}

function queue(u: Update): void {
  outbox.push(u);
  if (!flushing) {
    flushing = true;
    setImmediate(flush);
  }
}

function onUpdate(serviceId: string, serverId: string, h: TargetHealth | undefined): void {
  const key = `${serviceId}/${serverId}`;
  if (!h) {
    if (told.delete(key)) queue([serviceId, serverId, null, 0]);
    return;
  }
  const text = `${h.state}|${h.since}|${h.lastError ?? ''}`;
  if (told.get(key) === text) return;
  told.set(key, text);
  queue([serviceId, serverId, h.state, h.since, h.lastError]);
}

const checker = new HealthChecker({
  prober: netns ? new NetnsProber(netns, log) : new LocalProber(),
  concurrency,
  onChange: () => undefined,
  onUpdate,
});

// Probe counters move even when no state does: the metrics see them each second.
const statsTimer = setInterval(flush, 1000);

port.on('message', (m: ToWorker) => {
  if (m.t === 'set') {
    for (const [serviceId, targets] of m.services) checker.setService(serviceId, targets);
    return;
  }
  clearInterval(statsTimer);
  void checker.stop().then(() => {
    send({ t: 'stopped' });
    port.close();
  });
});
