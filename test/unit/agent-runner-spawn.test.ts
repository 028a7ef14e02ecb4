/**
 * ExecaRunner's long-lived processes (`spawn`, `stream`: `nft -i`,
 * `conntrack -E`), started with node's own spawn: argv without a shell, the
 * output before the exit, a command that cannot start, a kill.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ExecaRunner } from '../../packages/agent/src/exec/runner.js';
import { eventually } from '../helpers/eventually.js';

const runner = new ExecaRunner({ helper: false });

/** The process has ended: reaped, or a zombie waiting for its new parent to reap it. */
function gone(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ')[2] === 'Z';
  } catch {
    return true;
  }
}

function ended(): { onExit: (code: number | undefined) => void; code: Promise<number | undefined> } {
  let onExit!: (code: number | undefined) => void;
  const code = new Promise<number | undefined>((r) => (onExit = r));
  return { onExit, code };
}

describe('ExecaRunner.spawn', () => {
  it('writes stdin, reads stdout and stderr, and reports the exit code after the last output', async () => {
    const out: string[] = [];
    const err: string[] = [];
    const e = ended();
    let outAtExit = '';
    const p = runner.spawn('sh', ['-c', 'read line; echo "got $line"; echo oops >&2; exit 3'], {
      onStdout: (d) => out.push(d),
      onStderr: (d) => err.push(d),
      onExit: (code) => {
        outAtExit = out.join('');
        e.onExit(code);
      },
    });
    expect(p.pid).toBeGreaterThan(0);
    p.write('a; rm -rf /tmp/sy-not-a-shell\n');
    expect(await e.code).toBe(3);
    // The argument reached sh as one line of input, not as a command.
    expect(outAtExit).toBe('got a; rm -rf /tmp/sy-not-a-shell\n');
    expect(err.join('')).toBe('oops\n');
  });

  it('runs with LC_ALL=C and the agent environment', async () => {
    const out: string[] = [];
    const e = ended();
    runner.spawn('sh', ['-c', 'echo "$LC_ALL $PATH"'], { onStdout: (d) => out.push(d), onExit: e.onExit }).end();
    expect(await e.code).toBe(0);
    expect(out.join('')).toBe(`C ${process.env.PATH}\n`);
  });

  it('a command that cannot start ends once, without an exit code; writes to it are ignored', async () => {
    let calls = 0;
    const e = ended();
    const p = runner.spawn('sy-no-such-command', [], {
      onExit: (code) => {
        calls++;
        e.onExit(code);
      },
    });
    p.write('x\n');
    expect(await e.code).toBeUndefined();
    await new Promise((r) => setTimeout(r, 50));
    expect(calls).toBe(1);
  });

  it('kill ends it without an exit code', async () => {
    const e = ended();
    const p = runner.spawn('sleep', ['30'], { onExit: e.onExit });
    p.kill();
    expect(await e.code).toBeUndefined();
  });
});

describe('ExecaRunner.spawn, when the agent process exits', () => {
  it('kills what is still running, even on process.exit without a stop', async () => {
    const runnerTs = fileURLToPath(new URL('../../packages/agent/src/exec/runner.ts', import.meta.url));
    const script = `import { ExecaRunner } from ${JSON.stringify(runnerTs)}; const r = new ExecaRunner({ helper: false }); const p = r.spawn('sleep', ['30'], {}); r.spawn('sy-no-such-command', [], {}); setTimeout(() => { process.stdout.write(String(p.pid)); process.exit(3); }, 100);`;
    const res = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
    expect(res.status, res.stderr).toBe(3);
    const pid = Number(res.stdout);
    expect(pid).toBeGreaterThan(0);
    // SIGKILL is sent before the exit; the kernel may take a moment to reap.
    await eventually(() => gone(pid), 2000);
  });
});

describe('ExecaRunner.stream', () => {
  it('hands over whole lines (one split across two writes too) and the exit code', async () => {
    const lines: string[] = [];
    const h = runner.stream('sh', ['-c', 'printf "one\\ntw"; sleep 0.05; printf "o\\nthree\\n"'], { onLine: (l) => lines.push(l) });
    expect(await h.ended).toBe(0);
    expect(lines).toEqual(['one', 'two', 'three']);
  });
});
