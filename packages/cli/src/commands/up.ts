/**
 * `switchyard up`: the embedded default. A local etcd child process (data
 * under ./.switchyard/), a coordinator and an agent, all on this machine.
 * `--cluster` runs the shape of a production cluster on the same one code
 * path: three etcd members, two coordinators and the agent.
 * Ctrl-C stops them in reverse order.
 */
import { resolve } from 'node:path';
import { z } from 'zod';
import { formatListen } from '@switchyard/shared';
import { startEtcdCluster } from '../embedded-etcd.js';
import { configFrom, flagsFromSchema, helpText, parseFlags, UsageError, type FlagSpec, type FlagValues } from '../flags.js';
import { onShutdown, runShutdown } from '../lifecycle.js';
import { agentConfigFrom, agentFlags } from './agent.js';
import { coordinatorConfigFrom, coordinatorFlags } from './coordinator.js';

/** `up`'s own options; like the daemons', its flags are read off this schema. */
export const UpOptions = z.object({
  dataDir: z.string().default('./.switchyard').describe('where the embedded etcd keeps its data'),
  etcdPort: z
    .int()
    .min(1)
    .max(65535 - 5)
    .default(2379)
    .describe('client port of the embedded etcd (its peer port is the next one; with --cluster, member i uses this + 2i and the next)'),
  noAgent: z.boolean().default(false).describe('run etcd and the coordinator only'),
  cluster: z
    .boolean()
    .default(false)
    .describe('a cluster on this machine: 3 etcd members on consecutive ports, 2 coordinators (--listen and the port after it), the agent'),
});
export type UpOptions = z.output<typeof UpOptions>;

/** What `up` runs: the embedded default, or the shape of a cluster. */
export function shapeOf(options: UpOptions): { etcdMembers: number; coordinators: number } {
  return options.cluster ? { etcdMembers: 3, coordinators: 2 } : { etcdMembers: 1, coordinators: 1 };
}

const own: FlagSpec[] = flagsFromSchema(UpOptions);
/** Where `up` serves the agent's metrics unless told otherwise (9464: the usual Prometheus exporter port). */
export const UP_AGENT_METRICS = '127.0.0.1:9464';

// `up` owns etcd, so the --etcd flags of the parts it starts do not apply,
// nor the client TLS ones (its etcd listens on loopback, in plain HTTP);
// --etcd-user/--etcd-password-file do, for both parts (after `switchyard
// etcd-auth` turned auth on in its data dir). Flags both parts have
// (--prefix, --log-level, …) are given once and go to both; it turns the
// agent's metrics on.
const notForUp = new Set(['etcd', 'etcd-ca', 'etcd-cert', 'etcd-key']);
export const upFlags: FlagSpec[] = [...own, ...coordinatorFlags, ...agentFlags]
  .filter((f, i, all) => !notForUp.has(f.name) && all.findIndex((g) => g.name === f.name) === i)
  .map((f) => (f.name === 'metrics-listen' ? { ...f, default: UP_AGENT_METRICS } : f));

export async function upCommand(argv: string[]): Promise<void> {
  const { values, help } = parseFlags(argv, upFlags);
  if (help) {
    process.stdout.write(
      helpText('switchyard up [flags]', 'Run etcd, a coordinator and an agent on this machine (--cluster: 3 etcd members, 2 coordinators, an agent). Ctrl-C stops all.', upFlags),
    );
    return;
  }
  const parsed = UpOptions.safeParse(configFrom(own, values));
  if (!parsed.success) throw new UsageError(parsed.error.issues.map((i) => `--${String(own.find((f) => f.key === i.path[0])?.name)}: ${i.message}`).join('; '));
  try {
    await startAll(parsed.data, values);
  } catch (e) {
    // Whatever already started (etcd above all) must not outlive us.
    await runShutdown();
    throw e;
  }
  process.stderr.write('switchyard: up. Ctrl-C stops everything.\n');
}

type Listen = { host: string; port: number };
/** The i-th of consecutive ports from `l` (port 0 stays 0: any free port). */
function nth(l: Listen, i: number): Listen {
  return { host: l.host, port: l.port === 0 ? 0 : l.port + i };
}

async function startAll(options: UpOptions, values: FlagValues): Promise<void> {
  const shape = shapeOf(options);
  const dataDir = resolve(options.dataDir, options.cluster ? 'etcd-cluster' : 'etcd');
  const port = options.etcdPort;
  const etcd = await startEtcdCluster({ dataDir, members: shape.etcdMembers, clientPort: port, peerPort: port + 1, ownProcessGroup: true });
  onShutdown(() => etcd.stop());
  for (const m of etcd.members) process.stderr.write(`switchyard: etcd at ${m.url} (member ${m.name}, data in ${m.dataDir})\n`);
  if (shape.etcdMembers > 1) process.stderr.write(`switchyard: etcd endpoints ${etcd.urls.join(',')}\n`);

  const { buildCoordinator } = await import('@switchyard/coordinator');
  const listen = values.listen as Listen;
  const dns = values['dns-listen'] as Listen | undefined;
  for (let i = 0; i < shape.coordinators; i++) {
    const coordinator = await buildCoordinator(
      coordinatorConfigFrom({ ...values, etcd: etcd.urls, listen: nth(listen, i), 'dns-listen': dns && nth(dns, i) }),
    );
    onShutdown(() => coordinator.close());
    const address = await coordinator.listen();
    process.stderr.write(`switchyard: coordinator at ${address} (OpenAPI UI at ${address}/docs)\n`);
    if (values.metrics) process.stderr.write(`switchyard: coordinator metrics at ${address}/metrics\n`);
    if (dns) {
      process.stderr.write(`switchyard: coordinator DNS at ${formatListen(nth(dns, i))} (UDP and TCP, zone ${String(values['dns-root'])})\n`);
    }
  }

  if (!options.noAgent) {
    const { startAgent } = await import('@switchyard/agent');
    const agent = await startAgent(agentConfigFrom({ ...values, etcd: etcd.urls }));
    onShutdown(() => agent.stop());
    process.stderr.write(`switchyard: agent "${values['host-id']}" running (dataplane ${agent.dataplane})\n`);
    if (agent.metricsUrl) process.stderr.write(`switchyard: agent metrics at ${agent.metricsUrl}\n`);
  }
}
