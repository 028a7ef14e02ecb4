/** GET /hosts: what each agent reports, as one coordinator feature. */
import type { CoordinatorContext, Feature } from '../context.js';
import { hostRoutes, type HostDirectory } from './routes.js';

export function hostsFeature(_ctx: CoordinatorContext, directory: HostDirectory): Feature {
  return {
    name: 'hosts',
    routes: hostRoutes(directory),
    start: () => void directory.start(),
    stop: () => directory.stop(),
  };
}
