/**
 * Blob endpoints: GetBlob / HeadBlob (end-2) with single byte ranges, DeleteBlob (end-10).
 */
import { RegistryError } from '../registry/errors.js';
import { parseDigest } from '../registry/reference.js';
import { notify, notifying, respondEmpty, setHeader, urlFor, type RegistryContext } from './context.js';
import { blobBody } from './send-blob.js';

export type ByteRange = { start: number; end: number } | 'unsatisfiable' | undefined;

/**
 * Parse a `Range` header for a body of `size` bytes (RFC 9110 §14). Only a single `bytes=` range is honoured:
 * `a-b`, `a-` and `-n`. A missing, malformed or multi-range header yields undefined (serve the whole body, as
 * the RFC allows); a range that cannot be satisfied yields 'unsatisfiable'.
 */
export function parseRange(header: string | undefined, size: number): ByteRange {
  if (!header) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(size - suffix, 0), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (m[2] !== '' && Number(m[2]) < start) return undefined;
  if (start >= size) return 'unsatisfiable';
  return { start, end };
}

export async function getBlob(ctx: RegistryContext): Promise<void> {
  const { registry, options } = ctx.state.deps;
  const name = ctx.state.match.name!;
  const digest = parseDigest(ctx.state.match.param!);
  const desc = await registry.statBlob(name, digest, { head: ctx.method === 'HEAD', range: ctx.get('Range') !== '' });
  if (desc.kind === 'upstream') {
    // A mirror's first request for a blob: streamed as it arrives from the upstream (and is stored).
    ctx.set('Docker-Content-Digest', digest.value);
    ctx.type = 'application/octet-stream';
    ctx.status = 200;
    if (desc.size !== undefined) ctx.length = desc.size;
    if (desc.body) ctx.body = desc.body;
    return;
  }

  setHeader(ctx, 'Docker-Content-Digest', desc.digest);
  setHeader(ctx, 'Accept-Ranges', 'bytes');
  setHeader(ctx, 'ETag', `"${desc.digest}"`);
  setHeader(ctx, 'Cache-Control', 'max-age=31536000');

  if (ctx.method === 'GET' && options.redirectEnabled) {
    const url = await registry.blobURL(name, digest);
    if (url) {
      ctx.status = 307;
      ctx.set('Location', url);
      ctx.body = Buffer.alloc(0);
      return;
    }
  }

  ctx.type = 'application/octet-stream';
  const etag = ctx.get('If-None-Match');
  if (etag && etag.split(',').some((t) => t.trim() === `"${desc.digest}"` || t.trim() === '*')) {
    ctx.status = 304;
    return;
  }
  if (ctx.method === 'HEAD') {
    ctx.status = 200;
    ctx.length = desc.size;
    return;
  }

  const range = parseRange(ctx.get('Range'), desc.size);
  if (range === 'unsatisfiable') {
    throw new RegistryError('SIZE_INVALID', 'requested range not satisfiable', {
      reason: { kind: 'range-not-satisfiable', size: desc.size },
      detail: { range: ctx.get('Range'), size: desc.size },
    });
  }
  const start = range?.start ?? 0;
  const length = range ? range.end - range.start + 1 : desc.size;
  const stream = await registry.readBlob(name, digest, start, length);
  if (range) {
    ctx.status = 206;
    ctx.set('Content-Range', `bytes ${range.start}-${range.end}/${desc.size}`);
  } else {
    ctx.status = 200;
  }
  ctx.body = blobBody(stream, ctx.res);
  ctx.type = 'application/octet-stream';
  ctx.length = length;
  if (!notifying(ctx)) return;
  notify(ctx, 'pull', {
    mediaType: 'application/octet-stream',
    size: desc.size,
    length,
    digest: desc.digest,
    url: urlFor(ctx, `/v2/${ctx.state.match.name}/blobs/${desc.digest}`),
  });
}

export async function deleteBlob(ctx: RegistryContext): Promise<void> {
  const { registry, options } = ctx.state.deps;
  if (!options.deleteEnabled) {
    throw new RegistryError('UNSUPPORTED', 'deletion is disabled (storage.delete.enabled)');
  }
  const digest = parseDigest(ctx.state.match.param!);
  await registry.deleteBlob(ctx.state.match.name!, digest);
  respondEmpty(ctx, 202);
  notify(ctx, 'delete', { digest: digest.value });
}
