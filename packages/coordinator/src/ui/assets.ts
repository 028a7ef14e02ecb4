/**
 * The dashboard's built files (`npm run build` writes them with esbuild into
 * packages/coordinator/dist/ui-assets/; see scripts/build-ui.mjs). They are
 * read once, on first request, and served from memory with an ETag.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Same place from src/ui/ (tests run the sources) and dist/ui/ (the build). */
export const ASSET_DIR = fileURLToPath(new URL('../../dist/ui-assets/', import.meta.url));

export const ASSETS = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'app.css': 'text/css; charset=utf-8',
} as const;
export type AssetName = keyof typeof ASSETS;

export interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

export class AssetStore {
  private readonly cache = new Map<AssetName, Asset>();

  constructor(private readonly dir: string = ASSET_DIR) {}

  /** The file, or undefined when the dashboard was not built. */
  get(name: AssetName): Asset | undefined {
    let a = this.cache.get(name);
    if (a) return a;
    let body: Buffer;
    try {
      body = readFileSync(`${this.dir}${name}`);
    } catch {
      return undefined;
    }
    a = { body, type: ASSETS[name], etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` };
    this.cache.set(name, a);
    return a;
  }
}
