/**
 * Every mutating response says which etcd revision it produced, so a client
 * can wait until an agent has applied it (GET /hosts/:id → appliedRevision).
 */
import type { FastifyReply } from 'fastify';

export const REVISION_HEADER = 'X-Switchyard-Revision';

/** Sets the revision header; returns the reply for chaining. */
export function written(reply: FastifyReply, revision: number): FastifyReply {
  return reply.header(REVISION_HEADER, String(revision));
}
