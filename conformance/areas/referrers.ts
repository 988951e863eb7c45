/**
 * Referrers (distribution-spec 1.1): `subject` on push answered with `OCI-Subject`, and the referrers API
 * `GET /v2/<name>/referrers/<digest>` listing descriptors with artifactType and annotations, with the optional
 * artifactType filter. A registry without the API is run with --skip-referrers.
 */
import { area, type Context } from '../check.js';
import type { Reply } from '../client.js';
import { expectContentType, expectEqual, expectError, expectHeader, expectStatus, expectTrue, fail } from '../expect.js';
import {
  imageManifest, indexManifest, MediaType, pushArtifact, pushBlob, pushImage, putManifest, randomBlob, randomToken,
  unknownDigest, type Descriptor,
} from '../fixtures.js';

const referrers = area('referrers');
export const referrersChecks = referrers.checks;

const SBOM = 'application/vnd.conformance.sbom.v1';
const SIGNATURE = 'application/vnd.conformance.signature.v1';

interface Index { schemaVersion: number; mediaType: string; manifests: Descriptor[] }

/** GETs the referrers list and checks the parts every answer must have; returns the index and the reply. */
async function listReferrers(ctx: Context, repo: string, digest: string, artifactType?: string) {
  const res = await ctx.client.request('GET', `/v2/${repo}/referrers/${digest}`, {
    query: artifactType ? { artifactType } : undefined,
  });
  expectStatus(res, 200);
  expectContentType(res, MediaType.ociIndex);
  const index = res.json<Index>();
  expectEqual(index.schemaVersion, 2, `${res.describe()}: schemaVersion`);
  expectEqual(index.mediaType, MediaType.ociIndex, `${res.describe()}: mediaType`);
  if (!Array.isArray(index.manifests)) fail(`${res.describe()}: "manifests" must be an array, got ${res.snippet()}`);
  return { res, index };
}

function find(res: Reply, index: Index, digest: string): Descriptor {
  const d = index.manifests.find((m) => m.digest === digest);
  if (!d) fail(`${res.describe()}: expected a descriptor for ${digest}, got ${JSON.stringify(index.manifests.map((m) => m.digest))}`);
  return d;
}

referrers.add({ level: 'required', features: ['referrers'], spec: 'spec.md § Pushing Manifests with Subject ("MUST respond with OCI-Subject")' },
  async function subjectPushAnswersOciSubject(ctx) {
    const repo = ctx.repo();
    const subject = await pushImage(ctx.client, repo, 'app');
    const config = await pushBlob(ctx.client, repo, Buffer.from('{}'), { mediaType: MediaType.ociEmpty });
    const layer = await pushBlob(ctx.client, repo, randomBlob(40));
    const artifact = imageManifest({ artifactType: SBOM, config: { ...config, mediaType: MediaType.ociEmpty },
      layers: [layer], subject: subject.manifest.descriptor });
    const res = await putManifest(ctx.client, repo, artifact.digest, artifact);
    expectStatus(res, 201);
    expectHeader(res, 'oci-subject', subject.manifest.digest);
  });

referrers.add({ level: 'required', features: ['referrers'], spec: 'spec.md § Listing Referrers (end-12a)' },
  async function referrersListsArtifactWithTypeAndAnnotations(ctx) {
    const repo = ctx.repo();
    const subject = await pushImage(ctx.client, repo, 'app');
    const annotations = { 'org.opencontainers.image.created': '2024-01-01T00:00:00Z', 'org.example.nonce': randomToken() };
    const artifact = await pushArtifact(ctx.client, repo, { artifactType: SBOM, subject: subject.manifest.descriptor, annotations });
    const { res, index } = await listReferrers(ctx, repo, subject.manifest.digest);
    const d = find(res, index, artifact.digest);
    expectEqual(d.mediaType, MediaType.ociManifest, `${res.describe()}: descriptor mediaType`);
    expectEqual(d.size, artifact.body.length, `${res.describe()}: descriptor size`);
    expectEqual(d.artifactType, SBOM, `${res.describe()}: descriptor artifactType`);
    expectEqual(d.annotations, annotations, `${res.describe()}: descriptor annotations`);
    expectEqual(index.manifests.length, 1, `${res.describe()}: number of referrers`);
  });

referrers.add({ level: 'required', features: ['referrers'], spec: 'spec.md § Listing Referrers ("artifactType … set to the config descriptor mediaType")' },
  async function referrersArtifactTypeFallsBackToConfigMediaType(ctx) {
    const repo = ctx.repo();
    const subject = await pushImage(ctx.client, repo, 'app');
    const configType = 'application/vnd.conformance.config.v1+json';
    const config = await pushBlob(ctx.client, repo, Buffer.from(`{"nonce":"${randomToken()}"}`), { mediaType: configType });
    const artifact = await pushArtifact(ctx.client, repo, { subject: subject.manifest.descriptor, config });
    const { res, index } = await listReferrers(ctx, repo, subject.manifest.digest);
    expectEqual(find(res, index, artifact.digest).artifactType, configType, `${res.describe()}: artifactType of a manifest without one`);
  });

referrers.add({ level: 'required', features: ['referrers'], spec: 'spec.md § Listing Referrers (an index as referrer; "If … missing in an index, the artifactType MUST be omitted")' },
  async function referrersIncludesIndexes(ctx) {
    const repo = ctx.repo();
    const subject = await pushImage(ctx.client, repo, 'app');
    const child = await pushImage(ctx.client, repo);
    const typed = indexManifest([child.manifest.descriptor], { subject: subject.manifest.descriptor, artifactType: SIGNATURE });
    const untyped = indexManifest([child.manifest.descriptor], { subject: subject.manifest.descriptor,
      annotations: { 'org.example.nonce': randomToken() } });
    for (const index of [typed, untyped]) expectStatus(await putManifest(ctx.client, repo, index.digest, index), 201);
    const { res, index } = await listReferrers(ctx, repo, subject.manifest.digest);
    const t = find(res, index, typed.digest);
    expectEqual(t.mediaType, MediaType.ociIndex, `${res.describe()}: mediaType of an index referrer`);
    expectEqual(t.artifactType, SIGNATURE, `${res.describe()}: artifactType of an index referrer`);
    const u = find(res, index, untyped.digest);
    expectTrue(u.artifactType === undefined, `${res.describe()}: artifactType must be omitted for an index without one, got ${u.artifactType}`);
    expectEqual(u.annotations, (untyped.json.annotations as Record<string, string>), `${res.describe()}: annotations of an index referrer`);
  });

referrers.add({ level: 'required', features: ['referrers'], spec: 'spec.md § Listing Referrers ("If filtering is requested and applied, … MUST include OCI-Filters-Applied")' },
  async function referrersFilterIsReportedTruthfully(ctx) {
    const repo = ctx.repo();
    const subject = await pushImage(ctx.client, repo, 'app');
    const sbom = await pushArtifact(ctx.client, repo, { artifactType: SBOM, subject: subject.manifest.descriptor });
    const sig = await pushArtifact(ctx.client, repo, { artifactType: SIGNATURE, subject: subject.manifest.descriptor });
    const { res, index } = await listReferrers(ctx, repo, subject.manifest.digest, SBOM);
    const applied = (res.header('oci-filters-applied') ?? '').split(',').map((s) => s.trim());
    const digests = index.manifests.map((m) => m.digest).sort();
    if (applied.includes('artifactType')) {
      expectEqual(digests, [sbom.digest], `${res.describe()}: filtered referrers`);
    } else {
      // Not filtered: then the answer must be the whole list.
      expectEqual(digests, [sbom.digest, sig.digest].sort(), `${res.describe()}: unfiltered referrers (no OCI-Filters-Applied)`);
    }
  });

referrers.add({ level: 'optional', features: ['referrers'], spec: 'spec.md § Listing Referrers ("SHOULD support filtering on artifactType", end-12b)' },
  async function referrersFilterByArtifactType(ctx) {
    const repo = ctx.repo();
    const subject = await pushImage(ctx.client, repo, 'app');
    const sbom = await pushArtifact(ctx.client, repo, { artifactType: SBOM, subject: subject.manifest.descriptor });
    await pushArtifact(ctx.client, repo, { artifactType: SIGNATURE, subject: subject.manifest.descriptor });
    const { res, index } = await listReferrers(ctx, repo, subject.manifest.digest, SBOM);
    expectHeader(res, 'oci-filters-applied', 'artifactType');
    expectEqual(index.manifests.map((m) => m.digest), [sbom.digest], `${res.describe()}: filtered referrers`);
  });

referrers.add({ level: 'required', features: ['referrers'], spec: 'spec.md § Listing Referrers ("MUST NOT return a 404"; "an empty manifest list MUST be returned")' },
  async function referrersOfUnknownSubjectIsEmptyIndex(ctx) {
    const repo = ctx.repo();
    await pushImage(ctx.client, repo, 'app');
    const { res, index } = await listReferrers(ctx, repo, unknownDigest());
    expectEqual(index.manifests, [], `${res.describe()}: manifests`);
  });

referrers.add({ level: 'required', features: ['referrers'], spec: 'spec.md § Listing Referrers ("<digest> with an invalid syntax, a 400 … MUST be returned")' },
  async function referrersWithInvalidDigestIs400(ctx) {
    const repo = ctx.repo();
    await pushImage(ctx.client, repo, 'app');
    for (const digest of ['sha256:xyz', 'sha256:', 'notadigest:' + 'a'.repeat(64)]) {
      const res = await ctx.client.request('GET', `/v2/${repo}/referrers/${digest}`);
      expectStatus(res, 400);
    }
  });

referrers.add({ level: 'required', features: ['referrers'], spec: 'spec.md § Push (subject before its manifest exists) + § Listing Referrers' },
  async function referrersBeforeSubjectExists(ctx) {
    const repo = ctx.repo();
    // Push the referrer first, then the subject it names.
    const config = await pushBlob(ctx.client, repo, Buffer.from('{"os":"linux"}'), { mediaType: MediaType.ociConfig });
    const layer = await pushBlob(ctx.client, repo, randomBlob(50), { mediaType: MediaType.ociLayer });
    const subject = imageManifest({ config, layers: [layer] });
    const artifact = await pushArtifact(ctx.client, repo, { artifactType: SBOM, subject: subject.descriptor });
    let { res, index } = await listReferrers(ctx, repo, subject.digest);
    find(res, index, artifact.digest);
    expectStatus(await putManifest(ctx.client, repo, 'late', subject), 201);
    ({ res, index } = await listReferrers(ctx, repo, subject.digest));
    find(res, index, artifact.digest);
  });

referrers.add({ level: 'required', features: ['referrers'], spec: 'spec.md § Listing Referrers ("a manifest or index in the same <name> namespace")' },
  async function referrersAreScopedToRepository(ctx) {
    const a = ctx.repo('a');
    const b = ctx.repo('b');
    const subject = await pushImage(ctx.client, a, 'app');
    await pushImage(ctx.client, b, 'app'); // make repository b exist
    const mine = await pushArtifact(ctx.client, a, { artifactType: SBOM, subject: subject.manifest.descriptor });
    await pushArtifact(ctx.client, b, { artifactType: SBOM, subject: subject.manifest.descriptor });
    const { res, index } = await listReferrers(ctx, a, subject.manifest.digest);
    expectEqual(index.manifests.map((m) => m.digest), [mine.digest], `${res.describe()}: referrers of repository ${a}`);
  });

referrers.add({ level: 'required', features: ['referrers', 'delete'], spec: 'spec.md § Deleting Manifests + § Listing Referrers' },
  async function deletedReferrerIsNotListed(ctx) {
    const repo = ctx.repo();
    const subject = await pushImage(ctx.client, repo, 'app');
    const gone = await pushArtifact(ctx.client, repo, { artifactType: SBOM, subject: subject.manifest.descriptor });
    const kept = await pushArtifact(ctx.client, repo, { artifactType: SIGNATURE, subject: subject.manifest.descriptor });
    expectStatus(await ctx.client.request('DELETE', `/v2/${repo}/manifests/${gone.digest}`), 202);
    const { res, index } = await listReferrers(ctx, repo, subject.manifest.digest);
    expectEqual(index.manifests.map((m) => m.digest), [kept.digest], `${res.describe()}: referrers after deleting ${gone.digest}`);
  });

referrers.add({ level: 'strict', features: ['referrers'], spec: 'Wharf: an invalid referrers digest is 400 DIGEST_INVALID' },
  async function referrersWithInvalidDigestIsDigestInvalid(ctx) {
    const repo = ctx.repo();
    await pushImage(ctx.client, repo, 'app');
    expectError(await ctx.client.request('GET', `/v2/${repo}/referrers/sha256:xyz`), 400, 'DIGEST_INVALID');
  });
