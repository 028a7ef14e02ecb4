/**
 * --metrics-listen: GET /metrics on a bare node:http server (the agent keeps
 * no HTTP framework; one route needs none). Anything else is 404.
 */
import { createServer, type Server } from 'node:http';
import type { Logger } from 'pino';
import { exposition, METRICS_CONTENT_TYPE } from '@switchyard/shared/metrics';
import type { AgentMetrics } from './metrics.js';

export interface MetricsServer {
  /** `http://host:port/metrics` with the bound port. */
  url: string;
  close(): Promise<void>;
}

export async function serveMetrics(metrics: AgentMetrics, listen: { host: string; port: number }, log: Logger): Promise<MetricsServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: the agent serves GET /metrics only\n');
      return;
    }
    exposition(metrics.registry).then(
      (text) => res.writeHead(200, { 'content-type': METRICS_CONTENT_TYPE }).end(req.method === 'HEAD' ? undefined : text),
      (err: Error) => {
        log.error({ err: err.message }, 'metrics collection failed');
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`${err.message}\n`);
      },
    );
  });
  // Scrapers keep connections alive; they must not hold stop() up.
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as { port: number }).port;
  const host = listen.host.includes(':') ? `[${listen.host}]` : listen.host;
  const url = `http://${host}:${port}/metrics`;
  log.info({ url }, 'metrics listening');
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
