/**
 * Long-lived connections (skyapi providers, Leviathan monitors) are told when
 * etcd stops answering and when it is back, instead of finding out by
 * silence. "Stops answering" is the member probes' verdict (no member answers
 * its probe, see ClusterMembers): a frozen follower or an election is not an
 * outage and sends nothing.
 */
import type { Etcd3 } from 'etcd3';
import { membersOf, SwitchyardError } from '@switchyard/shared';

export interface OutageHandlers {
  down(error: SwitchyardError): void;
  up(): void;
}

/** Subscribes; returns the unsubscribe. A client without probes never reports. */
export function onEtcdOutage(etcd: Etcd3, handlers: OutageHandlers): () => void {
  const members = membersOf(etcd);
  if (!members) return () => undefined;
  const down = () =>
    handlers.down(new SwitchyardError('ETCD_UNAVAILABLE', 'etcd is unavailable: no member answers; changes wait until it answers again'));
  const up = () => handlers.up();
  members.on('cluster-down', down);
  members.on('cluster-up', up);
  return () => {
    members.off('cluster-down', down);
    members.off('cluster-up', up);
  };
}
