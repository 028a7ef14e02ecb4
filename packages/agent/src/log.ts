/** The agent's pino logger: one child per component, fixed messages with fields. */
import { pino, type Logger } from 'pino';

export function createLogger(level: string, hostId: string): Logger {
  return pino({ level, name: 'agent', base: { hostId } }, pino.destination(2));
}
