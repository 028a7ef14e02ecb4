/**
 * The etcd client the allocation mirror lists and watches with.
 *
 * The mirror lists every held port of every service in one range request
 * (PrefixMirror does not page). A full 40,000-port range is ~40,000 keys of
 * ~120 bytes, about 4.7 MB: over gRPC's default 4 MiB receive limit, and the
 * list would then fail forever. So this client allows large messages and a
 * longer deadline for the list (listing 36,000 port keys takes ~0.4 s here),
 * while the request path keeps the shared client's short deadlines. A paged
 * list in PrefixMirror would make this client unnecessary.
 */
import { ExponentialBackoff } from 'cockatiel';
import { Etcd3 } from 'etcd3';
import { parseEtcdHosts } from '@switchyard/shared';
import type { CoordinatorConfig } from '../config.js';

const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
const LIST_DEADLINE_MS = 15_000;

export function mirrorClient(config: CoordinatorConfig): Etcd3 {
  return new Etcd3({
    hosts: parseEtcdHosts(config.etcd),
    dialTimeout: Math.min(2000, config.etcdTimeoutMs),
    grpcOptions: { 'grpc.max_receive_message_length': MAX_MESSAGE_BYTES },
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + LIST_DEADLINE_MS }),
    // As the shared client: a broken watch comes back within a second or two of etcd.
    faultHandling: { watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 1500 }).next() },
  });
}
