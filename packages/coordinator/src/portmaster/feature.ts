/** Port allocation (Portmaster's API) as one coordinator feature. */
import type { CoordinatorContext, Feature } from '../context.js';
import { PortmasterRepository } from './repository.js';
import { portmasterRoutes } from './routes.js';

/** `repo` is given when another feature reads its mirror too (the dashboard). */
export function portmasterFeature(ctx: CoordinatorContext, repo = new PortmasterRepository(ctx)): Feature {
  return {
    name: 'portmaster',
    routes: portmasterRoutes(repo, ctx.metrics),
    // Must not block on etcd: the first request waits for the first list instead.
    start: () => void repo.start(),
    stop: () => repo.stop(),
  };
}
