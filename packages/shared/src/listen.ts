/** `HOST:PORT` or `[v6]:PORT` → { host, port } (--listen, --dns-listen, --metrics-listen). */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:]+):(\d+)$/.exec(text);
  if (!m || Number(m[2]) > 65535) throw new Error(`invalid listen address "${text}" (want HOST:PORT)`);
  return { host: m[1], port: Number(m[2]) };
}
