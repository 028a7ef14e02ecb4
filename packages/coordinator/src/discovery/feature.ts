/**
 * `GET /provide` (skyapi): a websocket whose lifetime is a SkyDNS record's.
 *
 *  - connect: parameters checked (error frame + close, nothing written, on
 *    anything wrong), then the record is queued for etcd on the coordinator
 *    lease (and with `lb=`, the provider becomes a real server);
 *  - close: the record is deleted at once (batched with other closes);
 *  - the server pings every --ping-interval and terminates a peer that did
 *    not answer the previous ping (one sweep over all providers, not one
 *    timer per connection);
 *  - the coordinator dies: etcd drops the lease and with it every record of
 *    this process within --provider-ttl.
 *
 * Record ids are skyapi's (`skyapiRecordId`): derived from what the provider
 * is, so a process that reconnects gets its SRV target name back. Two live
 * connections with the same identity on this coordinator never share a key:
 * the second gets `-2` (the next free number) appended and the first keeps
 * its id, so neither's close deletes the other's record (a resolver sees two
 * SRV targets with the same host:port; the A answer de-duplicates).
 */
import type { IncomingMessage } from 'node:http';
import type { WebSocket } from 'ws';
import { type SwitchyardError } from '@switchyard/shared';
import type { CoordinatorContext, Feature } from '../context.js';
import type { L4Repository } from '../l4/repository.js';
import { leaseSeconds } from '../store/lease-ttl.js';
import { LbRegistry, toFrameError, type LbClaim } from './lb.js';
import { CoordinatorLease } from './lease.js';
import { parseProvideRequest, recordKey, type ProvideRequest } from './provide-request.js';
import { RecordWriter } from './record-writer.js';

/** Close codes: 1008 policy violation (refused input), 1011 server error. */
const CLOSE_REFUSED = 1008;
const CLOSE_FAILED = 1011;

interface Provider {
  ws: WebSocket;
  key: string;
  alive: boolean;
  claim?: LbClaim;
}

type ProviderSocket = WebSocket & { provider?: Provider; reservedKey?: string };

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
  /** Record keys held by live (or connecting) providers of this coordinator. */
  const reserved = new Set<string>();
  // lb ownership is per connection: this process's id and a counter, unique
  // across coordinators and restarts.
  const ownerPrefix = ctx.coordinatorId.replace(/-/g, '').slice(0, 12);
  let seq = 0;
  let sweeper: NodeJS.Timeout | undefined;
  let stopping = false;

  function sweep(): void {
    for (const p of providers) {
      if (!p.alive) {
        log.debug({ key: p.key }, 'provider missed a pong; dropping it');
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

  /** The provider's own key, or, while another connection holds it, the same with the first free `-<n>`. */
  function reserve(ws: ProviderSocket, req: ProvideRequest): string {
    const base = recordKey(ctx.config.dnsRoot, req, req.id);
    let key = base;
    for (let n = 2; reserved.has(key); n++) key = `${base}-${n}`;
    reserved.add(key);
    ws.reservedKey = key;
    return key;
  }

  function begin(ws: ProviderSocket, req: ProvideRequest, key: string, claim?: LbClaim): void {
    const provider: Provider = { ws, key, alive: true, claim };
    ws.provider = provider;
    providers.add(provider);
    ws.on('pong', onPong);
    writer.put(provider.key, req.value);
    log.debug({ key: provider.key, value: req.value }, 'provider connected');
  }

  function end(ws: ProviderSocket): void {
    if (ws.reservedKey) reserved.delete(ws.reservedKey);
    ws.reservedKey = undefined;
    const p = ws.provider;
    if (!p) return;
    ws.provider = undefined;
    providers.delete(p);
    writer.delete(p.key);
    if (p.claim) void lb.release(p.claim);
    log.debug({ key: p.key }, 'provider gone');
  }

  async function provide(ws: ProviderSocket, request: IncomingMessage): Promise<void> {
    const req = parseProvideRequest(request.url ?? '/', request.socket.remoteAddress);
    if (!('record' in req)) return refuse(ws, req);
    // Reserved before any await, so two connections arriving together never
    // pick the same key; end() releases it, whenever the socket closes.
    const key = reserve(ws, req);
    if (!req.lb) return begin(ws, req, key);

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
    begin(ws, req, key, claim);
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
      lb.start();
      // Grant the lease now so the first provider does not wait for it; an
      // unreachable etcd is retried by the writer.
      lease.id().catch(() => undefined);
      sweeper = setInterval(sweep, ctx.config.pingIntervalMs);
      sweeper.unref();
    },
    async stop() {
      stopping = true;
      if (sweeper) clearInterval(sweeper);
      // app.close() has terminated the sockets: the releases are under way.
      await lb.stop();
      writer.stop();
      await lease.stop();
    },
  };
}
