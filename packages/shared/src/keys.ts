/**
 * The etcd key layout, in one place. Every key Switchyard reads or writes is
 * built here and parsed here; no other module concatenates key strings.
 *
 * Everything lives under a configurable prefix (default `/switchyard`), except
 * the SkyDNS records, whose location is fixed by what SkyDNS and CoreDNS's
 * etcd plugin read (`/skydns/<reversed domain>/...`).
 *
 *   <p>/l4/services/<serviceId>             L4 virtual service, servers embedded (JSON)
 *   <p>/hosts/<hostId>/agent                agent registration, on the agent's lease
 *   <p>/hosts/<hostId>/status               what the agent has applied (JSON)
 *   <p>/pm/ranges                           all Portmaster services' ranges, the overlap guard
 *   <p>/pm/services/<name>                  Portmaster service (JSON)
 *   <p>/pm/ports/<name>/<port>              a held port: offer (on a lease) or instance
 *   <p>/pm/names/<name>/<instance>          instance name -> port, uniqueness guard
 *   <p>/pm/offers/<name>/<secret>           open offer (on the same lease as its port)
 *   <p>/lev/cens/<cenId>                    CEN (JSON)
 *   <p>/lev/cins/<cinId>                    CIN (JSON)
 *   <p>/lev/containers/<containerId>        container placement + membership (JSON)
 *   <p>/lev/cpools/<cpoolId>                CPool (JSON)
 *   <p>/lev/addrs/<cinId>/<ip>              address allocation, uniqueness guard
 *   <p>/lev/underlay/<hostId>               agent's underlay address for VXLAN
 *   <p>/disco/providers/<coordinatorId>/... bookkeeping of live providers (on the coordinator lease)
 *   /skydns/<tld>/<...>/<service>/<id>      SkyDNS record (JSON), on the coordinator's lease
 */
export const DEFAULT_PREFIX = '/switchyard';
export const SKYDNS_PREFIX = '/skydns';

function tail(key: string, base: string): string | undefined {
  if (!key.startsWith(base)) return undefined;
  const rest = key.slice(base.length);
  return rest.length > 0 ? rest : undefined;
}

function normalisePrefix(prefix: string): string {
  const p = prefix.replace(/\/+$/, '');
  if (!p.startsWith('/')) throw new Error(`etcd prefix must start with "/": ${prefix}`);
  return p;
}

export type Keyspace = ReturnType<typeof keyspace>;

export function keyspace(prefix: string = DEFAULT_PREFIX) {
  const p = normalisePrefix(prefix);
  const l4 = `${p}/l4/services/`;
  const hosts = `${p}/hosts/`;
  const pm = `${p}/pm/`;
  const lev = `${p}/lev/`;
  return {
    prefix: p,

    l4: {
      services: l4,
      service: (id: string) => `${l4}${id}`,
      parseService: (key: string) => tail(key, l4),
    },

    hosts: {
      all: hosts,
      agent: (hostId: string) => `${hosts}${hostId}/agent`,
      status: (hostId: string) => `${hosts}${hostId}/status`,
      /** `{hostId, kind}` for a key under hosts/, or undefined. */
      parse: (key: string): { hostId: string; kind: 'agent' | 'status' } | undefined => {
        const rest = tail(key, hosts);
        const m = rest && /^([^/]+)\/(agent|status)$/.exec(rest);
        return m ? { hostId: m[1], kind: m[2] as 'agent' | 'status' } : undefined;
      },
    },

    pm: {
      all: pm,
      ranges: `${pm}ranges`,
      services: `${pm}services/`,
      service: (name: string) => `${pm}services/${name}`,
      parseService: (key: string) => tail(key, `${pm}services/`),
      ports: (service: string) => `${pm}ports/${service}/`,
      allPorts: `${pm}ports/`,
      port: (service: string, port: number) => `${pm}ports/${service}/${port}`,
      parsePort: (key: string): { service: string; port: number } | undefined => {
        const m = /^([^/]+)\/(\d+)$/.exec(tail(key, `${pm}ports/`) ?? '');
        return m ? { service: m[1], port: Number(m[2]) } : undefined;
      },
      names: (service: string) => `${pm}names/${service}/`,
      name: (service: string, instance: string) => `${pm}names/${service}/${instance}`,
      offers: (service: string) => `${pm}offers/${service}/`,
      offer: (service: string, secret: string) => `${pm}offers/${service}/${secret}`,
    },

    lev: {
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
      addrs: (cin: string) => `${lev}addrs/${cin}/`,
      addr: (cin: string, ip: string) => `${lev}addrs/${cin}/${ip}`,
      underlays: `${lev}underlay/`,
      underlay: (hostId: string) => `${lev}underlay/${hostId}`,
      parseUnderlay: (key: string) => tail(key, `${lev}underlay/`),
    },

    disco: {
      providers: `${p}/disco/providers/`,
      provider: (coordinatorId: string, connId: string) => `${p}/disco/providers/${coordinatorId}/${connId}`,
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
  /** DNS name (without trailing dot) of a record key: `/skydns/local/skydns/services/foo/X` → `X.foo.services.skydns.local`. */
  nameOfKey(key: string): string | undefined {
    const rest = tail(key, `${SKYDNS_PREFIX}/`);
    if (!rest) return undefined;
    return rest.split('/').filter(Boolean).reverse().join('.');
  },
};
