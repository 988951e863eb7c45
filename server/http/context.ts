/**
 * What every handler shares: the request context type, URL building for `Location` headers, query and header
 * parsing with OCI errors, and empty responses.
 */
import type { Context, Middleware } from 'koa';
import type { Logger } from 'pino';
import type { Health } from '../health.js';
import type { Metrics } from '../metrics.js';
import type { EventAction, EventTarget } from '../notifications.js';
import type { Notifier } from '../notifications.js';
import type { Mirror } from '../proxy/mirror.js';
import { RegistryError, type ErrorCode } from '../registry/errors.js';
import { parseDigest, validateRepositoryName, type Digest } from '../registry/reference.js';
import type { Registry } from '../registry/registry.js';
import type { RouteMatch } from './routes.js';
import type { UploadLimits } from './upload-limits.js';

export interface HttpOptions {
  /** External base URL (registry:2 `http.host`), without a trailing slash. */
  host?: string;
  /** Path prefix the API is served under ('' or like '/registry'). */
  prefix: string;
  /** Answer relative Location headers (registry:2 `http.relativeurls`). */
  relativeUrls: boolean;
  deleteEnabled: boolean;
  readOnly: boolean;
  redirectEnabled: boolean;
  manifestMaxSize: number;
  /** Extra headers for every response (registry:2 `http.headers`). */
  headers: Record<string, string[]>;
  /** Largest `n` the catalog answers with in one page (registry:2 `catalog.maxentries`). */
  catalogMaxEntries: number;
  /** Largest page of a tags list (registry:2 `tags.maxtags`): a larger or absent `n` is cut to it. */
  maxTags: number;
  /** Addresses and CIDR ranges whose X-Forwarded-* headers are believed (`http.trustedproxies`). */
  trustedProxies: readonly string[];
}

/** What the Koa app calls when auth is configured (built by auth-setup.ts): the token endpoint, before routing,
 * and the access check, after the route match. */
export interface AuthHooks {
  serveToken(ctx: Context): Promise<boolean>;
  authorize(ctx: RegistryContext): Promise<void>;
}

export interface AppDeps {
  /** What every handler calls: the local registry, or the pull-through cache wrapping it (server/proxy/mirror.ts). */
  registry: Registry;
  logger: Logger;
  options: HttpOptions;
  /** registry:2 `log.accesslog.disabled`. */
  accessLogDisabled?: boolean;
  /** Authentication and access control (server/http/auth.ts); absent when no `auth` is configured. */
  auth?: AuthHooks;
  metrics?: Metrics;
  health?: Health;
  /** Webhook notifications (registry:2 `notifications`). */
  notifier?: Notifier;
  /**
   * The pull-through cache (registry:2 `proxy`, docs/mirror.md), also `registry` then; absent when no upstream is
   * configured. Dispatch asks it only routing facts: the repository `?ns=` reads, and whether a write is refused.
   */
  proxy?: Pick<Mirror, 'localName' | 'assertWritable'>;
  /** The web UI's middleware (server/ui/index.ts), mounted before the registry routes; absent when `ui.enabled` is false. */
  ui?: Middleware;
  /** Limits on open upload sessions (`storage.maintenance.uploadlimits`); absent: no limits. */
  uploadLimits?: UploadLimits;
}

export interface RegistryState {
  match: RouteMatch;
  deps: AppDeps;
  /** Set by the access check when rules are in force: the catalog lists only names this returns true for. */
  catalogFilter?: (name: string) => boolean;
  /** The authenticated user, when there is one (logs and notification events name it). */
  user?: string;
  /** The request id (X-Request-Id), set by the first middleware. */
  requestId?: string;
  /** The mount asked for, once read (`mountRequest`): null when there is none or it was dropped. */
  mount?: MountRequest | null;
}

export type RegistryContext = Context & { state: RegistryState };

/** A URL for a registry path: absolute (http.host, else the request's scheme and host) unless relativeurls. */
export function urlFor(ctx: RegistryContext, path: string): string {
  const { host, prefix, relativeUrls } = ctx.state.deps.options;
  const full = `${prefix}${path}`;
  if (relativeUrls) return full;
  return `${host ?? `${ctx.protocol}://${ctx.host}`}${full}`;
}

/** Finish with a status and no body (Content-Length: 0), keeping the headers already set. */
export function respondEmpty(ctx: RegistryContext, status: number): void {
  ctx.status = status;
  ctx.body = Buffer.alloc(0);
  ctx.remove('Content-Type');
}

/** The OCI code a repeated or malformed query parameter is refused with, by parameter. */
const PARAMETER_ERRORS: Record<string, ErrorCode> = {
  digest: 'DIGEST_INVALID', 'digest-algorithm': 'DIGEST_INVALID', mount: 'DIGEST_INVALID', from: 'NAME_INVALID', ns: 'NAME_INVALID',
  n: 'PAGINATION_NUMBER_INVALID',
};

/**
 * The value of a query parameter that may appear once, or undefined. A repeated one is refused (400) rather than
 * read as its first or last value: an access check and a handler that picked different copies of `from` would
 * check one repository and read another.
 */
export function queryParam(ctx: RegistryContext, key: string): string | undefined {
  const v = ctx.query[key];
  if (Array.isArray(v)) {
    throw new RegistryError(PARAMETER_ERRORS[key] ?? 'UNSUPPORTED', `query parameter "${key}" given more than once`, {
      reason: { kind: 'parameter-repeated', parameter: key },
      detail: { parameter: key },
    });
  }
  return v;
}

/** A cross-repository mount as POST …/blobs/uploads/?mount=<digest>&from=<name> asks for it. */
export interface MountRequest {
  digest: Digest;
  /** The source repository; absent when the client named none. */
  from?: string;
}

/**
 * The mount the request asks for, read and validated once and kept on the request: the access check
 * (server/http/auth.ts) decides on this object and the handler mounts exactly it. Undefined for other requests,
 * for a POST without `mount`, and after the access check dropped the mount (see `dropMount`).
 */
export function mountRequest(ctx: RegistryContext): MountRequest | undefined {
  const state = ctx.state;
  if (state.mount === undefined) {
    const raw = ctx.method === 'POST' && state.match.route === 'uploadStart' ? queryParam(ctx, 'mount') : undefined;
    if (raw === undefined) {
      state.mount = null;
    } else {
      const digest = parseDigest(raw);
      const from = queryParam(ctx, 'from');
      if (from !== undefined) validateRepositoryName(from);
      state.mount = from === undefined ? { digest } : { digest, from };
    }
  }
  return state.mount ?? undefined;
}

/** Forget the mount: the request becomes a plain upload start, as the spec asks when a mount cannot happen. */
export function dropMount(ctx: RegistryContext): void {
  ctx.state.mount = null;
}

/** Every value of a query parameter that may be repeated (`tag` on a manifest PUT). */
export function queryParams(ctx: RegistryContext, key: string): string[] {
  const v = ctx.query[key];
  if (v === undefined) return [];
  return Array.isArray(v) ? v : [v];
}

/** `Content-Length` as a number, undefined when absent; SIZE_INVALID when malformed. */
export function contentLength(ctx: RegistryContext): number | undefined {
  const raw = ctx.get('Content-Length');
  if (raw === '') return undefined;
  if (!/^\d+$/.test(raw)) throw new RegistryError('SIZE_INVALID', 'invalid Content-Length', { detail: { contentLength: raw } });
  return Number(raw);
}

/** Whether the request carries a body (a non-zero Content-Length, or chunked transfer encoding). */
export function hasBody(ctx: RegistryContext): boolean {
  const length = contentLength(ctx);
  if (length !== undefined) return length > 0;
  return ctx.get('Transfer-Encoding') !== '';
}

/** Parse a pagination count `n`: a non-negative integer, capped at `max` when given. */
export function paginationCount(ctx: RegistryContext, max?: number): number | undefined {
  const raw = queryParam(ctx, 'n');
  if (raw === undefined || raw === '') return max;
  if (!/^\d{1,9}$/.test(raw)) {
    throw new RegistryError('PAGINATION_NUMBER_INVALID', 'n must be a non-negative integer', { detail: { n: raw } });
  }
  const n = Number(raw);
  return max === undefined ? n : Math.min(n, max);
}

/** An RFC 5988 `Link` header for the next page of a listing. */
export function nextLink(path: string, n: number, last: string): string {
  const q = new URLSearchParams({ last, n: String(n) });
  return `<${path}?${q.toString()}>; rel="next"`;
}

/** Queue a notification event about this request (no-op without endpoints). Never blocks or throws. */
/** Whether events go out at all (`notifications`): a hot path builds an event's target only then. */
export function notifying(ctx: RegistryContext): boolean {
  return ctx.state.deps.notifier?.enabled === true;
}

/**
 * Set a response header straight on Node's response, for the hot paths (manifest and blob GETs): Koa's `ctx.set`
 * builds two arrays and a closure per call.
 */
export function setHeader(ctx: RegistryContext, name: string, value: string): void {
  if (!ctx.headerSent) ctx.res.setHeader(name, value);
}

export function notify(ctx: RegistryContext, action: EventAction, target: Omit<EventTarget, 'repository'>): void {
  const notifier = ctx.state.deps.notifier;
  if (!notifier?.enabled) return;
  notifier.emit(
    action,
    { ...target, repository: ctx.state.match.name! },
    {
      id: ctx.state.requestId ?? '',
      addr: ctx.ip,
      host: ctx.host,
      method: ctx.method,
      useragent: ctx.get('User-Agent'),
    },
    ctx.state.user ? { name: ctx.state.user } : {},
  );
}
