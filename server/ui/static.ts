/**
 * Serves the built web UI (scripts/build-ui.mjs → dist/ui/): `index.html` for every page route, and the hashed
 * assets under `/ui/assets/<file>`.
 *
 * The files are read once, when first asked for, and kept in memory (the whole UI is a few tens of KB). An asset is
 * served only when its name is one of the files the build wrote in dist/ui/assets/ (listed once, never a path from the
 * request joined to a directory), so no request can reach another file. Asset names carry a content hash, so they are
 * cached for a year as immutable; index.html is never cached, so a new build is picked up on the next load.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { dirname, extname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Context } from 'koa';

/** The headers every UI response carries (docs/ui.md, "Security"). */
export const UI_SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'Content-Security-Policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    + "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
};

export interface UiStatic {
  /** Answers with index.html (200, text/html, no-store). */
  page(ctx: Context): Promise<void>;
  /** Answers with the asset `file` (a bare file name under /ui/assets/) and true, or false when there is no such asset. */
  asset(ctx: Context, file: string): Promise<boolean>;
}

const CONTENT_TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.woff2': 'font/woff2',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
};

/** A bare file name as the build writes them (`app-ABC123.js`): no slash, no leading dot, no `..`. */
const ASSET_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/;

interface Loaded {
  body: Buffer;
  etag: string;
  type: string;
}

/** dist/ui, found relative to this compiled file (dist/server/ui/static.js). */
export const DEFAULT_UI_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'ui');

export function createUiStatic(dir: string = DEFAULT_UI_DIR): UiStatic {
  let index: Promise<Loaded> | undefined;
  let names: Promise<Set<string>> | undefined;
  const assets = new Map<string, Promise<Loaded>>();

  const load = async (path: string, type: string): Promise<Loaded> => {
    const body = await readFile(path);
    return { body, type, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"` };
  };

  const answer = (ctx: Context, file: Loaded, cacheControl: string): void => {
    ctx.set(UI_SECURITY_HEADERS);
    ctx.set('Cache-Control', cacheControl);
    ctx.set('ETag', file.etag);
    ctx.status = 200;
    ctx.type = file.type;
    if (ctx.get('If-None-Match') === file.etag) {
      ctx.status = 304;
      ctx.body = null;
      return;
    }
    ctx.body = file.body;
  };

  return {
    async page(ctx) {
      index ??= load(join(dir, 'index.html'), 'text/html; charset=utf-8').catch((err: NodeJS.ErrnoException) => {
        index = undefined;
        throw err.code === 'ENOENT'
          ? new Error(`the web UI is not built: ${join(dir, 'index.html')} is missing (run npm run build)`)
          : err;
      });
      answer(ctx, await index, 'no-store');
    },

    async asset(ctx, file) {
      if (!ASSET_NAME.test(file) || file.includes('..')) return false;
      names ??= readdir(join(dir, 'assets')).then(
        (list) => new Set(list.filter((n) => ASSET_NAME.test(n))),
        () => { names = undefined; return new Set<string>(); },
      );
      if (!(await names).has(file)) return false;
      const type = CONTENT_TYPES[extname(file)] ?? 'application/octet-stream';
      let loaded = assets.get(file);
      if (!loaded) {
        loaded = load(join(dir, 'assets', file), type);
        assets.set(file, loaded);
        loaded.catch(() => assets.delete(file));
      }
      answer(ctx, await loaded, 'public, max-age=31536000, immutable');
      return true;
    },
  };
}
