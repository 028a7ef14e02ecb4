/**
 * django-portmaster's REST API, route for route (its urls.py + api_v1.py):
 *
 *   GET|POST            /v1/services
 *   GET|PUT|DELETE      /v1/services/:name
 *   GET|POST            /v1/services/:name/offers
 *   GET|PUT|DELETE      /v1/services/:name/offers/:secret      (PUT = accept, DELETE = reject)
 *   POST                /v1/services/:name/offers/:secret/accept|reject
 *   GET                 /v1/services/:name/ports
 *   GET|DELETE          /v1/services/:name/ports/:portOrName   (all digits → by port)
 *
 * Methods Portmaster answers with 405 (PATCH on offers and ports, POST/PUT
 * on ports) answer 405 here too.
 */
import type { FastifyReply } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { fail, PmInstance, PmOffer, PmOfferInput, PmService, PmServiceInput, PmServiceUpdate, SwitchyardError } from '@switchyard/shared';
import { written } from '../http/revision.js';
import type { CoordinatorMetrics } from '../metrics/registry.js';
import type { PortmasterRepository } from './repository.js';

const tags = ['ports (Portmaster)'];
const ServiceParams = z.object({ name: z.string() });
const OfferParams = z.object({ name: z.string(), secret: z.string() });
const PortParams = z.object({ name: z.string(), portOrName: z.string() });
const NoContent = z.null().describe('No Content');

/** The `result` label of switchyard_port_offers_total for a refused offer. */
const OFFER_REFUSALS: Partial<Record<string, string>> = {
  PM_EXHAUSTED: 'exhausted',
  PM_NAME_EXISTS: 'name_exists',
  PM_BUSY: 'busy',
  PM_SERVICE_NOT_FOUND: 'service_not_found',
};

export function offerRefusal(e: unknown): string {
  return (e instanceof SwitchyardError && OFFER_REFUSALS[e.code]) || 'error';
}

function notAllowed(method: string): never {
  throw fail('PM_METHOD_NOT_ALLOWED', `Method '${method}' not allowed.`);
}

/**
 * Every call that can answer "not found" goes through repo.confirm: a 404 is
 * checked against etcd's latest state first, so what another coordinator made
 * a moment ago is found.
 */
export function portmasterRoutes(repo: PortmasterRepository, metrics: CoordinatorMetrics): FastifyPluginAsyncZod {
  return async (app) => {
    // ---------- services ----------
    app.get('/v1/services', { schema: { tags, summary: 'List port services, by name', response: { 200: z.array(PmService) } } }, () => repo.listServices());

    app.post(
      '/v1/services',
      { schema: { tags, summary: 'Create a port service owning start..end (inclusive)', body: PmServiceInput, response: { 201: PmService } } },
      async (req, reply) => {
        const { value, revision } = await repo.createService(req.body);
        written(reply, revision).code(201);
        return value;
      },
    );

    app.get('/v1/services/:name', { schema: { tags, summary: 'Get a port service', params: ServiceParams, response: { 200: PmService } } }, (req) =>
      repo.confirm(() => repo.getService(req.params.name)),
    );

    app.put(
      '/v1/services/:name',
      {
        schema: {
          tags,
          summary: 'Change description and range (refused if an offer or instance would fall outside)',
          params: ServiceParams,
          body: PmServiceUpdate,
          response: { 200: PmService },
        },
      },
      async (req, reply) => {
        const { value, revision } = await repo.confirm(() => repo.updateService(req.params.name, req.body));
        written(reply, revision);
        return value;
      },
    );

    app.delete(
      '/v1/services/:name',
      { schema: { tags, summary: 'Delete a port service with all its offers and ports', params: ServiceParams, response: { 204: NoContent } } },
      async (req, reply) => {
        const { revision } = await repo.confirm(() => repo.deleteService(req.params.name));
        return written(reply, revision).code(204).send();
      },
    );

    // ---------- offers ----------
    app.get(
      '/v1/services/:name/offers',
      { schema: { tags, summary: 'List the open offers of a service, by port', params: ServiceParams, response: { 200: z.array(PmOffer) } } },
      (req) => repo.confirm(() => repo.listOffers(req.params.name)),
    );

    app.post(
      '/v1/services/:name/offers',
      {
        schema: {
          tags,
          summary: 'Offer the lowest free port to an instance name (expires unless accepted)',
          params: ServiceParams,
          body: PmOfferInput,
          response: { 201: PmOffer },
        },
      },
      async (req, reply) => {
        const { value, revision } = await repo.confirm(() => repo.offer(req.params.name, req.body.name)).catch((e: unknown) => {
          metrics.portOffers.inc({ result: offerRefusal(e) });
          throw e;
        });
        metrics.portOffers.inc({ result: 'offered' });
        written(reply, revision).code(201);
        return value;
      },
    );

    app.get('/v1/services/:name/offers/:secret', { schema: { tags, summary: 'Get an open offer', params: OfferParams, response: { 200: PmOffer } } }, (req) =>
      repo.confirm(() => repo.getOffer(req.params.name, req.params.secret)),
    );

    const accept = async (req: { params: { name: string; secret: string } }, reply: FastifyReply) => {
      const { value, revision } = await repo.confirm(() => repo.accept(req.params.name, req.params.secret));
      written(reply, revision).code(201);
      return value;
    };
    const reject = async (req: { params: { name: string; secret: string } }, reply: FastifyReply) => {
      const { revision } = await repo.confirm(() => repo.reject(req.params.name, req.params.secret));
      return written(reply, revision).code(204).send();
    };
    const acceptSchema = { tags, summary: 'Accept an offer: the port becomes the instance\'s', params: OfferParams, response: { 201: PmInstance } };
    const rejectSchema = { tags, summary: 'Reject an offer: its port is free again', params: OfferParams, response: { 204: NoContent } };
    app.post('/v1/services/:name/offers/:secret/accept', { schema: acceptSchema }, accept);
    app.put('/v1/services/:name/offers/:secret', { schema: { ...acceptSchema, summary: 'Accept an offer (Portmaster\'s PUT)' } }, accept);
    app.post('/v1/services/:name/offers/:secret/reject', { schema: rejectSchema }, reject);
    app.delete('/v1/services/:name/offers/:secret', { schema: { ...rejectSchema, summary: 'Reject an offer (Portmaster\'s DELETE)' } }, reject);
    app.patch('/v1/services/:name/offers/:secret', { schema: { tags, summary: '405, as in Portmaster', params: OfferParams } }, () => notAllowed('PATCH'));

    // ---------- ports (instances) ----------
    app.get(
      '/v1/services/:name/ports',
      { schema: { tags, summary: 'List the allocated ports (instances) of a service, by port', params: ServiceParams, response: { 200: z.array(PmInstance) } } },
      (req) => repo.confirm(() => repo.listInstances(req.params.name)),
    );

    app.get(
      '/v1/services/:name/ports/:portOrName',
      { schema: { tags, summary: 'Find an instance by port (all digits) or by instance name', params: PortParams, response: { 200: PmInstance } } },
      (req) => repo.confirm(() => repo.getInstance(req.params.name, req.params.portOrName)),
    );

    app.delete(
      '/v1/services/:name/ports/:portOrName',
      { schema: { tags, summary: 'Release an instance\'s port (by port or instance name)', params: PortParams, response: { 204: NoContent } } },
      async (req, reply) => {
        const { revision } = await repo.confirm(() => repo.release(req.params.name, req.params.portOrName));
        return written(reply, revision).code(204).send();
      },
    );

    app.post('/v1/services/:name/ports', { schema: { tags, summary: '405, as in Portmaster: ports come from offers', params: ServiceParams } }, () => notAllowed('POST'));
    app.put('/v1/services/:name/ports/:portOrName', { schema: { tags, summary: '405, as in Portmaster', params: PortParams } }, () => notAllowed('PUT'));
    app.patch('/v1/services/:name/ports/:portOrName', { schema: { tags, summary: '405, as in Portmaster', params: PortParams } }, () => notAllowed('PATCH'));
  };
}
