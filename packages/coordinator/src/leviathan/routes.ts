/**
 * Leviathan's REST API (leviathan_rest_lib), route for route, plus GET /cen,
 * GET /cin, GET /cin/:cin, GET|PUT /leviathan/pool and GET /leviathan/hosts
 * (the agents' reports: what `switchyard cen|cin … --wait` follows):
 *
 *   POST /cen/import | /cen/make | /cen/destroy        PUT|GET|DELETE /cen/:cen
 *   POST /cin/import | /cin/make | /cin/destroy        GET /cin/:cin
 *   PUT|DELETE /host/:host/:container/:cen             GET|PUT|DELETE /host/:host/:container
 *   POST /cpool
 *
 * Every write is one etcd transaction (repository.change); answers carry the
 * revision it was written at, which `GET /hosts` compares with what agents
 * applied.
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { CenFile, CenInput, CenView, CinFile, CinView, ContainerInput, ContainerView, CpoolFile, IdList, LevHostView, LevPool } from '@switchyard/shared';
import { written } from '../http/revision.js';
import * as model from './model.js';
import type { LeviathanRepository } from './repository.js';

const tags = ['container networks (Leviathan)'];
const CenParams = z.object({ cen: z.string() });
const CinParams = z.object({ cin: z.string() });
const HostContainerParams = z.object({ host: z.string(), container: z.string() });
const HostContainerCenParams = z.object({ host: z.string(), container: z.string(), cen: z.string() });
const Deleted = z.object({ msg: z.literal('Success') });

export function leviathanRoutes(repo: LeviathanRepository, defaultHost: string): FastifyPluginAsyncZod {
  // Answers are read back after the write: fresh() waits for the mirror to see it.
  const cenViews = async (ids: string[]) => {
    const s = await repo.current();
    return ids.filter((id) => s.model.cens.has(id)).map((id) => repo.cenView(s, id));
  };
  const cinViews = async (ids: string[]) => {
    const s = await repo.current();
    return ids.filter((id) => s.model.cins.has(id)).map((id) => repo.cinView(s, id));
  };

  return async (app) => {
    // ---------- CENs ----------
    app.post(
      '/cen/import',
      { schema: { tags, summary: 'Import a CEN file (idempotent); containers on no host go to the default host', body: CenFile, response: { 200: z.array(CenView) } } },
      async (req, reply) => {
        const { value, revision } = await repo.change((m) => model.importCens(m, req.body, defaultHost));
        written(reply, revision);
        return cenViews(value);
      },
    );

    app.post('/cen/make', { schema: { tags, summary: 'Make CENs: bridges, veths, namespaces on their hosts', body: IdList, response: { 200: z.array(CenView) } } }, async (req, reply) => {
      const { revision } = await repo.change((m) => model.makeCens(m, req.body));
      written(reply, revision);
      return cenViews(req.body);
    });

    app.post('/cen/destroy', { schema: { tags, summary: 'Undo /cen/make', body: IdList, response: { 200: z.array(CenView) } } }, async (req, reply) => {
      const { revision } = await repo.change((m) => model.destroyCens(m, req.body));
      written(reply, revision);
      return cenViews(req.body);
    });

    app.get('/cen', { schema: { tags, summary: 'All CENs', response: { 200: z.array(CenView) } } }, async () => {
      const s = await repo.current();
      return [...s.model.cens.keys()].sort().map((id) => repo.cenView(s, id));
    });

    app.put('/cen/:cen', { schema: { tags, summary: 'Create a CEN (optionally {"wiring_type": "wire"})', params: CenParams, body: CenInput, response: { 200: CenView } } }, async (req, reply) => {
      const { revision } = await repo.change((m) => model.putCen(m, req.params.cen, req.body?.wiring_type));
      written(reply, revision);
      return (await cenViews([req.params.cen]))[0];
    });

    app.get('/cen/:cen', { schema: { tags, summary: 'A CEN: {cenID, contIDs, wiring_type} and its status', params: CenParams, response: { 200: CenView } } }, async (req) => {
      return repo.confirm(async () => {
        const s = await repo.current();
        if (!s.model.cens.has(req.params.cen)) throw model.notFound('CEN', req.params.cen);
        return repo.cenView(s, req.params.cen);
      });
    });

    app.delete('/cen/:cen', { schema: { tags, summary: 'Remove a CEN (and its place in CINs)', params: CenParams, response: { 200: Deleted } } }, async (req, reply) => {
      const { revision } = await repo.change((m) => model.deleteCen(m, req.params.cen));
      written(reply, revision);
      return { msg: 'Success' as const };
    });

    // ---------- CINs ----------
    app.post('/cin/import', { schema: { tags, summary: 'Import CINs: {"cin1": ["cen1", …]}', body: CinFile, response: { 200: z.array(CinView) } } }, async (req, reply) => {
      const { value, revision } = await repo.change((m) => model.importCins(m, req.body));
      written(reply, revision);
      return cinViews(value);
    });

    app.post('/cin/make', { schema: { tags, summary: 'Make CINs: allocate and apply addresses', body: IdList, response: { 200: z.array(CinView) } } }, async (req, reply) => {
      const { revision } = await repo.change((m) => model.makeCins(m, req.body));
      written(reply, revision);
      return cinViews(req.body);
    });

    app.post('/cin/destroy', { schema: { tags, summary: 'Undo /cin/make: addresses released and removed', body: IdList, response: { 200: z.array(CinView) } } }, async (req, reply) => {
      const { revision } = await repo.change((m) => model.destroyCins(m, req.body));
      written(reply, revision);
      return cinViews(req.body);
    });

    app.get('/cin', { schema: { tags, summary: 'All CINs', response: { 200: z.array(CinView) } } }, async () => {
      const s = await repo.current();
      return [...s.model.cins.keys()].sort().map((id) => repo.cinView(s, id));
    });

    app.get('/cin/:cin', { schema: { tags, summary: 'A CIN, its addresses and status', params: CinParams, response: { 200: CinView } } }, async (req) => {
      return repo.confirm(async () => {
        const s = await repo.current();
        if (!s.model.cins.has(req.params.cin)) throw model.notFound('CIN', req.params.cin);
        return repo.cinView(s, req.params.cin);
      });
    });

    // ---------- containers ----------
    const containerView = (host: string, id: string) =>
      repo.confirm(async () => {
        const s = await repo.current();
        const c = s.model.containers.get(id);
        if (!c || c.host !== host) throw model.notFound('container', id, host);
        return repo.containerView(s, id);
      });

    app.put(
      '/host/:host/:container/:cen',
      { schema: { tags, summary: 'Add a container to a CEN', params: HostContainerCenParams, response: { 200: ContainerView } } },
      async (req, reply) => {
        const { host, container, cen } = req.params;
        const { revision } = await repo.change((m) => model.addToCen(m, host, container, cen));
        written(reply, revision);
        return containerView(host, container);
      },
    );

    app.delete(
      '/host/:host/:container/:cen',
      { schema: { tags, summary: 'Remove a container from a CEN', params: HostContainerCenParams, response: { 200: ContainerView } } },
      async (req, reply) => {
        const { host, container, cen } = req.params;
        const { revision } = await repo.change((m) => model.removeFromCen(m, host, container, cen));
        written(reply, revision);
        return containerView(host, container);
      },
    );

    app.get('/host/:host/:container', { schema: { tags, summary: 'A container: its CENs, addresses and status', params: HostContainerParams, response: { 200: ContainerView } } }, async (req) => {
      return containerView(req.params.host, req.params.container);
    });

    app.put(
      '/host/:host/:container',
      { schema: { tags, summary: 'Add a container to a host (optionally {"tag": …})', params: HostContainerParams, body: ContainerInput, response: { 200: ContainerView } } },
      async (req, reply) => {
        const { host, container } = req.params;
        const { revision } = await repo.change((m) => model.putContainer(m, host, container, req.body?.tag));
        written(reply, revision);
        return containerView(host, container);
      },
    );

    app.delete('/host/:host/:container', { schema: { tags, summary: 'Remove a container from its host and every CEN', params: HostContainerParams, response: { 200: Deleted } } }, async (req, reply) => {
      const { revision } = await repo.change((m) => model.deleteContainer(m, req.params.host, req.params.container));
      written(reply, revision);
      return { msg: 'Success' as const };
    });

    // ---------- CPools ----------
    app.post('/cpool', { schema: { tags, summary: 'Import a CPool file: start containers, join them to CENs, make those', body: CpoolFile, response: { 200: z.array(CenView) } } }, async (req, reply) => {
      const { revision } = await repo.change((m) => model.importCpools(m, req.body, defaultHost));
      written(reply, revision);
      return cenViews([...new Set(req.body.cpoolList.flatMap((p) => p.cins.map((c) => c.cinID)))]);
    });

    // ---------- address pool ----------
    app.get('/leviathan/pool', { schema: { tags, summary: 'Where CIN subnets come from', response: { 200: LevPool } } }, async () => {
      await repo.fresh();
      return repo.model().pool;
    });

    app.put('/leviathan/pool', { schema: { tags, summary: 'Set the CIN address pool (refused while CINs are made)', body: LevPool, response: { 200: LevPool } } }, async (req, reply) => {
      const { value, revision } = await repo.setPool(req.body);
      written(reply, revision);
      return value;
    });

    // ---------- agents' reports ----------
    app.get(
      '/leviathan/hosts',
      { schema: { tags, summary: "Each agent's container-network report: the revision it applied, its objects counted, its errors", response: { 200: z.array(LevHostView) } } },
      async () => [...(await repo.reports()).values()].sort((a, b) => (a.hostId < b.hostId ? -1 : 1)).map((s) => repo.hostView(s)),
    );
  };
}
