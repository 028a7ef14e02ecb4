/**
 * django-portmaster's REST API, route for route (its urls.py + api_v1.py):
 *
 *   GET|POST              /v1/services
 *   GET|PUT|PATCH|DELETE  /v1/services/:name
 *   GET|POST              /v1/services/:name/offers
 *   GET|PUT|DELETE        /v1/services/:name/offers/:secret      (PUT = accept, DELETE = reject)
 *   POST                  /v1/services/:name/offers/:secret/accept|reject   (Switchyard's spelling)
 *   GET                   /v1/services/:name/ports
 *   GET|DELETE            /v1/services/:name/ports/:portOrName   (all digits → by port)
 *
 * Every other method on these paths is a 405 as Django REST framework answers
 * it; where Portmaster's views answer a 405 themselves (PATCH on an offer,
 * POST/PUT/PATCH on ports) their words are kept, quotes and all. Bodies and
 * errors are DRF's (drf.ts).
 */
import type { FastifyReply } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { PmInstance, PmOffer, PmOfferInput, PmRefusal, PmService, PmServiceInput, PmServicePatch, SwitchyardError } from '@switchyard/shared';
import { written } from '../http/revision.js';
import type { CoordinatorMetrics } from '../metrics/registry.js';
import { bodyObject, installDrf, methodNotAllowed } from './drf.js';
import type { PortmasterRepository } from './repository.js';

const tags = ['ports (Portmaster)'];
const ServiceParams = z.object({ name: z.string() });
const OfferParams = z.object({ name: z.string(), secret: z.string() });
const PortParams = z.object({ name: z.string(), portOrName: z.string() });
const NoContent = z.null().describe('No Content');
const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;

/** The `result` label of switchyard_port_offers_total for a refused offer. */
const OFFER_REFUSALS: Partial<Record<string, string>> = {
  PM_EXHAUSTED: 'exhausted',
  PM_NAME_EXISTS: 'name_exists',
  PM_OFFER_NAME_EXISTS: 'name_exists',
  PM_BUSY: 'busy',
  PM_SERVICE_NOT_FOUND: 'service_not_found',
};

export function offerRefusal(e: unknown): string {
  // A full range is a field error on `port`, as DRF words it (with the name's own errors, if any).
  if (e instanceof PmRefusal && !Array.isArray(e.body) && e.body.port) return 'exhausted';
  if (e instanceof SwitchyardError && e.code === 'PM_INVALID') return 'invalid';
  return (e instanceof SwitchyardError && OFFER_REFUSALS[e.code]) || 'error';
}

/**
 * Every call that can answer "not found" goes through repo.confirm: a 404 is
 * checked against etcd's latest state first, so what another coordinator made
 * a moment ago is found.
 */
export function portmasterRoutes(repo: PortmasterRepository, metrics: CoordinatorMetrics): FastifyPluginAsyncZod {
  return async (app) => {
    installDrf(app);

    /** The 405s of a path: DRF's for methods its view lacks, Portmaster's own words for `own`. */
    const rest = (url: string, routed: readonly string[], own: readonly string[] = []) => {
      const drf = METHODS.filter((m) => !routed.includes(m) && !own.includes(m));
      if (drf.length) app.route({ method: [...drf], url, schema: { hide: true }, handler: methodNotAllowed([...routed, ...own].sort(byDrfOrder)) });
      if (own.length) app.route({ method: [...own], url, schema: { tags, summary: '405, as in Portmaster' }, handler: methodNotAllowed([], "'") });
    };

    // ---------- services ----------
    app.get('/v1/services', { schema: { tags, summary: 'List port services, by name', response: { 200: z.array(PmService) } } }, () => repo.listServices());

    app.post(
      '/v1/services',
      { schema: { tags, summary: 'Create a port service owning start..end (inclusive)', body: PmServiceInput, response: { 201: PmService } } },
      async (req, reply) => {
        const { value, revision } = await repo.createService(bodyObject(req.body));
        written(reply, revision).code(201);
        return value;
      },
    );
    rest('/v1/services', ['GET', 'POST']);

    app.get('/v1/services/:name', { schema: { tags, summary: 'Get a port service', params: ServiceParams, response: { 200: PmService } } }, (req) =>
      repo.confirm(() => repo.getService(req.params.name)),
    );

    const update = (partial: boolean) => async (req: { params: { name: string }; body: unknown }, reply: FastifyReply) => {
      const { value, revision } = await repo.confirm(() => repo.updateService(req.params.name, bodyObject(req.body), partial));
      written(reply, revision);
      return value;
    };
    const updateSummary = 'Change description and range (refused if an offer or instance would fall outside)';
    app.put('/v1/services/:name', { schema: { tags, summary: updateSummary, params: ServiceParams, body: PmServiceInput, response: { 200: PmService } } }, update(false));
    app.patch(
      '/v1/services/:name',
      { schema: { tags, summary: `${updateSummary}: only the fields given`, params: ServiceParams, body: PmServicePatch, response: { 200: PmService } } },
      update(true),
    );

    app.delete(
      '/v1/services/:name',
      { schema: { tags, summary: 'Delete a port service with all its offers and ports', params: ServiceParams, response: { 204: NoContent } } },
      async (req, reply) => {
        const { revision } = await repo.confirm(() => repo.deleteService(req.params.name));
        return written(reply, revision).code(204).send();
      },
    );
    rest('/v1/services/:name', ['GET', 'PUT', 'PATCH', 'DELETE']);

    // ---------- offers ----------
    app.get(
      '/v1/services/:name/offers',
      {
        schema: {
          tags,
          summary: 'List the open offers of a service, by port ([] for an unknown service, as in Portmaster)',
          params: ServiceParams,
          response: { 200: z.array(PmOffer) },
        },
      },
      (req) => repo.listOffers(req.params.name),
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
        const { value, revision } = await repo.confirm(() => repo.offer(req.params.name, bodyObject(req.body))).catch((e: unknown) => {
          metrics.portOffers.inc({ result: offerRefusal(e) });
          throw e;
        });
        metrics.portOffers.inc({ result: 'offered' });
        written(reply, revision).code(201);
        return value;
      },
    );
    rest('/v1/services/:name/offers', ['GET', 'POST']);

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
    const acceptSchema = {
      tags,
      summary: "Accept an offer: the port becomes the instance's (400 if an instance already has its name)",
      params: OfferParams,
      response: { 201: PmInstance },
    };
    const rejectSchema = { tags, summary: 'Reject an offer: its port is free again', params: OfferParams, response: { 204: NoContent } };
    app.post('/v1/services/:name/offers/:secret/accept', { schema: acceptSchema }, accept);
    app.put('/v1/services/:name/offers/:secret', { schema: { ...acceptSchema, summary: "Accept an offer (Portmaster's PUT)" } }, accept);
    app.post('/v1/services/:name/offers/:secret/reject', { schema: rejectSchema }, reject);
    app.delete('/v1/services/:name/offers/:secret', { schema: { ...rejectSchema, summary: "Reject an offer (Portmaster's DELETE)" } }, reject);
    rest('/v1/services/:name/offers/:secret', ['GET', 'PUT', 'DELETE'], ['PATCH']);

    // ---------- ports (instances) ----------
    app.get(
      '/v1/services/:name/ports',
      {
        schema: {
          tags,
          summary: 'List the allocated ports (instances) of a service, by port ([] for an unknown service)',
          params: ServiceParams,
          response: { 200: z.array(PmInstance) },
        },
      },
      (req) => repo.listInstances(req.params.name),
    );
    rest('/v1/services/:name/ports', ['GET'], ['POST']);

    app.get(
      '/v1/services/:name/ports/:portOrName',
      { schema: { tags, summary: 'Find an instance by port (all digits) or by instance name', params: PortParams, response: { 200: PmInstance } } },
      (req) => repo.confirm(() => repo.getInstance(req.params.name, req.params.portOrName)),
    );

    app.delete(
      '/v1/services/:name/ports/:portOrName',
      { schema: { tags, summary: "Release an instance's port (by port or instance name)", params: PortParams, response: { 204: NoContent } } },
      async (req, reply) => {
        const { revision } = await repo.confirm(() => repo.release(req.params.name, req.params.portOrName));
        return written(reply, revision).code(204).send();
      },
    );
    rest('/v1/services/:name/ports/:portOrName', ['GET', 'DELETE'], ['PUT', 'PATCH']);
  };
}

/** DRF's `http_method_names` order, which its Allow header follows. */
function byDrfOrder(a: string, b: string): number {
  return METHODS.indexOf(a as (typeof METHODS)[number]) - METHODS.indexOf(b as (typeof METHODS)[number]);
}
