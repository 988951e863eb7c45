/**
 * Content management: deleting tags, manifests and blobs, and how a registry with deletion disabled refuses.
 * Deletion is optional in the spec ("Registries MAY implement deletion or they MAY disable it"): the checks that
 * need it carry the `delete` feature and are skipped with --skip-delete.
 */
import { area } from '../check.js';
import { expectError, expectHeader, expectStatus, expectTrue, fail } from '../expect.js';
import { MediaType, pushBlob, pushImage, pushManifest, randomBlob, unknownDigest } from '../fixtures.js';

const management = area('management');
export const managementChecks = management.checks;

management.add({ level: 'required', features: ['delete'], spec: 'spec.md § Deleting tags (end-9: 202, or 400/405 if tag deletion is disabled)' },
  async function deleteTagIsAcceptedOrRefused(ctx) {
    const repo = ctx.repo();
    await pushImage(ctx.client, repo, 'doomed');
    const res = await ctx.client.request('DELETE', `/v2/${repo}/manifests/doomed`);
    expectStatus(res, 202, 400, 405);
  });

management.add({ level: 'optional', features: ['delete'], spec: 'spec.md § Deleting tags ("a registry MAY implement tag deletion")' },
  async function deleteTagRemovesOnlyTheTag(ctx) {
    const repo = ctx.repo();
    const image = await pushImage(ctx.client, repo, 'doomed');
    await pushManifest(ctx.client, repo, 'kept', image.manifest);
    const res = await ctx.client.request('DELETE', `/v2/${repo}/manifests/doomed`);
    expectStatus(res, 202);
    expectError(await ctx.client.request('GET', `/v2/${repo}/manifests/doomed`), 404, 'MANIFEST_UNKNOWN');
    // Only the tag went: the manifest and its other tag remain.
    const byDigest = await ctx.client.request('HEAD', `/v2/${repo}/manifests/${image.manifest.digest}`);
    expectStatus(byDigest, 200);
    const kept = await ctx.client.request('HEAD', `/v2/${repo}/manifests/kept`);
    expectStatus(kept, 200);
    expectHeader(kept, 'docker-content-digest', image.manifest.digest);
    const list = await ctx.client.request('GET', `/v2/${repo}/tags/list`);
    expectStatus(list, 200);
    const tags = list.json<{ tags: string[] | null }>().tags ?? [];
    expectTrue(!tags.includes('doomed') && tags.includes('kept'), `${list.describe()}: expected tags ["kept"], got ${JSON.stringify(tags)}`);
  });

management.add({ level: 'required', features: ['delete'], spec: 'spec.md § Deleting Manifests (end-9)' },
  async function deleteManifestByDigest(ctx) {
    const repo = ctx.repo();
    const image = await pushImage(ctx.client, repo, 'one');
    await pushManifest(ctx.client, repo, 'two', image.manifest);
    const other = await pushImage(ctx.client, repo, 'other');
    const res = await ctx.client.request('DELETE', `/v2/${repo}/manifests/${image.manifest.digest}`);
    expectStatus(res, 202);
    // "a GET to /v2/<name>/manifests/<digest> and any tag pointing to that digest will return a 404"
    for (const ref of [image.manifest.digest, 'one', 'two']) {
      expectError(await ctx.client.request('GET', `/v2/${repo}/manifests/${ref}`, {
        headers: { accept: MediaType.ociManifest },
      }), 404, 'MANIFEST_UNKNOWN');
    }
    // Other manifests and the blobs are untouched.
    expectStatus(await ctx.client.request('HEAD', `/v2/${repo}/manifests/other`), 200);
    expectStatus(await ctx.client.request('HEAD', `/v2/${repo}/manifests/${other.manifest.digest}`), 200);
    expectStatus(await ctx.client.request('HEAD', `/v2/${repo}/blobs/${image.layers[0]!.digest}`), 200);
  });

management.add({ level: 'required', features: ['delete'], spec: 'spec.md § Deleting Manifests (end-9: 404)' },
  async function deleteUnknownManifestIs404(ctx) {
    const repo = ctx.repo();
    await pushImage(ctx.client, repo, 'exists');
    expectError(await ctx.client.request('DELETE', `/v2/${repo}/manifests/${unknownDigest()}`), 404, 'MANIFEST_UNKNOWN');
  });

management.add({ level: 'required', features: ['delete'], spec: 'spec.md § Deleting Manifests ("If the repository does not exist … 404")' },
  async function deleteManifestInUnknownRepositoryIs404(ctx) {
    const res = await ctx.client.request('DELETE', `/v2/${ctx.repo('never-pushed')}/manifests/${unknownDigest()}`);
    expectError(res, 404, ['NAME_UNKNOWN', 'MANIFEST_UNKNOWN']);
  });

management.add({ level: 'required', features: ['delete'], spec: 'spec.md § Deleting Blobs (end-10)' }, async function deleteBlob(ctx) {
  const repo = ctx.repo();
  const blob = await pushBlob(ctx.client, repo, randomBlob(300));
  const keep = await pushBlob(ctx.client, repo, randomBlob(300));
  expectStatus(await ctx.client.request('DELETE', `/v2/${repo}/blobs/${blob.digest}`), 202);
  expectError(await ctx.client.request('GET', `/v2/${repo}/blobs/${blob.digest}`), 404, 'BLOB_UNKNOWN');
  expectStatus(await ctx.client.request('HEAD', `/v2/${repo}/blobs/${blob.digest}`), 404);
  expectStatus(await ctx.client.request('HEAD', `/v2/${repo}/blobs/${keep.digest}`), 200);
});

management.add({ level: 'required', features: ['delete'], spec: 'spec.md § Deleting Blobs ("If the blob is not found, a 404")' },
  async function deleteUnknownBlobIs404(ctx) {
    const repo = ctx.repo();
    await pushBlob(ctx.client, repo, randomBlob(10));
    expectError(await ctx.client.request('DELETE', `/v2/${repo}/blobs/${unknownDigest()}`), 404, 'BLOB_UNKNOWN');
  });

management.add({ level: 'required', features: ['delete'], spec: 'spec.md § Deleting Blobs; § Pushing blobs (content can be pushed again)' },
  async function deletedBlobCanBePushedAgain(ctx) {
    const repo = ctx.repo();
    const data = randomBlob(300);
    const blob = await pushBlob(ctx.client, repo, data);
    expectStatus(await ctx.client.request('DELETE', `/v2/${repo}/blobs/${blob.digest}`), 202);
    await pushBlob(ctx.client, repo, data);
    const res = await ctx.client.request('GET', `/v2/${repo}/blobs/${blob.digest}`);
    expectStatus(res, 200);
    if (!res.body.equals(data)) fail(`${res.describe()}: re-pushed blob has different content`);
  });

management.add({ level: 'required', features: ['delete'], spec: 'spec.md § Deleting Manifests; § Pushing Manifests (re-push)' },
  async function deletedManifestCanBePushedAgain(ctx) {
    const repo = ctx.repo();
    const image = await pushImage(ctx.client, repo, 'again');
    expectStatus(await ctx.client.request('DELETE', `/v2/${repo}/manifests/${image.manifest.digest}`), 202);
    await pushManifest(ctx.client, repo, 'again', image.manifest);
    const res = await ctx.client.request('HEAD', `/v2/${repo}/manifests/again`);
    expectStatus(res, 200);
    expectHeader(res, 'docker-content-digest', image.manifest.digest);
  });

management.add({ level: 'required', features: ['delete-disabled'],
  spec: 'spec.md § Content Management ("If … deletion is disabled, the registry MUST respond with either a 400 or a 405")' },
async function disabledDeletionAnswers400Or405(ctx) {
  const repo = ctx.repo();
  const image = await pushImage(ctx.client, repo, 'kept');
  for (const path of [`/v2/${repo}/manifests/kept`, `/v2/${repo}/manifests/${image.manifest.digest}`,
    `/v2/${repo}/blobs/${image.layers[0]!.digest}`]) {
    expectStatus(await ctx.client.request('DELETE', path), 400, 405);
  }
  expectStatus(await ctx.client.request('HEAD', `/v2/${repo}/manifests/kept`), 200);
});
