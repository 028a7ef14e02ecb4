#!/usr/bin/env node
// The `switchyard` executable. It is committed, not built, because npm links a
// workspace's bin only if the file exists when `npm ci` runs — and on a fresh
// clone that is before the first build. It loads the compiled CLI.
import { existsSync } from 'node:fs';

const main = new URL('../dist/main.js', import.meta.url);
if (!existsSync(main)) {
  process.stderr.write('switchyard: the CLI is not built yet; run `npm run build` (or `npm start`) in the repository first\n');
  process.exit(1);
}
await import(main.href);
