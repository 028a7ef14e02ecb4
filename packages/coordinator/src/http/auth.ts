/**
 * Portal's token check: header `X-AUTH-TOKEN`, or the same name as a query
 * parameter. When a token is set, every route requires it but the open ones
 * the app names: /healthz, the dashboard's own files (the page holds no
 * data; it asks for the token and sends it with every call and on its feed)
 * and /metrics with --metrics-public.
 */
import { timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { SwitchyardError } from '@switchyard/shared';


function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export function presentedToken(request: { headers: FastifyRequest['headers']; url: string }): string | undefined {
  const header = request.headers['x-auth-token'];
  if (typeof header === 'string') return header;
  const q = request.url.indexOf('?');
  if (q < 0) return undefined;
  return new URLSearchParams(request.url.slice(q + 1)).get('X-AUTH-TOKEN') ?? undefined;
}

export function checkToken(token: string | undefined, request: { headers: FastifyRequest['headers']; url: string }): boolean {
  if (!token) return true;
  const given = presentedToken(request);
  return given !== undefined && same(given, token);
}

/** `open`: paths served without the token (load balancers' probes, Prometheus with --metrics-public). */
export function installAuth(app: FastifyInstance, token: string | undefined, open: string[]): void {
  if (!token) return;
  const openPaths = new Set(open);
  app.addHook('onRequest', async (request) => {
    if (openPaths.has(request.url.split('?')[0])) return;
    if (!checkToken(token, request)) throw new SwitchyardError('UNAUTHORIZED', 'missing or wrong X-AUTH-TOKEN');
  });
}
