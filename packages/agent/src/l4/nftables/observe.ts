/**
 * Reads one of the agent's tables back from `nft -j list table inet|netdev <t>` into the
 * same vocabulary the planner writes (object names, element key/value text),
 * grouped by the service each object belongs to.
 */
import { serviceId, type Protocol } from '@switchyard/shared';
import { isGroupChain, serviceOfObject, type NftElement } from './model.js';

export interface ObservedService {
  /** Digest found in the service chain's first rule comment. */
  digest?: string;
  /** Chains of the service → number of rules in them. */
  chains: Map<string, number>;
  /** Sets of the service → their spec as the planner writes it. */
  sets: Map<string, string>;
  elements: NftElement[];
}

export interface NftObserved {
  table: boolean;
  /** The device a netdev table's ingress chain hooks, from the chain's name (`ingress.<device>`). */
  device?: string;
  /** Base chains and global maps present, base chain → rule count. */
  baseChains: Map<string, number>;
  maps: Set<string>;
  /** Shared group chains → rule count. */
  groups: Map<string, number>;
  services: Map<string, ObservedService>;
}

export const emptyObserved = (): NftObserved => ({ table: false, baseChains: new Map(), maps: new Set(), groups: new Map(), services: new Map() });

type Json = Record<string, unknown>;

function text(v: unknown): string {
  if (typeof v === 'string' || typeof v === 'number') return String(v);
  if (v && typeof v === 'object') {
    const o = v as Json;
    if (Array.isArray(o.concat)) return o.concat.map(text).join(' . ');
    if (o.goto && typeof o.goto === 'object') return `goto ${(o.goto as Json).target as string}`;
    if (o.jump && typeof o.jump === 'object') return `jump ${(o.jump as Json).target as string}`;
    if (o.elem && typeof o.elem === 'object') return text((o.elem as Json).val);
  }
  return JSON.stringify(v);
}

const PROTOS: Record<string, Protocol> = { tcp: 'tcp', udp: 'udp', '6': 'tcp', '17': 'udp' };

/** The parts of an element key: `concat` members, unwrapped from `{elem: {val}}` when the element has options. */
function keyParts(k: unknown): unknown[] {
  let o = k;
  if (o && typeof o === 'object' && (o as Json).elem) o = ((o as Json).elem as Json).val;
  return o && typeof o === 'object' && Array.isArray((o as Json).concat) ? ((o as Json).concat as unknown[]) : [o];
}

/**
 * Service id of an element key: `VIP . proto . port` in services4/6, `VIP . port . slot` in the per-protocol maps
 * (`proto` is then the map's). Memoised per protocol, VIP and port in `cache`: a table of 10,000 services has
 * 60,000 elements but 10,000 ids.
 */
function serviceOfKey(parts: unknown[], proto: Protocol | undefined, cache: Map<string, string | undefined>): string | undefined {
  const [host, type, port] = proto ? [parts[0], proto, parts[1]] : [parts[0], PROTOS[String(parts[1])], parts[2]];
  if (host === undefined || !type || port === undefined) return undefined;
  const memo = `${type} ${String(host)} ${String(port)}`;
  let id = cache.get(memo);
  if (id === undefined && !cache.has(memo)) {
    id = Number.isInteger(Number(port)) ? serviceId({ type, host: String(host), port: Number(port) }) : undefined;
    cache.set(memo, id);
  }
  return id;
}

function timeoutSeconds(v: unknown): number {
  return typeof v === 'number' ? v : Number(v ?? 0);
}

export function parseNftJson(json: string, baseChainNames: readonly string[], globalMaps: readonly string[]): NftObserved {
  const doc = JSON.parse(json) as { nftables?: Json[] };
  const out = emptyObserved();
  const ids = new Map<string, string | undefined>();
  const svc = (id: string) => {
    let s = out.services.get(id);
    if (!s) {
      s = { chains: new Map(), sets: new Map(), elements: [] };
      out.services.set(id, s);
    }
    return s;
  };
  for (const item of doc.nftables ?? []) {
    if (item.table) out.table = true;
    const chain = item.chain as Json | undefined;
    if (chain) {
      const name = String(chain.name);
      if (baseChainNames.includes(name)) out.baseChains.set(name, out.baseChains.get(name) ?? 0);
      if (chain.hook === 'ingress') out.device = name.startsWith('ingress.') ? name.slice('ingress.'.length) : '';
      if (isGroupChain(name)) out.groups.set(name, out.groups.get(name) ?? 0);
      const sid = serviceOfObject(name);
      if (sid) svc(sid).chains.set(name, svc(sid).chains.get(name) ?? 0);
    }
    const rule = item.rule as Json | undefined;
    if (rule) {
      const name = String(rule.chain);
      if (baseChainNames.includes(name)) out.baseChains.set(name, (out.baseChains.get(name) ?? 0) + 1);
      if (isGroupChain(name)) out.groups.set(name, (out.groups.get(name) ?? 0) + 1);
      const sid = serviceOfObject(name);
      if (sid) {
        const s = svc(sid);
        s.chains.set(name, (s.chains.get(name) ?? 0) + 1);
        const m = typeof rule.comment === 'string' ? /^sy:([0-9a-f]+)$/.exec(rule.comment) : null;
        if (m && name.startsWith('svc.')) s.digest = m[1];
      }
    }
    const set = (item.map ?? item.set) as Json | undefined;
    if (set) {
      const name = String(set.name);
      if (globalMaps.includes(name)) {
        out.maps.add(name);
        const proto = /_(tcp|udp)$/.exec(name)?.[1] as Protocol | undefined;
        for (const e of (set.elem as unknown[]) ?? []) {
          const [k, v] = Array.isArray(e) ? e : [e, undefined];
          const sid = serviceOfKey(keyParts(k), proto, ids);
          if (sid) svc(sid).elements.push({ map: name, key: text(k), value: text(v) });
        }
      } else {
        const sid = serviceOfObject(name);
        if (sid && item.set) {
          const type = String(set.type);
          svc(sid).sets.set(name, `type ${type} ; flags dynamic,timeout ; timeout ${timeoutSeconds(set.timeout)}s ;`);
        }
      }
    }
  }
  return out;
}

/** The observed form of objects just written (how the incremental path keeps its model current). */
export function observedOf(objects: { digest: string; chains: { name: string; rules: string[] }[]; sets: { name: string; spec: string }[]; elements: NftElement[] }): ObservedService {
  return {
    digest: objects.digest,
    chains: new Map(objects.chains.map((c) => [c.name, c.rules.length])),
    sets: new Map(objects.sets.map((s) => [s.name, s.spec])),
    elements: [...objects.elements],
  };
}
