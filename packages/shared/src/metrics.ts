/**
 * Prometheus exposition shared by the coordinator and the agent (imported as
 * `@switchyard/shared/metrics`, so CLI commands that load the package index do
 * not load prom-client). Each daemon keeps its own metrics in a registry of
 * its own (several coordinators may live in one test process); the Node process metrics
 * (`process_resident_memory_bytes`, `nodejs_eventloop_lag_seconds`, …) are
 * in one registry per process, because collecting them installs event-loop
 * and GC observers that must not be installed twice.
 */
import { collectDefaultMetrics, Registry } from 'prom-client';

let processRegistry: Registry | undefined;

/** The process-wide registry of the default Node metrics (made on first use). */
export function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

/** Prometheus text format 0.0.4. */
export const METRICS_CONTENT_TYPE = Registry.PROMETHEUS_CONTENT_TYPE;

/** The text a scrape gets: the process metrics, then the daemon's own. */
export async function exposition(own: Registry): Promise<string> {
  return (await processMetrics().metrics()) + '\n' + (await own.metrics());
}
