/**
 * The Leviathan model as plain data, and every API change as a pure function
 * over it. The repository reads the model from its etcd mirror, applies one
 * of these to a copy, and writes the difference in one transaction; so a
 * change that throws has written nothing, and the rules here are unit-tested
 * without etcd.
 *
 * Invariants kept by `settle()` after every change:
 *   - every container named by a CEN exists (on some host);
 *   - a made CIN holds one subnet of the pool, recorded in a guard key, and one
 *     address per (container, CEN) pair of its CENs; a CIN that is not made
 *     holds none;
 *   - VNIs are unique.
 */
import {
  fail,
  isCenId,
  isContainerId,
  isLevId,
  LEV_NAME_RULES,
  levPool,
  SwitchyardError,
  type CenFile,
  type CinAddress,
  type CinFile,
  type CpoolFile,
  type LevPool,
  type StoredCen,
  type StoredCin,
  type StoredContainer,
  type StoredCpool,
  type Wiring,
} from '@switchyard/shared';

export interface LevModel {
  cens: Map<string, StoredCen>;
  cins: Map<string, StoredCin>;
  containers: Map<string, StoredContainer>;
  cpools: Map<string, StoredCpool>;
  /** Subnet index → CIN id (the guard keys). */
  subnets: Map<number, string>;
  pool: LevPool;
}

export function emptyModel(pool: LevPool): LevModel {
  return { cens: new Map(), cins: new Map(), containers: new Map(), cpools: new Map(), subnets: new Map(), pool };
}

/** A deep copy (values are JSON data). */
export function cloneModel(m: LevModel): LevModel {
  const copy = <T>(map: Map<string, T>) => new Map([...map].map(([k, v]) => [k, structuredClone(v)]));
  return { cens: copy(m.cens), cins: copy(m.cins), containers: copy(m.containers), cpools: copy(m.cpools), subnets: new Map(m.subnets), pool: m.pool };
}

// ---------- names ----------

export function checkCenId(id: string): void {
  if (!isCenId(id)) throw fail('BAD_NAME', `CEN id "${id}": ${LEV_NAME_RULES.cen}`);
}
export function checkContainerId(id: string): void {
  if (!isContainerId(id)) throw fail('BAD_NAME', `container id "${id}": ${LEV_NAME_RULES.other}`);
}
export function checkLevId(kind: 'CIN' | 'CPool' | 'host', id: string): void {
  if (!isLevId(id)) throw fail('BAD_NAME', `${kind} id "${id}": ${LEV_NAME_RULES.other}`);
}

export function notFound(kind: 'CEN' | 'CIN' | 'container', id: string, host?: string): SwitchyardError {
  if (kind === 'CEN') return fail('CEN_NOT_FOUND', `CEN ${id} not found`);
  if (kind === 'CIN') return fail('CIN_NOT_FOUND', `CIN ${id} not found`);
  return fail('CONTAINER_NOT_FOUND', `container ${id} is not on host ${host}`);
}

// ---------- helpers ----------

const FIRST_VNI = 1000;

function nextVni(m: LevModel): number {
  const used = new Set([...m.cens.values()].map((c) => c.vni));
  let v = FIRST_VNI;
  while (used.has(v)) v++;
  return v;
}

function cen(m: LevModel, id: string): StoredCen {
  const c = m.cens.get(id);
  if (!c) throw fail('CEN_NOT_FOUND', `CEN ${id} not found`);
  return c;
}

function ensureCen(m: LevModel, id: string, wiring?: Wiring): StoredCen {
  checkCenId(id);
  let c = m.cens.get(id);
  if (!c) {
    c = { cenID: id, contIDs: [], wiring: wiring ?? 'bridge', made: false, vni: nextVni(m) };
    m.cens.set(id, c);
  } else if (wiring) c.wiring = wiring;
  return c;
}

/** Places a container on `host`; refuses to move one that is on another host. */
function place(m: LevModel, host: string, id: string, fields: Partial<Pick<StoredContainer, 'tag' | 'cpoolID' | 'defaultRoute'>> = {}): StoredContainer {
  checkContainerId(id);
  checkLevId('host', host);
  const existing = m.containers.get(id);
  if (existing && existing.host !== host) throw fail('CONTAINER_ELSEWHERE', `container ${id} is on host ${existing.host}, not ${host}`);
  const c: StoredContainer = existing ?? { containerID: id, host, tag: null, defaultRoute: null, cpoolID: null };
  if (fields.tag !== undefined) c.tag = fields.tag;
  if (fields.cpoolID !== undefined) c.cpoolID = fields.cpoolID;
  if (fields.defaultRoute !== undefined) c.defaultRoute = fields.defaultRoute;
  m.containers.set(id, c);
  return c;
}

function checkWiring(c: StoredCen): void {
  if (c.wiring === 'wire' && c.contIDs.length !== 2) {
    throw fail('CEN_WIRING', `CEN ${c.cenID} is a "wire" and has ${c.contIDs.length} containers; a wire joins exactly two`);
  }
}

function uniqueIds(ids: string[], what: string): string[] {
  const seen = new Set<string>();
  for (const id of ids) {
    if (seen.has(id)) throw fail('INVALID', `${what} ${id} is listed twice`);
    seen.add(id);
  }
  return ids;
}

// ---------- CENs ----------

/** POST /cen/import: create or reset the listed CENs; containers on no host go to `defaultHost`. */
export function importCens(m: LevModel, file: CenFile, defaultHost: string): string[] {
  uniqueIds(file.cenList.map((e) => e.cenID), 'CEN');
  for (const e of file.cenList) {
    checkCenId(e.cenID);
    for (const id of e.containerIDs) checkContainerId(id);
  }
  for (const e of file.cenList) {
    const c = ensureCen(m, e.cenID, e.wiring_type ?? undefined);
    c.contIDs = uniqueIds([...e.containerIDs], `container in CEN ${e.cenID}:`);
    for (const id of c.contIDs) if (!m.containers.has(id)) place(m, defaultHost, id);
    if (c.made) checkWiring(c);
  }
  return file.cenList.map((e) => e.cenID);
}

export function makeCens(m: LevModel, ids: string[]): void {
  const cens = uniqueIds(ids, 'CEN').map((id) => cen(m, id));
  for (const c of cens) checkWiring(c);
  for (const c of cens) c.made = true;
}

export function destroyCens(m: LevModel, ids: string[]): void {
  for (const c of uniqueIds(ids, 'CEN').map((id) => cen(m, id))) c.made = false;
}

/** PUT /cen/:cen: create (or set the wiring of) one CEN. */
export function putCen(m: LevModel, id: string, wiring?: Wiring): void {
  const c = ensureCen(m, id, wiring);
  if (c.made) checkWiring(c);
}

/** DELETE /cen/:cen: the CEN goes, and with it its place in every CIN. */
export function deleteCen(m: LevModel, id: string): void {
  cen(m, id);
  m.cens.delete(id);
  for (const cin of m.cins.values()) cin.cenIDs = cin.cenIDs.filter((c) => c !== id);
}

// ---------- containers ----------

export function putContainer(m: LevModel, host: string, id: string, tag?: string | null): void {
  place(m, host, id, tag === undefined ? {} : { tag });
}

function containerOn(m: LevModel, host: string, id: string): StoredContainer {
  const c = m.containers.get(id);
  if (!c || c.host !== host) throw fail('CONTAINER_NOT_FOUND', `container ${id} is not on host ${host}`);
  return c;
}

/** DELETE /host/:host/:container: off the host and out of every CEN. */
export function deleteContainer(m: LevModel, host: string, id: string): void {
  containerOn(m, host, id);
  m.containers.delete(id);
  for (const c of m.cens.values()) c.contIDs = c.contIDs.filter((x) => x !== id);
}

export function addToCen(m: LevModel, host: string, id: string, cenId: string): void {
  const c = cen(m, cenId);
  place(m, host, id);
  if (!c.contIDs.includes(id)) c.contIDs.push(id);
  if (c.made) checkWiring(c);
}

export function removeFromCen(m: LevModel, host: string, id: string, cenId: string): void {
  const c = cen(m, cenId);
  containerOn(m, host, id);
  if (!c.contIDs.includes(id)) throw fail('CONTAINER_NOT_FOUND', `container ${id} is not in CEN ${cenId}`);
  c.contIDs = c.contIDs.filter((x) => x !== id);
  if (m.containers.get(id)?.defaultRoute === cenId) (m.containers.get(id) as StoredContainer).defaultRoute = null;
}

// ---------- CINs ----------

/** POST /cin/import: create or reset CINs over existing CENs. */
export function importCins(m: LevModel, file: CinFile): string[] {
  for (const [cinId, cenIds] of Object.entries(file)) {
    checkLevId('CIN', cinId);
    uniqueIds(cenIds, `CEN in CIN ${cinId}:`);
    for (const c of cenIds) {
      checkCenId(c);
      cen(m, c);
    }
  }
  for (const [cinId, cenIds] of Object.entries(file)) {
    const existing = m.cins.get(cinId);
    if (existing) existing.cenIDs = [...cenIds];
    else m.cins.set(cinId, { cinID: cinId, cenIDs: [...cenIds], made: false, subnet: null, addresses: [] });
  }
  return Object.keys(file);
}

function cin(m: LevModel, id: string): StoredCin {
  const c = m.cins.get(id);
  if (!c) throw fail('CIN_NOT_FOUND', `CIN ${id} not found`);
  return c;
}

export function makeCins(m: LevModel, ids: string[]): void {
  for (const c of uniqueIds(ids, 'CIN').map((id) => cin(m, id))) c.made = true;
}

export function destroyCins(m: LevModel, ids: string[]): void {
  for (const c of uniqueIds(ids, 'CIN').map((id) => cin(m, id))) c.made = false;
}

// ---------- CPools ----------

/** The containers a pool starts: `<cpoolID>-<n>`, n from 1. */
export function poolContainerId(cpoolId: string, n: number): string {
  return `${cpoolId}-${n}`;
}

/**
 * POST /cpool. As Leviathan: each pool starts `start_with` containers and
 * joins them to the CENs its `cins` name (created if absent) and makes those
 * CENs; `default_route` puts the container's default route on that CEN. A
 * re-import with a smaller `start_with` removes the pool's extra containers.
 */
export function importCpools(m: LevModel, file: CpoolFile, defaultHost: string): string[] {
  uniqueIds(file.cpoolList.map((p) => p.cpoolID), 'CPool');
  for (const p of file.cpoolList) {
    checkLevId('CPool', p.cpoolID);
    for (let n = 1; n <= p.start_with; n++) checkContainerId(poolContainerId(p.cpoolID, n));
    for (const c of p.cins) checkCenId(c.cinID);
    if (p.cins.filter((c) => c.default_route).length > 1) throw fail('INVALID', `CPool ${p.cpoolID}: at most one default_route`);
  }
  for (const p of file.cpoolList) {
    const stored: StoredCpool = { cpoolID: p.cpoolID, type: p.type, start_with: p.start_with, cins: p.cins.map((c) => ({ cinID: c.cinID, default_route: c.default_route ?? false })) };
    m.cpools.set(p.cpoolID, stored);
    const wanted = new Set(Array.from({ length: p.start_with }, (_, i) => poolContainerId(p.cpoolID, i + 1)));
    for (const c of [...m.containers.values()]) {
      if (c.cpoolID === p.cpoolID && !wanted.has(c.containerID)) deleteContainer(m, c.host, c.containerID);
    }
    const route = stored.cins.find((c) => c.default_route)?.cinID ?? null;
    for (const id of wanted) {
      const existing = m.containers.get(id);
      place(m, existing?.host ?? defaultHost, id, { cpoolID: p.cpoolID, tag: p.cpoolID, defaultRoute: route });
    }
    for (const { cinID } of stored.cins) {
      const c = ensureCen(m, cinID);
      for (const id of wanted) if (!c.contIDs.includes(id)) c.contIDs.push(id);
      checkWiring(c);
      c.made = true;
    }
  }
  return file.cpoolList.map((p) => p.cpoolID);
}

// ---------- settling: addresses and guards ----------

/**
 * Restores the invariants after a change: subnets for made CINs (lowest free
 * index first), one address per (container, CEN) pair, kept when it already
 * had one, the lowest free one otherwise.
 */
export function settle(m: LevModel): void {
  // Containers named by a CEN but unknown (hand-edited etcd) are dropped from it.
  for (const c of m.cens.values()) c.contIDs = c.contIDs.filter((id) => m.containers.has(id));
  for (const c of m.cins.values()) c.cenIDs = c.cenIDs.filter((id) => m.cens.has(id));

  for (const [index, owner] of [...m.subnets]) {
    const c = m.cins.get(owner);
    if (!c || !c.made || c.subnet?.index !== index) m.subnets.delete(index);
  }
  for (const c of [...m.cins.values()].sort((a, b) => (a.cinID < b.cinID ? -1 : 1))) {
    if (!c.made) {
      c.subnet = null;
      c.addresses = [];
      continue;
    }
    if (!c.subnet) {
      const index = freeSubnet(m);
      c.subnet = { index, cidr: levPool.subnet(m.pool, index), gateway: levPool.gateway(m.pool, index) };
      m.subnets.set(index, c.cinID);
    }
    c.addresses = allocate(m, c);
  }
}

function freeSubnet(m: LevModel): number {
  const count = levPool.subnetCount(m.pool);
  for (let i = m.pool.firstSubnet; i < count; i++) if (!m.subnets.has(i)) return i;
  throw new SwitchyardError('POOL_EXHAUSTED', `Address pool exhausted: no free /${m.pool.subnetPrefix} left in ${m.pool.network}`);
}

function allocate(m: LevModel, c: StoredCin): CinAddress[] {
  const index = (c.subnet as NonNullable<StoredCin['subnet']>).index;
  const pairs: { containerID: string; cenID: string }[] = [];
  for (const cenId of c.cenIDs) for (const id of (m.cens.get(cenId) as StoredCen).contIDs) pairs.push({ containerID: id, cenID: cenId });
  const keyOf = (p: { containerID: string; cenID: string }) => `${p.containerID}/${p.cenID}`;
  const old = new Map(c.addresses.map((a) => [keyOf(a), a.ip]));
  const used = new Set<string>();
  const out: CinAddress[] = [];
  for (const p of pairs) {
    const ip = old.get(keyOf(p));
    if (ip) used.add(ip);
  }
  let k = 0;
  for (const p of pairs) {
    let ip = old.get(keyOf(p));
    if (!ip) {
      for (;;) {
        const candidate = levPool.host(m.pool, index, k++);
        if (!candidate) throw new SwitchyardError('POOL_EXHAUSTED', `Address pool exhausted: CIN ${c.cinID} has no free address`);
        if (!used.has(candidate)) {
          ip = candidate;
          used.add(ip);
          break;
        }
      }
    }
    out.push({ ...p, ip });
  }
  return out;
}
