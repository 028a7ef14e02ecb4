/**
 * docker-compose.yml and its Corefile cannot run here (no Docker engine), so
 * they are checked: every switchyard command is a real CLI command whose flags
 * parse, every etcd flag is one etcd has (its own `--help` when etcd is
 * installed), the three etcd members form one cluster that every part points
 * at, published ports match the listen flags, the agent gets what it needs to
 * change the host's kernel, and CoreDNS reads the SkyDNS records where the
 * coordinators write them.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { SKYDNS_PREFIX, skydns } from '@switchyard/shared';
import { agentFlags } from '../../packages/cli/src/commands/agent.js';
import { coordinatorFlags } from '../../packages/cli/src/commands/coordinator.js';
import { parseFlags, type FlagSpec } from '../../packages/cli/src/flags.js';

interface ComposeService {
  image?: string;
  build?: string;
  command: string[];
  ports?: string[];
  network_mode?: string;
  cap_add?: string[];
  depends_on?: string[];
  volumes?: string[];
  environment?: Record<string, string>;
}
const compose = parse(readFileSync(new URL('../../docker-compose.yml', import.meta.url), 'utf8')) as { services: Record<string, ComposeService>; volumes: Record<string, unknown> };
const services = compose.services;
const flagsOf: Record<string, FlagSpec[]> = { coordinator: coordinatorFlags, agent: agentFlags };

/** `--name=value` arguments of a command; every argument after the first must be one. */
function flags(cmd: string[]): Map<string, string> {
  const args = cmd.slice(1);
  for (const a of args) expect(a, `${cmd[0]} argument`).toMatch(/^--[a-z0-9-]+=/);
  return new Map(args.map((a) => [a.slice(2, a.indexOf('=')), a.slice(a.indexOf('=') + 1)]));
}

const byRole = (role: string) => Object.entries(services).filter(([, s]) => s.command[0] === role);
const etcdMembers = byRole('etcd');
const coordinators = byRole('coordinator');

/**
 * etcd's flags: from `etcd --help` when etcd is installed (the Debian
 * etcd-server the tests run on), else the ones a member of a static cluster
 * takes (etcd's clustering guide), the same in 3.4 and 3.5.
 */
function etcdFlagNames(): Set<string> {
  try {
    const help = execFileSync('etcd', ['--help'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const names = [...help.matchAll(/^\s+--([a-z0-9-]+)/gm)].map((m) => m[1]);
    if (names.length > 50) return new Set(names);
  } catch {
    // not installed
  }
  return new Set([
    'name', 'data-dir', 'wal-dir', 'listen-client-urls', 'advertise-client-urls', 'listen-peer-urls',
    'initial-advertise-peer-urls', 'initial-cluster', 'initial-cluster-state', 'initial-cluster-token',
    'log-level', 'logger', 'snapshot-count', 'heartbeat-interval', 'election-timeout', 'quota-backend-bytes',
  ]);
}

/** A Corefile's directives, as nested blocks: `zone { plugin args { key args } }`. */
interface Directive {
  words: string[];
  block?: Directive[];
}
function parseCorefile(text: string): Directive[] {
  const root: Directive[] = [];
  const stack: Directive[][] = [root];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) continue;
    if (line === '}') {
      stack.pop();
      expect(stack.length, 'Corefile: unbalanced }').toBeGreaterThan(0);
      continue;
    }
    const opens = line.endsWith('{');
    const d: Directive = { words: line.replace(/\{$/, '').trim().split(/\s+/) };
    stack[stack.length - 1].push(d);
    if (opens) stack.push((d.block = []));
  }
  expect(stack.length, 'Corefile: unclosed {').toBe(1);
  return root;
}
const corefile = parseCorefile(readFileSync(new URL('../../Corefile', import.meta.url), 'utf8'));

describe('docker-compose.yml', () => {
  it('has a 3-member etcd, two coordinators, an agent and CoreDNS', () => {
    expect(etcdMembers.map(([n]) => n).sort()).toEqual(['etcd0', 'etcd1', 'etcd2']);
    expect(coordinators).toHaveLength(2);
    expect(byRole('agent')).toHaveLength(1);
    expect(Object.values(services).filter((s) => s.image?.startsWith('coredns/coredns:'))).toHaveLength(1);
  });

  for (const role of ['coordinator', 'agent']) {
    it(`${role}: runs the CLI's ${role} command with flags it knows and values they take`, () => {
      for (const [name, svc] of byRole(role)) {
        expect(svc.build, name).toBe('.');
        const known = new Set(flagsOf[role].map((f) => f.name));
        for (const flag of flags(svc.command).keys()) expect(known, `${name}: --${flag}`).toContain(flag);
        // The CLI's own parser: unknown flags and bad values throw.
        expect(() => parseFlags(svc.command.slice(1), flagsOf[role], {}), name).not.toThrow();
        for (const [member] of etcdMembers) expect(svc.depends_on, name).toContain(member);
      }
    });
  }

  it("runs etcd members with flags etcd has, and etcd's default limits", () => {
    const known = etcdFlagNames();
    for (const [name, svc] of etcdMembers) {
      for (const flag of flags(svc.command).keys()) expect(known, `${name}: --${flag}`).toContain(flag);
      expect(svc.command.join(' ')).not.toMatch(/--max-txn-ops|--max-request-bytes/);
    }
  });

  it('makes one etcd cluster: each member named after its service, in the same --initial-cluster, with its own volume', () => {
    const clusters = new Set<string>();
    const volumes = new Set<string>();
    for (const [name, svc] of etcdMembers) {
      const f = flags(svc.command);
      expect(f.get('name')).toBe(name);
      expect(f.get('advertise-client-urls')).toBe(`http://${name}:2379`);
      expect(f.get('initial-advertise-peer-urls')).toBe(`http://${name}:2380`);
      expect(f.get('listen-client-urls')).toBe('http://0.0.0.0:2379');
      expect(f.get('listen-peer-urls')).toBe('http://0.0.0.0:2380');
      expect(f.get('initial-cluster-state')).toBe('new');
      clusters.add(String(f.get('initial-cluster')));
      const volume = svc.volumes?.find((v) => v.endsWith(`:${f.get('data-dir')}`))?.split(':')[0];
      expect(volume, `${name}: a volume at its data dir`).toBeDefined();
      expect(compose.volumes).toHaveProperty(String(volume));
      volumes.add(String(volume));
    }
    expect([...clusters]).toEqual([etcdMembers.map(([n]) => `${n}=http://${n}:2380`).join(',')]);
    expect(volumes.size).toBe(3);
  });

  it('points both coordinators at every member, on consecutive published ports', () => {
    const everyMember = etcdMembers.map(([n]) => `http://${n}:2379`).sort();
    const ports: number[] = [];
    for (const [name, svc] of coordinators) {
      const f = flags(svc.command);
      expect(String(f.get('etcd')).split(',').sort(), name).toEqual(everyMember);
      const port = Number(f.get('listen')?.split(':').pop());
      expect(svc.ports, name).toContain(`${port}:${port}`);
      ports.push(port);
    }
    ports.sort();
    expect(ports[1]).toBe(ports[0] + 1);
  });

  it('gives the agent the host network and NET_ADMIN, and every member through a published port', () => {
    const [[, svc]] = byRole('agent');
    expect(svc.network_mode).toBe('host');
    expect(svc.cap_add).toContain('NET_ADMIN');
    const urls = String(flags(svc.command).get('etcd')).split(',').map((u) => new URL(u));
    const reached = urls.map((u) => etcdMembers.find(([, m]) => m.ports?.includes(`${u.hostname}:${u.port}:2379`))?.[0]);
    expect(reached.sort()).toEqual(etcdMembers.map(([n]) => n).sort());
  });

  it("runs the agent in the environment bench/agent-memory.ts measures (a small young generation, glibc's mmap threshold fixed)", () => {
    const [[, svc]] = byRole('agent');
    // Strings: compose passes environment values as they are written.
    expect(svc.environment).toMatchObject({ NODE_OPTIONS: '--max-semi-space-size=1', MALLOC_MMAP_THRESHOLD_: '32768' });
  });

  it('runs CoreDNS on the Corefile in the repository, DNS published on UDP and TCP', () => {
    const svc = Object.values(services).find((s) => s.image?.startsWith('coredns/coredns:')) as ComposeService;
    const conf = svc.command[svc.command.indexOf('-conf') + 1];
    expect(svc.volumes).toContain(`./Corefile:${conf}:ro`);
    const dns = svc.ports?.map((p) => /^(\d+):53\/(udp|tcp)$/.exec(p)).filter(Boolean) ?? [];
    expect(dns.map((m) => m?.[2]).sort()).toEqual(['tcp', 'udp']);
    for (const [member] of etcdMembers) expect(svc.depends_on).toContain(member);
  });
});

describe('Corefile', () => {
  const [server] = corefile;
  const etcd = server.block?.find((d) => d.words[0] === 'etcd');
  const setting = (key: string) => etcd?.block?.find((d) => d.words[0] === key)?.words.slice(1) ?? [];

  it("serves the coordinators' --dns-root with the etcd plugin", () => {
    expect(corefile).toHaveLength(1);
    expect(etcd).toBeDefined();
    const zone = server.words[0].replace(/:\d+$/, '').replace(/\.$/, '');
    for (const [name, svc] of coordinators) {
      const root = flags(svc.command).get('dns-root') ?? coordinatorFlags.find((f) => f.name === 'dns-root')?.default;
      expect(zone, name).toBe(root);
    }
  });

  it('reads the records under the path where Switchyard writes them', () => {
    const [path] = setting('path');
    expect(path).toBe(SKYDNS_PREFIX);
    // What the etcd plugin looks up for foo.services.<zone>: <path>/<labels reversed>/.
    const zone = server.words[0].replace(/:\d+$/, '');
    const lookedUp = `${path}/${`foo.services.${zone}`.split('.').reverse().join('/')}/`;
    expect(skydns.recordKey(zone, ['services'], 'foo', 'abc')).toBe(`${lookedUp}abc`);
  });

  it('reads from every member of the compose etcd cluster', () => {
    expect(setting('endpoint').sort()).toEqual(etcdMembers.map(([n]) => `http://${n}:2379`).sort());
  });
});
