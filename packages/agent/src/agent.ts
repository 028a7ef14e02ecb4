/**
 * The agent daemon: one per host. It registers under a lease, follows etcd
 * and keeps this host's kernel equal to the desired state, role by role:
 *
 *   l4        L4 services (IPVS or nftables), reporting what it applied to
 *             `<p>/hosts/<id>/status`;
 *   topology  container networks (Leviathan CENs and CINs: namespaces,
 *             bridges, veths, VXLAN, addresses), reporting to
 *             `<p>/lev-status/<id>`.
 *
 * `--dataplane dry-run` holds for both: they plan and log, and change nothing.
 *
 * Stopping (SIGTERM) leaves every rule in place so traffic keeps flowing
 * through restarts and upgrades; `flushOnExit` removes what the agent owns.
 */
import type { Logger } from 'pino';
import { checkEtcdAccess, createEtcdClient, keyspace, loadEtcdAccess, parseEtcdHosts, VERSION, wantsAccessCheck, type AgentRegistration, type Dataplane } from '@switchyard/shared';
import { AgentConfig, type AgentConfigInput } from './config.js';
import { ConntrackAdapter } from './adapters/conntrack.js';
import { ExecaRunner, type Runner } from './exec/runner.js';
import { L4Role } from './l4/role.js';
import { selectDataplane } from './l4/select.js';
import { inThreadHealthChecks, threadedHealthChecks, type Prober } from './l4/health/index.js';
import { createLogger } from './log.js';
import { HeapCompactor } from './memory.js';
import { Registration } from './registration.js';
import type { AgentRole, RoleContext } from './role.js';
import type { SyncObserver } from './loop.js';
import type { MetricsServer } from './metrics-server.js';
import { StatusReporter } from './status.js';
import { TopologyRole } from './leviathan/role.js';

export interface RunningAgent {
  /** The dataplane actually in use (auto resolved). */
  dataplane: Dataplane;
  status: StatusReporter;
  /** GET /metrics URL with --metrics-listen (the bound port). */
  metricsUrl?: string;
  stop(): Promise<void>;
}

export interface AgentDeps {
  /** Run commands with this runner (tests: a FakeRunner). */
  runner?: Runner;
  logger?: Logger;
  /** Run health checks in this thread with this prober (default: a worker thread probing from the host, or from `--netns`). */
  prober?: Prober;
}

/** Sync passes reported to nobody (no --metrics-listen). */
const NO_METRICS: SyncObserver = { synced: () => undefined, failed: () => undefined };

export async function startAgent(input: AgentConfigInput, deps: AgentDeps = {}): Promise<RunningAgent> {
  const config = AgentConfig.parse(input);
  if (config.nftDrIngress && config.nftDrDevice === undefined) throw new Error('--nft-dr-ingress needs --nft-dr-device (the interface the real servers are on)');
  const log = deps.logger ?? createLogger(config.logLevel, config.hostId, config.logFormat);
  const own = deps.runner ? undefined : new ExecaRunner({ ...(config.netns ? { netns: config.netns } : {}), helper: config.spawnHelper, logger: log.child({ component: 'exec' }) });
  const runner = deps.runner ?? (own as ExecaRunner);
  if (config.netns) {
    const res = await runner.run('true', [], { allowFail: true });
    if (res.exitCode !== 0) throw new Error(`network namespace "${config.netns}" is not usable: ${res.stderr.trim()}`);
  }
  const keys = keyspace(config.prefix);
  const etcdHosts = parseEtcdHosts(config.etcd);
  const access = loadEtcdAccess(config);
  // A refused password or TLS handshake fails the start; etcd merely away does not.
  if (wantsAccessCheck(etcdHosts, access)) await checkEtcdAccess(etcdHosts, access, keys.l4.current);
  const etcd = createEtcdClient({ hosts: etcdHosts, access });
  const l4 = await selectDataplane(config, runner, etcd, keys, log);
  const status = new StatusReporter(etcd, keys, config.hostId, l4.name, log.child({ component: 'status' }));
  // prom-client and the endpoint are loaded only for --metrics-listen: an agent without it keeps no metrics.
  const metrics = config.metricsListen ? new (await import('./metrics.js')).AgentMetrics() : undefined;
  const compactor = new HeapCompactor(log.child({ component: 'memory' }));
  const syncObserver = (role: string) => compactor.wrap(metrics?.syncObserver(role) ?? NO_METRICS);
  const ctx: RoleContext = { config, etcd, keys, runner, status, log, syncObserver };
  // nftables counts connections for least-connection schedulers and thresholds through conntrack (l4/feedback).
  const connections = l4.name === 'nftables' && config.nftFeedbackIntervalMs > 0 ? new ConntrackAdapter(runner, config.netns) : undefined;
  const roles: AgentRole[] = [
    new L4Role(
      etcd,
      keys,
      config,
      l4,
      status,
      log.child({ component: 'l4' }),
      deps.prober ? inThreadHealthChecks(deps.prober) : threadedHealthChecks(config.netns, log.child({ component: 'health' })),
      syncObserver('l4'),
      connections,
    ),
    new TopologyRole(ctx),
  ];
  metrics?.observe({ appliedRevision: () => status.current()?.appliedRevision ?? 0, roles: () => roles });
  const record: AgentRegistration = {
    id: config.hostId,
    dataplane: l4.name,
    version: VERSION,
    startedAt: new Date().toISOString(),
    pid: process.pid,
    ...(config.netns ? { netns: config.netns } : {}),
    roles: roles.map((r) => r.name),
  };
  // Before anything runs: a taken port must fail the start, not leave roles behind.
  let metricsServer: MetricsServer | undefined;
  if (metrics && config.metricsListen) {
    const { serveMetrics } = await import('./metrics-server.js');
    metricsServer = await serveMetrics(metrics, config.metricsListen, log.child({ component: 'metrics' })).catch((e: unknown) => {
      etcd.close();
      throw e;
    });
  }
  const registration = new Registration(etcd, keys, record, config.leaseTtlSeconds, log.child({ component: 'registration' }));
  registration.start();
  for (const r of roles) await r.start();
  compactor.start();
  log.info({ dataplane: l4.name, netns: config.netns, roles: record.roles }, 'agent started');

  let stopping: Promise<void> | undefined;
  return {
    dataplane: l4.name,
    status,
    ...(metricsServer ? { metricsUrl: metricsServer.url } : {}),
    stop() {
      stopping ??= (async () => {
        await metricsServer?.close();
        for (const r of [...roles].reverse()) {
          try {
            await r.stop({ flush: config.flushOnExit });
          } catch (err) {
            log.error({ role: r.name, err: (err as Error).message }, 'role did not stop cleanly');
          }
        }
        compactor.stop();
        await status.stop();
        await registration.stop();
        own?.close();
        etcd.close();
        log.info({ flushed: config.flushOnExit }, 'agent stopped');
      })();
      return stopping;
    },
  };
}
