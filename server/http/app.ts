/**
 * The Koa application: error envelope first, then common headers and the access log, then one dispatch table
 * from (route, method) to a handler named after the spec operation.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import Koa, { type Next } from 'koa';
import type { Health } from '../health.js';
import type { Metrics } from '../metrics.js';
import { RegistryError } from '../registry/errors.js';
import { deleteBlob, getBlob } from './blobs.js';
import { asOAuthError, errorResponse } from './errors.js';
import { queryParam, type AppDeps, type RegistryContext } from './context.js';
import { TrustedProxies } from './forwarded.js';
import { getBase, getCatalog, listReferrers, listTags } from './discovery.js';
import { deleteManifest, getManifest, putManifest } from './manifests.js';
import { ALLOWED_METHODS, isWrite, matchRoute, type RouteName } from './routes.js';
import {
  cancelBlobUpload,
  getBlobUploadStatus,
  patchBlobData,
  putBlobUploadComplete,
  startBlobUpload,
} from './uploads.js';

type Handler = (ctx: RegistryContext) => Promise<void> | void;

const HANDLERS: Record<RouteName, Partial<Record<string, Handler>>> = {
  base: { GET: getBase, HEAD: getBase },
  catalog: { GET: getCatalog, HEAD: getCatalog },
  tags: { GET: listTags, HEAD: listTags },
  manifest: { GET: getManifest, HEAD: getManifest, PUT: putManifest, DELETE: deleteManifest },
  blob: { GET: getBlob, HEAD: getBlob, DELETE: deleteBlob },
  uploadStart: { POST: startBlobUpload },
  upload: { GET: getBlobUploadStatus, PATCH: patchBlobData, PUT: putBlobUploadComplete, DELETE: cancelBlobUpload },
  referrers: { GET: listReferrers, HEAD: listReferrers },
};

/** Errors a client causes by going away mid-request: not the server's fault, not worth an error log. */
function isClientAbort(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'ECONNABORTED' ||
    (err as Error).message === 'aborted';
}

const HEALTH_PATHS = new Set(['/healthz', '/readyz']);

/** A client-chosen `X-Request-Id` that is kept; any other is replaced by a fresh one. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Headers on every response of this application (the API, the token endpoint, probes, and their errors): nothing it
 * answers is a page. `nosniff` stops a browser from guessing HTML in a body, and the policy gives a body that is
 * rendered anyway no scripts, no subresources, no framing and a sandbox. `http.headers` is applied after these and
 * can replace them; a web UI served beside the API would set its own policy on its own pages.
 */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'X-Content-Type-Options': 'nosniff',
  'Content-Security-Policy': "default-src 'none'; frame-ancestors 'none'; sandbox",
};

/**
 * Socket byte counters as last accounted for. Node reads ahead (a request's body is often in the socket buffer
 * before the first middleware runs), so a request is charged with everything the connection read since the previous
 * request on it was accounted for: exact for HTTP/1.1 without pipelining, which is what clients use.
 */
const accounted = new WeakMap<object, { read: number; written: number }>();

/** Count one answered request (bytes are the connection's, headers included). */
function observeRequest(metrics: Metrics, ctx: Koa.Context, route: string, seconds: number): void {
  const socket = ctx.req.socket;
  const labels = { route, method: ctx.method };
  metrics.inFlight.dec();
  metrics.httpRequests.inc({ ...labels, status: String(ctx.status) });
  metrics.httpDuration.observe(labels, seconds);
  const before = accounted.get(socket) ?? { read: 0, written: 0 };
  // A streamed body is still being written when this runs: count what the response promised for it.
  const written = Math.max(socket.bytesWritten, before.written + Number(ctx.response.length ?? 0));
  metrics.receivedBytes.inc({ route }, Math.max(socket.bytesRead - before.read, 0));
  metrics.sentBytes.inc({ route }, Math.max(written - before.written, 0));
  accounted.set(socket, { read: socket.bytesRead, written });
}

/**
 * Answer a probe on the public listener: liveness is the process answering at all; readiness runs every check now.
 * Each check says only `ok` or `unavailable`: its error text (hosts, ports, bucket names) is for the operators'
 * listener (`/debug/health`, server/debug.ts) and the log, not for anyone who can reach the registry.
 */
export async function answerHealth(ctx: Koa.Context, health: Health, kind: 'liveness' | 'readiness'): Promise<void> {
  const report = kind === 'liveness' ? { ready: true, checks: {} } : await health.readiness();
  const checks = Object.fromEntries(Object.entries(report.checks).map(([name, v]) => [name, v === 'ok' ? 'ok' : 'unavailable']));
  ctx.status = report.ready ? 200 : 503;
  ctx.body = { status: report.ready ? 'ok' : 'unavailable', checks };
}

/**
 * The most bytes of a request body that are read and thrown away after the answer (a body a route takes none of, a
 * push refused before its body was read, a manifest over the size limit) before the connection is cut. Reading
 * them keeps the connection for the client's next request and lets it read the answer before it stops sending;
 * without a bound, anyone could keep the server reading an endless body, credentials or not.
 */
export const DISCARD_LIMIT = 16 * 1024 * 1024;

function boundDiscardedBody(req: IncomingMessage, res: ServerResponse): void {
  // Most requests (every GET and HEAD a client sends) have no body: nothing to bound, no listener to pay for.
  if (req.headers['transfer-encoding'] === undefined && (req.headers['content-length'] ?? '0') === '0') return;
  // Taken now: by the time the response has finished, Node may have detached the request from its socket (null).
  const socket = req.socket;
  res.once('finish', () => {
    if (req.complete || socket.destroyed) return;
    // Node discards the rest inside its parser (no 'data' events reach anyone), so what the socket reads is counted.
    const base = socket.bytesRead;
    const check = setInterval(() => {
      if (req.complete || socket.destroyed) return clearInterval(check);
      if (socket.bytesRead - base > DISCARD_LIMIT) {
        clearInterval(check);
        socket.destroy();
      }
    }, 25);
    check.unref();
  });
}

export function createApp(deps: AppDeps): Koa {
  const app = new Koa();
  // Koa's own proxy support would believe X-Forwarded-* from anyone; they are weighed per request below instead.
  app.proxy = false;
  const { logger, options } = deps;
  const trustedProxies = new TrustedProxies(options.trustedProxies);
  /** The headers every response carries besides its request id, in the order they are set. */
  const commonHeaders: Array<[string, string | string[]]> = [
    ['Docker-Distribution-API-Version', 'registry/2.0'],
    ...Object.entries(SECURITY_HEADERS),
    // As Koa's set would: a single-valued header configured as a one-element list goes out as that value.
    ...Object.entries(options.headers).map(([header, values]): [string, string | string[]] =>
      Array.isArray(values) && values.length === 1 && /^content-(type|length)$/i.test(header) ? [header, values[0]!] : [header, values]),
  ];

  // 1. Errors: every failure becomes the spec's JSON envelope. Registered first so it sees everything.
  app.use(async (ctx: Koa.Context, next: Next) => {
    const started = process.hrtime.bigint();
    boundDiscardedBody(ctx.req, ctx.res);
    // The client's address, and the host and scheme it used: from the connection, or from the forwarded headers of a
    // trusted proxy (http.trustedproxies). Everything downstream (throttle, logs, events, Location) reads these.
    const origin = trustedProxies.origin(ctx.req.socket.remoteAddress ?? '', ctx.req.headers);
    ctx.request.ip = origin.ip;
    if (origin.host !== undefined) Object.defineProperty(ctx.request, 'host', { value: origin.host, configurable: true });
    if (origin.protocol !== undefined) Object.defineProperty(ctx.request, 'protocol', { value: origin.protocol, configurable: true });
    deps.metrics?.inFlight.inc();
    // A client's own id is kept for tracing only when it is short and plain: it goes into logs, events and headers.
    const asked = ctx.get('X-Request-Id');
    const requestId = REQUEST_ID.test(asked) ? asked : randomUUID();
    ctx.state.requestId = requestId;
    const setCommonHeaders = () => {
      // Straight to Node rather than through ctx.set, which builds three arrays and a closure per header: on a
      // manifest GET these headers were the largest share of the request's allocations (5 of 37 KB).
      if (ctx.headerSent) return;
      const res = ctx.res;
      res.setHeader('X-Request-Id', requestId);
      for (const [header, value] of commonHeaders) res.setHeader(header, value);
    };
    setCommonHeaders();
    try {
      await next();
    } catch (err) {
      const answer = errorResponse(err);
      const aborted = isClientAbort(err);
      if (answer.authFailure) deps.metrics?.authFailures.inc({ code: answer.authFailure });
      if (answer.status >= 500 && !aborted) {
        logger.error({ err, requestId, method: ctx.method, path: ctx.path }, 'request failed');
      } else {
        logger.debug({ err: (err as Error).message, requestId, code: answer.code }, 'request rejected');
      }
      if (ctx.headerSent || !ctx.writable) {
        // Too late for an error response: the only honest signal left is a broken connection.
        ctx.req.socket.destroy();
        return;
      }
      // Headers a handler set before failing (digests, ranges) describe a success that did not happen.
      for (const header of ctx.res.getHeaderNames()) ctx.res.removeHeader(header);
      setCommonHeaders();
      // A request body we stopped reading (a manifest over the limit, say) is read and discarded by Node once the
      // response is sent, up to DISCARD_LIMIT, and the connection is kept. Closing it at once would reset the socket
      // while the client is still sending, and the client would see a broken pipe rather than this error.
      ctx.status = answer.status;
      for (const [k, v] of Object.entries(answer.headers)) ctx.set(k, v);
      ctx.body = answer.body;
      ctx.set('Content-Type', 'application/json');
    } finally {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const match = (ctx.state as Partial<RegistryContext['state']>).match;
      const route = match?.route ?? (HEALTH_PATHS.has(ctx.path) ? 'health' : ctx.state.ui ? 'ui' : 'none');
      if (deps.metrics) observeRequest(deps.metrics, ctx, route, seconds);
      if (!deps.accessLogDisabled) {
        logger.info(
          { requestId, method: ctx.method, path: ctx.path, route, repository: match?.name,
            digest: ctx.response.get('Docker-Content-Digest') || (match?.param?.includes(':') ? match.param : undefined),
            user: ctx.state.user, status: ctx.status,
            durationMs: Math.round(seconds * 10_000) / 10, remote: ctx.ip },
          'request',
        );
      }
    }
  });

  // 2. Health: `/healthz` (liveness) and `/readyz` (readiness) for probes, outside the API and its access rules;
  //    and registry:2's `health.storagedriver`: while storage is failing, the API answers 503.
  app.use(async (ctx: Koa.Context, next: Next) => {
    if (deps.health && HEALTH_PATHS.has(ctx.path) && (ctx.method === 'GET' || ctx.method === 'HEAD')) {
      await answerHealth(ctx, deps.health, ctx.path === '/readyz' ? 'readiness' : 'liveness');
      return;
    }
    if (deps.health && !deps.health.storageHealthy()) {
      // The driver's error text stays in the log and on the operators' listener: it can name hosts and buckets.
      throw new RegistryError('UNAVAILABLE', 'storage is unavailable');
    }
    await next();
  });

  // 3. The built-in token server's endpoint (auth.tokenserver.path), outside the API and its prefix.
  if (deps.auth) {
    const auth = deps.auth;
    app.use(async (ctx: Koa.Context, next: Next) => {
      let served: boolean;
      try {
        served = await auth.serveToken(ctx);
      } catch (err) {
        throw isClientAbort(err) ? err : asOAuthError(err);
      }
      if (!served) await next();
    });
  }

  // 4. The web UI (`ui.enabled`, server/ui/): `/`, `/ui/…` pages and assets, and its JSON API under `/ui/api/`,
  //    with its own security headers; every other path passes on to the registry's routes.
  if (deps.ui) app.use(deps.ui);

  // 5. Routing and dispatch.
  app.use(async (ctx: Koa.Context) => {
    let path = ctx.path;
    if (options.prefix) {
      if (path !== options.prefix && !path.startsWith(`${options.prefix}/`)) {
        throw new RegistryError('NAME_UNKNOWN', 'no such endpoint', { reason: { kind: 'no-such-endpoint' }, detail: { path } });
      }
      path = path.slice(options.prefix.length) || '/';
    }
    const match = matchRoute(path);
    if (!match) throw new RegistryError('NAME_UNKNOWN', 'no such endpoint', { reason: { kind: 'no-such-endpoint' }, detail: { path } });
    const handler = HANDLERS[match.route][ctx.method];
    if (!handler) {
      throw new RegistryError('UNSUPPORTED', `method ${ctx.method} not allowed here`, {
        reason: { kind: 'method-not-allowed', allowed: ALLOWED_METHODS[match.route] },
      });
    }
    if (options.readOnly && isWrite(ctx.method)) {
      throw new RegistryError('UNSUPPORTED', 'the registry is in read-only mode (storage.maintenance.readonly)');
    }
    // containerd's `?ns=` on a read chooses the local repository it works on (server/proxy/routing.ts): so a
    // namespace can never write into, or read, the cache of a repository routed to another upstream.
    if (deps.proxy && !isWrite(ctx.method) && match.name !== undefined) {
      // Read like every parameter an access decision depends on: once, and a repeated one is refused.
      const local = deps.proxy.localName(match.name, queryParam(ctx as RegistryContext, 'ns'));
      if (local === undefined) {
        throw new RegistryError('NAME_UNKNOWN', 'this registry does not mirror that repository from the registry ?ns= names', {
          detail: { name: match.name },
        });
      }
      match.name = local;
    }
    // A mirrored repository takes no pushes or deletes: refused here already, before the access check and any body.
    if (deps.proxy && isWrite(ctx.method) && match.name !== undefined) deps.proxy.assertWritable(match.name);
    const rctx = ctx as RegistryContext;
    rctx.state.match = match;
    rctx.state.deps = deps;
    // Who is calling and may they (server/http/auth.ts); it can also turn an unreadable mount into an upload.
    if (deps.auth) await deps.auth.authorize(rctx);
    const uploading = (match.route === 'upload' || match.route === 'uploadStart') && ctx.method !== 'GET' && ctx.method !== 'DELETE';
    if (uploading) deps.metrics?.uploadsInProgress.inc();
    try {
      await handler(rctx);
    } finally {
      if (uploading) deps.metrics?.uploadsInProgress.dec();
    }
  });

  // Koa logs unhandled errors itself unless told otherwise; ours were already answered and logged above.
  app.silent = true;
  return app;
}
