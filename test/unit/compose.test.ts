/**
 * docker-compose.yml cannot run here (no Docker engine), so it is checked:
 * every command is a real CLI command with flags it knows, published ports
 * match the listen flags, and the agent gets what it needs to change the
 * host's kernel.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { agentFlags } from '../../packages/cli/src/commands/agent.js';
import { coordinatorFlags } from '../../packages/cli/src/commands/coordinator.js';
import type { FlagSpec } from '../../packages/cli/src/flags.js';

interface ComposeService {
  command: string[];
  ports?: string[];
  network_mode?: string;
  cap_add?: string[];
  depends_on?: string[];
}
const compose = parse(readFileSync(new URL('../../docker-compose.yml', import.meta.url), 'utf8')) as { services: Record<string, ComposeService> };
const flagsOf: Record<string, FlagSpec[]> = { coordinator: coordinatorFlags, agent: agentFlags };

function flags(cmd: string[]): Map<string, string> {
  return new Map(cmd.filter((a) => a.startsWith('--')).map((a) => a.slice(2).split('=') as [string, string]));
}

describe('docker-compose.yml', () => {
  it('has etcd, a coordinator and an agent', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['agent', 'coordinator', 'etcd']);
  });

  for (const role of ['coordinator', 'agent']) {
    it(`${role}: runs the CLI's ${role} command with flags it knows`, () => {
      const svc = compose.services[role];
      expect(svc.command[0]).toBe(role);
      const known = new Set(flagsOf[role].map((f) => f.name));
      for (const name of flags(svc.command).keys()) expect(known, `--${name}`).toContain(name);
      expect(svc.depends_on).toContain('etcd');
    });
  }

  it('publishes the ports the coordinator listens on', () => {
    const svc = compose.services.coordinator;
    const f = flags(svc.command);
    const apiPort = f.get('listen')?.split(':').pop();
    const dnsPort = f.get('dns-listen')?.split(':').pop();
    expect(svc.ports).toContain(`${apiPort}:${apiPort}`);
    expect(svc.ports).toContain(`${dnsPort}:${dnsPort}/udp`);
    expect(svc.ports).toContain(`${dnsPort}:${dnsPort}/tcp`);
    expect(f.get('etcd')).toBe('http://etcd:2379');
  });

  it('gives the agent the host network and NET_ADMIN, and an etcd it can reach from there', () => {
    const svc = compose.services.agent;
    expect(svc.network_mode).toBe('host');
    expect(svc.cap_add).toContain('NET_ADMIN');
    const etcdUrl = new URL(String(flags(svc.command).get('etcd')));
    expect(compose.services.etcd.ports).toContain(`${etcdUrl.hostname}:${etcdUrl.port}:2379`);
  });

  it("runs etcd with its default limits, as a user's own cluster does", () => {
    const cmd = compose.services.etcd.command.join(' ');
    expect(cmd).not.toMatch(/--max-txn-ops|--max-request-bytes/);
  });
});
