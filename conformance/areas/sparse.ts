/**
 * Sparse indexes (opt-in: --sparse-index): an image index or manifest list pushed while some of the children it
 * names are not in the repository, as a mirror that keeps only some platforms of a signed multi-platform image does.
 * The spec lets a registry refuse such a push (MANIFEST_BLOB_UNKNOWN) or accept it; a registry that accepts it must
 * then serve, list and delete it like any other manifest. These are the situations the OCI conformance suite's
 * `sparse` data covers for indexes: one child present (linux/amd64), one never pushed (linux/arm64).
 */
import { area, type Context } from '../check.js';
import {
  expectBody, expectContentType, expectError, expectHeader, expectStatus,
} from '../expect.js';
import {
  buildManifest, indexManifest, MediaType, ociConfigBlob, pushBlob, pushImage, putManifest, randomBlob, unknownDigest,
  type BuiltManifest,
} from '../fixtures.js';

const sparse = area('push');
export const sparseChecks = sparse.checks;

const SPEC = 'spec.md § Pushing Manifests (a registry MAY accept a manifest whose references are absent); OCI conformance data "sparse"';

/** An index of a pushed linux/amd64 image and a linux/arm64 child nobody pushed. */
async function sparseIndex(ctx: Context, repo: string): Promise<{ index: BuiltManifest; present: BuiltManifest; absent: string }> {
  const present = (await pushImage(ctx.client, repo)).manifest;
  const absent = unknownDigest();
  const index = indexManifest([
    { ...present.descriptor, platform: { architecture: 'amd64', os: 'linux' } },
    { mediaType: MediaType.ociManifest, digest: absent, size: 1024, platform: { architecture: 'arm64', os: 'linux' } },
  ]);
  return { index, present, absent };
}

async function expectServed(ctx: Context, repo: string, reference: string, manifest: BuiltManifest): Promise<void> {
  const got = await ctx.client.request('GET', `/v2/${repo}/manifests/${reference}`, { headers: { accept: manifest.mediaType } });
  expectStatus(got, 200);
  expectBody(got, manifest.body);
  expectContentType(got, manifest.mediaType);
  expectHeader(got, 'docker-content-digest', manifest.digest);
  const head = await ctx.client.request('HEAD', `/v2/${repo}/manifests/${reference}`, { headers: { accept: manifest.mediaType } });
  expectStatus(head, 200);
  expectHeader(head, 'docker-content-digest', manifest.digest);
}

sparse.add({ level: 'optional', features: ['sparse-index'], spec: SPEC }, async function sparseIndexPushedByTagIsServed(ctx) {
  const repo = ctx.repo();
  const { index, present, absent } = await sparseIndex(ctx, repo);
  const res = await putManifest(ctx.client, repo, 'sparse-index', index);
  expectStatus(res, 201);
  expectHeader(res, 'docker-content-digest', index.digest);
  await expectServed(ctx, repo, 'sparse-index', index);
  await expectServed(ctx, repo, index.digest, index);
  // The child that was pushed is served; the one that was not is unknown, not an error of the index.
  await expectServed(ctx, repo, present.digest, present);
  expectError(await ctx.client.request('GET', `/v2/${repo}/manifests/${absent}`), 404, 'MANIFEST_UNKNOWN');
  const tags = await ctx.client.request('GET', `/v2/${repo}/tags/list`);
  expectStatus(tags, 200);
  const list = tags.json() as { tags?: string[] };
  if (!list.tags?.includes('sparse-index')) throw new Error(`GET /v2/${repo}/tags/list: expected the tag sparse-index, got ${JSON.stringify(list.tags)}`);
});

sparse.add({ level: 'optional', features: ['sparse-index'], spec: SPEC }, async function sparseIndexPushedByDigestIsServed(ctx) {
  const repo = ctx.repo();
  const { index } = await sparseIndex(ctx, repo);
  const res = await putManifest(ctx.client, repo, index.digest, index);
  expectStatus(res, 201);
  expectHeader(res, 'docker-content-digest', index.digest);
  await expectServed(ctx, repo, index.digest, index);
});

sparse.add({ level: 'optional', features: ['sparse-index'], spec: `${SPEC}; Docker manifest list` },
  async function sparseDockerManifestListIsServed(ctx) {
    const repo = ctx.repo();
    const config = await pushBlob(ctx.client, repo, ociConfigBlob(), { mediaType: MediaType.dockerConfig });
    const layer = await pushBlob(ctx.client, repo, randomBlob(200), { mediaType: MediaType.dockerLayer });
    const child = buildManifest({ schemaVersion: 2, mediaType: MediaType.dockerManifest, config, layers: [layer] });
    expectStatus(await putManifest(ctx.client, repo, child.digest, child), 201);
    const list = buildManifest({
      schemaVersion: 2,
      mediaType: MediaType.dockerManifestList,
      manifests: [
        { ...child.descriptor, platform: { architecture: 'amd64', os: 'linux' } },
        { mediaType: MediaType.dockerManifest, digest: unknownDigest(), size: 777, platform: { architecture: 's390x', os: 'linux' } },
      ],
    });
    expectStatus(await putManifest(ctx.client, repo, 'sparse-list', list), 201);
    await expectServed(ctx, repo, 'sparse-list', list);
  });

sparse.add({ level: 'optional', features: ['sparse-index', 'delete'], spec: `${SPEC}; spec.md § Deleting Manifests` },
  async function sparseIndexIsDeleted(ctx) {
    const repo = ctx.repo();
    const { index, present } = await sparseIndex(ctx, repo);
    expectStatus(await putManifest(ctx.client, repo, 'sparse-index', index), 201);
    expectStatus(await ctx.client.request('DELETE', `/v2/${repo}/manifests/${index.digest}`), 202);
    expectError(await ctx.client.request('GET', `/v2/${repo}/manifests/${index.digest}`), 404, 'MANIFEST_UNKNOWN');
    expectStatus(await ctx.client.request('GET', `/v2/${repo}/manifests/sparse-index`), 404);
    // Deleting the index leaves its children alone.
    await expectServed(ctx, repo, present.digest, present);
  });
