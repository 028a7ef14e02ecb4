// Builds the dashboard (packages/coordinator/ui) into
// packages/coordinator/dist/ui-assets/: one JS bundle (Preact included), one
// stylesheet and the page. Nothing is fetched at run time; the coordinator
// serves these three files at /ui.
import { copyFileSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const ui = fileURLToPath(new URL('../packages/coordinator/ui/', import.meta.url));
const out = fileURLToPath(new URL('../packages/coordinator/dist/ui-assets/', import.meta.url));
mkdirSync(out, { recursive: true });

await build({
  entryPoints: { app: `${ui}src/main.tsx` },
  outdir: out,
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2022'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  legalComments: 'none',
  logLevel: 'warning',
});
copyFileSync(`${ui}index.html`, `${out}index.html`);
