import { describe, expect, it } from 'vitest';
import { formatDuration, parseDuration } from '@switchyard/shared';
import { z } from 'zod';
import { AgentConfig } from '@switchyard/agent';
import { CoordinatorConfig } from '@switchyard/coordinator';
import { agentConfigFrom, agentFlags } from '../../packages/cli/src/commands/agent.js';
import { coordinatorConfigFrom, coordinatorFlags } from '../../packages/cli/src/commands/coordinator.js';
import { upFlags } from '../../packages/cli/src/commands/up.js';
import { configFrom, flagsFromSchema, helpText, parseFlags, UsageError, type FlagSpec } from '../../packages/cli/src/flags.js';

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
    expect(() => parseFlags(['--listen'], specs, {})).toThrow(/--listen needs a value/);
    expect(() => parseFlags(['--nope'], specs, {})).toThrow(/unknown flag --nope/);
  });
  it('takes -h and --help anywhere, and keeps positionals in order', () => {
    expect(parseFlags(['a', '-h', 'b'], specs, {})).toMatchObject({ help: true, positionals: ['a', 'b'] });
    expect(parseFlags(['--', '--listen'], specs, {}).positionals).toEqual(['--listen']);
  });
  it('documents every flag with its environment variable and default', () => {
    const h = helpText('x', 'y', specs);
    expect(h).toContain('--offer-ttl <duration>');
    expect(h).toContain('SWITCHYARD_OFFER_TTL');
    expect(h).toContain('default 30m');
  });
});

describe('flags read off the daemons\' config schemas', () => {
  it('names each described key after it, durations without the Ms', () => {
    const names = coordinatorFlags.map((f) => f.name);
    expect(names).toEqual(expect.arrayContaining(['etcd', 'listen', 'token', 'offer-ttl', 'etcd-timeout', 'dns-listen', 'log-level', 'log-format']));
    expect(agentFlags.map((f) => f.name)).toEqual(expect.arrayContaining(['host-id', 'dataplane', 'resync', 'drain-timeout', 'flush-on-exit', 'nft-table']));
    // Keys without a description are not flags.
    expect(agentFlags.map((f) => f.name)).not.toContain('min-sync-interval');
    expect(coordinatorFlags.find((f) => f.name === 'offer-ttl')).toMatchObject({ kind: 'duration', default: '30m', key: 'offerTtlMs' });
    expect(coordinatorFlags.find((f) => f.name === 'listen')).toMatchObject({ kind: 'listen', default: '127.0.0.1:8443' });
    expect(agentFlags.find((f) => f.name === 'dataplane')).toMatchObject({ choices: ['auto', 'ipvs', 'nftables', 'dry-run'], default: 'auto' });
  });

  it('gives the daemon exactly its schema defaults when no flag is set', () => {
    const coordinator = coordinatorConfigFrom(parseFlags([], coordinatorFlags, {}).values);
    expect(CoordinatorConfig.parse(coordinator)).toEqual(CoordinatorConfig.parse({}));
    const agent = agentConfigFrom(parseFlags([], agentFlags, {}).values);
    expect(AgentConfig.parse(agent)).toEqual(AgentConfig.parse({}));
  });

  it('turns flags and environment into the config the daemon validates', () => {
    const { values } = parseFlags(['--listen', '[::1]:9000', '--offer-ttl', '2m', '--etcd', 'http://a:1,http://b:2'], coordinatorFlags, { SWITCHYARD_DNS_LISTEN: '127.0.0.1:5353' });
    expect(CoordinatorConfig.parse(coordinatorConfigFrom(values))).toMatchObject({
      listen: { host: '::1', port: 9000 },
      offerTtlMs: 120_000,
      etcd: ['http://a:1', 'http://b:2'],
      dnsListen: { host: '127.0.0.1', port: 5353 },
    });
    expect(() => parseFlags(['--dataplane', 'ebpf'], agentFlags, {})).toThrow(/not one of auto\|ipvs\|nftables\|dry-run/);
    expect(() => parseFlags(['--log-format', 'yaml'], agentFlags, {})).toThrow(UsageError);
    expect(() => coordinatorConfigFrom(parseFlags(['--tls-cert', 'c.pem'], coordinatorFlags, {}).values)).toThrow(/go together/);
  });

  it('takes the underlay from --underlay-address / --underlay-interface or their environment, and refuses bad ones', () => {
    expect(agentFlags.find((f) => f.name === 'underlay-interface')).toMatchObject({ kind: 'string', key: 'underlayInterface' });
    const parse = (argv: string[], env: Record<string, string> = {}) => AgentConfig.parse(agentConfigFrom(parseFlags(argv, agentFlags, env).values));
    expect(parse(['--underlay-interface', 'eth1'], { SWITCHYARD_UNDERLAY_ADDRESS: '192.0.2.7' })).toMatchObject({ underlayInterface: 'eth1', underlayAddress: '192.0.2.7' });
    expect(parse([])).not.toHaveProperty('underlayAddress');
    expect(() => parse(['--underlay-interface', 'eth0;reboot'])).toThrow(/underlay interface/);
    expect(() => parse(['--underlay-interface', 'sixteen-chars-xx'])).toThrow(/underlay interface/);
    expect(() => parse(['--underlay-address', '192.0.2'])).toThrow(/underlay address: an IPv4 address/);
    expect(() => parse(['--underlay-address', '2001:db8::1'])).toThrow(/underlay address/);
  });

  it('takes the etcd access flags (one shared fragment) on both daemons, from flags or environment', () => {
    const names = ['etcd-ca', 'etcd-cert', 'etcd-key', 'etcd-user', 'etcd-password-file'];
    for (const flags of [coordinatorFlags, agentFlags]) expect(flags.map((f) => f.name)).toEqual(expect.arrayContaining(names));
    const env = { SWITCHYARD_ETCD_CA: '/pki/ca.pem', SWITCHYARD_ETCD_USER: 'switchyard-agent-h1' };
    const { values } = parseFlags(['--etcd-cert', '/pki/c.pem', '--etcd-key', '/pki/c.key', '--etcd-password-file', '/run/pw'], agentFlags, env);
    expect(AgentConfig.parse(agentConfigFrom(values))).toMatchObject({
      etcdCa: '/pki/ca.pem',
      etcdCert: '/pki/c.pem',
      etcdKey: '/pki/c.key',
      etcdUser: 'switchyard-agent-h1',
      etcdPasswordFile: '/run/pw',
    });
    // `up` runs a plain-HTTP etcd of its own: its parts take a user, not client TLS.
    expect(upFlags.map((f) => f.name)).toEqual(expect.arrayContaining(['etcd-user', 'etcd-password-file']));
    expect(upFlags.map((f) => f.name)).not.toEqual(expect.arrayContaining(['etcd-ca']));
  });

  it('follows a schema: a new described key is a new flag with its default', () => {
    const schema = z.object({ pollIntervalMs: z.int().default(1500).describe('how often'), verbose: z.boolean().default(true).describe('talk'), hidden: z.int().default(1) });
    const flags = flagsFromSchema(schema);
    expect(flags).toEqual([
      { name: 'poll-interval', key: 'pollIntervalMs', kind: 'duration', help: 'how often', default: '1500ms' },
      { name: 'verbose', key: 'verbose', kind: 'bool', help: 'talk', default: 'true' },
    ]);
    expect(configFrom(flags, parseFlags(['--no-verbose', '--poll-interval', '3s'], flags, {}).values)).toEqual({ pollIntervalMs: 3000, verbose: false });
    expect(helpText('x', 'y', flags)).toMatch(/--poll-interval <duration>\s+how often \(default 1500ms, env SWITCHYARD_POLL_INTERVAL\)/);
  });
});
