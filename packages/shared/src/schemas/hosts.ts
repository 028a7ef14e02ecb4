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

export const SERVER_HEALTH_STATES = ['healthy', 'unhealthy', 'unknown'] as const;

/** One real server that is not healthy, as one host's checks see it. */
export const ServerHealth = z.object({
  serviceId: z.string(),
  serverId: z.string(),
  state: z.enum(SERVER_HEALTH_STATES),
  /** When it entered this state (ISO time). */
  since: z.string(),
  lastError: z.string().optional(),
});
export type ServerHealth = z.infer<typeof ServerHealth>;

/**
 * A host's health checks: counts of every checked server, and the servers
 * that are not healthy (a checked server that is not listed is healthy,
 * unless `truncated` says the list was cut).
 */
export const HostHealth = z.object({
  healthy: z.int(),
  unhealthy: z.int(),
  unknown: z.int(),
  servers: z.array(ServerHealth),
  /** How many not-healthy servers were left out of `servers` to keep the status small. */
  truncated: z.int().default(0),
});
export type HostHealth = z.infer<typeof HostHealth>;

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
  health: HostHealth.optional(),
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
  /** The host's health checks (null: it runs none, or reports none yet). */
  health: HostHealth.nullable(),
});
export type Host = z.infer<typeof Host>;
