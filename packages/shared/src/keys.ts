/**
 * The etcd key layout, in one place. Every key Switchyard reads or writes is
 * built here and parsed here; no other module concatenates key strings.
 *
 * Everything lives under a configurable prefix (default `/switchyard`), except
 * the SkyDNS records, whose location is fixed by what SkyDNS and CoreDNS's
 * etcd plugin read (`/skydns/<reversed domain>/...`).
 *
 *   <p>/l4/current                          the generation of services GET and agents read (plain id; absent = "0")
 *   <p>/l4/sets/<gen>/<serviceId>           L4 virtual service of generation <gen>, servers embedded (JSON)
 *   <p>/l4/gens/<gen>                       a generation being written by PUT /services (orphan finder)
 *   <p>/l4/pending/<gen>                    the same, on its writer's lease: gone = writer done or dead
 *   <p>/hosts/<hostId>/agent                agent registration, on the agent's lease
 *   <p>/hosts/<hostId>/status               what the agent has applied (JSON)
 *   <p>/hosts/<hostId>/owned/<dataplane>     kernel objects the agent created (JSON list), e.g. IPVS services
 *   <p>/pm/alloc/ranges                     all Portmaster services' ranges, the overlap guard
 *   <p>/pm/alloc/services/<name>            Portmaster service (JSON)
 *   <p>/pm/alloc/ports/<name>/<port:05d>    a held port: offer (on a lease) or instance (JSON)
 *   <p>/pm/names/<name>/<instance>          instance name -> port, uniqueness guard among instances
 *   <p>/pm/offer-names/<name>/<instance>    offered name -> port, uniqueness guard among open offers
 *                                           (an offer may carry an instance's name: accept refuses it)
 *   <p>/pm/offers/<name>/<secret>           open offer (on the same lease as its port)
 *   <p>/lev/cens/<cenId>                    CEN: members, wiring, made, VNI (JSON)
 *   <p>/lev/cins/<cinId>                    CIN: CENs, made, subnet + address allocations (JSON)
 *   <p>/lev/containers/<containerId>        container placement: host, tag, default route (JSON)
 *   <p>/lev/cpools/<cpoolId>                CPool (JSON)
 *   <p>/lev/pool                            CIN address pool settings (JSON; defaults when absent)
 *   <p>/lev/subnets/<index>                 CIN subnet guard -> cinId (uniqueness across the cluster)
 *   <p>/lev/epoch                           bumped by every Leviathan API write (the CAS guard)
 *   <p>/lev-status/<hostId>                 what the topology role applied (JSON; its own prefix, so
 *                                           reading every report reads nothing else)
 *   <p>/lev-hosts/<hostId>/underlay         agent's underlay address for VXLAN, on the agent's lease
 *   <p>/lev-hosts/<hostId>/created/<ns>     a namespace this host's agent created (it alone removes it)
 *   <p>/disco/lb/<serviceId>/<serverId>/owned          real server added by /provide?lb= (plain key)
 *   <p>/disco/lb/<serviceId>/<serverId>/regs/<connId> one live provider of it (on its coordinator's lease)
 *   /skydns/<tld>/<...>/<service>/<id>      SkyDNS record (JSON), on the coordinator's lease
 */
export const DEFAULT_PREFIX = '/switchyard';
export const SKYDNS_PREFIX = '/skydns';

function tail(key: string, base: string): string | undefined {
  if (!key.startsWith(base)) return undefined;
  const rest = key.slice(base.length);
  return rest.length > 0 ? rest : undefined;
}

/**
 * A set of records replaced as a whole, by generations (see
 * etcd/generations.ts): readers follow `root` and see only the records of
 * the generation `current` names; a replacement is written under a fresh
 * generation nobody reads yet, then `current` is switched in one small
 * transaction.
 */
export interface GenerationKeys {
  /** Everything: what a reader watches (current and every generation, one watch, one order). */
  root: string;
  current: string;
  /** Prefix of one generation's records. */
  set(gen: string): string;
  /** Generations registered by a writer and not yet switched to or abandoned. */
  registry: string;
  registered(gen: string): string;
  /** Writers' liveness markers, each on its writer's lease. */
  pendings: string;
  pending(gen: string): string;
  /** What a key under `root` is. */
  parse(key: string): { kind: 'current' } | { kind: 'record'; gen: string; rel: string } | { kind: 'registered' | 'pending'; gen: string } | undefined;
}

/** The generation in force while `current` has never been written. */
export const INITIAL_GENERATION = '0';

export function generationKeys(root: string): GenerationKeys {
  const sets = `${root}sets/`;
  return {
    root,
    current: `${root}current`,
    set: (gen) => `${sets}${gen}/`,
    registry: `${root}gens/`,
    registered: (gen) => `${root}gens/${gen}`,
    pendings: `${root}pending/`,
    pending: (gen) => `${root}pending/${gen}`,
    parse(key) {
      const rest = tail(key, root);
      if (rest === 'current') return { kind: 'current' };
      const m = rest && /^(sets|gens|pending)\/([^/]+)(?:\/(.+))?$/.exec(rest);
      if (!m) return undefined;
      if (m[1] === 'sets') return m[3] ? { kind: 'record', gen: m[2], rel: m[3] } : undefined;
      if (m[3] !== undefined) return undefined;
      return { kind: m[1] === 'gens' ? 'registered' : 'pending', gen: m[2] };
    },
  };
}

function normalisePrefix(prefix: string): string {
  const p = prefix.replace(/\/+$/, '');
  if (!p.startsWith('/')) throw new Error(`etcd prefix must start with "/": ${prefix}`);
  return p;
}

export type Keyspace = ReturnType<typeof keyspace>;

/** A parsed key under `<p>/pm/`. */
export type PmKey =
  | { kind: 'ranges' }
  | { kind: 'service'; service: string }
  | { kind: 'port'; service: string; port: number }
  | { kind: 'name'; service: string; instance: string }
  | { kind: 'offerName'; service: string; instance: string }
  | { kind: 'offer'; service: string; secret: string };

/** A key range an etcd role is granted: every key under `prefix`, or the one `key`. */
export type KeyRange = { prefix: string } | { key: string };

/** What one etcd role may do (`switchyard etcd-auth` grants exactly this). */
export interface RoleAccess {
  read: KeyRange[];
  readwrite: KeyRange[];
}

export function keyspace(prefix: string = DEFAULT_PREFIX) {
  const p = normalisePrefix(prefix);
  const l4 = generationKeys(`${p}/l4/`);
  const hosts = `${p}/hosts/`;
  const pm = `${p}/pm/`;
  const lev = `${p}/lev/`;
  const levHosts = `${p}/lev-hosts/`;
  const levStatus = `${p}/lev-status/`;
  return {
    prefix: p,

    /** L4 services, replaced as a whole by generations (PUT /services). */
    l4: {
      ...l4,
      service: (gen: string, id: string) => `${l4.set(gen)}${id}`,
      /** `{gen, id}` of a service key, or undefined. */
      parseService: (key: string): { gen: string; id: string } | undefined => {
        const k = l4.parse(key);
        return k?.kind === 'record' && !k.rel.includes('/') ? { gen: k.gen, id: k.rel } : undefined;
      },
    },

    hosts: {
      all: hosts,
      agent: (hostId: string) => `${hosts}${hostId}/agent`,
      status: (hostId: string) => `${hosts}${hostId}/status`,
      /** What the agent created in the kernel, for dataplanes whose objects carry no owner mark (IPVS). */
      owned: (hostId: string, dataplane: string) => `${hosts}${hostId}/owned/${dataplane}`,
      /** `{hostId, kind}` for a key under hosts/, or undefined. */
      parse: (key: string): { hostId: string; kind: 'agent' | 'status' } | undefined => {
        const rest = tail(key, hosts);
        const m = rest && /^([^/]+)\/(agent|status)$/.exec(rest);
        return m ? { hostId: m[1], kind: m[2] as 'agent' | 'status' } : undefined;
      },
    },

    pm: {
      all: pm,
      /**
       * What a coordinator mirrors: ranges, services, held ports. Names and
       * offers are guard keys that transactions compare and that are read on
       * demand, so the mirror holds one key per held port, not three.
       */
      mirrored: `${pm}alloc/`,
      ranges: `${pm}alloc/ranges`,
      services: `${pm}alloc/services/`,
      service: (name: string) => `${pm}alloc/services/${name}`,
      ports: (service: string) => `${pm}alloc/ports/${service}/`,
      /**
       * Ports are zero-padded to five digits so key order is port order: the
       * ports of a service below or above a range are one key range each,
       * which a transaction can compare in one predicate.
       */
      port: (service: string, port: number) => `${pm}alloc/ports/${service}/${String(port).padStart(5, '0')}`,
      names: (service: string) => `${pm}names/${service}/`,
      name: (service: string, instance: string) => `${pm}names/${service}/${instance}`,
      offerNames: (service: string) => `${pm}offer-names/${service}/`,
      offerName: (service: string, instance: string) => `${pm}offer-names/${service}/${instance}`,
      offers: (service: string) => `${pm}offers/${service}/`,
      offer: (service: string, secret: string) => `${pm}offers/${service}/${secret}`,
      /** What a key under pm/ is, or undefined for anything else. */
      parse: (key: string): PmKey | undefined => {
        const rest = tail(key, pm);
        if (rest === 'alloc/ranges') return { kind: 'ranges' };
        const m = rest && /^(alloc\/services|alloc\/ports|names|offer-names|offers)\/([^/]+)(?:\/([^/]+))?$/.exec(rest);
        if (!m) return undefined;
        const [, kind, service, leaf] = m;
        if (kind === 'alloc/services') return leaf === undefined ? { kind: 'service', service } : undefined;
        if (leaf === undefined) return undefined;
        if (kind === 'alloc/ports') return /^\d{5}$/.test(leaf) ? { kind: 'port', service, port: Number(leaf) } : undefined;
        if (kind === 'names') return { kind: 'name', service, instance: leaf };
        if (kind === 'offer-names') return { kind: 'offerName', service, instance: leaf };
        return { kind: 'offer', service, secret: leaf };
      },
    },

    lev: {
      /** Desired state written by the API (the agent's topology role follows this prefix). */
      all: lev,
      cens: `${lev}cens/`,
      cen: (id: string) => `${lev}cens/${id}`,
      parseCen: (key: string) => tail(key, `${lev}cens/`),
      cins: `${lev}cins/`,
      cin: (id: string) => `${lev}cins/${id}`,
      parseCin: (key: string) => tail(key, `${lev}cins/`),
      containers: `${lev}containers/`,
      container: (id: string) => `${lev}containers/${id}`,
      parseContainer: (key: string) => tail(key, `${lev}containers/`),
      cpools: `${lev}cpools/`,
      cpool: (id: string) => `${lev}cpools/${id}`,
      parseCpool: (key: string) => tail(key, `${lev}cpools/`),
      pool: `${lev}pool`,
      subnet: (index: number) => `${lev}subnets/${index}`,
      parseSubnet: (key: string) => {
        const t = tail(key, `${lev}subnets/`);
        return t && /^\d+$/.test(t) ? Number(t) : undefined;
      },
      epoch: `${lev}epoch`,
      /** What agents report, outside the desired-state prefix so their writes never wake themselves. */
      hosts: levHosts,
      /** Every agent's report, and nothing else: what a GET reads to show status. */
      statuses: levStatus,
      status: (hostId: string) => `${levStatus}${hostId}`,
      parseStatus: (key: string) => {
        const t = tail(key, levStatus);
        return t && !t.includes('/') ? t : undefined;
      },
      underlay: (hostId: string) => `${levHosts}${hostId}/underlay`,
      createdAll: (hostId: string) => `${levHosts}${hostId}/created/`,
      created: (hostId: string, ns: string) => `${levHosts}${hostId}/created/${ns}`,
      /** `{hostId, kind, ns?}` for a key under lev-hosts/, or undefined. */
      parseHostKey: (key: string): { hostId: string; kind: 'underlay' | 'created'; ns?: string } | undefined => {
        const rest = tail(key, levHosts);
        const m = rest && /^([^/]+)\/(?:(underlay)|created\/([^/]+))$/.exec(rest);
        if (!m) return undefined;
        return m[2] ? { hostId: m[1], kind: 'underlay' } : { hostId: m[1], kind: 'created', ns: m[3] };
      },
    },

    disco: {
      /** Everything /provide?lb= keeps: owned markers and live registrations. */
      lb: `${p}/disco/lb/`,
      lbOwned: (serviceId: string, serverId: string) => `${p}/disco/lb/${serviceId}/${serverId}/owned`,
      lbRegs: (serviceId: string, serverId: string) => `${p}/disco/lb/${serviceId}/${serverId}/regs/`,
      lbReg: (serviceId: string, serverId: string, connId: string) => `${p}/disco/lb/${serviceId}/${serverId}/regs/${connId}`,
      /** `{serviceId, serverId, kind, connId?}` for a key under disco/lb/, or undefined. */
      parseLb: (key: string): { serviceId: string; serverId: string; kind: 'owned' | 'reg'; connId?: string } | undefined => {
        const m = /^([^/]+)\/([^/]+)\/(?:(owned)|regs\/([^/]+))$/.exec(tail(key, `${p}/disco/lb/`) ?? '');
        if (!m) return undefined;
        return m[3] ? { serviceId: m[1], serverId: m[2], kind: 'owned' } : { serviceId: m[1], serverId: m[2], kind: 'reg', connId: m[4] };
      },
    },

    /**
     * The etcd roles of `switchyard etcd-auth`, derived from the layout above
     * so a new key kind cannot be left out of them unnoticed.
     */
    access: {
      /** Coordinators: everything under the prefix, and the SkyDNS records they publish. */
      coordinator: (): RoleAccess => ({ read: [], readwrite: [{ prefix: `${p}/` }, { prefix: `${SKYDNS_PREFIX}/` }] }),
      /**
       * One host's agent. It reads the desired state it applies (L4
       * generations, Leviathan), the servers providers hold (disco/lb, whose
       * health it leaves alone) and every host's Leviathan record (underlay
       * addresses for VXLAN); it writes only its own registration, status and
       * ownership (hosts/<id>/), its namespaces and underlay (lev-hosts/<id>/)
       * and its topology report. Never Portmaster (offer secrets), never
       * another host's keys, never desired state.
       */
      agent: (hostId: string): RoleAccess => ({
        read: [{ prefix: l4.root }, { prefix: `${p}/disco/lb/` }, { prefix: lev }, { prefix: levHosts }],
        readwrite: [{ prefix: `${hosts}${hostId}/` }, { prefix: `${levHosts}${hostId}/` }, { key: `${levStatus}${hostId}` }],
      }),
    },
  };
}

/**
 * SkyDNS record keys: `foo.services.skydns.local` with id X lives at
 * `/skydns/local/skydns/services/foo/X` (labels reversed).
 */
export const skydns = {
  /** Key prefix for every record under a DNS name (`foo.services.skydns.local`). */
  dirForName(name: string): string {
    const labels = name.replace(/\.$/, '').split('.').filter(Boolean).reverse();
    return `${SKYDNS_PREFIX}/${labels.join('/')}/`;
  },
  /** Key of one provider record. `categories` are given left-to-right as skyapi takes them. */
  recordKey(root: string, categories: string[], service: string, id: string): string {
    const rootLabels = root.replace(/\.$/, '').split('.').filter(Boolean).reverse();
    const catLabels = [...categories].reverse();
    return `${SKYDNS_PREFIX}/${[...rootLabels, ...catLabels, service, id].join('/')}`;
  },
  /** Path labels of a record key, zone apex first: `/skydns/local/skydns/services/foo/X` → `[local, skydns, services, foo, X]`. */
  labelsOfKey(key: string): string[] | undefined {
    const rest = tail(key, `${SKYDNS_PREFIX}/`);
    return rest ? rest.split('/').filter(Boolean) : undefined;
  },
  /** DNS name (without trailing dot) of a record key: `/skydns/local/skydns/services/foo/X` → `X.foo.services.skydns.local`. */
  nameOfKey(key: string): string | undefined {
    const rest = tail(key, `${SKYDNS_PREFIX}/`);
    if (!rest) return undefined;
    return rest.split('/').filter(Boolean).reverse().join('.');
  },
};
