/** GET /status: what `switchyard status` shows of the cluster besides its hosts. */
import { z } from 'zod';

export const ClusterStatus = z.object({
  version: z.string(),
  coordinatorId: z.string(),
  etcd: z.object({
    revision: z.int(),
    /** The newest L4 service change: a host's lag is measured against it. */
    desiredRevision: z.int(),
    leader: z.string().nullable(),
    members: z.array(z.object({ id: z.string(), name: z.string(), clientURLs: z.array(z.string()), leader: z.boolean(), learner: z.boolean() })),
  }),
  counts: z.object({
    services: z.int(),
    portServices: z.int(),
    portOffers: z.int(),
    portInstances: z.int(),
    cens: z.int(),
    cins: z.int(),
    containers: z.int(),
    providers: z.int(),
  }),
});
export type ClusterStatus = z.infer<typeof ClusterStatus>;
