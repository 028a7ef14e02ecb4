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
import { jsonSchemaTransform, serializerCompiler, validatorCompiler, type FastifyPluginAsyncZod, type ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Etcd3 } from 'etcd3';
import { WebSocketServer, type WebSocket } from 'ws';
import { z } from 'zod';
import { createEtcdClient, keyspace, parseEtcdHosts, SwitchyardError, VERSION, withTimeout } from '@switchyard/shared';
import { CoordinatorConfig, type CoordinatorConfigInput } from './config.js';
import { makeCall, type CoordinatorContext } from './context.js';
import { checkToken, installAuth } from './http/auth.js';
import { installBodyParsers } from './http/body.js';
import { installErrorHandling } from './http/errors.js';
import { HostDirectory, hostRoutes } from './hosts/routes.js';
import { L4Repository } from './l4/repository.js';
import { l4Routes } from './l4/routes.js';
import { portmasterFeature } from './portmaster/index.js';
import { leviathanFeature } from './leviathan/feature.js';
import { createDiscovery } from './discovery/feature.js';
import { createDnsResponder } from './dns/feature.js';

export type WebSocketHandler = (socket: WebSocket, request: IncomingMessage) => void;

/** One capability of the coordinator. */
export interface Feature {
  name: string;
  routes?: FastifyPluginAsyncZod;
  /** Websocket endpoints by path. */
  websockets?: Record<string, WebSocketHandler>;
  /** Called once at start; must not block on etcd being up. */
  start?(): Promise<void> | void;
  stop?(): Promise<void> | void;
}

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
  const https = config.tlsCert && config.tlsKey ? { cert: readFileSync(config.tlsCert), key: readFileSync(config.tlsKey) } : null;
  const app = fastify({
    logger: { level: config.logLevel, name: 'coordinator' },
    bodyLimit: MiB,
    ...(https ? { https } : {}),
    // Keep-alive sockets must not hold close() hostage.
    forceCloseConnections: true,
    // Two log lines per request cost more than the request itself on the hot
    // routes; requests are logged at debug level below instead.
    logController: new LogController({ disableRequestLogging: true }),
  }).withTypeProvider<ZodTypeProvider>();
  if (config.logLevel === 'debug' || config.logLevel === 'trace') {
    app.addHook('onResponse', async (request, reply) => {
      request.log.debug({ method: request.method, url: request.url, status: reply.statusCode, ms: reply.elapsedTime }, 'request');
    });
  }

  const etcd = deps.etcd ?? createEtcdClient({ hosts: parseEtcdHosts(config.etcd), callTimeoutMs: Math.min(2000, config.etcdTimeoutMs) });
  const ctx: CoordinatorContext = {
    etcd,
    keys: keyspace(config.prefix),
    config,
    coordinatorId: randomUUID(),
    log: app.log,
    call: makeCall(config),
  };

  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  installErrorHandling(app);
  installAuth(app, config.token);

  installBodyParsers(app);

  await app.register(swagger, {
    openapi: {
      info: { title: 'Switchyard', version: VERSION, description: 'L4 load balancing, port allocation, container networks and service discovery over etcd.' },
      components: { securitySchemes: { token: { type: 'apiKey', in: 'header', name: 'X-AUTH-TOKEN' } } },
    },
    transform: jsonSchemaTransform,
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  app.get(
    '/healthz',
    {
      schema: {
        tags: ['meta'],
        summary: '200 when etcd answers, 503 when it does not',
        response: { 200: z.object({ status: z.literal('ok'), etcdRevision: z.int(), version: z.string() }) },
      },
    },
    async () => {
      // The request path has its own deadline so a dead cluster answers within ~2.5 s.
      const res = await withTimeout(
        ctx.etcd.get(`${ctx.keys.prefix}/healthz`).exec().catch((e) => {
          throw new SwitchyardError('ETCD_UNAVAILABLE', `etcd is unavailable: ${(e as Error).message}`);
        }),
        2500,
        'health check',
      );
      return { status: 'ok' as const, etcdRevision: Number(res.header.revision), version: VERSION };
    },
  );

  const l4 = new L4Repository(ctx);
  const hosts = new HostDirectory(ctx);
  const features: Feature[] = [
    { name: 'l4', routes: l4Routes(l4), start: () => void l4.start(), stop: () => l4.stop() },
    { name: 'hosts', routes: hostRoutes(hosts), start: () => void hosts.start(), stop: () => hosts.stop() },
    portmasterFeature(ctx),
    leviathanFeature(ctx),
    createDiscovery(ctx, l4).feature,
    ...(config.dnsListen ? [createDnsResponder(ctx, config.dnsListen).feature] : []),
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
    const path = (request.url ?? '/').split('?')[0];
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
