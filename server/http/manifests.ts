/**
 * Manifest endpoints: GetManifest / HeadManifest (end-3), PutManifest (end-7a, and end-7b with `?tag=`),
 * DeleteManifest (end-9).
 */
import { RegistryError } from '../registry/errors.js';
import { JsonDepthGauge, tooDeep } from '../registry/manifest-format.js';
import { parseReference } from '../registry/reference.js';
import { contentLength, notify, notifying, queryParams, respondEmpty, setHeader, urlFor, type RegistryContext } from './context.js';

/** The most `?tag=` parameters one PUT may carry (the spec asks for at least 10). */
export const MAX_TAGS_PER_PUT = 100;

export async function getManifest(ctx: RegistryContext): Promise<void> {
  const { registry } = ctx.state.deps;
  const manifest = await registry.getManifest(ctx.state.match.name!, parseReference(ctx.state.match.param!));
  // A mirror serving its cached copy because the upstream failed says so.
  if (manifest.warning) ctx.set('Warning', manifest.warning);
  setHeader(ctx, 'Docker-Content-Digest', manifest.digest);
  setHeader(ctx, 'ETag', `"${manifest.digest}"`);
  // Set verbatim: the spec asks for no parameters (such as a charset) on a manifest's Content-Type.
  setHeader(ctx, 'Content-Type', manifest.mediaType);
  const etag = ctx.get('If-None-Match');
  if (etag && etag.split(',').some((t) => t.trim() === `"${manifest.digest}"`)) {
    ctx.status = 304;
    return;
  }
  ctx.status = 200;
  if (ctx.method === 'HEAD') {
    ctx.length = manifest.content.byteLength;
    return;
  }
  ctx.body = manifest.content;
  if (!notifying(ctx)) return;
  const ref = ctx.state.match.param!;
  notify(ctx, 'pull', {
    mediaType: manifest.mediaType,
    size: manifest.content.byteLength,
    length: manifest.content.byteLength,
    digest: manifest.digest,
    url: urlFor(ctx, `/v2/${ctx.state.match.name}/manifests/${manifest.digest}`),
    ...(ref.includes(':') ? {} : { tag: ref }),
  });
}

/**
 * Read a manifest body of at most `max` bytes; 413 as soon as it is known to be larger, and MANIFEST_INVALID as soon
 * as it nests deeper than a manifest may (before the rest arrives, and before anything parses it).
 */
async function readLimited(ctx: RegistryContext, max: number): Promise<Buffer> {
  const tooLarge = () =>
    new RegistryError('MANIFEST_INVALID', `manifest is larger than the limit of ${max} bytes`, {
      reason: { kind: 'body-too-large', limit: max },
      detail: { limit: max },
    });
  const length = contentLength(ctx);
  if (length !== undefined && length > max) throw tooLarge();
  const chunks: Buffer[] = [];
  const depth = new JsonDepthGauge();
  let size = 0;
  // Stopping early leaves the request open (not destroyed): Node reads and discards the rest once the error is
  // answered, so the client sees the error rather than a reset connection.
  for await (const chunk of ctx.req.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
    size += chunk.byteLength;
    if (size > max) throw tooLarge();
    if (depth.push(chunk)) throw tooDeep();
    chunks.push(chunk);
  }
  if (length !== undefined && size !== length) {
    throw new RegistryError('SIZE_INVALID', 'body length does not match Content-Length', { detail: { length, received: size } });
  }
  return Buffer.concat(chunks, size);
}

export async function putManifest(ctx: RegistryContext): Promise<void> {
  const { registry, options } = ctx.state.deps;
  const name = ctx.state.match.name!;
  const ref = parseReference(ctx.state.match.param!);
  const tags = queryParams(ctx, 'tag');
  if (tags.length > 0 && ref.kind === 'tag') {
    throw new RegistryError('MANIFEST_INVALID', 'tag query parameters are only accepted when pushing by digest', {
      detail: { reference: ref.tag },
    });
  }
  if (tags.length > MAX_TAGS_PER_PUT) {
    throw new RegistryError('MANIFEST_INVALID', `at most ${MAX_TAGS_PER_PUT} tags per request`, {
      reason: { kind: 'too-many-tags', limit: MAX_TAGS_PER_PUT },
    });
  }
  const content = await readLimited(ctx, options.manifestMaxSize);
  const result = await registry.putManifest(name, ref, content, ctx.get('Content-Type') || undefined, tags);

  ctx.set('Location', urlFor(ctx, `/v2/${name}/manifests/${result.digest}`));
  ctx.set('Docker-Content-Digest', result.digest);
  if (result.subject) ctx.set('OCI-Subject', result.subject);
  if (tags.length > 0) ctx.set('OCI-Tag', result.tags.join(', '));
  respondEmpty(ctx, 201);
  const target = {
    mediaType: result.mediaType,
    size: content.byteLength,
    length: content.byteLength,
    digest: result.digest,
    url: urlFor(ctx, `/v2/${name}/manifests/${result.digest}`),
  };
  if (result.tags.length === 0) notify(ctx, 'push', target);
  for (const tag of result.tags) notify(ctx, 'push', { ...target, tag });
}

export async function deleteManifest(ctx: RegistryContext): Promise<void> {
  const { registry, options } = ctx.state.deps;
  if (!options.deleteEnabled) {
    throw new RegistryError('UNSUPPORTED', 'deletion is disabled (storage.delete.enabled)');
  }
  const ref = parseReference(ctx.state.match.param!);
  await registry.deleteManifest(ctx.state.match.name!, ref);
  respondEmpty(ctx, 202);
  notify(ctx, 'delete', ref.kind === 'tag' ? { tag: ref.tag } : { digest: ref.digest.value });
}
