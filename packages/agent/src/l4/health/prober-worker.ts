/**
 * The probe worker: `ip netns exec <ns> node prober-worker.js`, one process
 * for all checks of an agent that runs with `--netns`, so probes leave from
 * that namespace (a process cannot open sockets in another one).
 *
 * Protocol, one JSON object per line: in `{id, spec}`, out `{id, result}`.
 * It exits when its stdin closes (the agent went away).
 */
import { createInterface } from 'node:readline';
import { runProbe, type ProbeSpec } from './probe.js';

const out: string[] = [];
let scheduled = false;
function send(line: string): void {
  out.push(line);
  if (scheduled) return;
  scheduled = true;
  setImmediate(() => {
    scheduled = false;
    process.stdout.write(out.join(''));
    out.length = 0;
  });
}

createInterface({ input: process.stdin }).on('line', (line) => {
  let msg: { id: number; spec: ProbeSpec };
  try {
    msg = JSON.parse(line) as { id: number; spec: ProbeSpec };
  } catch {
    return;
  }
  void runProbe(msg.spec).then((result) => send(`${JSON.stringify({ id: msg.id, result })}\n`));
}).on('close', () => process.exit(0));
