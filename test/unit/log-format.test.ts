import { describe, expect, it } from 'vitest';
import { logDestination, prettyLogLine, wantsPretty } from '@switchyard/shared';

const line = JSON.stringify({ level: 40, time: Date.UTC(2026, 0, 2, 3, 4, 5, 678), pid: 1, hostname: 'h', name: 'agent', hostId: 'n1', msg: 'status write failed', attempt: 2, why: 'etcd down' });

describe('log lines for people', () => {
  it('turns a pino line into time, level, component, message and fields', () => {
    expect(prettyLogLine(line)).toBe('03:04:05.678 WARN  agent: status write failed hostId=n1 attempt=2 why="etcd down"\n');
  });
  it('colours only when asked, and indents an error\'s stack', () => {
    expect(prettyLogLine(line, true)).toContain('\x1b[33mWARN \x1b[0m');
    const err = prettyLogLine(JSON.stringify({ level: 50, time: 0, msg: 'sync failed', err: { message: 'boom', stack: 'Error: boom\n    at x' } }));
    expect(err).toBe('00:00:00.000 ERROR sync failed err=boom\n    Error: boom\n        at x\n');
  });
  it('passes through what is not JSON', () => expect(prettyLogLine('plain text')).toBe('plain text\n'));
  it('chooses by format and terminal', () => {
    expect(wantsPretty('auto', { write: () => 0, isTTY: true })).toBe(true);
    expect(wantsPretty('auto', { write: () => 0 })).toBe(false);
    expect(wantsPretty('pretty', { write: () => 0 })).toBe(true);
    expect(wantsPretty('json', { write: () => 0, isTTY: true })).toBe(false);
    const written: string[] = [];
    const sink = { write: (s: string) => written.push(s) };
    expect(logDestination('json', sink)).toBe(sink);
    logDestination('pretty', sink).write(`${line}\n`);
    expect(written[0]).toMatch(/^03:04:05\.678 WARN {2}agent:/);
  });
});
