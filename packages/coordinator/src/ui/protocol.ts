/**
 * What the dashboard feed (`/ui/feed`, a websocket) sends: one snapshot on
 * connect, then patches as the coordinator's watch-fed mirrors change. The
 * page (packages/coordinator/ui/) imports these types, so the two sides are
 * checked against one definition.
 *
 * Items are keyed (service id, host id, Portmaster service name, SkyDNS
 * key): a patch upserts `put` items and removes `del` keys; Leviathan's
 * small model travels whole.
 */
import type { CenView, CinView, Host, Service } from '@switchyard/shared';

/** An L4 service and the etcd revision that made it what it is (a host has applied it when its appliedRevision reaches it). */
export interface ServiceItem {
  rev: number;
  s: Service;
}

export interface PortHolder {
  port: number;
  name: string;
  created: string;
}

/** A Portmaster service with its open offers and its instances, by port. */
export interface PmServiceItem {
  name: string;
  description: string | null;
  start: number;
  end: number;
  offers: PortHolder[];
  instances: PortHolder[];
}

/** Where each container runs. */
export interface ContainerItem {
  contID: string;
  hostID: string;
}

export interface LevItem {
  cens: CenView[];
  cins: CinView[];
  containers: ContainerItem[];
}

/** A SkyDNS record: `live` when it is on a lease (a connected /provide client); plain records are static. */
export interface ProviderItem {
  key: string;
  name: string;
  host: string;
  port: number;
  live: boolean;
}

export interface Keyed<T> {
  put: T[];
  del: string[];
}

interface Heads {
  /** The revision the mirrors reflect. */
  revision: number;
  /** The newest revision that changed an L4 service: a host whose appliedRevision is below it lags. */
  l4Revision: number;
}

/**
 * The first message. With many services it carries only the first ones (by
 * id) so the page can draw its first screen at once; the rest follow in
 * `services` messages, sent right after it and before any patch.
 */
export interface Snapshot extends Heads {
  t: 'snapshot';
  services: ServiceItem[];
  /** How many services the whole snapshot holds. */
  totalServices: number;
  hosts: Host[];
  pm: PmServiceItem[];
  lev: LevItem;
  providers: ProviderItem[];
}

export interface Patch extends Heads {
  t: 'patch';
  services?: Keyed<ServiceItem>;
  hosts?: Keyed<Host>;
  pm?: Keyed<PmServiceItem>;
  lev?: LevItem;
  providers?: Keyed<ProviderItem>;
}

/** More of the snapshot's services; `last` on the final one. */
export interface MoreServices {
  t: 'services';
  services: ServiceItem[];
  last: boolean;
}

export type FeedMessage = Snapshot | MoreServices | Patch;
