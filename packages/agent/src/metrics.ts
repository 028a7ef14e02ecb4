/**
 * The agent's Prometheus metrics (served by metrics-server.ts with
 * --metrics-listen). Sync passes are timed and counted as they end (the
 * SyncLoop reports them); revisions and object counts are read from the roles
 * when scraped, so nothing has to be kept in step.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { SyncObserver } from './loop.js';

/** What a role tells the metrics when scraped. */
export interface RoleProgress {
  /** The newest revision of its desired state the role has seen (its watch). */
  seenRevision: number;
  /** The revision it has applied (0 before the first sync). */
  appliedRevision: number;
  /** The `dataplane` label of its objects: ipvs, nftables, dry-run (L4) or netns (topology). */
  dataplane: string;
  /** What it keeps in that dataplane, by kind (service, server; cen, cin, container). */
  objects: Record<string, number>;
  /** L4 only: health-check probes run so far by result, and servers this host finds unhealthy. */
  health?: { checks: { ok: number; failed: number; inconclusive: number }; unhealthy: number; delayMs: number; probes: number };
  /** L4 on nftables: connection-feedback rounds so far (and those whose read failed), pick changes, services it follows. */
  feedback?: { rounds: number; failed: number; changes: number; services: number };
}

export interface MetricSources {
  /** The host's applied revision, as reported at /hosts/<id>. */
  appliedRevision(): number;
  roles(): { name: string; progress?(): RoleProgress | undefined }[];
}

/** Seconds; an incremental pass is milliseconds, a full one at 10,000 services seconds. */
const SYNC_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export class AgentMetrics {
  readonly registry = new Registry();
  private sources?: MetricSources;

  private readonly syncDuration = new Histogram({
    name: 'switchyard_agent_sync_duration_seconds',
    help: 'Duration of sync passes, by role and by full (compared against the kernel) or incremental.',
    labelNames: ['role', 'full'] as const,
    buckets: SYNC_BUCKETS,
    registers: [this.registry],
  });

  private readonly syncErrors = new Counter({
    name: 'switchyard_agent_sync_errors_total',
    help: 'Sync passes (or kernel reads before a full pass) that failed, by role.',
    labelNames: ['role'] as const,
    registers: [this.registry],
  });

  constructor() {
    const progress = () => (this.sources?.roles() ?? []).flatMap((r) => r.progress?.() ?? []);
    const applied = () => this.sources?.appliedRevision() ?? 0;
    new Gauge({
      name: 'switchyard_agent_applied_revision',
      help: 'The etcd revision whose desired state this host has applied (as reported at GET /hosts/<id>).',
      registers: [this.registry],
      collect() {
        this.set(applied());
      },
    });
    new Gauge({
      name: 'switchyard_agent_revision_lag',
      help: 'Revisions of desired state seen on the watch but not yet applied (the largest over roles; 0 when caught up).',
      registers: [this.registry],
      collect() {
        this.set(Math.max(0, ...progress().map((p) => p.seenRevision - p.appliedRevision)));
      },
    });
    const unhealthy: Gauge = new Gauge({
      name: 'switchyard_agent_servers_unhealthy',
      help: 'Real servers this host finds unhealthy (out of the pick here, unless their whole pool is down).',
      registers: [this.registry],
      collect: () => {
        unhealthy.set(this.progressOf().reduce((n, p) => n + (p.health?.unhealthy ?? 0), 0));
      },
    });
    const delay: Gauge = new Gauge({
      name: 'switchyard_agent_health_check_delay_seconds',
      help: 'How late health checks start behind their schedule (the worst in the last second). Above zero for long: more checks than this host can run at their interval.',
      registers: [this.registry],
      collect: () => {
        delay.set(Math.max(0, ...this.progressOf().map((p) => (p.health?.delayMs ?? 0) / 1000)));
      },
    });
    const probes: Gauge = new Gauge({
      name: 'switchyard_agent_health_probes',
      help: 'Distinct health probes this host runs each interval (servers that several services check the same way share one).',
      registers: [this.registry],
      collect: () => {
        probes.set(this.progressOf().reduce((n, p) => n + (p.health?.probes ?? 0), 0));
      },
    });
    new Gauge({
      name: 'switchyard_agent_objects',
      help: 'Objects the agent keeps, by dataplane and kind.',
      labelNames: ['dataplane', 'kind'] as const,
      registers: [this.registry],
      collect() {
        // A dataplane or kind that is gone must not linger with its last value.
        this.reset();
        for (const p of progress()) for (const [kind, n] of Object.entries(p.objects)) this.set({ dataplane: p.dataplane, kind }, n);
      },
    });
  }

  /** Health checks (L4): counters read from the checker when scraped. */
  private readonly healthChecks = new Counter({
    name: 'switchyard_agent_health_checks_total',
    help: 'Health-check probes of real servers by result: ok, failed, or inconclusive (the prober itself failed; counted neither way).',
    labelNames: ['result'] as const,
    registers: [this.registry],
    collect: () => {
      const h = this.progressOf().find((p) => p.health)?.health;
      if (!h) return;
      for (const result of ['ok', 'failed', 'inconclusive'] as const) {
        // A counter only goes up: hand prom-client the difference since the last scrape.
        const seen = this.healthSeen[result];
        if (h.checks[result] > seen) this.healthChecks.inc({ result }, h.checks[result] - seen);
        this.healthSeen[result] = h.checks[result];
      }
    },
  });
  private readonly healthSeen = { ok: 0, failed: 0, inconclusive: 0 };

  /** Connection feedback (L4 on nftables): counters read from the feedback when scraped. */
  private readonly feedbackRounds = new Counter({
    name: 'switchyard_agent_feedback_rounds_total',
    help: 'Connection-feedback rounds (conntrack read, least-connection and threshold picks), by result: ok, or failed (the read failed; picks stayed).',
    labelNames: ['result'] as const,
    registers: [this.registry],
    collect: () => {
      const f = this.progressOf().find((p) => p.feedback)?.feedback;
      if (!f) return;
      const now = { ok: f.rounds - f.failed, failed: f.failed };
      for (const result of ['ok', 'failed'] as const) {
        if (now[result] > this.feedbackSeen[result]) this.feedbackRounds.inc({ result }, now[result] - this.feedbackSeen[result]);
        this.feedbackSeen[result] = now[result];
      }
    },
  });
  private readonly feedbackChanges = new Counter({
    name: 'switchyard_agent_feedback_pick_changes_total',
    help: 'Services whose servers for new connections the connection feedback changed (each one an nft element change).',
    registers: [this.registry],
    collect: () => {
      const f = this.progressOf().find((p) => p.feedback)?.feedback;
      if (!f) return;
      if (f.changes > this.feedbackSeen.changes) this.feedbackChanges.inc(f.changes - this.feedbackSeen.changes);
      this.feedbackSeen.changes = f.changes;
    },
  });
  private readonly feedbackSeen = { ok: 0, failed: 0, changes: 0 };

  private progressOf(): RoleProgress[] {
    return (this.sources?.roles() ?? []).flatMap((r) => r.progress?.() ?? []);
  }

  /** The agent names its roles and status once they exist. */
  observe(sources: MetricSources): void {
    this.sources = sources;
  }

  /** What a role's SyncLoop reports to. */
  syncObserver(role: string): SyncObserver {
    return {
      synced: (full, seconds) => this.syncDuration.observe({ role, full: String(full) }, seconds),
      failed: () => this.syncErrors.inc({ role }),
    };
  }
}
