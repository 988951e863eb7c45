/**
 * Discovery endpoints: the API check (end-1), ListTags (end-8a/8b), ListReferrers (end-12a/12b) and the
 * registry:2 catalog extension (`/v2/_catalog`).
 */
import { MediaType } from '../registry/manifest-format.js';
import { parseDigest } from '../registry/reference.js';
import { nextLink, paginationCount, queryParam, type RegistryContext } from './context.js';

function json(ctx: RegistryContext, value: unknown, contentType = 'application/json'): void {
  ctx.status = 200;
  ctx.body = Buffer.from(JSON.stringify(value));
  ctx.set('Content-Type', contentType);
}

export function getBase(ctx: RegistryContext): void {
  json(ctx, {});
}

export async function listTags(ctx: RegistryContext): Promise<void> {
  const { registry, options } = ctx.state.deps;
  const name = ctx.state.match.name!;
  // A page is at most tags.maxtags long, whatever `n` asks, also without `n`; the Link header leads to the rest (the
  // spec lets a registry return fewer tags than asked when it sends one).
  const n = paginationCount(ctx, options.maxTags)!;
  const last = queryParam(ctx, 'last');
  if (n === 0) return json(ctx, { name, tags: [] });
  const page = await registry.listTags(name, n, last);
  if (page.next !== undefined) {
    ctx.set('Link', nextLink(`${options.prefix}/v2/${name}/tags/list`, n, page.next));
  }
  json(ctx, { name, tags: page.tags });
}

export async function listReferrers(ctx: RegistryContext): Promise<void> {
  const { registry } = ctx.state.deps;
  const subject = parseDigest(ctx.state.match.param!);
  const artifactType = queryParam(ctx, 'artifactType');
  const manifests = await registry.referrers(ctx.state.match.name!, subject, artifactType || undefined);
  if (artifactType) ctx.set('OCI-Filters-Applied', 'artifactType');
  json(ctx, { schemaVersion: 2, mediaType: MediaType.OCI_INDEX, manifests }, MediaType.OCI_INDEX);
}

export async function getCatalog(ctx: RegistryContext): Promise<void> {
  const { registry, options } = ctx.state.deps;
  const n = paginationCount(ctx, options.catalogMaxEntries)!;
  const last = queryParam(ctx, 'last');
  if (n === 0) return json(ctx, { repositories: [] });
  const page = await registry.catalog(n, last, ctx.state.catalogFilter);
  if (page.next !== undefined) ctx.set('Link', nextLink(`${options.prefix}/v2/_catalog`, n, page.next));
  json(ctx, { repositories: page.repositories });
}
