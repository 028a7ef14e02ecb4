/**
 * What the topology role follows in etcd: the Leviathan desired state
 * (`lev/`: CENs, CINs, containers) and the hosts' records (`lev-hosts/`:
 * every agent's underlay address, and the namespaces THIS agent created).
 * Two watch-fed mirrors; `snapshot()` is the planner's input.
 */
import type { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';
import { LevUnderlay, PrefixMirror, StoredCen, StoredCin, StoredContainer, type Keyspace } from '@switchyard/shared';
import { listErrorLogger } from '../log.js';

type Desired = { kind: 'cen'; value: StoredCen } | { kind: 'cin'; value: StoredCin } | { kind: 'container'; value: StoredContainer };
type HostRec = { kind: 'underlay'; hostId: string; address: string } | { kind: 'created'; ns: string } | { kind: 'other' };

export interface TopologySnapshot {
  /** The desired state's etcd revision. */
  revision: number;
  cens: StoredCen[];
  cins: StoredCin[];
  containers: StoredContainer[];
  /** Host id → underlay address, for every agent that published one. */
  underlays: Map<string, string>;
  /** Namespaces this agent created (recorded before creation). */
  created: Set<string>;
}

export class TopologySources {
  private readonly desired: PrefixMirror<Desired>;
  private readonly hosts: PrefixMirror<HostRec>;
  private readonly isUnderlay: (key: string) => boolean;

  constructor(etcd: Etcd3, keys: Keyspace, hostId: string, log: Logger) {
    const k = keys.lev;
    this.isUnderlay = (key) => k.parseHostKey(key)?.kind === 'underlay';
    this.desired = new PrefixMirror<Desired>(etcd, {
      prefix: k.all,
      parse: (key, raw) => {
        const json = () => JSON.parse(raw.toString());
        if (k.parseCen(key)) return { kind: 'cen', value: StoredCen.parse(json()) };
        if (k.parseCin(key)) return { kind: 'cin', value: StoredCin.parse(json()) };
        if (k.parseContainer(key)) return { kind: 'container', value: StoredContainer.parse(json()) };
        return undefined;
      },
      onInvalid: (key, err) => log.warn({ key, err }, 'ignoring invalid Leviathan record'),
      onListError: listErrorLogger(log, k.all),
    });
    this.hosts = new PrefixMirror<HostRec>(etcd, {
      prefix: k.hosts,
      parse: (key, raw) => {
        const p = k.parseHostKey(key);
        if (p?.kind === 'underlay') return { kind: 'underlay', hostId: p.hostId, address: LevUnderlay.parse(JSON.parse(raw.toString())).address };
        if (p?.kind === 'created' && p.hostId === hostId) return { kind: 'created', ns: p.ns as string };
        return { kind: 'other' };
      },
      onInvalid: (key, err) => log.warn({ key, err }, 'ignoring invalid Leviathan host record'),
      onListError: listErrorLogger(log, k.hosts),
    });
  }

  /**
   * Lists both prefixes and follows them; `onChange` fires on every desired
   * change and on underlay changes (the agent's own `created/` writes do not
   * wake it).
   */
  async start(onChange: () => void): Promise<void> {
    this.desired.on('revision', onChange);
    this.desired.on('resync', onChange);
    this.hosts.on('change', (c: { key: string }) => {
      if (this.isUnderlay(c.key)) onChange();
    });
    this.hosts.on('resync', onChange);
    await Promise.all([this.desired.start(), this.hosts.start()]);
  }

  async stop(): Promise<void> {
    await Promise.all([this.desired.stop(), this.hosts.stop()]);
  }

  /** The newest revision of the desired state seen on the watch. */
  get revision(): number {
    return this.desired.revision;
  }

  snapshot(): TopologySnapshot {
    const s: TopologySnapshot = { revision: this.desired.revision, cens: [], cins: [], containers: [], underlays: new Map(), created: new Set() };
    for (const { value } of this.desired.entries.values()) {
      if (value.kind === 'cen') s.cens.push(value.value);
      else if (value.kind === 'cin') s.cins.push(value.value);
      else s.containers.push(value.value);
    }
    for (const { value } of this.hosts.entries.values()) {
      if (value.kind === 'underlay') s.underlays.set(value.hostId, value.address);
      else if (value.kind === 'created') s.created.add(value.ns);
    }
    return s;
  }
}
