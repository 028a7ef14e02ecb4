#!/usr/bin/env node
/**
 * `switchyard`: one CLI for the servers (coordinator, agent, up) and the
 * clients (service, server, hosts, ports, …). Exit code 2 on usage errors,
 * 1 on any other failure, with the reason on stderr.
 */
import { UsageError } from './flags.js';
import { ApiError } from './client.js';

type Command = (argv: string[]) => Promise<void>;

const commands: Record<string, { help: string; load: () => Promise<Command> }> = {
  up: { help: 'run etcd + coordinator + agent on this machine', load: async () => (await import('./commands/up.js')).upCommand },
  coordinator: { help: 'serve the REST/websocket API over etcd', load: async () => (await import('./commands/coordinator.js')).coordinatorCommand },
  agent: { help: 'reconcile this host\'s kernel from etcd', load: async () => (await import('./commands/agent.js')).agentCommand },
  service: { help: 'L4 virtual services: add|list|show|set|remove', load: async () => (await import('./commands/l4.js')).serviceCommand },
  server: { help: 'real servers of a service: add|list|show|remove', load: async () => (await import('./commands/l4.js')).serverCommand },
  hosts: { help: 'agents and their applied revision: list|show', load: async () => (await import('./commands/l4.js')).hostsCommand },
  ports: { help: 'port allocation (Portmaster): service …|offer|accept|reject|list|find|release', load: async () => (await import('./commands/ports.js')).portsCommand },
};

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
