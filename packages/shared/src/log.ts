/**
 * How the daemons' pino logs reach a person. pino writes one JSON object per
 * line to a stream; JSON is what log collectors want, but a terminal full of
 * it is unreadable. `logDestination` keeps JSON for pipes and files and turns
 * each line into `12:00:00.123 INFO  coordinator: message key=value` when the
 * stream is a terminal (or when asked). It is a few lines of our own rather
 * than pino-pretty and its dependencies.
 */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export const LOG_FORMATS = ['auto', 'pretty', 'json'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/** What pino writes to: a stream, or an object with write(). */
export interface LogSink {
  write(line: string): unknown;
  isTTY?: boolean;
}

const LEVELS: Record<number, { name: string; color: string }> = {
  10: { name: 'TRACE', color: '\x1b[90m' },
  20: { name: 'DEBUG', color: '\x1b[36m' },
  30: { name: 'INFO', color: '\x1b[32m' },
  40: { name: 'WARN', color: '\x1b[33m' },
  50: { name: 'ERROR', color: '\x1b[31m' },
  60: { name: 'FATAL', color: '\x1b[35m' },
};
const DIM = '\x1b[2m';
const RESET = '\x1b[0m';

function fieldValue(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  return JSON.stringify(v) ?? String(v);
}

/** One pino JSON line → one human line (plus an indented stack for errors). Not JSON: passed through. */
export function prettyLogLine(line: string, color = false): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line.endsWith('\n') ? line : `${line}\n`;
  }
  if (typeof rec !== 'object' || rec === null) return line.endsWith('\n') ? line : `${line}\n`;
  const { level, time, msg, name, pid: _pid, hostname: _hostname, err, ...fields } = rec;
  const lv = LEVELS[level as number] ?? { name: String(level), color: '' };
  const clock = new Date(typeof time === 'number' ? time : Date.now()).toISOString().slice(11, 23);
  const paint = (c: string, s: string) => (color && c ? `${c}${s}${RESET}` : s);
  let errText = '';
  if (err && typeof err === 'object') {
    const e = err as { message?: string; stack?: string };
    fields.err = e.message ?? e;
    if (e.stack) errText = `\n${e.stack.split('\n').map((l) => `    ${l}`).join('\n')}`;
  } else if (err !== undefined) fields.err = err;
  const kv = Object.entries(fields).map(([k, v]) => `${k}=${fieldValue(v)}`).join(' ');
  const head = `${paint(DIM, clock)} ${paint(lv.color, lv.name.padEnd(5))} ${name ? `${String(name)}: ` : ''}${msg ?? ''}`;
  return `${head}${kv ? ` ${paint(DIM, kv)}` : ''}${errText}\n`;
}

/** Whether `format` means human lines on this sink. */
export function wantsPretty(format: LogFormat, sink: LogSink): boolean {
  return format === 'pretty' || (format === 'auto' && sink.isTTY === true);
}

/** The sink pino should write to: `out` itself for JSON, a formatting wrapper for people. */
export function logDestination(format: LogFormat, out: LogSink): LogSink {
  if (!wantsPretty(format, out)) return out;
  const color = out.isTTY === true && !process.env.NO_COLOR;
  return { write: (line: string) => out.write(prettyLogLine(line, color)) };
}
