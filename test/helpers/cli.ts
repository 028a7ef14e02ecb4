/**
 * Runs the real `switchyard` CLI as a child process, from the TypeScript
 * sources (no build needed): `node --conditions=source --import tsx main.ts`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const CLI_MAIN = fileURLToPath(new URL('../../packages/cli/src/main.ts', import.meta.url));
export const NODE_ARGS = ['--conditions=source', '--import', 'tsx'];

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a client command to completion. */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 30_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...NODE_ARGS, CLI_MAIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`switchyard ${args.join(' ')} timed out\n${stderr}`));
    }, timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** The built CLI (`npm run build`): starts faster than the sources through tsx, as a user runs it. */
export const CLI_DIST = fileURLToPath(new URL('../../packages/cli/dist/main.js', import.meta.url));

/**
 * Starts a long-running command (coordinator, agent, up); `ready` resolves
 * when `readyPattern` appears on stderr/stdout. From the sources, or with
 * `built` the built CLI.
 */
export function startCli(
  args: string[],
  readyPattern: RegExp,
  env: NodeJS.ProcessEnv = {},
  timeoutMs = 30_000,
  opts: { built?: boolean } = {},
): { child: ChildProcess; ready: Promise<string>; output: () => string } {
  const argv = opts.built ? [CLI_DIST, ...args] : [...NODE_ARGS, CLI_MAIN, ...args];
  const child = spawn(process.execPath, argv, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const ready = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`switchyard ${args.join(' ')} not ready in ${timeoutMs} ms:\n${out}`)), timeoutMs);
    const onData = (d: Buffer) => {
      out += d.toString();
      const m = readyPattern.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[0]);
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`switchyard ${args.join(' ')} exited with ${code}:\n${out}`));
    });
  });
  ready.catch(() => undefined);
  return { child, ready, output: () => out };
}
