/**
 * The spawn helper (exec/spawner.ts, a python3 process) and ExecaRunner's
 * use of it, with real processes: what the agent's commands get back
 * through it, side by side, megabytes, timeouts, a helper that dies, and
 * the fallback to spawning from the agent when there is no python3.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { PYTHON3, pythonAvailable } from '../../packages/agent/src/exec/python.js';
import { CommandError, ExecaRunner } from '../../packages/agent/src/exec/runner.js';
import { Spawner } from '../../packages/agent/src/exec/spawner.js';

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
const until = async (ok: () => boolean, ms = 3000) => {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 10));
  }
};
const rssKiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);

describe('commands started from the helper process', () => {
  it('needs python3 on this machine (the distribution one preferred)', () => {
    expect(pythonAvailable(PYTHON3)).toBe(true);
    expect(pythonAvailable('/nonexistent/python3')).toBe(false);
    expect(pythonAvailable('sy-no-such-python')).toBe(false);
  });

  it('answers like execa: output, stdin, exit codes, a command that cannot start; and the pid as soon as it starts', async () => {
    const r = new ExecaRunner({ helper: true });
    try {
      let pid: number | undefined;
      expect(await r.run('echo', ['hi'], { onSpawn: (p) => (pid = p) })).toEqual({ stdout: 'hi\n', stderr: '', exitCode: 0 });
      expect(pid).toBeGreaterThan(0);
      expect(await r.run('sh', ['-c', 'echo no >&2; exit 3'], { allowFail: true })).toEqual({ stdout: '', stderr: 'no\n', exitCode: 3 });
      const failed = await r.run('sh', ['-c', 'echo out; echo bad >&2; exit 2']).catch((e: unknown) => e);
      expect(failed).toBeInstanceOf(CommandError);
      expect(failed).toMatchObject({ exitCode: 2, stderr: 'bad\n', stdout: 'out\n', argv: ['sh', '-c', 'echo out; echo bad >&2; exit 2'] });
      expect(String(failed)).toMatch(/sh -c echo out; echo bad >&2; exit 2 failed \(exit 2\): bad/);
      // A command that cannot start: no exit code, the reason in the error.
      await expect(r.run('sy-no-such-command', ['x'])).rejects.toThrow(/sy-no-such-command x failed \(exit -1\): spawn sy-no-such-command ENOENT/);
      expect(await r.run('sy-no-such-command', [], { allowFail: true })).toMatchObject({ exitCode: -1 });
      // The commands are children of the helper, with LC_ALL=C added to the agent's environment.
      const env = await r.run('sh', ['-c', 'echo "$PPID $LC_ALL $PATH"']);
      const [ppid, lc, path] = env.stdout.trim().split(' ');
      expect(Number(ppid)).not.toBe(process.pid);
      expect(alive(Number(ppid))).toBe(true);
      expect(lc).toBe('C');
      expect(path).toBe(process.env.PATH);
    } finally {
      r.close();
    }
  });

  it('writes stdin and reads output as UTF-8 (invalid bytes replaced)', async () => {
    const r = new ExecaRunner({ helper: true });
    try {
      const input = 'add element ip sy é ✓ 🚀\n'.repeat(40_000); // ~1 MiB
      expect((await r.run('cat', [], { input })).stdout).toBe(input);
      expect((await r.run('wc', ['-c'], { input: '' })).stdout.trim()).toBe('0');
      expect((await r.run('printf', ['a\\377b\\303'])).stdout).toBe('a\uFFFDb\uFFFD');
    } finally {
      r.close();
    }
  });

  it('carries a 6 MB answer in one piece', async () => {
    const r = new ExecaRunner({ helper: true });
    try {
      const { stdout } = await r.run('sh', ['-c', 'yes 0123456789abcdef | head -c 6000000']);
      expect(stdout).toHaveLength(6_000_000);
      expect(stdout).toBe('0123456789abcdef\n'.repeat(352_942).slice(0, 6_000_000));
      // Two at once, and a small one meanwhile: each gets its own answer.
      const [a, b, c] = await Promise.all([r.run('head', ['-c', '1000000', '/dev/zero']), r.run('echo', ['small']), r.run('sh', ['-c', 'yes x | head -c 5000000'])]);
      expect(a.stdout).toBe('\0'.repeat(1_000_000));
      expect(b.stdout).toBe('small\n');
      expect(c.stdout).toBe('x\n'.repeat(2_500_000));
    } finally {
      r.close();
    }
  });

  it('runs commands side by side: answers come back in the order the commands end', async () => {
    const r = new ExecaRunner({ helper: true });
    try {
      await r.run('true', []); // the helper is up
      const order: string[] = [];
      const t = performance.now();
      const slow = r.run('sh', ['-c', 'sleep 0.5; echo slow']).then((res) => order.push(res.stdout.trim()));
      const fast = r.run('sh', ['-c', 'sleep 0.1; echo fast']).then((res) => order.push(res.stdout.trim()));
      await Promise.all([slow, fast]);
      expect(order).toEqual(['fast', 'slow']);
      expect(performance.now() - t).toBeLessThan(900);
    } finally {
      r.close();
    }
  });

  it('kills a command that outlives the timeout (SIGKILL) and answers without an exit code', async () => {
    const r = new ExecaRunner({ helper: true, timeoutMs: 300 });
    try {
      let pid = 0;
      const t = performance.now();
      // `trap '' TERM`: only SIGKILL ends it.
      const err = await r.run('sh', ['-c', "trap '' TERM; echo started; sleep 5 & wait; echo never"], { onSpawn: (p) => (pid = p ?? 0) }).catch((e: unknown) => e);
      expect(performance.now() - t).toBeLessThan(2000);
      expect(err).toBeInstanceOf(CommandError);
      expect(err).toMatchObject({ exitCode: -1, stdout: 'started\n' });
      expect(String(err)).toMatch(/timed out after 300 ms \(killed\)/);
      expect(pid).toBeGreaterThan(0);
      expect(alive(pid)).toBe(false);
      expect(await r.run('sleep', ['2'], { allowFail: true })).toEqual({ stdout: '', stderr: '', exitCode: -1 });
    } finally {
      r.close();
    }
  });

  it('a helper that dies fails the commands in flight with a clear error; the next command starts a new helper', async () => {
    const s = new Spawner();
    try {
      let child = 0;
      const started = new Promise<void>((ok) => {
        void s.run('sleep', ['5'], { timeoutMs: 10_000, onSpawn: (p) => ((child = p ?? 0), ok()) }).then((res) => results.push(res));
      });
      const results: Awaited<ReturnType<Spawner['run']>>[] = [];
      const second = s.run('sleep', ['5'], { timeoutMs: 10_000 });
      await started;
      const helper = s.helperPid as number;
      expect(helper).toBeGreaterThan(0);
      process.kill(helper, 'SIGKILL');
      const res = await second;
      expect(res.exitCode).toBeUndefined();
      expect(res.error).toMatch(/the command helper process exited \(SIGKILL\) before the command's answer/);
      await until(() => results.length === 1);
      expect(results[0]).toMatchObject({ stdout: '', error: expect.stringMatching(/helper process exited/) });
      process.kill(child, 'SIGKILL'); // the orphaned `sleep`
      expect(await s.run('echo', ['again'], { timeoutMs: 5000 })).toEqual({ stdout: 'again\n', stderr: '', exitCode: 0 });
      expect(s.helperPid).not.toBe(helper);
      expect(alive(helper)).toBe(false);
    } finally {
      s.close();
    }
  });

  it('an interpreter that cannot run fails the command, not the agent', async () => {
    const s = new Spawner('/nonexistent/python3');
    const res = await s.run('echo', ['x'], { timeoutMs: 5000 });
    expect(res).toMatchObject({ stdout: '', error: expect.stringMatching(/the command helper \(\/nonexistent\/python3\) could not run: .*ENOENT/) });
    s.close();
  });

  it('ends when its stdin closes (agent stop), and is small: ~10 MiB resident, not a second node', async () => {
    const s = new Spawner();
    await s.run('true', [], { timeoutMs: 5000 });
    const helper = s.helperPid as number;
    await new Promise((r) => setTimeout(r, 100));
    expect(rssKiB(helper)).toBeLessThan(20 * 1024);
    s.close();
    await until(() => !alive(helper));
  });

  it('gives back the memory big answers and inputs took: small again after megabytes', async () => {
    const s = new Spawner();
    try {
      const answers = await Promise.all([0, 1, 2].map(() => s.run('head', ['-c', '5000000', '/dev/zero'], { timeoutMs: 10_000 })));
      for (const a of answers) expect(a.stdout).toHaveLength(5_000_000);
      // And megabytes in (nft -f's input): the request is not held while the helper waits for the next.
      expect((await s.run('wc', ['-c'], { input: 'add element inet t s { 10.0.0.1 }\n'.repeat(150_000), timeoutMs: 10_000 })).stdout.trim()).toBe('5100000');
      // With glibc's default (a sliding mmap threshold) the helper stays at ~110 MiB after three 5 MB answers
      // at once; holding the last request, ~21 MiB after a 5 MB input. Idle it is ~11 MiB.
      await new Promise((r) => setTimeout(r, 100));
      expect(rssKiB(s.helperPid as number)).toBeLessThan(16 * 1024);
    } finally {
      s.close();
    }
  });

  it('runs a program in a thread of its own process: what it emits, its end, an error, and stop', async () => {
    const s = new Spawner();
    try {
      await s.run('true', [], { timeoutMs: 5000 });
      const helper = s.helperPid as number;
      const threads = () => Number(/Threads:\s+(\d+)/.exec(readFileSync(`/proc/${helper}/status`, 'utf8'))?.[1]);
      // Idle, the helper is its main thread alone (a command's thread ends just after its answer).
      const idleThreads = 1;

      // Emits, then ends by itself.
      const out: string[] = [];
      const end = await new Promise<string | undefined>((resolve) => {
        s.program("import os\nemit('a\\n')\nemit('pid %d\\n' % os.getpid())", { onOut: (t) => out.push(t), onEnd: resolve });
      });
      expect(end).toBeUndefined();
      expect(out).toEqual(['a\n', `pid ${helper}\n`]);

      // Raises: the error is its end.
      const failed = await new Promise<string | undefined>((resolve) => s.program("raise ValueError('no')", { onOut: () => undefined, onEnd: resolve }));
      expect(failed).toMatch(/ValueError\('no'\)/);
      // A namespace that is not there.
      const nons = await new Promise<string | undefined>((resolve) => s.program('emit("x")', { netns: 'sy-no-such-ns', onOut: () => undefined, onEnd: resolve }));
      expect(nons).toMatch(/No such file|ENOENT|Errno 2/);

      // Runs until stopped; meanwhile commands go on; after stop its thread ends and its end is not reported.
      await until(() => threads() === idleThreads);
      const ticks: string[] = [];
      let ended = false;
      const p = s.program("while not stopping.wait(0.05):\n    emit('tick\\n')", { onOut: (t) => ticks.push(t), onEnd: () => (ended = true) });
      await until(() => ticks.length >= 2);
      expect(threads()).toBe(idleThreads + 1);
      expect((await s.run('echo', ['still'], { timeoutMs: 5000 })).stdout).toBe('still\n');
      p.stop();
      await until(() => threads() === idleThreads);
      expect(ended).toBe(false);
    } finally {
      s.close();
    }
  });

  it('a program ends with the helper: its end is reported', async () => {
    const s = new Spawner();
    const end = new Promise<string | undefined>((resolve) => s.program('stopping.wait()', { onOut: () => undefined, onEnd: resolve }));
    await until(() => s.helperPid !== undefined);
    process.kill(s.helperPid as number, 'SIGKILL');
    expect(await end).toMatch(/the command helper process exited/);
    s.close();
  });

  it('without python3: spawns from the agent itself, with one warning', async () => {
    const warnings: { obj: object; msg: string }[] = [];
    const logger = { warn: (obj: object, msg: string) => void warnings.push({ obj, msg }) };
    const r = new ExecaRunner({ helper: true, helperInterpreter: '/nonexistent/python3', logger });
    try {
      expect((await r.run('sh', ['-c', 'echo $PPID'])).stdout.trim()).toBe(String(process.pid));
      const other = r.withNetns(undefined);
      expect((await other.run('sh', ['-c', 'echo $PPID $LC_ALL'])).stdout.trim()).toBe(`${process.pid} C`);
      await expect(other.run('sy-no-such-command', [])).rejects.toThrow(/ENOENT/);
      expect(warnings).toEqual([{ obj: { interpreter: '/nonexistent/python3' }, msg: expect.stringMatching(/no python3 for the spawn helper/) }]);
    } finally {
      r.close();
    }
  });
});
