/**
 * `switchyard up`: the embedded default. A local etcd child process (data
 * under ./.switchyard/), a coordinator and an agent, all on this machine.
 * Ctrl-C stops them in reverse order.
 */
import { resolve } from 'node:path';
import { startEtcd } from '../embedded-etcd.js';
import { helpText, parseFlags, type FlagSpec, type FlagValues } from '../flags.js';
import { onShutdown, runShutdown } from '../lifecycle.js';
import { agentConfigFrom, agentFlags } from './agent.js';
import { coordinatorConfigFrom, coordinatorFlags } from './coordinator.js';

const own: FlagSpec[] = [
  { name: 'data-dir', kind: 'string', default: './.switchyard', help: 'where the embedded etcd keeps its data' },
  { name: 'etcd-port', kind: 'int', default: '2379', help: 'client port of the embedded etcd (its peer port is the next one)' },
  { name: 'no-agent', kind: 'bool', default: 'false', help: 'run etcd and the coordinator only' },
];
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
    process.stdout.write(helpText('switchyard up [flags]', 'Run etcd, a coordinator and an agent on this machine (Ctrl-C stops all).', upFlags));
    return;
  }
  try {
    await startAll(values);
  } catch (e) {
    // Whatever already started (etcd above all) must not outlive us.
    await runShutdown();
    throw e;
  }
  process.stderr.write('switchyard: up. Ctrl-C stops everything.\n');
}

async function startAll(values: FlagValues): Promise<void> {
  const dataDir = resolve(String(values['data-dir']), 'etcd');
  const port = values['etcd-port'] as number;
  const etcd = await startEtcd({ dataDir, clientPort: port, peerPort: port + 1 });
  onShutdown(() => etcd.stop());
  process.stderr.write(`switchyard: etcd at ${etcd.url} (data in ${dataDir})\n`);

  const { buildCoordinator } = await import('@switchyard/coordinator');
  const coordinator = await buildCoordinator(coordinatorConfigFrom({ ...values, etcd: [etcd.url] }));
  onShutdown(() => coordinator.close());
  const address = await coordinator.listen();
  process.stderr.write(`switchyard: coordinator at ${address} (OpenAPI UI at ${address}/docs)\n`);
  if (values.metrics) process.stderr.write(`switchyard: coordinator metrics at ${address}/metrics\n`);

  if (!values['no-agent']) {
    const { startAgent } = await import('@switchyard/agent');
    const agent = await startAgent(agentConfigFrom({ ...values, etcd: [etcd.url] }));
    onShutdown(() => agent.stop());
    process.stderr.write(`switchyard: agent "${values['host-id']}" running (dataplane ${agent.dataplane})\n`);
    if (agent.metricsUrl) process.stderr.write(`switchyard: agent metrics at ${agent.metricsUrl}\n`);
  }
}
