/** Port allocation (Portmaster's API) as one coordinator feature. */
import type { CoordinatorContext, Feature } from '../context.js';
import { PortmasterRepository } from './repository.js';
import { portmasterRoutes } from './routes.js';

export function portmasterFeature(ctx: CoordinatorContext): Feature {
  const repo = new PortmasterRepository(ctx);
  return {
    name: 'portmaster',
    routes: portmasterRoutes(repo),
    // Must not block on etcd: the first request waits for the first list instead.
    start: () => void repo.start(),
    stop: () => repo.stop(),
  };
}
