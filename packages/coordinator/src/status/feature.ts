/**
 * GET /status: the cluster at a glance for `switchyard status` — etcd's
 * members and leader, and how many objects each feature holds. Counts are
 * count-only range reads at one revision (etcd answers them without sending
 * a value), so the answer is the cluster's, not this coordinator's caches',
 * and costs the same whichever coordinator serves it.
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { ClusterStatus, generationOf, skydns, VERSION } from '@switchyard/shared';
import type { CoordinatorContext, Feature } from '../context.js';

async function clusterStatus(ctx: CoordinatorContext): Promise<ClusterStatus> {
  const { etcd, keys } = ctx;
  const [members, status] = await ctx.call(() => Promise.all([etcd.cluster.memberList({}), etcd.maintenance.status({})]), 'etcd status');
  const revision = Number(status.header.revision);
  // All counts at the revision just read, so they agree with each other.
  const count = (prefix: string) => ctx.call(() => etcd.getAll().prefix(prefix).revision(revision).count(), 'count');
  const pmOffers = `${keys.pm.all}offers/`;
  const pmPorts = `${keys.pm.mirrored}ports/`;
  // A host has applied every L4 change once its applied revision reaches the
  // newest L4 service key's. etcd's own revision is no measure, since every
  // status write and lease bumps it. (A delete leaves no key, so a pending
  // delete is not counted. Leviathan is left out: a host reports one applied
  // revision, the lowest of its roles', and a role's moves only with its own
  // prefix, so a host idle in L4 never reaches a Leviathan write's revision.)
  const newest = (prefix: string) =>
    ctx.call(async () => Number((await etcd.getAll().prefix(prefix).revision(revision).sort('Mod', 'Descend').limit(1).exec()).kvs[0]?.mod_revision ?? 0), 'newest');
  // Services live under the current generation (etcd/generations.ts); a switch is an L4 change too.
  const gen = generationOf((await ctx.call(() => etcd.kv.range({ key: Buffer.from(keys.l4.current), revision: String(revision) }), 'current generation')).kvs[0]);
  const l4Set = keys.l4.set(gen.id);
  const desired = Math.max(gen.revision, await newest(l4Set));
  const [services, portServices, portOffers, portsHeld, cens, cins, containers, providers] = await Promise.all([
    count(l4Set),
    count(keys.pm.services),
    count(pmOffers),
    count(pmPorts),
    count(keys.lev.cens),
    count(keys.lev.cins),
    count(keys.lev.containers),
    count(skydns.dirForName(ctx.config.dnsRoot)),
  ]);
  return {
    version: VERSION,
    coordinatorId: ctx.coordinatorId,
    etcd: {
      revision,
      desiredRevision: desired,
      leader: status.leader && status.leader !== '0' ? status.leader : null,
      members: (members.members ?? []).map((m) => ({
        id: m.ID,
        name: m.name,
        clientURLs: m.clientURLs ?? [],
        leader: m.ID === status.leader,
        learner: Boolean(m.isLearner),
      })),
    },
    // A held port is an open offer's or an instance's.
    counts: { services, portServices, portOffers, portInstances: portsHeld - portOffers, cens, cins, containers, providers },
  };
}

export function statusFeature(ctx: CoordinatorContext): Feature {
  const routes: FastifyPluginAsyncZod = async (app) => {
    app.get(
      '/status',
      { schema: { tags: ['meta'], summary: 'etcd members and leader, and how many services, ports, CENs/CINs and providers there are', response: { 200: ClusterStatus } } },
      () => clusterStatus(ctx),
    );
  };
  return { name: 'status', routes };
}
