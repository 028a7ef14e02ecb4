/**
 * Agents (one per host) and what they report. The registration lives on the
 * agent's lease, so it vanishes when the agent does; the status is a plain key
 * so the last known state of a dead host stays readable.
 */
import { z } from 'zod';

export const DATAPLANES = ['ipvs', 'nftables', 'dry-run'] as const;
export type Dataplane = (typeof DATAPLANES)[number];

export const AgentRegistration = z.object({
  id: z.string(),
  dataplane: z.enum(DATAPLANES),
  version: z.string(),
  startedAt: z.string(),
  pid: z.int().optional(),
  netns: z.string().optional(),
  roles: z.array(z.string()).default(['l4']),
});
export type AgentRegistration = z.infer<typeof AgentRegistration>;

export const ServiceReport = z.object({
  serviceId: z.string(),
  level: z.enum(['error', 'warning']),
  message: z.string(),
});
export type ServiceReport = z.infer<typeof ServiceReport>;

export const AgentStatus = z.object({
  id: z.string(),
  dataplane: z.enum(DATAPLANES),
  /** The etcd revision whose desired state is fully applied to the kernel. */
  appliedRevision: z.int(),
  lastSync: z.string(),
  lastFullSync: z.string().optional(),
  services: z.int().default(0),
  errors: z.array(ServiceReport).default([]),
  warnings: z.array(ServiceReport).default([]),
});
export type AgentStatus = z.infer<typeof AgentStatus>;

/** What GET /hosts/:id answers: status + liveness. */
export const Host = z.object({
  id: z.string(),
  alive: z.boolean(),
  dataplane: z.enum(DATAPLANES).nullable(),
  version: z.string().nullable(),
  startedAt: z.string().nullable(),
  appliedRevision: z.int(),
  lastSync: z.string().nullable(),
  services: z.int(),
  errors: z.array(ServiceReport),
  warnings: z.array(ServiceReport),
});
export type Host = z.infer<typeof Host>;
