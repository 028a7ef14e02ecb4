/**
 * A coordinator under test: built against the shared real etcd under a
 * prefix of its own, driven with inject() (no socket) unless listen() is called.
 */
import { expect } from 'vitest';
import { buildCoordinator, type BuildDeps, type Coordinator, type CoordinatorConfigInput } from '../../packages/coordinator/src/index.js';
import { StoredCen, StoredCin, StoredContainer } from '../../packages/shared/src/index.js';
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

/**
 * One request through inject() that must answer 200: the parsed body and the
 * etcd revision the write produced (0 for reads).
 */
export async function callOk(c: Coordinator, method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, payload?: unknown) {
  const r = await c.app.inject({ method, url, ...(payload === undefined ? {} : { payload: payload as object }) });
  expect(r.statusCode, `${method} ${url}: ${r.body}`).toBe(200);
  return { body: JSON.parse(r.body), revision: Number(r.headers['x-switchyard-revision'] ?? 0) };
}

/** The Leviathan model a coordinator stored in etcd, parsed: what an agent's planner takes. */
export async function storedLeviathan(c: Coordinator): Promise<{ cens: StoredCen[]; cins: StoredCin[]; containers: StoredContainer[] }> {
  const all = await c.ctx.etcd.getAll().prefix(c.ctx.keys.lev.all).strings();
  const out = { cens: [] as StoredCen[], cins: [] as StoredCin[], containers: [] as StoredContainer[] };
  for (const [key, v] of Object.entries(all)) {
    if (c.ctx.keys.lev.parseCen(key)) out.cens.push(StoredCen.parse(JSON.parse(v)));
    else if (c.ctx.keys.lev.parseCin(key)) out.cins.push(StoredCin.parse(JSON.parse(v)));
    else if (c.ctx.keys.lev.parseContainer(key)) out.containers.push(StoredContainer.parse(JSON.parse(v)));
  }
  return out;
}
