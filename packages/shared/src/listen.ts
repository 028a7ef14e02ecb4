/** `HOST:PORT` or `[v6]:PORT` → { host, port }: every listen flag's syntax (--listen, --dns-listen, --metrics-listen). */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:]+):(\d+)$/.exec(text);
  if (!m || Number(m[2]) > 65535) throw new Error(`invalid listen address "${text}" (want HOST:PORT)`);
  return { host: m[1], port: Number(m[2]) };
}

/** The inverse of parseListen. */
export function formatListen({ host, port }: { host: string; port: number }): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
