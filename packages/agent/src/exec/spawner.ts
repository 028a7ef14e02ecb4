/**
 * Starts the agent's short-lived commands (`nft -f`, `nft -j list`, `ip …`,
 * `conntrack -L`) from a small helper process instead of from the agent itself.
 *
 * Why: libuv's uv_spawn does not return until the child has exec'd (it
 * waits on a close-on-exec pipe to report a failed exec), so every spawn
 * blocks the agent's event loop — measured here 17–29 ms per spawn on a
 * loaded 2-core machine, 50 ms from a 280 MB process, up to ~900 ms in one
 * topology resync. Any change arriving meanwhile waits. The helper pays
 * that wait in one of its own threads; the agent only exchanges one JSON
 * line each way per command.
 *
 * What it costs: the helper is a python3 program (stdlib only, one thread
 * per running command, started with `-I -S`): ~11 MiB resident idle, ~50 MiB
 * at the top while it carries a 5 MB answer, back to ~12 MiB after (with
 * glibc's mmap threshold fixed at 128 KiB; by default glibc kept ~40 MiB
 * after one such answer, ~110 MiB after three at once). It was a
 * second node process (`node -e`): ~42 MiB idle, ~68 MiB with a 5 MB answer
 * and ~64 MiB after. Without python3 (exec/python.ts), ExecaRunner spawns
 * from the agent itself.
 *
 * Protocol: requests `{id, file, args, input, timeoutMs}` on the helper's
 * stdin, one JSON per line; answers on its stdout, one JSON per line:
 * `{id, pid}` as soon as the command started, then `{id, stdout, stderr,
 * exitCode}`, or `{id, error, stdout, stderr}` (no exitCode: killed by the
 * timeout or a signal, or never started). stdout and stderr are UTF-8,
 * invalid bytes replaced. stdin closed: the helper exits (commands still
 * running finish on their own).
 *
 * Programs: `{id, program, netns?}` runs a small python3 program in a thread
 * of the helper — in that network namespace (setns moves only the thread),
 * with `emit(text)` and `stopping` (an Event it must watch) — instead of in a
 * python3 process of its own (~9 MiB each). What it emits comes as
 * `{id, out}`; its end as the usual last answer. `{stop: id}` sets its event.
 * The nftables event monitor (adapters/nft-monitor.ts) runs this way.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { PYTHON3 } from './python.js';

export interface SpawnerResult {
  stdout: string;
  stderr: string;
  /** undefined: killed (timeout, signal) or never started (`error` says why). */
  exitCode?: number;
  error?: string;
}

/** The helper (python3, stdlib only). Kept here, not in a .py file, so the build ships it with the agent. */
export const SPAWN_HELPER_PROGRAM = String.raw`
import errno, json, os, subprocess, sys, threading

ENV = dict(os.environ, LC_ALL='C')
out = sys.stdout.buffer
lock = threading.Lock()
# glibc raises its mmap threshold to the size of a big block once it is freed, so the next
# answers' megabytes come from the threads' heaps, which it keeps (~110 MiB after three
# 5 MB answers at once, malloc_trim or not). A fixed threshold (M_MMAP_THRESHOLD = 128 KiB)
# maps every big block on its own and unmaps it when freed.
try:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
except (ImportError, OSError):
    libc = None
try:
    libc.mallopt(-3, 128 << 10)
except AttributeError:
    pass  # not glibc: its own policy stands
CLONE_NEWNET = 0x40000000
programs = {}  # id of a running program -> its stop event


def send(m):
    line = json.dumps(m, ensure_ascii=False, separators=(',', ':')).encode('utf-8')
    with lock:
        try:
            out.write(line)
            out.write(b'\n')
            out.flush()
        except (BrokenPipeError, ValueError):
            os._exit(0)


def text(b):
    return (b or b'').decode('utf-8', 'replace')


def why(e, file):
    if isinstance(e, OSError) and e.errno is not None:
        return 'spawn %s %s (%s)' % (file, errno.errorcode.get(e.errno, e.errno), e.strerror)
    return 'spawn %s: %s' % (file, e)


def run(req):
    rid, file = req['id'], req['file']
    data = (req.get('input') or '').encode('utf-8')
    try:
        child = subprocess.Popen([file] + req['args'], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    except Exception as e:
        return send({'id': rid, 'error': why(e, file), 'stdout': '', 'stderr': ''})
    send({'id': rid, 'pid': child.pid})
    try:
        o, e = child.communicate(data, timeout=req['timeoutMs'] / 1000)
    except subprocess.TimeoutExpired:
        child.kill()
        try:
            o, e = child.communicate(timeout=1)
        except subprocess.TimeoutExpired as t:
            # A grandchild still holds the pipes: answer with what came.
            o, e = t.output, t.stderr
            child.wait()
        return send({'id': rid, 'error': 'timed out after %d ms (killed)' % req['timeoutMs'], 'stdout': text(o), 'stderr': text(e)})
    m = {'id': rid, 'stdout': text(o), 'stderr': text(e)}
    del o, e  # an answer can be megabytes (nft -j list): hold one copy less while it is written
    if child.returncode < 0:
        m['error'] = 'killed by signal %d' % -child.returncode
    else:
        m['exitCode'] = child.returncode
    send(m)


def enter_netns(name):
    # setns(CLONE_NEWNET) moves only the calling thread: the program's own.
    if libc is None or not name or '/' in name or name in ('.', '..'):
        raise OSError(errno.EINVAL, 'cannot enter network namespace %r' % name)
    fd = os.open('/run/netns/' + name, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            n = ctypes.get_errno()
            raise OSError(n, 'setns %s: %s' % (name, os.strerror(n)))
    finally:
        os.close(fd)


def program(req):
    # A program runs in this thread with emit(text) and stopping (an Event it must watch).
    rid = req['id']
    stopping = threading.Event()
    programs[rid] = stopping
    try:
        if req.get('netns'):
            enter_netns(req['netns'])
        code = compile(req['program'], '<program %d>' % rid, 'exec')
        exec(code, {'__name__': '__program__', 'emit': lambda t: send({'id': rid, 'out': t}), 'stopping': stopping})
    finally:
        programs.pop(rid, None)
    send({'id': rid, 'stdout': '', 'stderr': '', 'exitCode': 0})


def guarded(req):
    try:
        (program if 'program' in req else run)(req)
    except Exception as e:
        send({'id': req.get('id'), 'error': 'helper: %r' % e, 'stdout': '', 'stderr': ''})


for line in iter(sys.stdin.buffer.readline, b''):
    try:
        req = json.loads(line)
    except ValueError as e:
        sys.stderr.write('spawn helper: not a request: %s\n' % e)
        continue
    if 'stop' in req:
        ev = programs.get(req['stop'])
        if ev:
            ev.set()
        continue
    threading.Thread(target=guarded, args=(req,), daemon=True).start()
    # A request can carry megabytes (nft -f's input): hold none of it while waiting for the next.
    del line, req
# stdin closed: the agent is gone or stopping. Commands still running are left to finish.
os._exit(0)
`;

interface Pending {
  /** The helper process it was sent to. */
  helper: ChildProcess;
  onSpawn?: (pid: number | undefined) => void;
  /** A program's output. */
  onOut?: (text: string) => void;
  /** A command (not a program): the helper keeps the agent alive while it runs. */
  held: boolean;
  resolve: (r: SpawnerResult) => void;
}

/** A program running in the helper. */
export interface HelperProgram {
  /** Asks it to end (it sees its `stopping` event set); its end is not reported. */
  stop(): void;
}

export class Spawner {
  private child?: ChildProcess;
  private seq = 0;
  /** Commands in flight (programs are not counted). */
  private held = 0;
  private readonly pending = new Map<number, Pending>();

  /** `interpreter`: the python3 to run the helper with (check it with `pythonAvailable` first). */
  constructor(private readonly interpreter: string = PYTHON3) {}

  /** The helper's pid while it runs (tests, diagnostics). */
  get helperPid(): number | undefined {
    return this.child?.pid;
  }

  run(file: string, args: string[], opts: { input?: string; timeoutMs: number; onSpawn?: (pid: number | undefined) => void }): Promise<SpawnerResult> {
    const child = this.start();
    const id = ++this.seq;
    return new Promise<SpawnerResult>((resolve) => {
      this.pending.set(id, { helper: child, resolve, held: true, ...(opts.onSpawn ? { onSpawn: opts.onSpawn } : {}) });
      this.held++;
      this.hold(true);
      child.stdin?.write(`${JSON.stringify({ id, file, args, input: opts.input ?? '', timeoutMs: opts.timeoutMs })}\n`);
    });
  }

  /**
   * Runs a python3 program in a thread of the helper (see the protocol
   * above): `onOut` gets what it emits, `onEnd` its end (`error` set when it
   * raised, or the helper went). Not reported after `stop()`. A running
   * program does not keep the agent alive.
   */
  program(source: string, opts: { netns?: string; onOut: (text: string) => void; onEnd: (error?: string) => void }): HelperProgram {
    const child = this.start();
    const id = ++this.seq;
    this.pending.set(id, { helper: child, held: false, onOut: opts.onOut, resolve: (r) => opts.onEnd(r.error) });
    if (this.held === 0) this.hold(false);
    child.stdin?.write(`${JSON.stringify({ id, program: source, ...(opts.netns ? { netns: opts.netns } : {}) })}\n`);
    return {
      stop: () => {
        if (this.pending.delete(id) && this.child === child) child.stdin?.write(`${JSON.stringify({ stop: id })}\n`);
      },
    };
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
    // -I: no PYTHON* variables, no user site, no cwd on sys.path; -S: no site module (faster start, less memory).
    const child = spawn(this.interpreter, ['-I', '-S', '-c', SPAWN_HELPER_PROGRAM], { stdio: ['pipe', 'pipe', 'inherit'] });
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
      for (const line of [first, ...lines.slice(1, -1)]) if (line) this.answer(JSON.parse(line) as { id: number; pid?: number; out?: string } & Partial<SpawnerResult>);
    });
    // Commands in flight when the helper ends (or could not start): their outcome is unknown; report them as failed.
    // 'close', not 'exit': answers already in the pipe are read first.
    const gone = (why: string) => {
      if (this.child === child) this.child = undefined;
      for (const [id, p] of this.pending) {
        if (p.helper !== child) continue;
        this.settle(id, p, { stdout: '', stderr: '', error: why });
      }
    };
    child.on('error', (e) => gone(`the command helper (${this.interpreter}) could not run: ${e.message}`));
    child.on('close', (code, signal) => gone(`the command helper process exited (${signal ?? `code ${code}`}) before the command's answer; the next command starts a new helper`));
    return child;
  }

  private answer(m: { id: number; pid?: number; out?: string } & Partial<SpawnerResult>): void {
    const p = this.pending.get(m.id);
    if (!p) return;
    if (m.out !== undefined) {
      p.onOut?.(m.out);
      return;
    }
    if (m.pid !== undefined && m.stdout === undefined) {
      p.onSpawn?.(m.pid);
      return;
    }
    this.settle(m.id, p, { stdout: m.stdout ?? '', stderr: m.stderr ?? '', ...(m.exitCode !== undefined ? { exitCode: m.exitCode } : {}), ...(m.error ? { error: m.error } : {}) });
  }

  private settle(id: number, p: Pending, r: SpawnerResult): void {
    this.pending.delete(id);
    if (p.held && --this.held === 0) this.hold(false);
    p.resolve(r);
  }
}
