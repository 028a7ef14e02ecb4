/** The Portmaster-compatible port allocation feature of the coordinator. */
import type { Feature } from '../app.js';
import type { CoordinatorContext } from '../context.js';
import { PortmasterRepository } from './repository.js';
import { portmasterRoutes } from './routes.js';

export { PortmasterRepository } from './repository.js';

export function portmasterFeature(ctx: CoordinatorContext, repo = new PortmasterRepository(ctx)): Feature {
  return {
    name: 'portmaster',
    routes: portmasterRoutes(repo),
    // Must not block on etcd: the first request waits for the first list instead.
    start: () => void repo.start(),
    stop: () => repo.stop(),
  };
}
