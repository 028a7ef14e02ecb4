/**
 * L4 load balancing (Portal's API) as one coordinator feature. The
 * repository is made by the app and handed in, because discovery's `lb=`
 * providers write servers through it too.
 */
import type { CoordinatorContext, Feature } from '../context.js';
import type { L4Repository } from './repository.js';
import { l4Routes } from './routes.js';

export function l4Feature(_ctx: CoordinatorContext, repo: L4Repository): Feature {
  return {
    name: 'l4',
    routes: l4Routes(repo),
    // Must not block on etcd: the first request waits for the first list instead.
    start: () => void repo.start(),
    stop: () => repo.stop(),
  };
}
