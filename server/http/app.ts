/**
 * The Koa application: error envelope first, then common headers and the access log, then one dispatch table
 * from (route, method) to a handler named after the spec operation.
 */
import { randomUUID } from 'node:crypto';
import Koa, { type Next } from 'koa';
import { InvalidPathError, StorageError } from '../../storage-drivers/driver.js';
import { RegistryError } from '../registry/errors.js';
import { deleteBlob, getBlob } from './blobs.js';
import type { AppDeps, RegistryContext } from './context.js';
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

/** Turn anything thrown into the OCI error to answer with (5xx for the unexpected). */
function toRegistryError(err: unknown): RegistryError {
  if (err instanceof RegistryError) return err;
  if (err instanceof InvalidPathError) {
    return new RegistryError('NAME_INVALID', 'invalid name', { detail: {} });
  }
  if (err instanceof StorageError) {
    return new RegistryError('UNKNOWN', 'storage backend error', { status: 503 });
  }
  return new RegistryError('UNKNOWN', 'internal server error');
}

export function createApp(deps: AppDeps): Koa {
  const app = new Koa();
  // Honour X-Forwarded-Proto/Host from a reverse proxy when building Location URLs (registry:2 does too).
  app.proxy = true;
  const { logger, options } = deps;

  // 1. Errors: every failure becomes the spec's JSON envelope. Registered first so it sees everything.
  app.use(async (ctx: Koa.Context, next: Next) => {
    const started = process.hrtime.bigint();
    const requestId = ctx.get('X-Request-Id') || randomUUID();
    const setCommonHeaders = () => {
      ctx.set('X-Request-Id', requestId);
      ctx.set('Docker-Distribution-API-Version', 'registry/2.0');
      for (const [header, values] of Object.entries(options.headers)) ctx.set(header, values);
    };
    setCommonHeaders();
    try {
      await next();
    } catch (err) {
      const regErr = toRegistryError(err);
      const aborted = isClientAbort(err);
      if (regErr.status >= 500 && !aborted) {
        logger.error({ err, requestId, method: ctx.method, path: ctx.path }, 'request failed');
      } else {
        logger.debug({ err: (err as Error).message, requestId, code: regErr.code }, 'request rejected');
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
      // response is sent, and the connection is kept. Closing it instead would reset the socket while the client
      // is still sending, and the client would see a broken pipe rather than this error.
      ctx.status = regErr.status;
      for (const [k, v] of Object.entries(regErr.headers)) ctx.set(k, v);
      ctx.body = regErr.toJSON();
      ctx.set('Content-Type', 'application/json');
    } finally {
      if (!deps.accessLogDisabled) {
        const ms = Number(process.hrtime.bigint() - started) / 1e6;
        logger.info(
          { requestId, method: ctx.method, path: ctx.path, status: ctx.status, durationMs: Math.round(ms * 10) / 10,
            remote: ctx.ip },
          'request',
        );
      }
    }
  });

  // 2. Routing and dispatch.
  app.use(async (ctx: Koa.Context) => {
    let path = ctx.path;
    if (options.prefix) {
      if (path !== options.prefix && !path.startsWith(`${options.prefix}/`)) {
        throw new RegistryError('UNSUPPORTED', 'not found', { status: 404, detail: { path } });
      }
      path = path.slice(options.prefix.length) || '/';
    }
    const match = matchRoute(path);
    if (!match) throw new RegistryError('UNSUPPORTED', 'not found', { status: 404, detail: { path } });
    const handler = HANDLERS[match.route][ctx.method];
    if (!handler) {
      throw new RegistryError('UNSUPPORTED', `method ${ctx.method} not allowed here`, {
        headers: { Allow: ALLOWED_METHODS[match.route].join(', ') },
      });
    }
    if (options.readOnly && isWrite(ctx.method)) {
      throw new RegistryError('UNSUPPORTED', 'the registry is in read-only mode (storage.maintenance.readonly)');
    }
    const rctx = ctx as RegistryContext;
    rctx.state.match = match;
    rctx.state.deps = deps;
    await handler(rctx);
  });

  // Koa logs unhandled errors itself unless told otherwise; ours were already answered and logged above.
  app.silent = true;
  return app;
}
