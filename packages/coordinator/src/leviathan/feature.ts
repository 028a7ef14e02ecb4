/**
 * Container networks (Leviathan) as one coordinator feature: the REST routes,
 * the `/leviathan/monitor` websocket, and the mirrors both read.
 */
import type { CoordinatorContext, Feature } from '../context.js';
import { MonitorHub } from './monitor.js';
import { LeviathanRepository } from './repository.js';
import { leviathanRoutes } from './routes.js';

export function leviathanFeature(ctx: CoordinatorContext): Feature {
  const repo = new LeviathanRepository(ctx);
  const monitors = new MonitorHub(repo, ctx.log.child({ component: 'leviathan-monitor' }), { pingIntervalMs: ctx.config.pingIntervalMs });
  return {
    name: 'leviathan',
    routes: leviathanRoutes(repo, ctx.config.defaultHost),
    websockets: { '/leviathan/monitor': monitors.handle },
    start: () => {
      monitors.start();
      void repo.start();
    },
    stop: async () => {
      monitors.stop();
      await repo.stop();
    },
  };
}
