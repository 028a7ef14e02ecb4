/**
 * Starts the agent's short-lived commands (`nft -f`, `nft -j list`, `ip …`)
 * from a small helper process instead of from the agent itself.
 *
 * Why: libuv's uv_spawn does not return until the child has exec'd (it
 * waits on a close-on-exec pipe to report a failed exec), so every spawn
 * blocks the agent's event loop — measured here 17–29 ms per spawn on a
 * loaded 2-core machine, 50 ms from a 280 MB process, up to ~900 ms in one
 * topology resync. Any change arriving meanwhile waits. The helper (a plain
 * `node -e`: a second node process, tens of MiB resident) pays that wait in its own event loop; the agent only
 * exchanges one JSON line each way per command.
 *
 * Protocol: requests `{id, file, args, input, timeoutMs}` on the helper's
 * stdin, one JSON per line; answers `{id, pid}` as soon as the command
 * started, then `{id, stdout, stderr, exitCode}` or `{id, error}`.
 */
import { spawn, type ChildProcess } from 'node:child_process';

export interface SpawnerResult {
  stdout: string;
  stderr: string;
  /** undefined: killed (timeout) or never started (`error` says why). */
  exitCode?: number;
  error?: string;
}

const HELPER = `
const { spawn } = require('node:child_process');
const send = (m) => process.stdout.write(JSON.stringify(m) + '\\n');
let buf = '';
process.stdin.setEncoding('utf8').on('data', (d) => {
  buf += d;
  let nl;
  while ((nl = buf.indexOf('\\n')) >= 0) {
    const req = JSON.parse(buf.slice(0, nl));
    buf = buf.slice(nl + 1);
    run(req);
  }
}).on('end', () => process.exit(0));
function run(req) {
  let child;
  try {
    child = spawn(req.file, req.args, { env: { ...process.env, LC_ALL: 'C' }, stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (e) {
    return send({ id: req.id, error: String(e && e.message || e), stdout: '', stderr: '' });
  }
  if (child.pid !== undefined) send({ id: req.id, pid: child.pid });
  const out = [], err = [];
  let failed;
  child.stdout.on('data', (d) => out.push(d));
  child.stderr.on('data', (d) => err.push(d));
  child.stdin.on('error', () => {});
  child.on('error', (e) => { failed = String(e && e.message || e); });
  const timer = setTimeout(() => child.kill('SIGKILL'), req.timeoutMs);
  child.on('close', (code) => {
    clearTimeout(timer);
    send({ id: req.id, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), ...(code === null || failed ? {} : { exitCode: code }), ...(failed ? { error: failed } : {}) });
  });
  child.stdin.end(req.input || '');
}
`;

interface Pending {
  onSpawn?: (pid: number | undefined) => void;
  resolve: (r: SpawnerResult) => void;
}

export class Spawner {
  private child?: ChildProcess;
  private seq = 0;
  private readonly pending = new Map<number, Pending>();

  run(file: string, args: string[], opts: { input?: string; timeoutMs: number; onSpawn?: (pid: number | undefined) => void }): Promise<SpawnerResult> {
    const child = this.start();
    const id = ++this.seq;
    return new Promise<SpawnerResult>((resolve) => {
      this.pending.set(id, { resolve, ...(opts.onSpawn ? { onSpawn: opts.onSpawn } : {}) });
      this.hold(true);
      child.stdin?.write(`${JSON.stringify({ id, file, args, input: opts.input ?? '', timeoutMs: opts.timeoutMs })}\n`);
    });
  }

  close(): void {
    this.child?.stdin?.end();
    this.child = undefined;
  }

  /** The helper keeps the agent's process alive only while a command runs. */
  private hold(on: boolean): void {
    const c = this.child;
    if (!c) return;
    const handles = [c, c.stdin, c.stdout] as unknown as { ref(): void; unref(): void }[];
    for (const h of handles) {
      if (!h || typeof h.ref !== 'function') continue;
      if (on) h.ref();
      else h.unref();
    }
  }

  private start(): ChildProcess {
    if (this.child) return this.child;
    const child = spawn(process.execPath, ['-e', HELPER], { stdio: ['pipe', 'pipe', 'inherit'] });
    this.child = child;
    child.stdin?.on('error', () => undefined);
    // Chunks are kept in a list until a newline comes (an answer can be megabytes: `nft -j list`).
    let parts: string[] = [];
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      const lines = d.split('\n');
      if (lines.length === 1) {
        parts.push(d);
        return;
      }
      const first = [...parts, lines[0]].join('');
      parts = [lines[lines.length - 1]];
      for (const line of [first, ...lines.slice(1, -1)]) if (line) this.answer(JSON.parse(line) as { id: number; pid?: number } & Partial<SpawnerResult>);
    });
    child.on('exit', () => {
      if (this.child === child) this.child = undefined;
      // Commands in flight: their outcome is unknown; report them as failed.
      for (const [id, p] of this.pending) {
        this.pending.delete(id);
        p.resolve({ stdout: '', stderr: '', error: 'the command helper process exited' });
      }
    });
    return child;
  }

  private answer(m: { id: number; pid?: number } & Partial<SpawnerResult>): void {
    const p = this.pending.get(m.id);
    if (!p) return;
    if (m.pid !== undefined && m.stdout === undefined) {
      p.onSpawn?.(m.pid);
      return;
    }
    this.pending.delete(m.id);
    if (this.pending.size === 0) this.hold(false);
    p.resolve({ stdout: m.stdout ?? '', stderr: m.stderr ?? '', ...(m.exitCode !== undefined ? { exitCode: m.exitCode } : {}), ...(m.error ? { error: m.error } : {}) });
  }
}
