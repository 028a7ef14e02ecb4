/**
 * GET /metrics (Prometheus text format) and the timing of every HTTP
 * request. The token rules apply to /metrics unless --metrics-public
 * (http/auth.ts); `metrics: false` in the config leaves this feature out.
 */
import fp from 'fastify-plugin';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { exposition, METRICS_CONTENT_TYPE } from '@switchyard/shared/metrics';
import type { CoordinatorContext, Feature } from '../context.js';
import { UNMATCHED_ROUTE } from './registry.js';

export function metricsFeature(ctx: CoordinatorContext): Feature {
  const metrics = ctx.metrics;
  const { httpDuration, registry } = metrics;
  const routes: FastifyPluginAsyncZod = async (app) => {
    app.addHook('onResponse', (request, reply, done) => {
      // The pattern (`/services/:id`), never the raw path: one series per route, whatever clients send.
      const route = request.routeOptions.url ?? UNMATCHED_ROUTE;
      metrics.countRequest(route, request.method, reply.statusCode);
      httpDuration.observe(route, reply.elapsedTime / 1000);
      done();
    });
    app.get('/metrics', { schema: { tags: ['meta'], summary: 'Prometheus metrics (text format 0.0.4)' } }, async (_request, reply) =>
      reply.type(METRICS_CONTENT_TYPE).send(await exposition(registry)),
    );
  };
  return {
    name: 'metrics',
    // fastify-plugin lifts the encapsulation: the hook must see every other
    // feature's routes, so this feature comes first in the list.
    routes: fp(routes),
  };
}
