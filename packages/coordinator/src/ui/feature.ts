/**
 * The dashboard: the page at `/ui` (static files built by `npm run build`)
 * and its live feed at `/ui/feed`. The page changes things only through the
 * REST API, with the token it asks for; the feed follows the token rules of
 * every websocket (checked at the upgrade).
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { SwitchyardError } from '@switchyard/shared';
import type { CoordinatorContext, Feature } from '../context.js';
import { AssetStore, type AssetName } from './assets.js';
import { DashboardFeed, type FeedOptions, type FeedSources } from './feed.js';

/** Paths of the page's own files: open without a token (they hold no data), so the page can load and ask for one. */
export const UI_PUBLIC_PATHS = ['/ui', '/ui/', '/ui/app.js', '/ui/app.css'] as const;

/** `sources` are the other features' repositories, whose mirrors the feed reads. */
export function uiFeature(ctx: CoordinatorContext, sources: FeedSources, opts: FeedOptions & { assets?: AssetStore } = {}): Feature {
  const feed = new DashboardFeed(ctx, sources, opts);
  const assets = opts.assets ?? new AssetStore();

  const routes: FastifyPluginAsyncZod = async (app) => {
    const serve = (name: AssetName) => async (req: { headers: Record<string, string | string[] | undefined> }, reply: import('fastify').FastifyReply) => {
      const a = assets.get(name);
      if (!a) throw new SwitchyardError('UI_NOT_BUILT', 'the dashboard was not built: run `npm run build`');
      reply.header('content-type', a.type).header('etag', a.etag).header('cache-control', 'no-cache');
      // The page talks to nothing but this coordinator.
      if (name === 'index.html') {
        reply.header('content-security-policy', "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'");
      }
      if (req.headers['if-none-match'] === a.etag) return reply.code(304).send();
      return reply.send(a.body);
    };
    const hide = { schema: { hide: true } };
    // The router ignores trailing slashes: this also answers /ui/.
    app.get('/ui', hide, serve('index.html'));
    app.get('/ui/app.js', hide, serve('app.js'));
    app.get('/ui/app.css', hide, serve('app.css'));
  };

  return {
    name: 'ui',
    routes,
    websockets: { '/ui/feed': feed.handle },
    start: () => feed.start(),
    stop: () => feed.stop(),
  };
}
