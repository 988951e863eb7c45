#!/usr/bin/env node
/**
 * Builds the web UI (server/ui/web/, Preact) into dist/ui/ with esbuild:
 *   dist/ui/index.html              the page every UI route answers with (no inline script or style: the CSP forbids it)
 *   dist/ui/assets/app-<hash>.js    the bundle (preact included), minified
 *   dist/ui/assets/app-<hash>.css   the styles
 * The hash is of the content, so server/ui/static.ts serves the assets with a long cache and index.html with none.
 * Prints the size the first page load costs (JS and CSS, raw and gzip-compressed); docs/ui.md states that figure.
 * Run by `npm run build` and `npm run build:all` after tsc (`--quiet` prints nothing unless the budget is exceeded).
 */
import { build } from 'esbuild';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'server', 'ui', 'web');
const out = join(root, 'dist', 'ui');
const quiet = process.argv.includes('--quiet');
/** The budget for what the first page load fetches (JS, compressed). */
const BUDGET_GZIP_JS = 100 * 1024;

await rm(out, { recursive: true, force: true });
await mkdir(join(out, 'assets'), { recursive: true });

const result = await build({
  entryPoints: { app: join(src, 'main.tsx') },
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  outdir: join(out, 'assets'),
  entryNames: '[name]-[hash]',
  assetNames: '[name]-[hash]',
  metafile: true,
  legalComments: 'none',
  charset: 'utf8',
  logLevel: 'warning',
  absWorkingDir: root,
});

const outputs = Object.keys(result.metafile.outputs).map((p) => resolve(root, p));
const js = outputs.find((p) => p.endsWith('.js'));
const css = outputs.find((p) => p.endsWith('.css'));
if (!js || !css) throw new Error(`build-ui: expected one .js and one .css output, got ${outputs.join(', ')}`);

const template = await readFile(join(src, 'index.html'), 'utf8');
const html = template.replace('{{app.js}}', basename(js)).replace('{{app.css}}', basename(css));
if (html.includes('{{')) throw new Error('build-ui: index.html has a placeholder left');
await writeFile(join(out, 'index.html'), html);

const sizes = {};
for (const [what, file] of [['js', js], ['css', css], ['html', join(out, 'index.html')]]) {
  const bytes = await readFile(file);
  sizes[what] = { file: basename(file), bytes: bytes.length, gzip: gzipSync(bytes, { level: 9 }).length };
}
await writeFile(join(out, 'build.json'), `${JSON.stringify({ sizes }, null, 2)}\n`);

const kb = (n) => `${(n / 1024).toFixed(1)} KB`;
const line = `build-ui: first load ${kb(sizes.js.gzip + sizes.css.gzip + sizes.html.gzip)} gzip `
  + `(JS ${sizes.js.file} ${kb(sizes.js.bytes)}, ${kb(sizes.js.gzip)} gzip; CSS ${kb(sizes.css.bytes)}, ${kb(sizes.css.gzip)} gzip)`;
if (sizes.js.gzip > BUDGET_GZIP_JS) {
  console.error(`${line}\nbuild-ui: the JS exceeds its budget of ${kb(BUDGET_GZIP_JS)} gzip`);
  process.exit(1);
}
if (!quiet) console.log(line);
