/**
 * The web UI on the registry listener (`ui.enabled`): one Koa middleware, mounted by server/http/app.ts ahead of the
 * registry routes, answering
 *
 *   GET /, /ui, /ui/r/<repo>[/manifest/<ref>], /ui/status, /ui/login   the page (index.html, from ./static.ts)
 *   GET /ui/assets/<file>                                               its script, style and images (./static.ts)
 *   /ui/api/*                                                           the JSON API (./api.ts)
 *
 * and passing every other path on. Every answer here carries the UI's own Content-Security-Policy (no inline
 * script or style, nothing from another origin), `nosniff` and `Referrer-Policy: no-referrer`; the API's answers and
 * the page are `no-store`. A mutating request (anything but GET and HEAD) must carry `X-Wharf-UI: 1` and, when the
 * browser sends an `Origin`, come from this same origin: with the SameSite=Strict session cookie, that stops any
 * other site from making a logged-in browser delete or log in.
 */
import { readFile } from 'node:fs/promises';
import type { Context, Middleware, Next } from 'koa';
import type { Logger } from 'pino';
import type { StorageDriver } from '../../storage-drivers/driver.js';
import { ifExists } from '../../storage-drivers/driver.js';
import type { UiAuth } from '../http/auth-setup.js';
import type { HttpOptions } from '../http/context.js';
import { errorResponse } from '../http/errors.js';
import type { Notifier } from '../notifications.js';
import { RegistryError } from '../registry/errors.js';
import { GC_METRICS_PATH } from '../registry/layout.js';
import type { LocalRegistry, Registry } from '../registry/registry.js';
import { UiApi, type StatusInfo } from './api.js';
import { SessionKeys, SharedSessionKey } from './session.js';

/** What serves the built page and assets (server/ui/static.ts). */
export interface UiStatic {
  /** Answer with index.html (status, body, Content-Type; this middleware sets the security and cache headers). */
  page(ctx: Context): Promise<void>;
  /** Answer with the asset `file` (a name under /ui/assets/, not decoded further); false when there is none. */
  asset(ctx: Context, file: string): Promise<boolean>;
}

export const UI_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

export const UI_HEADERS: Readonly<Record<string, string>> = {
  'Content-Security-Policy': UI_CSP,
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
};

/** Paths the page's router answers (shareable links); the page works out what to show from the path. */
export function isPageRoute(path: string): boolean {
  return path === '/' || path === '/ui' || path === '/ui/' || path === '/ui/status' || path === '/ui/login' ||
    (path.startsWith('/ui/r/') && path.length > '/ui/r/'.length);
}

function isUiPath(path: string): boolean {
  return path === '/' || path === '/ui' || path.startsWith('/ui/');
}

/** Refuse a mutating request that did not come from the UI's own page. */
export function checkCsrf(ctx: Context): void {
  if (ctx.method === 'GET' || ctx.method === 'HEAD') return;
  if (ctx.get('X-Wharf-UI') !== '1') {
    throw new RegistryError('DENIED', 'a request that changes something needs the header X-Wharf-UI: 1');
  }
  const origin = ctx.get('Origin');
  if (origin !== '' && origin !== `${ctx.protocol}://${ctx.host}`) {
    throw new RegistryError('DENIED', 'cross-origin request refused', { detail: { origin: origin.slice(0, 200) } });
  }
  if (ctx.get('Sec-Fetch-Site') === 'cross-site') throw new RegistryError('DENIED', 'cross-site request refused');
}

export interface UiMiddlewareOptions {
  api: UiApi;
  /** Absent when the page is not built (or in tests of the API alone): page routes then answer 404. */
  statics?: UiStatic;
  logger: Logger;
}

export function uiMiddleware({ api, statics, logger }: UiMiddlewareOptions): Middleware {
  return async (ctx: Context, next: Next) => {
    const path = ctx.path;
    if (!isUiPath(path)) return next();
    // The access log and metrics name these requests' route `ui`.
    ctx.state.ui = true;
    const setHeaders = () => {
      for (const [k, v] of Object.entries(UI_HEADERS)) ctx.set(k, v);
    };
    setHeaders();
    // Headers set so far (the app's common ones, http.headers, ours) stay on an error answer; a handler's go.
    const kept = new Set(ctx.res.getHeaderNames());
    try {
      if (path.startsWith('/ui/api/') || path === '/ui/api') {
        ctx.set('Cache-Control', 'no-store');
        checkCsrf(ctx);
        if (!(await api.handle(ctx, path.slice('/ui/api'.length)))) {
          throw new RegistryError('NAME_UNKNOWN', 'no such endpoint', { reason: { kind: 'no-such-endpoint' }, detail: { path } });
        }
        return;
      }
      const get = ctx.method === 'GET' || ctx.method === 'HEAD';
      if (path.startsWith('/ui/assets/')) {
        if (!get) throw new RegistryError('UNSUPPORTED', 'method not allowed here', { reason: { kind: 'method-not-allowed', allowed: ['GET', 'HEAD'] } });
        const file = path.slice('/ui/assets/'.length);
        if (statics && /^[A-Za-z0-9._-]{1,200}$/.test(file) && !file.startsWith('.') && (await statics.asset(ctx, file))) return;
        throw new RegistryError('NAME_UNKNOWN', 'no such file', { reason: { kind: 'no-such-endpoint' }, detail: { path } });
      }
      if (isPageRoute(path)) {
        if (!get) throw new RegistryError('UNSUPPORTED', 'method not allowed here', { reason: { kind: 'method-not-allowed', allowed: ['GET', 'HEAD'] } });
        if (!statics) throw new RegistryError('NAME_UNKNOWN', 'the web UI is not built into this server', { reason: { kind: 'no-such-endpoint' } });
        await statics.page(ctx);
        ctx.set('Cache-Control', 'no-store');
        return;
      }
      throw new RegistryError('NAME_UNKNOWN', 'no such endpoint', { reason: { kind: 'no-such-endpoint' }, detail: { path } });
    } catch (err) {
      const answer = errorResponse(err);
      if (answer.status >= 500) logger.error({ err, method: ctx.method, path }, 'web UI request failed');
      if (ctx.headerSent || !ctx.writable) {
        ctx.req.socket.destroy();
        return;
      }
      const cookies = ctx.response.get('Set-Cookie');
      for (const header of ctx.res.getHeaderNames()) if (!kept.has(header)) ctx.res.removeHeader(header);
      setHeaders();
      // A cleared stale cookie still goes out with the error.
      if (cookies) ctx.set('Set-Cookie', cookies);
      ctx.set('Cache-Control', 'no-store');
      ctx.status = answer.status;
      // The UI gets no challenge: a browser would show its own login dialog.
      for (const [k, v] of Object.entries(answer.headers)) if (k.toLowerCase() !== 'www-authenticate') ctx.set(k, v);
      ctx.type = 'application/json';
      ctx.body = JSON.stringify(answer.body);
    }
  };
}

// ---- assembly (server/main.ts) ------------------------------------------------------------------------------------

export interface UiSetup {
  driver: StorageDriver;
  local: LocalRegistry;
  registry: Registry;
  options: HttpOptions;
  auth: () => UiAuth;
  title: string;
  sessionLifetimeMs: number;
  logger: Logger;
  notifier?: Notifier;
  storageDriver: string;
  mirrorStatus?: () => StatusInfo['mirror'];
  /** Whether `name` is a mirrored repository (the mirror refuses writes to it, deletes included). */
  isMirrored?: (name: string) => boolean;
  /** The page's files; by default ./static.js when it exists (the built UI). */
  statics?: UiStatic | null;
}

/** The server's version, from package.json beside the build (unknown when it is not there). */
async function readVersion(): Promise<string> {
  for (const rel of ['../../../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(await readFile(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'wharf' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // try the next
    }
  }
  return 'unknown';
}

/** The last garbage collection's figures, from the Prometheus text the collector leaves in storage. */
export function parseGcMetrics(text: string): Record<string, unknown> | null {
  const values: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^wharf_gc_([a-z_]+) (-?[0-9.eE+-]+)$/.exec(line.trim());
    if (m) values[m[1]!] = Number(m[2]);
  }
  const finished = values.last_run_timestamp_seconds;
  if (finished === undefined) return null;
  const camel = (s: string) => s.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
  const out: Record<string, unknown> = {
    lastRun: new Date(finished * 1000).toISOString(),
    durationSeconds: values.last_run_duration_seconds ?? null,
    success: values.last_run_success === 1,
    dryRun: values.last_run_dry_run === 1,
  };
  for (const [k, v] of Object.entries(values)) {
    if (k.startsWith('last_run_')) continue;
    out[camel(k)] = v;
  }
  return out;
}

/** Load the built page's server (./static.js), when the build has one. */
async function loadStatics(logger: Logger): Promise<UiStatic | undefined> {
  const url = new URL('./static.js', import.meta.url);
  try {
    await readFile(url);
  } catch {
    logger.warn('web UI: server/ui/static.js is not built; the page is not served, the UI API is');
    return undefined;
  }
  const mod = (await import(url.href)) as { createUiStatic?: () => UiStatic | Promise<UiStatic> };
  return mod.createUiStatic ? await mod.createUiStatic() : undefined;
}

/** Build the web UI's middleware for server/http/app.ts. */
export async function createUi(setup: UiSetup): Promise<Middleware> {
  // Found or created when first needed (a cookie to check, a login), so that starting and serving reads write nothing.
  const sessions = new SessionKeys(new SharedSessionKey(setup.driver, setup.logger), Math.max(60, Math.round(setup.sessionLifetimeMs / 1000)));
  const startedAt = new Date();
  const version = await readVersion();
  const api = new UiApi({
    local: setup.local,
    registry: setup.registry,
    options: setup.options,
    auth: setup.auth,
    sessions,
    title: setup.title,
    logger: setup.logger,
    notifier: setup.notifier,
    ...(setup.isMirrored ? { isMirrored: setup.isMirrored } : {}),
    status: async () => {
      const gcText = await ifExists(setup.driver.getContent(GC_METRICS_PATH));
      return {
        version,
        storageDriver: setup.storageDriver,
        uptimeSeconds: Math.floor((Date.now() - startedAt.getTime()) / 1000),
        startedAt: startedAt.toISOString(),
        gc: gcText ? parseGcMetrics(gcText.toString('utf8')) : null,
        mirror: setup.mirrorStatus ? setup.mirrorStatus() : null,
      };
    },
  });
  const statics = setup.statics === null ? undefined : setup.statics ?? (await loadStatics(setup.logger));
  return uiMiddleware({ api, statics, logger: setup.logger });
}
