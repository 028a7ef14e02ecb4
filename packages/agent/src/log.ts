/** The agent's pino logger: one child per component, fixed messages with fields. */
import { pino, type Logger } from 'pino';
import { logDestination, wantsPretty, type LogFormat } from '@switchyard/shared';

export function createLogger(level: string, hostId: string, format: LogFormat = 'json'): Logger {
  // JSON goes through pino's own fast writer on stderr; people get readable lines.
  const sink = wantsPretty(format, process.stderr) ? logDestination(format, process.stderr) : pino.destination(2);
  return pino({ level, name: 'agent', base: { hostId } }, sink);
}
