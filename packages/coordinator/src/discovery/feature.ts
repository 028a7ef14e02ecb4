/**
 * `GET /provide` (skyapi): a websocket whose lifetime is a SkyDNS record's.
 *
 *  - connect: parameters checked (error frame + close, nothing written, on
 *    anything wrong), then the record is claimed in etcd on the coordinator
 *    lease (and with `lb=`, the provider becomes a real server);
 *  - close: the record is deleted at once (batched with other closes), if
 *    it is still on this coordinator's lease;
 *  - the server pings every --ping-interval and terminates a peer that did
 *    not answer the previous ping (one sweep over all providers, not one
 *    timer per connection);
 *  - the coordinator dies: etcd drops the lease and with it every record of
 *    this process within --provider-ttl;
 *  - etcd stops answering (no member answers its probe): every provider gets
 *    `{"error","code":"ETCD_UNAVAILABLE"}` and stays connected; when etcd is
 *    back, `{"event":"etcd-available"}` (its record is claimed again if the
 *    lease expired meanwhile; should another coordinator have taken the id
 *    in between, the record moves to the next suffix).
 *
 * Record ids are skyapi's (`skyapiRecordId`): derived from what the provider
 * is, so a process that reconnects gets its SRV target name back. Two live
 * connections with the same identity never share a key, whether they came
 * through this coordinator or through different ones on the same etcd: the
 * record writer claims the key in etcd (created if absent, or kept while on
 * this coordinator's lease), so the second gets `-2` (the next free number)
 * appended and the first keeps its id, and a close deletes the key only
 * while it is still on this coordinator's lease, so neither's close erases
 * the other's record (a resolver sees two SRV targets with the same
 * host:port; the A answer de-duplicates). "First" is the connection whose
 * put etcd applied first; here, claims are queued in the order connections
 * begin (with `lb=`, after the lb claim, not at the upgrade).
 *
 * Consequence of etcd being the referee: the records of a coordinator that
 * was killed (no graceful stop) stay until its lease expires
 * (--provider-ttl); a process that reconnects through another coordinator
 * meanwhile finds its id taken and gets `-2` until it reconnects after that.
 * A graceful stop revokes the lease, so ids come back unchanged.
 */
import type { IncomingMessage } from 'node:http';
import type { WebSocket } from 'ws';
import { type SwitchyardError } from '@switchyard/shared';
import type { CoordinatorContext, Feature } from '../context.js';
import type { L4Repository } from '../l4/repository.js';
import { onEtcdOutage } from '../store/etcd-outage.js';
import { leaseSeconds } from '../store/lease-ttl.js';
import { LbRegistry, toFrameError, type LbClaim } from './lb.js';
import { CoordinatorLease } from './lease.js';
import { parseProvideRequest, recordKey, type ProvideRequest } from './provide-request.js';
import { RecordWriter, type RecordClaim } from './record-writer.js';

/** Close codes: 1008 policy violation (refused input), 1011 server error. */
const CLOSE_REFUSED = 1008;
const CLOSE_FAILED = 1011;

interface Provider {
  ws: WebSocket;
  record: RecordClaim;
  alive: boolean;
  claim?: LbClaim;
}

type ProviderSocket = WebSocket & { provider?: Provider };

/** Sends `{"error","code"}` as a text frame, then closes; the registry decides the code. */
function refuse(ws: WebSocket, e: SwitchyardError): void {
  ws.send(JSON.stringify({ error: e.message, code: e.code }), () => ws.close(e.status >= 500 ? CLOSE_FAILED : CLOSE_REFUSED, e.code));
}

export function discoveryFeature(ctx: CoordinatorContext, l4: L4Repository): Feature {
  const log = ctx.log.child({ component: 'discovery' });
  const lease = new CoordinatorLease(ctx.etcd, leaseSeconds(ctx.config.providerTtlMs), log);
  const writer = new RecordWriter(ctx.etcd, lease, log);
  const lb = new LbRegistry(ctx, l4, lease, log);
  const providers = new Set<Provider>();
  ctx.metrics.countProviders(() => providers.size);
  // lb ownership is per connection: this process's id and a counter, unique
  // across coordinators and restarts.
  const ownerPrefix = ctx.coordinatorId.replace(/-/g, '').slice(0, 12);
  let seq = 0;
  let sweeper: NodeJS.Timeout | undefined;
  let stopping = false;
  let unsubscribe = () => undefined as void;

  function tellAll(frame: unknown): void {
    const text = JSON.stringify(frame);
    for (const p of providers) if (p.ws.readyState === p.ws.OPEN) p.ws.send(text);
  }

  function sweep(): void {
    for (const p of providers) {
      if (!p.alive) {
        log.debug({ key: p.record.key }, 'provider missed a pong; dropping it');
        p.ws.terminate();
        continue;
      }
      p.alive = false;
      p.ws.ping();
    }
  }

  function onPong(this: ProviderSocket): void {
    if (this.provider) this.provider.alive = true;
  }

  function begin(ws: ProviderSocket, req: ProvideRequest, claim?: LbClaim): void {
    const record = writer.claim(recordKey(ctx.config.dnsRoot, req, req.id), req.value);
    const provider: Provider = { ws, record, alive: true, claim };
    ws.provider = provider;
    providers.add(provider);
    ws.on('pong', onPong);
    log.debug({ key: record.key, value: req.value }, 'provider connected');
  }

  function end(ws: ProviderSocket): void {
    const p = ws.provider;
    if (!p) return;
    ws.provider = undefined;
    providers.delete(p);
    writer.release(p.record);
    if (p.claim) void lb.release(p.claim);
    log.debug({ key: p.record.key }, 'provider gone');
  }

  async function provide(ws: ProviderSocket, request: IncomingMessage): Promise<void> {
    const req = parseProvideRequest(request.url ?? '/', request.socket.remoteAddress);
    if (!('record' in req)) return refuse(ws, req);
    if (!req.lb) return begin(ws, req);

    let claim: LbClaim | undefined;
    try {
      const server = await lb.check(req.lb.serviceId, req.record.host, req.record.port, req.lb.weight);
      if (ws.readyState !== ws.OPEN) return;
      claim = await lb.claim(req.lb.serviceId, server, `${ownerPrefix}.${(seq++).toString(36)}`);
    } catch (e) {
      if (ws.readyState === ws.OPEN) refuse(ws, toFrameError(e));
      return;
    }
    if (ws.readyState !== ws.OPEN) return void lb.release(claim);
    begin(ws, req, claim);
  }

  return {
    name: 'discovery',
    websockets: {
      '/provide': (ws, request) => {
        if (stopping) return ws.close(CLOSE_FAILED, 'coordinator stopping');
        ws.on('error', (err) => log.debug({ err: err.message }, 'provider socket error'));
        ws.on('close', () => end(ws));
        void provide(ws, request).catch((err) => {
          log.error({ err }, 'provider connection failed');
          if (ws.readyState === ws.OPEN) refuse(ws, toFrameError(err));
        });
      },
    },
    start() {
      unsubscribe = onEtcdOutage(ctx.etcd, {
        down: (e) => {
          log.warn({ providers: providers.size }, 'etcd unavailable; telling providers');
          tellAll({ error: e.message, code: e.code });
        },
        up: () => tellAll({ event: 'etcd-available' }),
      });
      lb.start();
      // Grant the lease now so the first provider does not wait for it; an
      // unreachable etcd is retried by the writer.
      lease.id().catch(() => undefined);
      sweeper = setInterval(sweep, ctx.config.pingIntervalMs);
      sweeper.unref();
    },
    async stop() {
      stopping = true;
      unsubscribe();
      if (sweeper) clearInterval(sweeper);
      // app.close() has terminated the sockets: the releases are under way.
      await lb.stop();
      writer.stop();
      await lease.stop();
    },
  };
}
