/** GET /healthz: 200 when etcd answers, 503 when it does not (no token needed: see http/auth.ts). */
import { z } from 'zod';
import { SwitchyardError, VERSION, withTimeout } from '@switchyard/shared';
import type { CoordinatorContext, Feature } from '../context.js';

/** A dead cluster must be reported within this, whatever --etcd-timeout says (load balancers probe often). */
const HEALTH_DEADLINE_MS = 2500;

export function healthzFeature(ctx: CoordinatorContext): Feature {
  return {
    name: 'healthz',
    routes: async (app) => {
      app.get(
        '/healthz',
        {
          schema: {
            tags: ['meta'],
            summary: '200 when etcd answers, 503 when it does not',
            response: { 200: z.object({ status: z.literal('ok'), etcdRevision: z.int(), version: z.string() }) },
          },
        },
        async () => {
          const res = await withTimeout(
            ctx.etcd.get(`${ctx.keys.prefix}/healthz`).exec().catch((e) => {
              throw new SwitchyardError('ETCD_UNAVAILABLE', `etcd is unavailable: ${(e as Error).message}`);
            }),
            HEALTH_DEADLINE_MS,
            'health check',
          ).catch((e: SwitchyardError) => {
            ctx.metrics.etcdError(e);
            throw e;
          });
          return { status: 'ok' as const, etcdRevision: Number(res.header.revision), version: VERSION };
        },
      );
    },
  };
}
