/** Shell-free helpers for kernel tests that make their own network namespaces. */
import { execFileSync } from 'node:child_process';

/** Runs a command (argv, no shell) and returns its stdout; throws on failure. */
export const sh = (cmd: string, args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

/** Named network namespaces whose name starts with `prefix`. */
export function namespacesWithPrefix(prefix: string): string[] {
  return sh('ip', ['netns', 'list'])
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n.startsWith(prefix));
}

/** Deletes every namespace starting with `prefix` (those already gone are fine). */
export function deleteNamespaces(prefix: string): void {
  for (const ns of namespacesWithPrefix(prefix)) {
    try {
      sh('ip', ['netns', 'del', ns]);
    } catch {
      /* already gone */
    }
  }
}
