/** The agent's pino logger: one child per component, fixed messages with fields. */
import { pino, type Logger } from 'pino';
import { isAccessRefused, logDestination, wantsPretty, type LogFormat } from '@switchyard/shared';

export function createLogger(level: string, hostId: string, format: LogFormat = 'json'): Logger {
  // JSON goes through pino's own fast writer on stderr; people get readable lines.
  const sink = wantsPretty(format, process.stderr) ? logDestination(format, process.stderr) : pino.destination(2);
  return pino({ level, name: 'agent', base: { hostId } }, sink);
}

/**
 * What a mirror's failed list says: etcd refusing this agent's user a prefix
 * (a role that lacks it; it will not heal by retrying) is a warning, an
 * outage only debug (the mirror retries on its own, every second).
 */
export function listErrorLogger(log: Logger, prefix: string): (err: unknown) => void {
  return (err) => {
    const fields = { prefix, err: (err as Error)?.message ?? String(err) };
    if (isAccessRefused(err)) log.warn(fields, 'etcd refused reading a prefix this agent needs; check its etcd user and role');
    else log.debug(fields, 'listing an etcd prefix failed; retrying');
  };
}
