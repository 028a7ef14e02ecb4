/** `switchyard coordinator`: the stateless REST + websocket server. */
import { buildCoordinator, parseListen, type CoordinatorConfigInput } from '@switchyard/coordinator';
import { parseEtcdHosts } from '@switchyard/shared';
import { helpText, parseFlags, type FlagSpec, type FlagValues } from '../flags.js';
import { onShutdown } from '../lifecycle.js';

export const coordinatorFlags: FlagSpec[] = [
  { name: 'etcd', kind: 'string', default: 'http://127.0.0.1:2379', help: 'etcd endpoints, comma-separated' },
  { name: 'listen', kind: 'string', default: '127.0.0.1:8443', help: 'HOST:PORT to serve the API on' },
  { name: 'token', kind: 'string', help: 'require this X-AUTH-TOKEN on every route but /healthz' },
  { name: 'prefix', kind: 'string', default: '/switchyard', help: 'etcd key prefix' },
  { name: 'tls-cert', kind: 'string', help: 'PEM certificate: serve HTTPS' },
  { name: 'tls-key', kind: 'string', help: 'PEM private key for --tls-cert' },
  { name: 'etcd-timeout', kind: 'duration', default: '3s', help: 'deadline of the etcd work behind one request' },
  { name: 'offer-ttl', kind: 'duration', default: '30m', help: 'port offers not accepted within this expire' },
  { name: 'default-host', kind: 'string', default: 'host1', help: 'host of containers a CEN file names but places nowhere' },
  { name: 'dns-root', kind: 'string', default: 'skydns.local', help: 'SkyDNS root domain of provider records' },
  { name: 'provider-ttl', kind: 'duration', default: '10s', help: "lease TTL: a dead coordinator's provider records vanish within it" },
  { name: 'ping-interval', kind: 'duration', default: '10s', help: 'websocket ping interval (skyapi providers, Leviathan monitors); a peer that misses a pong is dropped' },
  { name: 'dns-listen', kind: 'string', help: 'HOST:PORT for the built-in DNS responder (UDP and TCP); off when unset' },
  { name: 'metrics', kind: 'bool', default: 'true', help: 'serve GET /metrics and time every request (--no-metrics: neither)' },
  { name: 'metrics-public', kind: 'bool', default: 'false', help: 'GET /metrics answers without the token' },
  { name: 'log-level', kind: 'string', default: 'info', help: 'fatal|error|warn|info|debug|trace|silent' },
];

export function coordinatorConfigFrom(values: FlagValues): CoordinatorConfigInput {
  return {
    etcd: parseEtcdHosts(String(values.etcd)),
    listen: parseListen(String(values.listen)),
    token: values.token as string | undefined,
    prefix: String(values.prefix),
    tlsCert: values['tls-cert'] as string | undefined,
    tlsKey: values['tls-key'] as string | undefined,
    etcdTimeoutMs: values['etcd-timeout'] as number,
    offerTtlMs: values['offer-ttl'] as number,
    defaultHost: String(values['default-host']),
    dnsRoot: String(values['dns-root']),
    providerTtlMs: values['provider-ttl'] as number,
    pingIntervalMs: values['ping-interval'] as number,
    dnsListen: values['dns-listen'] ? parseListen(String(values['dns-listen'])) : undefined,
    metrics: Boolean(values.metrics),
    metricsPublic: Boolean(values['metrics-public']),
    logLevel: values['log-level'] as CoordinatorConfigInput['logLevel'],
  };
}

export async function coordinatorCommand(argv: string[]): Promise<void> {
  const { values, help } = parseFlags(argv, coordinatorFlags);
  if (help) {
    process.stdout.write(helpText('switchyard coordinator [flags]', 'Serve the REST and websocket API; all state lives in etcd.', coordinatorFlags));
    return;
  }
  if ((values['tls-cert'] === undefined) !== (values['tls-key'] === undefined)) throw new Error('--tls-cert and --tls-key go together');
  const c = await buildCoordinator(coordinatorConfigFrom(values));
  const address = await c.listen();
  onShutdown(() => c.close());
  // Always printed, whatever the log level: scripts and tests wait for it.
  process.stderr.write(`switchyard: coordinator listening at ${address}\n`);
}
