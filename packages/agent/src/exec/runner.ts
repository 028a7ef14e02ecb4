/**
 * The one way the agent runs a command: an argv array, never a shell string.
 * Every adapter (ip, nft, ipvsadm) takes a `Runner`, so tests swap in the
 * `FakeRunner` and compare the exact argv and stdin, and `--netns` is applied
 * in one place (`ip netns exec <ns> <cmd> …`).
 *
 * Commands (`run`) go through the spawn helper, or through execa where there
 * is none; execa is imported on the first such command, not at start (its
 * ~100 modules cost an idle agent a few MiB, BENCHMARKS.md issue 14).
 * Long-lived processes (`spawn`: `nft -i`, `conntrack -E`), whose streams the
 * caller reads itself, are started with node's own `spawn` (argv, no shell).
 */
import { spawn as spawnChild, type ChildProcess } from 'node:child_process';
import { PYTHON3, pythonAvailable } from './python.js';
import { Spawner } from './spawner.js';

export interface RunOptions {
  /** Written to the command's stdin (batch input: `nft -f -`, `ipvsadm -R`, `ip -batch -`). */
  input?: string;
  /** Run inside this named network namespace. */
  netns?: string;
  /** Resolve with the exit code instead of throwing when the command fails. */
  allowFail?: boolean;
  /** Told the command's pid as soon as it starts (the nft monitor tells the agent's own transactions apart by it). */
  onSpawn?: (pid: number | undefined) => void;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/** A long-running command whose output is read line by line (`conntrack -E`). */
export interface StreamOptions {
  netns?: string;
  onLine(line: string): void;
  onStderrLine?(line: string): void;
}

export interface StreamHandle {
  /** Ends the command (SIGTERM). */
  stop(): void;
  /** Settles with the exit code when the command has ended, for whatever reason (-1: killed or not started). */
  ended: Promise<number>;
}

export interface Runner {
  run(cmd: string, args: string[], opts?: RunOptions): Promise<RunResult>;
  /** Starts a long-running command (optional: runners that cannot, callers fall back to `run`). */
  stream?(cmd: string, args: string[], opts: StreamOptions): StreamHandle;
  /**
   * Starts a long-running command (a persistent `nft -i`, `nft monitor`)
   * whose output is read as it comes. Optional: a runner without it makes
   * its callers fall back to one `run` per call.
   */
  spawn?(cmd: string, args: string[], opts: SpawnOptions): Spawned;
  /**
   * Runs a small python3 program (stdlib only; it calls `emit(text)` and
   * watches `stopping`) in a thread of the spawn helper, in `opts.netns` —
   * no process of its own. Only runners with a helper have it.
   */
  program?(source: string, opts: ProgramOptions): RunningProgram;
}

export interface ProgramOptions {
  netns?: string;
  onOutput(text: string): void;
  /** It ended by itself (`error`: what it raised, or the helper went). Not called after `stop()`. */
  onEnd(error?: string): void;
}

export interface RunningProgram {
  stop(): void;
}

export interface SpawnOptions {
  netns?: string;
  onStdout?: (chunk: string) => void;
  onStderr?: (chunk: string) => void;
  /** The process ended (exit code, or undefined when killed or it never started). */
  onExit?: (code: number | undefined) => void;
}

/** A running long-lived command. */
export interface Spawned {
  /** Its pid, which is also the pid the kernel names (`ip netns exec` execs the command in place). */
  readonly pid: number | undefined;
  write(text: string): void;
  /** Closes stdin (the command ends at EOF). */
  end(): void;
  kill(): void;
}

/** A failed command: the argv, the exit code and what it said on stderr. */
export class CommandError extends Error {
  constructor(
    readonly argv: string[],
    readonly exitCode: number,
    readonly stderr: string,
    readonly stdout: string,
  ) {
    super(`${argv.join(' ')} failed (exit ${exitCode}): ${stderr.trim() || stdout.trim() || 'no output'}`);
    this.name = 'CommandError';
  }
}

/** The argv actually executed for `cmd args` in `netns` (exported for the fake and for logs). */
export function wrapNetns(cmd: string, args: string[], netns?: string): [string, string[]] {
  return netns ? ['ip', ['netns', 'exec', netns, cmd, ...args]] : [cmd, args];
}

export interface ExecaRunnerOptions {
  /** Applied to every call that does not name its own netns. */
  netns?: string;
  /** Kill a command that runs longer than this (ms). Default 60 s. */
  timeoutMs?: number;
  /**
   * Start short-lived commands from a helper process (spawner.ts, python3),
   * so a spawn never blocks this event loop. Without python3 they are
   * spawned from here, with one warning.
   */
  helper?: boolean;
  /** The helper's interpreter (default: exec/python.ts's choice). */
  helperInterpreter?: string;
  /** Where the warning goes when the helper cannot run. */
  logger?: { warn(obj: object, msg: string): void };
}

/** Runs real commands: through the spawn helper, else with execa 9 (see the top of this file). */
export class ExecaRunner implements Runner {
  private readonly spawner?: Spawner;
  /** Set only with a helper (Runner.program). */
  readonly program?: (source: string, opts: ProgramOptions) => RunningProgram;

  constructor(
    private readonly defaults: ExecaRunnerOptions = {},
    shared?: Spawner,
  ) {
    const spawner = shared ?? (defaults.helper ? helperSpawner(defaults) : undefined);
    this.spawner = spawner;
    if (spawner) {
      this.program = (source, opts) => {
        const netns = opts.netns ?? this.defaults.netns;
        return spawner.program(source, { ...(netns ? { netns } : {}), onOut: opts.onOutput, onEnd: opts.onEnd });
      };
    }
  }

  /**
   * This runner with another default netns (none: the host's), sharing its
   * helper process: the topology role's commands must not run under the
   * agent's `ip netns exec`, and must not block the event loop either.
   */
  withNetns(netns: string | undefined): ExecaRunner {
    const { netns: _drop, ...rest } = this.defaults;
    // helper: whether this runner has one (decided, and warned about, once).
    return new ExecaRunner({ ...rest, helper: this.spawner !== undefined, ...(netns ? { netns } : {}) }, this.spawner);
  }

  /** Ends the helper process, if any (agent stop). */
  close(): void {
    this.spawner?.close();
  }

  async run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
    const [file, argv] = wrapNetns(cmd, args, opts.netns ?? this.defaults.netns);
    if (this.spawner) {
      const res = await this.spawner.run(file, argv, { ...(opts.input !== undefined ? { input: opts.input } : {}), timeoutMs: this.defaults.timeoutMs ?? 60_000, ...(opts.onSpawn ? { onSpawn: opts.onSpawn } : {}) });
      const out: RunResult = { stdout: res.stdout, stderr: res.stderr, exitCode: res.exitCode ?? -1 };
      if (res.exitCode === undefined && !opts.allowFail) throw new CommandError([file, ...argv], -1, `${res.error ?? 'killed (timeout)'}\n${out.stderr}`, out.stdout);
      if (out.exitCode !== 0 && !opts.allowFail) throw new CommandError([file, ...argv], out.exitCode, out.stderr, out.stdout);
      return out;
    }
    const { execa } = await import('execa');
    const sub = execa(file, argv, {
      input: opts.input ?? '',
      reject: false,
      stripFinalNewline: false,
      timeout: this.defaults.timeoutMs ?? 60_000,
      env: { LC_ALL: 'C' },
      maxBuffer: 512 * 1024 * 1024,
    });
    opts.onSpawn?.(sub.pid);
    const res = await sub;
    const out: RunResult = { stdout: String(res.stdout ?? ''), stderr: String(res.stderr ?? ''), exitCode: res.exitCode ?? -1 };
    if (res.exitCode === undefined && !opts.allowFail) {
      throw new CommandError([file, ...argv], -1, `${res.shortMessage}\n${out.stderr}`, out.stdout);
    }
    if (out.exitCode !== 0 && !opts.allowFail) throw new CommandError([file, ...argv], out.exitCode, out.stderr, out.stdout);
    return out;
  }

  spawn(cmd: string, args: string[], opts: SpawnOptions): Spawned {
    const [file, argv] = wrapNetns(cmd, args, opts.netns ?? this.defaults.netns);
    const child = spawnChild(file, argv, { stdio: 'pipe', env: { ...process.env, LC_ALL: 'C' } });
    killOnExit(child);
    child.stdout.setEncoding('utf8').on('data', (d: string) => opts.onStdout?.(d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => opts.onStderr?.(d));
    // A write to a process that has just died: the exit callback reports it.
    child.stdin.on('error', () => undefined);
    // A command that cannot start (ENOENT) ends like one that exited: no code.
    let exited = false;
    const exit = (code: number | undefined) => {
      if (exited) return;
      exited = true;
      opts.onExit?.(code);
    };
    child.on('error', () => exit(undefined));
    // 'close', not 'exit': its output has been read by then.
    child.on('close', (code) => exit(code ?? undefined));
    return {
      pid: child.pid,
      write: (text) => void child.stdin.write(text),
      end: () => void child.stdin.end(),
      kill: () => void child.kill('SIGKILL'),
    };
  }

  /** `spawn`, read line by line, with stdin closed (`conntrack -E`). */
  stream(cmd: string, args: string[], opts: StreamOptions): StreamHandle {
    let finish: (code: number) => void = () => undefined;
    const ended = new Promise<number>((r) => (finish = r));
    const child = this.spawn(cmd, args, {
      ...(opts.netns ? { netns: opts.netns } : {}),
      onStdout: lineReader(opts.onLine),
      onStderr: lineReader((l) => opts.onStderrLine?.(l)),
      onExit: (code) => finish(code ?? -1),
    });
    child.end();
    return { stop: () => child.kill(), ended };
  }
}

/** Long-lived children still running: killed when the agent's process exits, however it exits (execa's `cleanup` did this for them). */
const running = new Set<ChildProcess>();

function killOnExit(child: ChildProcess): void {
  if (running.size === 0) process.once('exit', killRunning);
  running.add(child);
  child.once('close', () => {
    running.delete(child);
    if (running.size === 0) process.off('exit', killRunning);
  });
}

function killRunning(): void {
  for (const c of running) c.kill('SIGKILL');
}

/** The spawn helper, or undefined (with a warning) when its python3 is not there. */
function helperSpawner(opts: ExecaRunnerOptions): Spawner | undefined {
  const interpreter = opts.helperInterpreter ?? PYTHON3;
  if (pythonAvailable(interpreter)) return new Spawner(interpreter);
  opts.logger?.warn({ interpreter }, 'no python3 for the spawn helper: commands are spawned from the agent (each spawn blocks its event loop)');
  return undefined;
}

/** Turns chunks into whole lines (a partial last line waits for its newline). */
function lineReader(fn: (line: string) => void): (chunk: string) => void {
  let rest = '';
  return (chunk) => {
    const parts = (rest + chunk).split('\n');
    rest = parts.pop() ?? '';
    for (const line of parts) fn(line);
  };
}

/** One recorded call of the fake. */
export interface RecordedCall {
  cmd: string;
  args: string[];
  input?: string;
  netns?: string;
}

/** A scripted answer: matched by a predicate over the call, used once unless `repeat`. */
export interface ScriptedAnswer {
  match: (call: RecordedCall) => boolean;
  result: Partial<RunResult> | ((call: RecordedCall) => Partial<RunResult>);
  repeat?: boolean;
}

/**
 * Records every call (argv + stdin) and answers from a script; unmatched
 * calls succeed with empty output. A non-zero scripted exit code throws a
 * `CommandError` like the real runner, unless the call allowed failure.
 */
/** A long-running command of the fake: the test writes its output and ends it. */
export interface FakeStream {
  call: RecordedCall;
  line(text: string): void;
  stderr(text: string): void;
  end(exitCode?: number): void;
  stopped: boolean;
}

export class FakeRunner implements Runner {
  readonly calls: RecordedCall[] = [];
  /** Long-running commands started with `stream`, in order. */
  readonly streams: FakeStream[] = [];
  private readonly script: ScriptedAnswer[] = [];

  /** Answer calls of `cmd` whose args start with `argsPrefix`. */
  on(cmd: string, argsPrefix: string[], result: ScriptedAnswer['result'], repeat = true): this {
    this.script.push({
      match: (c) => c.cmd === cmd && argsPrefix.every((a, i) => c.args[i] === a),
      result,
      repeat,
    });
    return this;
  }

  when(answer: ScriptedAnswer): this {
    this.script.push(answer);
    return this;
  }

  /** The calls as printable command lines (`nft -f -`), for golden comparisons. */
  lines(): string[] {
    return this.calls.map((c) => [c.netns ? `[${c.netns}]` : '', c.cmd, ...c.args].filter(Boolean).join(' '));
  }

  clear(): void {
    this.calls.length = 0;
  }

  stream(cmd: string, args: string[], opts: StreamOptions): StreamHandle {
    const call: RecordedCall = { cmd, args: [...args], ...(opts.netns ? { netns: opts.netns } : {}) };
    this.calls.push(call);
    let finish: (code: number) => void = () => undefined;
    const ended = new Promise<number>((r) => (finish = r));
    const s: FakeStream = {
      call,
      stopped: false,
      line: (text) => {
        if (!s.stopped) opts.onLine(text);
      },
      stderr: (text) => {
        if (!s.stopped) opts.onStderrLine?.(text);
      },
      end: (code = 0) => {
        s.stopped = true;
        finish(code);
      },
    };
    this.streams.push(s);
    return { stop: () => s.end(-1), ended };
  }

  async run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
    const call: RecordedCall = { cmd, args: [...args], ...(opts.input !== undefined ? { input: opts.input } : {}), ...(opts.netns ? { netns: opts.netns } : {}) };
    this.calls.push(call);
    const i = this.script.findIndex((a) => a.match(call));
    let res: RunResult = { stdout: '', stderr: '', exitCode: 0 };
    if (i >= 0) {
      const answer = this.script[i];
      if (!answer.repeat) this.script.splice(i, 1);
      res = { ...res, ...(typeof answer.result === 'function' ? answer.result(call) : answer.result) };
    }
    if (res.exitCode !== 0 && !opts.allowFail) throw new CommandError([cmd, ...args], res.exitCode, res.stderr, res.stdout);
    return res;
  }
}
