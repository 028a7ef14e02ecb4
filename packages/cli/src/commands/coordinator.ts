/** `switchyard coordinator`: the stateless REST + websocket server. */
import { CoordinatorConfig, type CoordinatorConfigInput } from '@switchyard/coordinator/config';
import { configFrom, flagsFromSchema, helpText, parseFlags, UsageError, type FlagValues } from '../flags.js';
import { onShutdown } from '../lifecycle.js';

/** Every flag, default and help line comes from the schema the coordinator validates. */
export const coordinatorFlags = flagsFromSchema(CoordinatorConfig);

export function coordinatorConfigFrom(values: FlagValues): CoordinatorConfigInput {
  if ((values['tls-cert'] === undefined) !== (values['tls-key'] === undefined)) throw new UsageError('--tls-cert and --tls-key go together');
  return configFrom(coordinatorFlags, values) as CoordinatorConfigInput;
}

export async function coordinatorCommand(argv: string[]): Promise<void> {
  const { values, help } = parseFlags(argv, coordinatorFlags);
  if (help) {
    process.stdout.write(helpText('switchyard coordinator [flags]', 'Serve the REST and websocket API; all state lives in etcd.', coordinatorFlags));
    return;
  }
  const { buildCoordinator } = await import('@switchyard/coordinator');
  const c = await buildCoordinator(coordinatorConfigFrom(values));
  const address = await c.listen();
  onShutdown(() => c.close());
  // Always printed, whatever the log level: scripts and tests wait for it.
  process.stderr.write(`switchyard: coordinator listening at ${address}\n`);
}
