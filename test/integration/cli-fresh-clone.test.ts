/**
 * The first five minutes, as a newcomer lives them: a fresh clone of this
 * repository (its committed state), the set-up steps of `npm start` exactly as
 * package.json has them, then `npx --no-install switchyard --help` — which
 * fails if npm did not link the workspace's bin. Then the start script's last
 * step (`… up`) runs, and every `npx switchyard …` line of the README's quick
 * start runs as written, against it (pointed at free ports through the
 * SWITCHYARD_* variables, and the dry-run dataplane so the host's kernel is
 * left alone).
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, expect, it } from 'vitest';
import { freePort, freePortPair } from '../helpers/etcd.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'sy-clone-'));
const clone = join(dir, 'switchyard');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const bash = (script: string, env: NodeJS.ProcessEnv = {}) =>
  run('bash', ['-c', script], { cwd: clone, env: { ...process.env, ...env }, maxBuffer: 64 * 1024 * 1024, timeout: 540_000 });

/** The lines of the README's quick-start code blocks. */
function quickStartLines(): string[] {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Quick start'), readme.indexOf('\n## ', readme.indexOf('## Quick start') + 1));
  return [...section.matchAll(/```sh\n([\s\S]*?)```/g)].flatMap((m) => m[1].split('\n')).map((l) => l.trim()).filter(Boolean);
}

it('npm start\'s set-up steps on a fresh clone link `npx switchyard`, and the quick start runs as written', async () => {
  await run('git', ['clone', '--quiet', root, clone]);
  const steps = (JSON.parse(readFileSync(join(clone, 'package.json'), 'utf8')) as { scripts: { start: string } }).scripts.start.split('&&').map((s) => s.trim());
  const launch = steps.pop() as string;
  expect(launch).toMatch(/ up$/);
  // Whatever npm ci the developer ran in this working tree must not help.
  expect(existsSync(join(clone, 'node_modules'))).toBe(false);
  await bash(steps.join(' && '));

  const help = await bash('npx --no-install switchyard --help');
  expect(help.stdout).toMatch(/Usage: switchyard <command>/);

  const etcdPort = await freePortPair();
  const apiPort = await freePort();
  const env = {
    SWITCHYARD_ETCD_PORT: String(etcdPort),
    SWITCHYARD_LISTEN: `127.0.0.1:${apiPort}`,
    SWITCHYARD_API: `http://127.0.0.1:${apiPort}`,
    SWITCHYARD_DATAPLANE: 'dry-run',
    SWITCHYARD_DATA_DIR: join(dir, 'data'),
  };
  const up = spawn('bash', ['-c', `exec ${launch}`], { cwd: clone, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  up.stdout.on('data', (d) => (out += d));
  up.stderr.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => up.once('exit', (code) => r(code)));
  try {
    await expect.poll(() => out, { timeout: 60_000, interval: 200 }).toMatch(/switchyard: up\./);
    const lines = quickStartLines().filter((l) => l.startsWith('npx switchyard'));
    expect(lines.length).toBeGreaterThanOrEqual(3);
    for (const line of lines) {
      const r = await bash(line, env).catch((e: { stderr?: string; message: string }) => {
        throw new Error(`README line failed: ${line}\n${e.stderr ?? e.message}`);
      });
      expect(r.stdout.length + r.stderr.length, line).toBeGreaterThan(0);
    }
    const services = (await (await fetch(`http://127.0.0.1:${apiPort}/services`)).json()) as { id: string; servers: unknown[] }[];
    expect(services.map((s) => s.id)).toContain('tcp-10_0_0_100-80');
  } finally {
    up.kill('SIGINT');
    expect(await exited, out).toBe(0);
  }
}, 600_000);
