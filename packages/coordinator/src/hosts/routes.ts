/**
 * GET /hosts and GET /hosts/:id: what each agent reports. `alive` means its
 * registration (on the agent's lease) exists; the status key outlives it so a
 * dead host's last applied revision stays visible.
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { AgentRegistration, AgentStatus, fail, Host, PrefixMirror } from '@switchyard/shared';
import type { CoordinatorContext } from '../context.js';
import { ConsistentReads } from '../store/consistent-reads.js';

type HostRecord = { kind: 'agent'; value: AgentRegistration } | { kind: 'status'; value: AgentStatus };

export class HostDirectory {
  readonly mirror: PrefixMirror<HostRecord>;
  private readonly reads: ConsistentReads;

  constructor(private readonly ctx: CoordinatorContext) {
    this.mirror = new PrefixMirror<HostRecord>(ctx.etcd, {
      prefix: ctx.keys.hosts.all,
      parse: (key, value) => {
        const k = ctx.keys.hosts.parse(key);
        if (!k) return undefined;
        const json = JSON.parse(value.toString());
        return k.kind === 'agent' ? { kind: 'agent', value: AgentRegistration.parse(json) } : { kind: 'status', value: AgentStatus.parse(json) };
      },
      onInvalid: (key, error) => ctx.log.warn({ key, err: error }, 'ignoring invalid host record in etcd'),
    });
    this.reads = new ConsistentReads(ctx, 'hosts', [this.mirror]);
  }

  start(): Promise<void> {
    return this.mirror.start();
  }

  stop(): Promise<void> {
    return this.mirror.stop();
  }

  /** One host from the mirror, or undefined when it has neither registration nor status. */
  build(id: string): Host | undefined {
    const reg = this.mirror.get(this.ctx.keys.hosts.agent(id))?.value;
    const st = this.mirror.get(this.ctx.keys.hosts.status(id))?.value;
    if (!reg && !st) return undefined;
    const agent = reg?.kind === 'agent' ? reg.value : undefined;
    const status = st?.kind === 'status' ? st.value : undefined;
    return {
      id,
      alive: agent !== undefined,
      dataplane: agent?.dataplane ?? status?.dataplane ?? null,
      version: agent?.version ?? null,
      startedAt: agent?.startedAt ?? null,
      appliedRevision: status?.appliedRevision ?? 0,
      lastSync: status?.lastSync ?? null,
      services: status?.services ?? 0,
      errors: status?.errors ?? [],
      warnings: status?.warnings ?? [],
      health: status?.health ?? null,
    };
  }

  async list(): Promise<Host[]> {
    await this.reads.ready();
    const ids = new Set<string>();
    for (const key of this.mirror.entries.keys()) {
      const k = this.ctx.keys.hosts.parse(key);
      if (k) ids.add(k.hostId);
    }
    return [...ids].sort().map((id) => this.build(id) as Host);
  }

  /** One host; a miss is checked against etcd's latest state (an agent may have registered a moment ago). */
  get(id: string): Promise<Host> {
    return this.reads.confirm(async () => {
      await this.reads.ready();
      const h = this.build(id);
      if (!h) throw fail('HOST_NOT_FOUND');
      return h;
    });
  }
}

export function hostRoutes(dir: HostDirectory): FastifyPluginAsyncZod {
  return async (app) => {
    const tags = ['hosts'];
    app.get('/hosts', { schema: { tags, summary: 'Agents and what they have applied', response: { 200: z.array(Host) } } }, () => dir.list());
    app.get(
      '/hosts/:id',
      { schema: { tags, summary: 'One agent', params: z.object({ id: z.string() }), response: { 200: Host } } },
      (req) => dir.get(req.params.id),
    );
  };
}
