/**
 * Portal's REST API, route for route:
 *
 *   GET|POST|PUT   /services
 *   GET|PUT|DELETE /services/:id
 *   GET|POST|PUT   /services/:id/servers
 *   GET|DELETE     /services/:id/servers/:serverId
 */
import type { FastifyReply } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { fail, Server, ServerInput, ServerListInput, ServiceInput, ServiceListInput, ServiceView, toServiceView } from '@switchyard/shared';
import { written } from '../http/revision.js';
import type { L4Repository } from './repository.js';

const Success = z.object({ msg: z.literal('Success') });
const IdParams = z.object({ id: z.string() });
const ServerParams = z.object({ id: z.string(), serverId: z.string() });
const tags = ['l4 (Portal)'];

function sendJson(reply: FastifyReply, json: string) {
  return reply.type('application/json; charset=utf-8').send(json);
}

export function l4Routes(repo: L4Repository): FastifyPluginAsyncZod {
  return async (app) => {
    // Portal writes every body, errors included, as JSON and a newline, and
    // its CLI prints the body verbatim: scripts that read the CLI's output
    // line by line see the same lines. Scoped to this plugin's routes.
    app.addHook('onSend', async (_req, reply, payload) => {
      if (typeof payload !== 'string' || payload.endsWith('\n')) return payload;
      return String(reply.getHeader('content-type') ?? '').startsWith('application/json') ? `${payload}\n` : payload;
    });

    app.get('/services', { schema: { tags, summary: 'List all services', response: { 200: z.array(ServiceView) } } }, async (_req, reply) => {
      const all = await repo.list();
      return sendJson(reply, `[${all.map((s) => s.json).join(',')}]`);
    });

    app.post(
      '/services',
      { schema: { tags, summary: 'Add a service (returns the existing one if its id exists)', body: ServiceInput, response: { 200: ServiceView } } },
      async (req, reply) => {
        const { value, revision } = await repo.create(req.body);
        written(reply, revision);
        // The value was built from validated input: no second pass through the schema.
        return sendJson(reply, JSON.stringify(toServiceView(value)));
      },
    );

    app.put(
      '/services',
      { schema: { tags, summary: 'Replace the whole set of services, atomically', body: ServiceListInput, response: { 200: z.array(ServiceView) } } },
      async (req, reply) => {
        const { value, revision } = await repo.replaceAll(req.body);
        written(reply, revision);
        return sendJson(reply, JSON.stringify(value.map(toServiceView)));
      },
    );

    app.get('/services/:id', { schema: { tags, summary: 'Get a service', params: IdParams, response: { 200: ServiceView } } }, async (req, reply) => {
      const s = await repo.get(req.params.id);
      return sendJson(reply, s.json);
    });

    app.put(
      '/services/:id',
      { schema: { tags, summary: 'Reset a service (may change its id)', params: IdParams, body: ServiceInput, response: { 200: ServiceView } } },
      async (req, reply) => {
        const { value, revision } = await repo.update(req.params.id, req.body);
        written(reply, revision);
        return sendJson(reply, JSON.stringify(toServiceView(value)));
      },
    );

    app.delete('/services/:id', { schema: { tags, summary: 'Delete a service (succeeds when it is already gone)', params: IdParams, response: { 200: Success } } }, async (req, reply) => {
      const { revision } = await repo.remove(req.params.id);
      written(reply, revision);
      return { msg: 'Success' as const };
    });

    app.get(
      '/services/:id/servers',
      { schema: { tags, summary: 'List the servers of a service', params: IdParams, response: { 200: z.array(Server) } } },
      async (req) => (await repo.get(req.params.id)).service.servers,
    );

    app.post(
      '/services/:id/servers',
      { schema: { tags, summary: 'Add a server to a service', params: IdParams, body: ServerInput, response: { 200: Server } } },
      async (req, reply) => {
        const { value, revision } = await repo.addServer(req.params.id, req.body);
        written(reply, revision);
        return value;
      },
    );

    app.put(
      '/services/:id/servers',
      { schema: { tags, summary: 'Replace the servers of a service', params: IdParams, body: ServerListInput, response: { 200: z.array(Server) } } },
      async (req, reply) => {
        const { value, revision } = await repo.replaceServers(req.params.id, req.body);
        written(reply, revision);
        return value;
      },
    );

    app.get(
      '/services/:id/servers/:serverId',
      { schema: { tags, summary: 'Get a server of a service', params: ServerParams, response: { 200: Server } } },
      async (req) => {
        const server = (await repo.get(req.params.id)).service.servers.find((s) => s.id === req.params.serverId);
        if (!server) throw fail('SERVER_NOT_FOUND');
        return server;
      },
    );

    app.delete(
      '/services/:id/servers/:serverId',
      { schema: { tags, summary: 'Delete a server from a service (succeeds when it is already gone)', params: ServerParams, response: { 200: Success } } },
      async (req, reply) => {
        const { revision } = await repo.removeServer(req.params.id, req.params.serverId);
        written(reply, revision);
        return { msg: 'Success' as const };
      },
    );
  };
}
