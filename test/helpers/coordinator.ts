/**
 * A coordinator under test: built against the shared real etcd under a
 * prefix of its own, driven with inject() (no socket) unless listen() is called.
 */
import { buildCoordinator, type BuildDeps, type Coordinator, type CoordinatorConfigInput } from '../../packages/coordinator/src/index.js';
import { sharedEtcdUrl, uniquePrefix } from './etcd.js';

export async function testCoordinator(
  name: string,
  config: Partial<CoordinatorConfigInput> = {},
  deps: BuildDeps = {},
): Promise<Coordinator> {
  return buildCoordinator(
    {
      etcd: [sharedEtcdUrl()],
      prefix: uniquePrefix(name),
      listen: { host: '127.0.0.1', port: 0 },
      logLevel: 'silent',
      ...config,
    },
    deps,
  );
}
