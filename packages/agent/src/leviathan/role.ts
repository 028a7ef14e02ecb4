/**
 * The topology reconciler as an agent role; startAgent adds it next to L4.
 * It takes the agent's etcd client, keys, host id, --netns and logger, but
 * NOT the agent's runner: that one runs every command under
 * `ip netns exec <netns>`, and `ip netns add` run that way creates a
 * namespace invisible to everyone else (the bind mount stays in ip's
 * private mount namespace). The role addresses namespaces with `ip -n`
 * itself and runs nft in the host namespace through the runner's per-call
 * netns. With `--dataplane dry-run` it plans and logs, and runs nothing.
 */
import { pythonAvailable } from '../exec/python.js';
import { ExecaRunner, type Runner } from '../exec/runner.js';
import type { RoleProgress } from '../metrics.js';
import type { AgentRole, RoleContext } from '../role.js';
import { commandsFor, execute } from './execute.js';
import { desiredFor } from './model.js';
import { observeTopology } from './observe.js';
import { plan } from './plan.js';
import { startTopology, type RunningTopology } from './reconciler.js';

export class TopologyRole implements AgentRole {
  readonly name = 'topology';
  private running?: RunningTopology;
  private readonly runner: Runner;
  private readonly dryRun: boolean;

  constructor(private readonly ctx: RoleContext, runner?: Runner) {
    // A fake (tests) is used as is; the real one by the same runner (and spawn helper) without a default netns.
    this.runner = runner ?? (ctx.runner instanceof ExecaRunner ? ctx.runner.withNetns(undefined) : ctx.runner);
    this.dryRun = ctx.config.dataplane === 'dry-run';
  }

  async start(): Promise<void> {
    const { config, etcd, keys, log } = this.ctx;
    this.running = await startTopology({
      etcd,
      keys,
      hostId: config.hostId,
      netns: config.netns,
      ...(config.underlayAddress ? { underlay: config.underlayAddress } : {}),
      ...(config.underlayInterface ? { underlayInterface: config.underlayInterface } : {}),
      log,
      runner: this.runner,
      resyncMs: config.resyncMs,
      minSyncIntervalMs: config.minSyncIntervalMs,
      leaseTtlSeconds: config.leaseTtlSeconds,
      dryRun: this.dryRun,
      observer: this.ctx.syncObserver(this.name),
    });
  }

  progress(): RoleProgress | undefined {
    const r = this.running;
    if (!r) return undefined;
    return { seenRevision: r.seenRevision, appliedRevision: r.appliedRevision, dataplane: this.dryRun ? 'dry-run' : 'netns', objects: r.objects };
  }

  async stop({ flush }: { flush: boolean }): Promise<void> {
    await this.running?.stop();
    if (!flush) return;
    // --flush-on-exit: remove the role's host links and nft table; namespaces stay (containers may still use them).
    if (this.dryRun) {
      this.ctx.log.info({ component: 'topology' }, 'dry-run: flush on exit would remove the host links and nft table of the role; nothing done');
      return;
    }
    const none = desiredFor({ hostId: this.ctx.config.hostId, underlays: new Map(), cens: [], cins: [], containers: [] });
    const o = await observeTopology(this.runner, this.ctx.config.netns, [], pythonAvailable() ? 'netlink' : 'ip');
    const ops = plan(none, { ...o, namespaces: new Set() }, { created: new Set(), knownCens: new Set() });
    await execute(this.runner, commandsFor(ops, pythonAvailable() ? 'netlink' : 'batched', this.ctx.config.netns));
  }
}
