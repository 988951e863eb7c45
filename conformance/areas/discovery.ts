/**
 * Content discovery: listing tags (order, `n`, `last`, `Link` pagination) and the registry catalog, which the
 * spec does not define but every registry:2 client knows (Docker Registry HTTP API V2 § Catalog).
 */
import { area, type Context } from '../check.js';
import { expectEqual, expectError, expectHeader, expectStatus, expectTrue, fail, nextLink } from '../expect.js';
import { pushBlob, pushImage, pushManifest, randomBlob, type PushedImage } from '../fixtures.js';
import type { Reply } from '../client.js';

const discovery = area('discovery');
export const discoveryChecks = discovery.checks;

/**
 * Tags in an order no sorting would produce. Mixed case tells the two allowed orders apart; no two tags differ only
 * in case, so the case-insensitive order has no ties.
 */
const TAGS = ['beta', 'Alpha', '1.0', 'v2', '10', 'Zulu', 'delta_1', 'c-3'];
const ASCII = [...TAGS].sort();

/** Pushes one image and tags it with every tag in TAGS. */
async function repoWithTags(ctx: Context): Promise<{ repo: string; image: PushedImage }> {
  const repo = ctx.repo();
  const image = await pushImage(ctx.client, repo);
  for (const tag of TAGS) await pushManifest(ctx.client, repo, tag, image.manifest);
  return { repo, image };
}

interface TagList { name: string; tags: string[] | null }

function tagList(res: Reply): TagList {
  expectStatus(res, 200);
  const body = res.json<TagList>();
  if (typeof body.name !== 'string' || !(Array.isArray(body.tags) || body.tags === null)) {
    fail(`${res.describe()}: expected {"name": string, "tags": [...]}, got ${res.snippet()}`);
  }
  return body;
}

/** spec: "lexical (i.e. case-insensitive alphanumeric order) or ASCIIbetical" — accept either, consistently. */
function expectSorted(tags: string[], what: string): void {
  const ascii = [...tags].sort();
  const lexical = [...tags].sort((x, y) => {
    const a = x.toLowerCase();
    const b = y.toLowerCase();
    return a < b ? -1 : a > b ? 1 : 0;
  });
  const same = (x: string[]) => x.every((t, i) => t === tags[i]);
  if (!same(ascii) && !same(lexical)) fail(`${what}: tags are not in lexical or ASCIIbetical order: ${JSON.stringify(tags)}`);
}

/** The order the registry uses (we learn it from the full list, which must be one of the two allowed ones). */
async function fullList(ctx: Context, repo: string): Promise<string[]> {
  const body = tagList(await ctx.client.request('GET', `/v2/${repo}/tags/list`));
  return body.tags ?? [];
}

discovery.add({ level: 'required', spec: 'spec.md § Listing Tags (end-8a)' }, async function tagsListIsComplete(ctx) {
  const { repo } = await repoWithTags(ctx);
  const res = await ctx.client.request('GET', `/v2/${repo}/tags/list`);
  const body = tagList(res);
  expectEqual(body.name, repo, `${res.describe()}: "name"`);
  expectEqual([...(body.tags ?? [])].sort(), ASCII, `${res.describe()}: the set of tags`);
});

discovery.add({ level: 'required', spec: 'spec.md § Listing Tags ("MUST be in lexical … or ASCIIbetical order")' },
  async function tagsListIsSorted(ctx) {
    const { repo } = await repoWithTags(ctx);
    expectSorted(await fullList(ctx, repo), `GET /v2/${repo}/tags/list`);
  });

discovery.add({ level: 'required', spec: 'spec.md § Listing Tags (end-8b, n: "MUST include <int> results" unless Link)' },
  async function tagsListWithN(ctx) {
    const { repo } = await repoWithTags(ctx);
    const all = await fullList(ctx, repo);
    const res = await ctx.client.request('GET', `/v2/${repo}/tags/list`, { query: { n: 4 } });
    const tags = tagList(res).tags ?? [];
    const link = nextLink(res);
    if (tags.length < 4 && !link) fail(`${res.describe()}: fewer than n=4 tags without a Link header: ${JSON.stringify(tags)}`);
    expectTrue(tags.length <= 4, `${res.describe()}: more than n=4 tags: ${JSON.stringify(tags)}`);
    expectEqual(tags, all.slice(0, tags.length), `${res.describe()}: the first page`);
  });

discovery.add({ level: 'required', spec: 'spec.md § Listing Tags ("When n is zero … MUST return an empty list … MUST NOT include a Link")' },
  async function tagsListWithNZero(ctx) {
    const { repo } = await repoWithTags(ctx);
    const res = await ctx.client.request('GET', `/v2/${repo}/tags/list`, { query: { n: 0 } });
    expectEqual(tagList(res).tags ?? [], [], `${res.describe()}: tags`);
    expectTrue(res.header('link') === undefined, `${res.describe()}: must not include a Link header, got ${res.header('link')}`);
  });

discovery.add({ level: 'required', spec: 'spec.md § Listing Tags ("last" without n)' }, async function tagsListWithLast(ctx) {
  const { repo } = await repoWithTags(ctx);
  const all = await fullList(ctx, repo);
  const last = all[2]!;
  const res = await ctx.client.request('GET', `/v2/${repo}/tags/list`, { query: { last } });
  const tags = tagList(res).tags ?? [];
  // Up to all remaining tags, beginning after <last> non-inclusively.
  expectEqual(tags, all.slice(3, 3 + tags.length), `${res.describe()}: tags after ${last}`);
  if (tags.length < all.length - 3 && !nextLink(res)) fail(`${res.describe()}: stopped early without a Link header: ${JSON.stringify(tags)}`);
});

discovery.add({ level: 'required', spec: 'spec.md § Listing Tags (end-8b, n and last)' }, async function tagsListWithNAndLast(ctx) {
  const { repo } = await repoWithTags(ctx);
  const all = await fullList(ctx, repo);
  const res = await ctx.client.request('GET', `/v2/${repo}/tags/list`, { query: { n: 3, last: all[1]! } });
  const tags = tagList(res).tags ?? [];
  if (tags.length < 3 && !nextLink(res)) fail(`${res.describe()}: fewer than n=3 tags without a Link header`);
  expectEqual(tags, all.slice(2, 2 + tags.length), `${res.describe()}: tags after ${all[1]}`);
  expectTrue(tags.length <= 3, `${res.describe()}: more than n=3 tags: ${JSON.stringify(tags)}`);
});

discovery.add({ level: 'optional', spec: 'spec.md § Listing Tags ("A Link header MAY be included … rel=\\"next\\"")' },
  async function tagsListLinkWalksAllTags(ctx) {
    const { repo } = await repoWithTags(ctx);
    const all = await fullList(ctx, repo);
    const seen: string[] = [];
    let res = await ctx.client.request('GET', `/v2/${repo}/tags/list`, { query: { n: 2 } });
    expectTrue(nextLink(res) !== undefined, `${res.describe()}: expected a Link header with rel="next" (more tags remain)`);
    for (let page = 0; page < 20; page++) {
      seen.push(...(tagList(res).tags ?? []));
      const link = nextLink(res);
      if (!link) break;
      res = await ctx.client.request('GET', ctx.client.resolve(link));
    }
    expectEqual(seen, all, 'tags collected by following Link rel="next"');
  });

discovery.add({ level: 'required', spec: 'spec.md § Endpoints (end-8a: 404); Error Codes NAME_UNKNOWN' },
  async function tagsListOfUnknownRepositoryIs404(ctx) {
    const res = await ctx.client.request('GET', `/v2/${ctx.repo('never-pushed')}/tags/list`);
    expectError(res, 404, 'NAME_UNKNOWN');
  });

// --- Catalog (Docker Registry HTTP API V2 § Listing Repositories; not part of the OCI spec) ----------------------

interface Catalog { repositories: string[] }

/** Compare repository names component by component ('/' before every other character). */
function comparePathOrder(a: string, b: string): number {
  const x = a.split('/');
  const y = b.split('/');
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] !== y[i]) return x[i]! < y[i]! ? -1 : 1;
  }
  return x.length - y.length;
}

function catalog(res: Reply): string[] {
  expectStatus(res, 200);
  const body = res.json<Catalog>();
  if (!Array.isArray(body.repositories)) fail(`${res.describe()}: expected {"repositories": [...]}, got ${res.snippet()}`);
  return body.repositories;
}

/**
 * Creates `<ns>/a`, `<ns>/b`, `<ns>/c` and returns ns. With `last=<ns>`, a page starts exactly at `<ns>/a`: no other
 * repository can sort between `<ns>` and `<ns>/a` because ns is unique to this check.
 */
async function threeRepositories(ctx: Context): Promise<string> {
  const ns = ctx.namespace('catalog');
  for (const r of ['a', 'b', 'c']) await pushImage(ctx.client, `${ns}/${r}`, 'latest');
  return ns;
}

discovery.add({ level: 'optional', features: ['catalog'], spec: 'Docker Registry HTTP API V2 § Catalog (GET /v2/_catalog)' },
  async function catalogListsRepositoriesInOrder(ctx) {
    const ns = await threeRepositories(ctx);
    const res = await ctx.client.request('GET', '/v2/_catalog', { query: { n: 3, last: ns } });
    expectEqual(catalog(res), [`${ns}/a`, `${ns}/b`, `${ns}/c`], `${res.describe()}: repositories`);
    const first = catalog(await ctx.client.request('GET', '/v2/_catalog'));
    // Path order, component by component (`a` < `a/b` < `a-c`), as registry:2 lists repositories.
    expectEqual(first, [...first].sort(comparePathOrder), 'GET /v2/_catalog: repositories in path order');
  });

discovery.add({ level: 'optional', features: ['catalog'], spec: 'Docker Registry HTTP API V2 § Catalog pagination (n, last, Link)' },
  async function catalogPaginatesWithLink(ctx) {
    const ns = await threeRepositories(ctx);
    const res = await ctx.client.request('GET', '/v2/_catalog', { query: { n: 1, last: ns } });
    expectEqual(catalog(res), [`${ns}/a`], `${res.describe()}: first page`);
    const link = nextLink(res);
    if (!link) fail(`${res.describe()}: expected a Link header with rel="next", got ${res.header('link') ?? 'none'}`);
    const next = await ctx.client.request('GET', ctx.client.resolve(link));
    expectEqual(catalog(next), [`${ns}/b`], `${next.describe()}: second page`);
    expectHeader(next, 'link');
  });

discovery.add({ level: 'strict', features: ['catalog'], spec: 'Wharf: registry:2 lists a repository as soon as it holds a blob' },
  async function catalogListsRepositoryWithOnlyBlobs(ctx) {
    const ns = ctx.namespace('catalog');
    await pushBlob(ctx.client, `${ns}/blobs-only`, randomBlob(8));
    const res = await ctx.client.request('GET', '/v2/_catalog', { query: { n: 1, last: ns } });
    expectEqual(catalog(res), [`${ns}/blobs-only`], `${res.describe()}: repositories`);
  });
