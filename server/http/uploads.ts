/**
 * Blob upload endpoints: StartBlobUpload (end-4a/4b/4c and the mount, end-11), PatchBlobData (end-5),
 * PutBlobUploadComplete (end-6), GetBlobUploadStatus (end-13), CancelBlobUpload (end-14).
 *
 * Request bodies are streamed straight from the socket into storage; nothing is buffered beyond a chunk.
 */
import { addressKey } from '../../auth/index.js';
import { RegistryError } from '../registry/errors.js';
import { isDigestAlgorithm, parseDigest, type DigestAlgorithm } from '../registry/reference.js';
import { isValidUploadId, type ChunkRange, type UploadStatus } from '../registry/uploads.js';
import type { UploadIntent } from '../registry/registry.js';
import { uploadRangeHeader } from './errors.js';
import { chunksOf } from './chunks.js';
import {
  contentLength,
  hasBody,
  mountRequest,
  notify,
  queryParam,
  respondEmpty,
  urlFor,
  type RegistryContext,
} from './context.js';

function uploadUrl(ctx: RegistryContext, name: string, id: string): string {
  return urlFor(ctx, `/v2/${name}/blobs/uploads/${id}`);
}

/** 201 for a blob now in the repository, and the event saying so (a push, or a mount from another repository). */
function blobCreated(
  ctx: RegistryContext,
  name: string,
  blob: { digest: string; size: number },
  mount?: { from?: string },
): void {
  const url = urlFor(ctx, `/v2/${name}/blobs/${blob.digest}`);
  ctx.set('Location', url);
  ctx.set('Docker-Content-Digest', blob.digest);
  respondEmpty(ctx, 201);
  const target = { mediaType: 'application/octet-stream', size: blob.size, length: blob.size, digest: blob.digest, url };
  if (!mount) notify(ctx, 'push', target);
  else notify(ctx, 'mount', mount.from === undefined ? target : { ...target, fromRepository: mount.from });
}

function uploadAccepted(ctx: RegistryContext, name: string, id: string, offset: number, status: number): void {
  ctx.set('Location', uploadUrl(ctx, name, id));
  ctx.set('Docker-Upload-UUID', id);
  ctx.set('Range', uploadRangeHeader(offset));
  respondEmpty(ctx, status);
}

/** `Content-Range` of a chunk: `<start>-<end>` inclusive (tolerating a `bytes ` prefix and a `/total` suffix). */
function chunkRange(ctx: RegistryContext): ChunkRange | undefined {
  const raw = ctx.get('Content-Range');
  if (raw === '') return undefined;
  const m = /^(?:bytes[ =])?(\d+)-(\d+)(?:\/(?:\d+|\*))?$/.exec(raw.trim());
  if (!m) {
    throw new RegistryError('BLOB_UPLOAD_INVALID', 'invalid Content-Range', {
      reason: { kind: 'content-range-invalid' },
      detail: { contentRange: raw },
    });
  }
  return { start: Number(m[1]), end: Number(m[2]) };
}

function uploadId(ctx: RegistryContext): string {
  const id = ctx.state.match.param!;
  if (!isValidUploadId(id)) {
    throw new RegistryError('BLOB_UPLOAD_UNKNOWN', undefined, { detail: { uuid: id } });
  }
  return id;
}

/** The request body as its chunks (each as it came, see ./chunks.ts), or undefined when the request carries none. */
function body(ctx: RegistryContext): AsyncIterable<Uint8Array> | undefined {
  return hasBody(ctx) ? chunksOf(ctx.req) : undefined;
}

/** An empty body, for requests that carry none. */
async function* noBody(): AsyncIterable<Uint8Array> {}

export async function startBlobUpload(ctx: RegistryContext): Promise<void> {
  const { registry } = ctx.state.deps;
  const name = ctx.state.match.name!;

  // The same object the access check decided on (server/http/auth.ts), never the query read a second time.
  const mount = mountRequest(ctx);
  if (mount !== undefined) {
    const mounted = await registry.mount(name, mount.digest, mount.from);
    if (mounted) return blobCreated(ctx, name, mounted, { from: mount.from });
    // Not mountable: the spec asks for a new upload session instead (202).
  }

  const digestParam = mount === undefined ? queryParam(ctx, 'digest') : undefined;
  if (digestParam !== undefined) {
    // Single-request monolithic upload (end-4b).
    const digest = parseDigest(digestParam);
    const session = await startUploadSession(ctx, name, digest.algorithm, { digest, length: contentLength(ctx) });
    const chunks = body(ctx) ?? noBody();
    let desc;
    try {
      desc = await registry.completeUpload(name, session.id, digest, chunks, { length: contentLength(ctx) });
    } catch (err) {
      // The client never learns this session's URL, so nobody can resume it: it goes now rather than holding its
      // bytes (on a full disk, the space others need) until purging. When storage refuses even that (read-only),
      // upload purging removes it.
      await registry.cancelUpload(name, session.id).catch(() => {});
      throw err;
    } finally {
      uploadSessionClosed(ctx, name, session.id);
    }
    return blobCreated(ctx, name, desc);
  }

  const algorithm = queryParam(ctx, 'digest-algorithm') ?? 'sha256';
  if (!isDigestAlgorithm(algorithm)) {
    throw new RegistryError('DIGEST_INVALID', `unsupported digest algorithm "${algorithm}"`, {
      detail: { algorithm, supported: ['sha256', 'sha512'] },
    });
  }
  const session = await startUploadSession(ctx, name, algorithm);
  uploadAccepted(ctx, name, session.id, 0, 202);
}

export async function patchBlobData(ctx: RegistryContext): Promise<void> {
  const { registry } = ctx.state.deps;
  const name = ctx.state.match.name!;
  const id = uploadId(ctx);
  const range = chunkRange(ctx);
  const status = await registry.appendUpload(name, id, body(ctx) ?? noBody(), { range, length: contentLength(ctx) });
  uploadAccepted(ctx, name, id, status.offset, 202);
}

export async function putBlobUploadComplete(ctx: RegistryContext): Promise<void> {
  const { registry } = ctx.state.deps;
  const name = ctx.state.match.name!;
  const id = uploadId(ctx);
  const digestParam = queryParam(ctx, 'digest');
  if (digestParam === undefined) {
    throw new RegistryError('DIGEST_INVALID', 'the digest query parameter is required to complete an upload');
  }
  const digest = parseDigest(digestParam);
  const chunks = body(ctx);
  const desc = await registry.completeUpload(name, id, digest, chunks, {
    range: chunks ? chunkRange(ctx) : undefined,
    length: chunks ? contentLength(ctx) : undefined,
  });
  uploadSessionClosed(ctx, name, id);
  blobCreated(ctx, name, desc);
}

export async function getBlobUploadStatus(ctx: RegistryContext): Promise<void> {
  const { registry } = ctx.state.deps;
  const name = ctx.state.match.name!;
  const status = await registry.uploadStatus(name, uploadId(ctx));
  uploadAccepted(ctx, name, status.id, status.offset, 204);
}

export async function cancelBlobUpload(ctx: RegistryContext): Promise<void> {
  const { registry } = ctx.state.deps;
  const name = ctx.state.match.name!;
  const id = uploadId(ctx);
  await registry.cancelUpload(name, id);
  uploadSessionClosed(ctx, name, id);
  respondEmpty(ctx, 204);
}

/** Who a session is counted against (http.uploadlimits): the user, or the address of an anonymous client. */
function uploaderOf(ctx: RegistryContext): string {
  return ctx.state.user !== undefined ? `user:${ctx.state.user}` : `address:${addressKey(ctx.ip)}`;
}

/** Start an upload session for the request, within the configured limits (none when they are not configured). */
function startUploadSession(ctx: RegistryContext, name: string, algorithm: DigestAlgorithm, intent?: UploadIntent): Promise<UploadStatus> {
  const { registry, uploadLimits } = ctx.state.deps;
  const begin = () => registry.startUpload(name, algorithm, intent);
  return uploadLimits ? uploadLimits.start(name, uploaderOf(ctx), begin) : begin();
}

/** The session was completed or cancelled: it no longer counts against its user. */
function uploadSessionClosed(ctx: RegistryContext, name: string, id: string): void {
  ctx.state.deps.uploadLimits?.closed(name, id);
}
