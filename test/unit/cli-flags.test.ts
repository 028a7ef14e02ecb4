import { describe, expect, it } from 'vitest';
import { formatDuration, parseDuration } from '@switchyard/shared';
import { helpText, parseFlags, UsageError, type FlagSpec } from '../../packages/cli/src/flags.js';

describe('durations', () => {
  it.each([
    ['500ms', 500],
    ['5s', 5000],
    ['30m', 1_800_000],
    ['2h', 7_200_000],
    ['30', 30_000],
    ['0.5', 500],
  ])('%s = %i ms', (text, ms) => expect(parseDuration(text)).toBe(ms));
  it('refuses garbage', () => {
    expect(() => parseDuration('5 minutes')).toThrow(/invalid duration/);
    expect(() => parseDuration('-1s')).toThrow();
  });
  it('formats back', () => expect(formatDuration(1_800_000)).toBe('30m'));
});

const specs: FlagSpec[] = [
  { name: 'listen', kind: 'string', default: '127.0.0.1:8443', help: 'x' },
  { name: 'offer-ttl', kind: 'duration', default: '30m', help: 'x' },
  { name: 'port', kind: 'int', help: 'x', env: '' },
  { name: 'flush-on-exit', kind: 'bool', default: 'false', help: 'x' },
  { name: 'hosts', kind: 'list', help: 'x' },
];

describe('flags', () => {
  it('flag beats environment beats default', () => {
    expect(parseFlags([], specs, {}).values.listen).toBe('127.0.0.1:8443');
    expect(parseFlags([], specs, { SWITCHYARD_LISTEN: '0.0.0.0:1' }).values.listen).toBe('0.0.0.0:1');
    expect(parseFlags(['--listen', '1.2.3.4:5'], specs, { SWITCHYARD_LISTEN: '0.0.0.0:1' }).values.listen).toBe('1.2.3.4:5');
  });
  it('parses kinds', () => {
    const p = parseFlags(['--offer-ttl=2s', '--port', '80', '--flush-on-exit', '--hosts', 'a, b', 'pos'], specs, {});
    expect(p.values).toMatchObject({ 'offer-ttl': 2000, port: 80, 'flush-on-exit': true, hosts: ['a', 'b'] });
    expect(p.positionals).toEqual(['pos']);
    expect(parseFlags(['--no-flush-on-exit'], specs, { SWITCHYARD_FLUSH_ON_EXIT: 'true' }).values['flush-on-exit']).toBe(false);
    expect(parseFlags([], specs, { SWITCHYARD_OFFER_TTL: '10m' }).values['offer-ttl']).toBe(600_000);
  });
  it('refuses unknown flags and bad values with a clear message', () => {
    expect(() => parseFlags(['--nope'], specs, {})).toThrow(UsageError);
    expect(() => parseFlags(['--port', 'eighty'], specs, {})).toThrow(/not a whole number/);
    expect(() => parseFlags(['--offer-ttl', 'soon'], specs, {})).toThrow(/invalid duration/);
    expect(() => parseFlags(['--listen'], specs, {})).toThrow(/needs a value/);
  });
  it('documents every flag with its environment variable and default', () => {
    const h = helpText('x', 'y', specs);
    expect(h).toContain('--offer-ttl <duration>');
    expect(h).toContain('SWITCHYARD_OFFER_TTL');
    expect(h).toContain('default 30m');
  });
});
