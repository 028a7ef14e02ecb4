/**
 * The coordinator: a stateless fastify app over etcd. `buildCoordinator()`
 * assembles it from features — each a set of routes, websockets and a
 * start/stop — and is what tests drive with `inject()`; `listen()` adds the
 * socket.
 *
 * Stateless means: every piece of state is in etcd. The in-memory mirrors
 * are caches fed by etcd watches; any number of coordinators can serve the
 * same cluster, and a restarted one rebuilds everything from etcd.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import fastify, { LogController, type FastifyInstance } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { jsonSchemaTransform, serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Etcd3 } from 'etcd3';
import { WebSocketServer } from 'ws';
import { checkEtcdAccess, createEtcdClient, keyspace, loadEtcdAccess, logDestination, parseEtcdHosts, VERSION, wantsAccessCheck, wantsPretty } from '@switchyard/shared';
import { CoordinatorConfig, type CoordinatorConfigInput } from './config.js';
import { makeCall, makeWrite, type CoordinatorContext, type Feature, type WebSocketHandler } from './context.js';
import { checkToken, installAuth } from './http/auth.js';
import { installBodyParsers } from './http/body.js';
import { installErrorHandling } from './http/errors.js';
import { discoveryFeature } from './discovery/feature.js';
import { dnsFeature } from './dns/feature.js';
import { healthzFeature } from './healthz/feature.js';
import { hostsFeature } from './hosts/feature.js';
import { HostDirectory } from './hosts/routes.js';
import { l4Feature } from './l4/feature.js';
import { L4Repository } from './l4/repository.js';
import { leviathanFeature } from './leviathan/feature.js';
import { LeviathanRepository } from './leviathan/repository.js';
import { metricsFeature } from './metrics/feature.js';
import { CoordinatorMetrics } from './metrics/registry.js';
import { portmasterFeature } from './portmaster/feature.js';
import { PortmasterRepository } from './portmaster/repository.js';
import { statusFeature } from './status/feature.js';
import { UI_PUBLIC_PATHS, uiFeature } from './ui/feature.js';

export interface Coordinator {
  app: FastifyInstance;
  ctx: CoordinatorContext;
  l4: L4Repository;
  hosts: HostDirectory;
  /** Listen on config.listen; resolves to the base URL. */
  listen(): Promise<string>;
  close(): Promise<void>;
}

export interface BuildDeps {
  /** Use this etcd client instead of creating one (it is not closed by close()). */
  etcd?: Etcd3;
  /** Extra features (tests, embedders). */
  features?: ((ctx: CoordinatorContext) => Feature)[];
}

const MiB = 1024 * 1024;

export async function buildCoordinator(input: CoordinatorConfigInput, deps: BuildDeps = {}): Promise<Coordinator> {
  const config = CoordinatorConfig.parse(input);
  const keys = keyspace(config.prefix);
  const etcdHosts = parseEtcdHosts(config.etcd);
  const access = loadEtcdAccess(config);
  // A refused password or TLS handshake fails the start; etcd merely away does not.
  if (!deps.etcd && wantsAccessCheck(etcdHosts, access)) await checkEtcdAccess(etcdHosts, access, keys.l4.current, config.etcdTimeoutMs);
  const https = config.tlsCert && config.tlsKey ? { cert: readFileSync(config.tlsCert), key: readFileSync(config.tlsKey) } : null;
  const app = fastify({
    // JSON goes through pino's own fast stdout writer; people get readable lines.
    logger: { level: config.logLevel, name: 'coordinator', ...(wantsPretty(config.logFormat, process.stdout) ? { stream: logDestination(config.logFormat, process.stdout) } : {}) },
    bodyLimit: MiB,
    ...(https ? { https } : {}),
    // Keep-alive sockets must not hold close() hostage.
    forceCloseConnections: true,
    // Two log lines per request cost more than the request itself on the hot
    // routes; requests are logged at debug level below instead.
    logController: new LogController({ disableRequestLogging: true }),
    // `/cpool/` is `/cpool`: Leviathan's router (cowboy) treats a path with
    // and without its trailing slash as one, and its clients use both. The
    // router ignores it for every route, so no route can be told apart by it.
    routerOptions: { ignoreTrailingSlash: true },
  }).withTypeProvider<ZodTypeProvider>();
  if (config.logLevel === 'debug' || config.logLevel === 'trace') {
    app.addHook('onResponse', async (request, reply) => {
      request.log.debug({ method: request.method, url: request.url, status: reply.statusCode, ms: reply.elapsedTime }, 'request');
    });
  }

  // A call's gRPC deadline is the request's: a write cut short by a shorter one
  // would only turn into a 504 (sent, outcome unknown) sooner.
  const etcd = deps.etcd ?? createEtcdClient({ hosts: etcdHosts, callTimeoutMs: config.etcdTimeoutMs, access });
  const metrics = new CoordinatorMetrics();
  const ctx: CoordinatorContext = {
    etcd,
    keys,
    config,
    coordinatorId: randomUUID(),
    log: app.log,
    call: makeCall(config, etcd, metrics),
    write: makeWrite(config, etcd, metrics),
    metrics,
  };

  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  installErrorHandling(app);
  // Open without the token: probes of /healthz, the dashboard's own files (they
  // hold no data: the page asks for the token), and /metrics with --metrics-public.
  installAuth(app, config.token, ['/healthz', ...UI_PUBLIC_PATHS, ...(config.metricsPublic ? ['/metrics'] : [])]);

  installBodyParsers(app);

  await app.register(swagger, {
    openapi: {
      info: { title: 'Switchyard', version: VERSION, description: 'L4 load balancing, port allocation, container networks and service discovery over etcd.' },
      components: { securitySchemes: { token: { type: 'apiKey', in: 'header', name: 'X-AUTH-TOKEN' } } },
    },
    transform: jsonSchemaTransform,
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  // Shared by two features (discovery's `lb=` providers write L4 servers),
  // and exposed to tests and embedders through the Coordinator.
  const l4 = new L4Repository(ctx);
  const hosts = new HostDirectory(ctx);
  // Built here, not inside their features, because the dashboard reads their mirrors too.
  const portmaster = new PortmasterRepository(ctx);
  const leviathan = new LeviathanRepository(ctx);
  const features: Feature[] = [
    // First: its request hook must see the routes of every feature after it.
    ...(config.metrics ? [metricsFeature(ctx)] : []),
    healthzFeature(ctx),
    l4Feature(ctx, l4, hosts),
    hostsFeature(ctx, hosts),
    portmasterFeature(ctx, portmaster),
    leviathanFeature(ctx, leviathan),
    discoveryFeature(ctx, l4),
    uiFeature(ctx, { l4, hosts, portmaster, leviathan }),
    ...(config.dnsListen ? [dnsFeature(ctx, config.dnsListen)] : []),
    statusFeature(ctx),
    ...(deps.features ?? []).map((f) => f(ctx)),
  ];

  const sockets = new Map<string, { wss: WebSocketServer; handler: WebSocketHandler }>();
  for (const f of features) {
    if (f.routes) await app.register(f.routes);
    for (const [path, handler] of Object.entries(f.websockets ?? {})) {
      sockets.set(path, { wss: new WebSocketServer({ noServer: true, maxPayload: MiB }), handler });
    }
  }
  app.server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    // A trailing slash is ignored here as by the HTTP router.
    const path = (request.url ?? '/').split('?')[0].replace(/(.)\/$/, '$1');
    const route = sockets.get(path);
    if (!route || !checkToken(config.token, { headers: request.headers, url: request.url ?? '/' })) {
      socket.end(route ? 'HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n\r\n' : 'HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
      return;
    }
    route.wss.handleUpgrade(request, socket, head, (ws) => route.handler(ws, request));
  });

  for (const f of features) await f.start?.();
  await app.ready();

  let closed = false;
  return {
    app,
    ctx,
    l4,
    hosts,
    async listen() {
      const address = await app.listen({ host: config.listen.host, port: config.listen.port });
      return address;
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const { wss } of sockets.values()) {
        for (const client of wss.clients) client.terminate();
        wss.close();
      }
      for (const f of [...features].reverse()) await f.stop?.();
      await app.close();
      if (!deps.etcd) etcd.close();
    },
  };
}
