/**
 * The coordinator's Prometheus metrics, one registry per coordinator (tests
 * run several in one process; the Node process metrics are process-wide, see
 * @switchyard/shared metrics.ts). Features count through `ctx.metrics`; the
 * metrics feature (feature.ts) times the HTTP requests and serves GET /metrics.
 *
 * Every label has a bounded set of values: routes are fastify's patterns
 * (`/services/:id`), never raw paths; DNS types and codes outside the names
 * below are counted as `other`.
 */
import { Counter, Gauge, Registry, type MetricObjectWithValues, type MetricType, type MetricValueWithName } from 'prom-client';
import type { SwitchyardError } from '@switchyard/shared';

/** The route label of a request no route matched (404s of unknown paths). */
export const UNMATCHED_ROUTE = 'unmatched';

/** Seconds; the hot reads answer in well under a millisecond, so the first buckets are fine. */
const HTTP_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

const QTYPE_NAMES: Record<number, string> = { 1: 'A', 2: 'NS', 5: 'CNAME', 6: 'SOA', 12: 'PTR', 15: 'MX', 16: 'TXT', 28: 'AAAA', 33: 'SRV', 255: 'ANY' };
const RCODE_NAMES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'];

/**
 * `switchyard_http_request_duration_seconds`: a histogram by route pattern,
 * kept in plain arrays and handed to the registry when scraped. prom-client's
 * Histogram hashes and validates the labels on every observe() — about 1 µs,
 * a measurable share of a GET that costs the server ~50 µs; here an
 * observation is a map lookup and a short scan of the bucket bounds.
 */
export class RouteDurations {
  readonly name = 'switchyard_http_request_duration_seconds';
  readonly help = 'Time from request received to response sent, by route pattern.';
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  /** Per route: counts per bucket (the last one is above every bound), sum, count. */
  private readonly routes = new Map<string, { buckets: number[]; sum: number; count: number }>();

  constructor(registry: Registry) {
    registry.registerMetric(this as never);
  }

  observe(route: string, seconds: number): void {
    let r = this.routes.get(route);
    if (!r) this.routes.set(route, (r = { buckets: new Array<number>(HTTP_BUCKETS.length + 1).fill(0), sum: 0, count: 0 }));
    let i = 0;
    while (i < HTTP_BUCKETS.length && seconds > HTTP_BUCKETS[i]) i++;
    r.buckets[i]++;
    r.sum += seconds;
    r.count++;
  }

  /** What the registry prints: cumulative `_bucket{le}` series, `_sum` and `_count`, per route. */
  get(): Promise<MetricObjectWithValues<MetricValueWithName<'route' | 'le'>>> {
    const values: MetricValueWithName<'route' | 'le'>[] = [];
    for (const [route, r] of this.routes) {
      let acc = 0;
      HTTP_BUCKETS.forEach((le, i) => {
        acc += r.buckets[i];
        values.push({ metricName: `${this.name}_bucket`, labels: { route, le }, value: acc });
      });
      values.push({ metricName: `${this.name}_bucket`, labels: { route, le: '+Inf' }, value: r.count });
      values.push({ metricName: `${this.name}_sum`, labels: { route }, value: r.sum });
      values.push({ metricName: `${this.name}_count`, labels: { route }, value: r.count });
    }
    // prom-client's typings call the type an enum; at run time (and in the text it prints) it is this string.
    const type = 'histogram' as unknown as MetricType;
    return Promise.resolve({ name: this.name, help: this.help, type, aggregator: 'sum', collect: () => undefined, values });
  }

  reset(): void {
    this.routes.clear();
  }
}

export type EtcdErrorKind = 'timeout' | 'unavailable' | 'rejected' | 'other';

export class CoordinatorMetrics {
  readonly registry = new Registry();

  /**
   * Requests by route, method and status, counted in a plain map and handed
   * to prom-client when scraped: its inc() validates and hashes the labels on
   * every call, which is a measurable share of a sub-millisecond GET.
   */
  private readonly requestCounts = new Map<string, { labels: { route: string; method: string; status: string }; n: number }>();

  readonly httpDuration = new RouteDurations(this.registry);

  readonly etcdErrors = new Counter({
    name: 'switchyard_etcd_errors_total',
    help: 'etcd operations behind requests that failed: timeout (incl. writes of unknown outcome), unavailable (refused: no member answers), rejected (request too large), other.',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });

  readonly portOffers = new Counter({
    name: 'switchyard_port_offers_total',
    help: 'Portmaster offer requests by result: offered, or the refusal (exhausted, name_exists, invalid, busy, service_not_found, error).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  readonly dnsQueries = new Counter({
    name: 'switchyard_dns_queries_total',
    help: 'DNS queries answered by the built-in responder, by question type and response code.',
    labelNames: ['qtype', 'rcode'] as const,
    registers: [this.registry],
  });

  private providers: () => number = () => 0;
  private monitors: () => number = () => 0;

  constructor() {
    const counts = this.requestCounts;
    new Counter({
      name: 'switchyard_http_requests_total',
      help: 'HTTP requests answered, by route pattern, method and status code.',
      labelNames: ['route', 'method', 'status'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const { labels, n } of counts.values()) this.inc(labels, n);
      },
    });
    // Read when scraped from the feature that owns the connections: no count to keep in step.
    const providers = () => this.providers();
    const monitors = () => this.monitors();
    new Gauge({
      name: 'switchyard_providers_connected',
      help: 'skyapi providers connected to this coordinator (GET /provide websockets holding a record).',
      registers: [this.registry],
      collect() {
        this.set(providers());
      },
    });
    new Gauge({
      name: 'switchyard_monitors_connected',
      help: 'Leviathan monitor websockets connected to this coordinator.',
      registers: [this.registry],
      collect() {
        this.set(monitors());
      },
    });
  }

  /** One answered request (the metrics feature's response hook). */
  countRequest(route: string, method: string, status: number): void {
    const key = `${route} ${method} ${status}`;
    const entry = this.requestCounts.get(key);
    if (entry) entry.n++;
    else this.requestCounts.set(key, { labels: { route, method, status: String(status) }, n: 1 });
  }

  /** The discovery feature tells where its live provider count is. */
  countProviders(count: () => number): void {
    this.providers = count;
  }

  /** The leviathan feature tells where its live monitor connection count is. */
  countMonitors(count: () => number): void {
    this.monitors = count;
  }

  /** Counts a failed etcd operation (errors that are not etcd's are not counted). */
  etcdError(e: SwitchyardError): void {
    const kind = etcdErrorKind(e);
    if (kind) this.etcdErrors.inc({ kind });
  }

  dnsQuery(qtype: number, rcode: number): void {
    this.dnsQueries.inc({ qtype: QTYPE_NAMES[qtype] ?? 'other', rcode: RCODE_NAMES[rcode] ?? 'other' });
  }
}

/** The kind of an etcd failure as etcdCall reports it; undefined for errors of our own making. */
export function etcdErrorKind(e: SwitchyardError): EtcdErrorKind | undefined {
  switch (e.code) {
    case 'ETCD_UNAVAILABLE':
      // withTimeout's deadline (ours) vs. the client's own verdict that the cluster is unreachable.
      return /timed out/.test(e.message) ? 'timeout' : 'unavailable';
    case 'OUTCOME_UNKNOWN':
      // Sent, and no answer within the deadline (a 504).
      return 'timeout';
    case 'TOO_LARGE':
      return 'rejected';
    case 'INTERNAL':
      return 'other';
    default:
      return undefined;
  }
}
