/**
 * `service import FILE` and `cen import FILE`: one request with the whole file,
 * so the coordinator applies it in one etcd transaction (all or nothing).
 * A large file shows progress on stderr at every step: reading, sending,
 * the coordinator's transaction, and with --wait each host applying it.
 */
import { readFile } from 'node:fs/promises';
import { print, type ApiClient } from '../client.js';
import { UsageError, type FlagValues } from '../flags.js';
import { kib, Progress, type Waiter } from '../progress.js';

export interface ImportTarget {
  method: string;
  path: string;
  /** How many objects the body holds, or undefined when it has the wrong shape. */
  count(body: unknown): number | undefined;
  /** The objects, for messages: "services", "CENs". */
  what: string;
  /** The file's expected shape, for the usage error. */
  expect: string;
  /** With --wait: reads what the wait needs before the write (given the parsed file), and returns the wait. */
  prepareWait?: (body: unknown) => Promise<Waiter | undefined>;
}

async function readInput(file: string): Promise<string> {
  if (file !== '-') return readFile(file, 'utf8');
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export async function importFile(api: ApiClient, values: FlagValues, file: string, target: ImportTarget): Promise<void> {
  const progress = new Progress();
  let text: string;
  try {
    text = await readInput(file);
  } catch (e) {
    throw new UsageError(`cannot read ${file}: ${(e as Error).message}`);
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`${file} is not JSON: ${(e as Error).message}`);
  }
  const n = target.count(body);
  if (n === undefined) throw new UsageError(`${file} is not ${target.expect}`);
  progress.line(`${file}: ${n} ${target.what}, ${kib(Buffer.byteLength(text))}`);
  const wait = values.wait ? await target.prepareWait?.(body) : undefined;
  const started = Date.now();
  const sent = api.request(target.method, target.path, body, (done, total) => progress.fraction('sending', done, total, kib));
  const r = await progress.during(`coordinator applying ${n} ${target.what} in one transaction`, sent);
  progress.line(`imported ${n} ${target.what} in ${((Date.now() - started) / 1000).toFixed(1)} s${r.revision !== undefined ? ` at revision ${r.revision}` : ''}`);
  // The answer lists every object; a summary keeps the terminal usable (`list` shows them).
  const summary = { [target.what.toLowerCase()]: n, revision: r.revision };
  print(values, summary);
  await wait?.(r);
}
