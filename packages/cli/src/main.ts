#!/usr/bin/env node
/**
 * `switchyard`: one CLI for the servers (coordinator, agent, up) and the
 * clients (service, server, hosts, ports, …). Exit code 2 on usage errors,
 * 1 on any other failure, with the reason on stderr.
 */
import { UsageError, type FlagSpec } from './flags.js';
import { ApiError } from './client.js';

type Command = (argv: string[]) => Promise<void>;

interface Entry {
  help: string;
  load: () => Promise<Command>;
  /** Subcommands and flags, for shell completion. */
  verbs?: string[];
  flags?: () => Promise<FlagSpec[]>;
}

const commands: Record<string, Entry> = {
  up: { help: 'run etcd + coordinator + agent on this machine (--cluster: 3 etcd members, 2 coordinators)', load: async () => (await import('./commands/up.js')).upCommand, flags: async () => (await import('./commands/up.js')).upFlags },
  coordinator: {
    help: 'serve the REST/websocket API over etcd',
    load: async () => (await import('./commands/coordinator.js')).coordinatorCommand,
    flags: async () => (await import('./commands/coordinator.js')).coordinatorFlags,
  },
  agent: { help: "reconcile this host's kernel from etcd", load: async () => (await import('./commands/agent.js')).agentCommand, flags: async () => (await import('./commands/agent.js')).agentFlags },
  'etcd-auth': {
    help: 'turn etcd auth on: root, a coordinator user, one user per agent host',
    load: async () => (await import('./commands/etcd-auth.js')).etcdAuthCommand,
    flags: async () => (await import('./commands/etcd-auth.js')).etcdAuthFlags,
  },
  status: {
    help: 'the cluster on one screen: coordinators, etcd, hosts and their lag, counts',
    load: async () => (await import('./commands/status.js')).statusCommand,
    flags: async () => (await import('./flags.js')).clientFlags,
  },
  service: {
    help: 'L4 virtual services: add|list|show|set|remove|import',
    load: async () => (await import('./commands/l4.js')).serviceCommand,
    verbs: ['add', 'list', 'show', 'set', 'remove', 'import'],
    flags: async () => (await import('./commands/l4.js')).serviceSpecs,
  },
  server: {
    help: 'real servers of a service: add|list|show|remove',
    load: async () => (await import('./commands/l4.js')).serverCommand,
    verbs: ['add', 'list', 'show', 'remove'],
    flags: async () => (await import('./commands/l4.js')).serverSpecs,
  },
  hosts: {
    help: 'agents and their applied revision: list|show',
    load: async () => (await import('./commands/l4.js')).hostsCommand,
    verbs: ['list', 'show'],
    flags: async () => (await import('./flags.js')).clientFlags,
  },
  ports: {
    help: 'port allocation (Portmaster): service …|offer|accept|reject|list|find|release',
    load: async () => (await import('./commands/portmaster.js')).portsCommand,
    verbs: ['service', 'offer', 'accept', 'reject', 'list', 'find', 'release'],
    flags: async () => (await import('./commands/portmaster.js')).portsSpecs,
  },
  cen: {
    help: 'container edge networks (Leviathan): import|make|destroy|list|show|remove',
    load: async () => (await import('./commands/leviathan.js')).cenCommand,
    verbs: ['import', 'make', 'destroy', 'list', 'show', 'remove'],
    flags: async () => (await import('./commands/leviathan.js')).leviathanSpecs,
  },
  cin: {
    help: 'container interconnect networks (Leviathan): import|make|destroy|list|show',
    load: async () => (await import('./commands/leviathan.js')).cinCommand,
    verbs: ['import', 'make', 'destroy', 'list', 'show'],
    flags: async () => (await import('./commands/leviathan.js')).leviathanSpecs,
  },
  completion: { help: 'print a shell completion script: completion bash|zsh', load: async () => completionCommand, verbs: ['bash', 'zsh'] },
};

async function completionCommand(argv: string[]): Promise<void> {
  const { completionScript } = await import('./commands/completion.js');
  const table: Record<string, { verbs: string[]; flags: string[] }> = {};
  for (const [name, c] of Object.entries(commands)) table[name] = { verbs: c.verbs ?? [], flags: c.flags ? (await c.flags()).map((f) => f.name) : [] };
  process.stdout.write(completionScript(argv[0], table));
}

function usage(): string {
  const rows = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(12)} ${c.help}`);
  return `Usage: switchyard <command> [flags]\n\nCommands:\n${rows.join('\n')}\n\nEvery command takes --help. Every flag also reads SWITCHYARD_<FLAG> from the environment.\n`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage());
    return name ? 0 : 2;
  }
  if (name === '--version' || name === 'version') {
    const { VERSION } = await import('@switchyard/shared');
    process.stdout.write(`${VERSION}\n`);
    return 0;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`switchyard: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  try {
    await (await command.load())(rest);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`switchyard ${name}: ${e.message}\n`);
      return 2;
    }
    if (e instanceof ApiError) {
      process.stderr.write(`switchyard ${name}: ${e.message}\n`);
      return 1;
    }
    process.stderr.write(`switchyard ${name}: ${(e as Error).message ?? e}\n`);
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    // Servers keep running after main returns; clients exit with their code.
    if (code !== 0) process.exit(code);
  },
  (e) => {
    process.stderr.write(`switchyard: ${(e as Error).stack ?? e}\n`);
    process.exit(1);
  },
);
