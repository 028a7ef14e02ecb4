/**
 * Log lines: JSON when stdout is a pipe, human-readable when it is a terminal
 * (a real pseudo-terminal from util-linux's `script`), and `--log-format`
 * overrides either way. Checked on the coordinator (stdout) and the agent
 * (stderr), run as the real CLI.
 */
import { spawn } from 'node:child_process';
import { expect, it } from 'vitest';
import { freePort, sharedEtcdUrl, uniquePrefix } from '../helpers/etcd.js';
import { CLI_MAIN, NODE_ARGS, startCli } from '../helpers/cli.js';

const env = () => ({ SWITCHYARD_ETCD: sharedEtcdUrl(), SWITCHYARD_PREFIX: uniquePrefix('cli-logs') });
const HUMAN = /^\d\d:\d\d:\d\d\.\d{3} INFO {2}coordinator: Server listening at http:\/\/127\.0\.0\.1:\d+$/m;

async function coordinatorOutput(args: string[]): Promise<string> {
  const port = await freePort();
  const c = startCli(['coordinator', '--listen', `127.0.0.1:${port}`, ...args], /Server listening at/, env(), 60_000);
  await c.ready;
  c.child.kill('SIGTERM');
  await new Promise((r) => c.child.once('exit', r));
  return c.output();
}

it('writes JSON lines to a pipe by default, and human lines with --log-format pretty', async () => {
  const json = await coordinatorOutput([]);
  const line = json.split('\n').find((l) => l.includes('Server listening')) as string;
  expect(JSON.parse(line)).toMatchObject({ level: 30, name: 'coordinator', msg: expect.stringMatching(/^Server listening at/) });

  const pretty = await coordinatorOutput(['--log-format', 'pretty']);
  expect(pretty).toMatch(HUMAN);
  expect(pretty).not.toMatch(/^\{"level"/m);
}, 120_000);

it('writes human lines to a terminal, and JSON there with --log-format json', async () => {
  const inTerminal = async (extra: string) => {
    const port = await freePort();
    const cmd = [process.execPath, ...NODE_ARGS, CLI_MAIN, 'coordinator', '--listen', `127.0.0.1:${port}`, extra].join(' ');
    // `script` gives the command a pseudo-terminal as stdout; NO_COLOR keeps the lines plain for matching.
    const child = spawn('script', ['-qec', cmd, '/dev/null'], { env: { ...process.env, ...env(), NO_COLOR: '1' }, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    await expect.poll(() => out, { timeout: 60_000 }).toMatch(/Server listening at/);
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    return out.replace(/\r/g, '');
  };
  expect(await inTerminal('--log-format=auto')).toMatch(HUMAN);
  expect(await inTerminal('--log-format=json')).toMatch(/^\{"level":30,.*"msg":"Server listening at/m);
}, 120_000);

it('makes the agent\'s lines human too (it logs on stderr)', async () => {
  const a = startCli(['agent', '--host-id', 'logs-a1', '--dataplane', 'dry-run', '--log-format', 'pretty'], /agent "logs-a1" running/, env());
  await a.ready;
  await expect.poll(() => a.output(), { timeout: 10_000 }).toMatch(/^\d\d:\d\d:\d\d\.\d{3} INFO {2}agent: .* hostId=logs-a1/m);
  a.child.kill('SIGTERM');
  await new Promise((r) => a.child.once('exit', r));
}, 60_000);
