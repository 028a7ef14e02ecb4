/**
 * What the agent reports at `<p>/hosts/<id>/status`: the revision whose
 * desired state it has applied, when, and per-service errors and warnings.
 * Writes are coalesced (at most one in flight; the latest state wins) and a
 * failed write is retried, so an etcd outage never blocks a sync.
 */
import type { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';
import type { AgentStatus, Dataplane, HostHealth, Keyspace, ServiceReport } from '@switchyard/shared';

export interface RoleStatus {
  appliedRevision: number;
  lastSync: string;
  lastFullSync?: string;
  services: number;
  reports: ServiceReport[];
  health?: HostHealth;
}

export class StatusReporter {
  private readonly roles = new Map<string, RoleStatus>();
  private writing?: Promise<void>;
  private dirty = false;
  private retry?: NodeJS.Timeout;
  private stopped = false;
  /** The last status written successfully. */
  written?: AgentStatus;

  constructor(
    private readonly etcd: Etcd3,
    private readonly keys: Keyspace,
    private readonly hostId: string,
    private readonly dataplane: Dataplane,
    private readonly log: Logger,
  ) {}

  /** A role reports its state; the host's applied revision is the lowest of its roles'. */
  update(role: string, status: RoleStatus): void {
    this.roles.set(role, status);
    this.dirty = true;
    void this.flush();
  }

  current(): AgentStatus | undefined {
    const all = [...this.roles.values()];
    if (all.length === 0) return undefined;
    const reports = all.flatMap((r) => r.reports);
    const fulls = all.map((r) => r.lastFullSync).filter((x): x is string => x !== undefined);
    const health = all.find((r) => r.health)?.health;
    return {
      id: this.hostId,
      dataplane: this.dataplane,
      appliedRevision: Math.min(...all.map((r) => r.appliedRevision)),
      lastSync: all.map((r) => r.lastSync).sort().at(-1) as string,
      ...(fulls.length > 0 ? { lastFullSync: fulls.sort()[0] } : {}),
      services: all.reduce((n, r) => n + r.services, 0),
      errors: reports.filter((r) => r.level === 'error'),
      warnings: reports.filter((r) => r.level === 'warning'),
      ...(health ? { health } : {}),
    };
  }

  private flush(): Promise<void> {
    this.writing ??= (async () => {
      while (this.dirty && !this.stopped) {
        this.dirty = false;
        const status = this.current();
        if (!status) break;
        try {
          await this.etcd.put(this.keys.hosts.status(this.hostId)).value(JSON.stringify(status));
          this.written = status;
        } catch (err) {
          this.log.warn({ err: (err as Error).message }, 'status write failed; retrying');
          this.dirty = true;
          clearTimeout(this.retry);
          this.retry = setTimeout(() => void this.flush(), 1000);
          break;
        }
      }
    })().finally(() => {
      this.writing = undefined;
    });
    return this.writing;
  }

  async stop(): Promise<void> {
    await this.writing;
    this.stopped = true;
    clearTimeout(this.retry);
  }
}
