/**
 * Push: blob uploads (POST then PUT, single POST, chunked and streamed PATCH, status, cancel), digest
 * verification, cross-repository mounts, sha512, and manifest pushes of every media type with their error paths.
 */
import { randomUUID } from 'node:crypto';
import { area, type Context } from '../check.js';
import type { Reply } from '../client.js';
import {
  expectBody, expectContentType, expectError, expectHeader, expectStatus, expectTrue, fail,
} from '../expect.js';
import {
  buildManifest, digestOf, EMPTY_JSON, emptyDescriptor, imageManifest, indexManifest, MediaType, ociConfigBlob,
  pushArtifact, pushBlob, pushImage, putManifest, randomBlob, randomToken, startUpload, unknownDigest,
  withDigest, type Descriptor,
} from '../fixtures.js';

const push = area('push');
export const pushChecks = push.checks;

/** Asserts the blob is served by `repo` with exactly these bytes. */
async function expectBlob(ctx: Context, repo: string, digest: string, data: Uint8Array): Promise<void> {
  const res = await ctx.client.request('GET', `/v2/${repo}/blobs/${digest}`);
  expectStatus(res, 200);
  expectBody(res, data);
}

/** Asserts the blob is not served by `repo` (after a failed or cancelled upload). */
async function expectNoBlob(ctx: Context, repo: string, digest: string, why: string): Promise<void> {
  const res = await ctx.client.request('HEAD', `/v2/${repo}/blobs/${digest}`);
  if (res.status !== 404) fail(`${res.describe()}: ${why}, the blob must not exist, but HEAD answered ${res.status}`);
}

function patch(ctx: Context, location: URL, chunk: Uint8Array, range?: string): Promise<Reply> {
  return ctx.client.request('PATCH', location, {
    headers: { 'content-type': 'application/octet-stream', ...(range ? { 'content-range': range } : {}) },
    body: chunk,
  });
}

// --- Starting an upload ------------------------------------------------------------------------------------------

push.add({ level: 'required', spec: 'spec.md § POST then PUT (end-4a)' }, async function uploadStartAnswers202WithLocation(ctx) {
  const res = await ctx.client.request('POST', `/v2/${ctx.repo()}/blobs/uploads/`);
  expectStatus(res, 202);
  expectHeader(res, 'location');
});

push.add({ level: 'optional', spec: 'Docker Registry HTTP API V2: Docker-Upload-UUID and Range on upload start' },
  async function uploadStartSendsUploadUuidAndRange(ctx) {
    const res = await ctx.client.request('POST', `/v2/${ctx.repo()}/blobs/uploads/`);
    expectStatus(res, 202);
    const uuid = expectHeader(res, 'docker-upload-uuid');
    expectTrue(expectHeader(res, 'location').includes(uuid),
      `${res.describe()}: Location ${res.header('location')} does not contain the session id ${uuid}`);
    expectHeader(res, 'range', '0-0');
  });

// --- Monolithic uploads ------------------------------------------------------------------------------------------

push.add({ level: 'required', spec: 'spec.md § POST then PUT (end-6)' }, async function postThenPutUploadsBlob(ctx) {
  const repo = ctx.repo();
  const data = randomBlob(2048);
  const digest = digestOf(data);
  const location = await startUpload(ctx.client, repo);
  const res = await ctx.client.request('PUT', withDigest(location, digest), {
    headers: { 'content-type': 'application/octet-stream' }, body: data,
  });
  expectStatus(res, 201);
  // "<blob-location> being a pullable blob URL"
  const pulled = await ctx.client.request('GET', ctx.client.resolve(expectHeader(res, 'location')));
  expectStatus(pulled, 200);
  expectBody(pulled, data);
  await expectBlob(ctx, repo, digest, data);
});

push.add({ level: 'required', spec: 'spec.md § Single POST ("SHOULD return 202 … if not supported")' },
  async function singlePostAnswers201Or202(ctx) {
    const repo = ctx.repo();
    const data = randomBlob(700);
    const digest = digestOf(data);
    const res = await ctx.client.request('POST', `/v2/${repo}/blobs/uploads/`, {
      query: { digest }, headers: { 'content-type': 'application/octet-stream' }, body: data,
    });
    expectStatus(res, 201, 202);
    const location = ctx.client.resolve(expectHeader(res, 'location'));
    if (res.status === 202) {
      // Not supported: the client proceeds with a PUT to the session, as for POST then PUT.
      const put = await ctx.client.request('PUT', withDigest(location, digest), {
        headers: { 'content-type': 'application/octet-stream' }, body: data,
      });
      expectStatus(put, 201);
    }
    await expectBlob(ctx, repo, digest, data);
  });

push.add({ level: 'optional', spec: 'spec.md § Single POST ("Registries MAY support pushing blobs using a single POST")' },
  async function singlePostUploadsBlob(ctx) {
    const repo = ctx.repo();
    const data = randomBlob(700);
    const digest = digestOf(data);
    const res = await ctx.client.request('POST', `/v2/${repo}/blobs/uploads/`, {
      query: { digest }, headers: { 'content-type': 'application/octet-stream' }, body: data,
    });
    expectStatus(res, 201);
    expectHeader(res, 'location');
    await expectBlob(ctx, repo, digest, data);
  });

// --- Chunked uploads ---------------------------------------------------------------------------------------------

push.add({ level: 'required', spec: 'spec.md § Pushing a blob in chunks (end-5, end-6)' },
  async function chunkedUploadWithContentRange(ctx) {
    const repo = ctx.repo();
    const data = randomBlob(3000);
    const digest = digestOf(data);
    let location = await startUpload(ctx.client, repo);
    for (const [start, end] of [[0, 1199], [1200, 2399], [2400, 2999]] as const) {
      const res = await patch(ctx, location, data.subarray(start, end + 1), `${start}-${end}`);
      expectStatus(res, 202);
      expectHeader(res, 'range', `0-${end}`);
      location = ctx.client.resolve(expectHeader(res, 'location'));
    }
    const res = await ctx.client.request('PUT', withDigest(location, digest));
    expectStatus(res, 201);
    expectHeader(res, 'location');
    await expectBlob(ctx, repo, digest, data);
  });

push.add({ level: 'required', spec: 'spec.md § Pushing a blob in chunks ("final chunk … MAY be uploaded in the closing PUT")' },
  async function chunkedUploadFinalChunkInPut(ctx) {
    const repo = ctx.repo();
    const data = randomBlob(2000);
    const digest = digestOf(data);
    const location = await startUpload(ctx.client, repo);
    const first = await patch(ctx, location, data.subarray(0, 1000), '0-999');
    expectStatus(first, 202);
    const res = await ctx.client.request('PUT', withDigest(ctx.client.resolve(expectHeader(first, 'location')), digest), {
      headers: { 'content-type': 'application/octet-stream', 'content-range': '1000-1999' },
      body: data.subarray(1000),
    });
    expectStatus(res, 201);
    await expectBlob(ctx, repo, digest, data);
  });

push.add({ level: 'optional', spec: 'Docker Registry HTTP API V2: streamed PATCH (no Content-Range), as docker push does' },
  async function streamedPatchUpload(ctx) {
    const repo = ctx.repo();
    const data = randomBlob(64 * 1024 + 7);
    const digest = digestOf(data);
    const location = await startUpload(ctx.client, repo);
    // Sent as a stream: Transfer-Encoding chunked, no Content-Length, no Content-Range.
    const res = await ctx.client.request('PATCH', location, {
      headers: { 'content-type': 'application/octet-stream' },
      body: () => new ReadableStream<Uint8Array>({
        start(controller) {
          for (let i = 0; i < data.length; i += 10_000) controller.enqueue(data.subarray(i, i + 10_000));
          controller.close();
        },
      }),
    });
    expectStatus(res, 202);
    expectHeader(res, 'range', `0-${data.length - 1}`);
    const put = await ctx.client.request('PUT', withDigest(ctx.client.resolve(expectHeader(res, 'location')), digest));
    expectStatus(put, 201);
    await expectBlob(ctx, repo, digest, data);
  });

push.add({ level: 'required', spec: 'spec.md § Pushing a blob in chunks ("out of order … MUST respond with 416")' },
  async function outOfOrderChunkIs416(ctx) {
    const repo = ctx.repo();
    const data = randomBlob(300);
    const location = await startUpload(ctx.client, repo);
    // The first chunk's range MUST begin with 0.
    expectStatus(await patch(ctx, location, data.subarray(100, 200), '100-199'), 416);
    const first = await patch(ctx, location, data.subarray(0, 100), '0-99');
    expectStatus(first, 202);
    const next = ctx.client.resolve(expectHeader(first, 'location'));
    // A gap (skips 100-199) and an overlap (repeats 50-149) are both out of order.
    expectStatus(await patch(ctx, next, data.subarray(200, 300), '200-299'), 416);
    expectStatus(await patch(ctx, next, data.subarray(50, 150), '50-149'), 416);
  });

push.add({ level: 'required', spec: 'spec.md § Pushing a blob in chunks ("final chunk … out of order … 416")' },
  async function outOfOrderFinalChunkInPutIs416(ctx) {
    const repo = ctx.repo();
    const data = randomBlob(300);
    const location = await startUpload(ctx.client, repo);
    const first = await patch(ctx, location, data.subarray(0, 100), '0-99');
    expectStatus(first, 202);
    const res = await ctx.client.request('PUT', withDigest(ctx.client.resolve(expectHeader(first, 'location')), digestOf(data)), {
      headers: { 'content-type': 'application/octet-stream', 'content-range': '200-299' },
      body: data.subarray(200),
    });
    expectStatus(res, 416);
  });

push.add({ level: 'required', spec: 'spec.md § Pushing a blob in chunks (end-13: GET upload status)' },
  async function uploadStatusAnswers204WithRange(ctx) {
    const repo = ctx.repo();
    const location = await startUpload(ctx.client, repo);
    const chunk = await patch(ctx, location, randomBlob(500), '0-499');
    expectStatus(chunk, 202);
    const res = await ctx.client.request('GET', ctx.client.resolve(expectHeader(chunk, 'location')));
    expectStatus(res, 204);
    expectHeader(res, 'location');
    expectHeader(res, 'range', '0-499');
  });

push.add({ level: 'optional', spec: 'spec.md § Cancel a blob upload (end-14, "SHOULD be a 204")' },
  async function uploadCancelAnswers204(ctx) {
    const repo = ctx.repo();
    const location = await startUpload(ctx.client, repo);
    const chunk = await patch(ctx, location, randomBlob(100), '0-99');
    expectStatus(chunk, 202);
    const session = ctx.client.resolve(expectHeader(chunk, 'location'));
    expectStatus(await ctx.client.request('DELETE', session), 204);
    expectError(await ctx.client.request('GET', session), 404, 'BLOB_UPLOAD_UNKNOWN');
  });

push.add({ level: 'required', spec: 'spec.md § Endpoints (end-5, end-6, end-13: 404 for an unknown session)' },
  async function finishedUploadSessionIs404(ctx) {
    // A session that was completed no longer exists: every later use of its URL is 404 BLOB_UPLOAD_UNKNOWN.
    const repo = ctx.repo();
    const data = randomBlob(10);
    const session = await startUpload(ctx.client, repo);
    expectStatus(await ctx.client.request('PUT', withDigest(session, digestOf(data)), { body: data }), 201);
    expectError(await ctx.client.request('GET', session), 404, 'BLOB_UPLOAD_UNKNOWN');
    expectError(await patch(ctx, session, randomBlob(10), '0-9'), 404, 'BLOB_UPLOAD_UNKNOWN');
    expectError(await ctx.client.request('PUT', withDigest(session, digestOf(data)), { body: data }), 404,
      'BLOB_UPLOAD_UNKNOWN');
  });

push.add({ level: 'strict', spec: 'Wharf: a session id that never existed is 404 BLOB_UPLOAD_UNKNOWN' },
  async function unknownUploadSessionIs404(ctx) {
    // registry:2 needs its signed `_state` parameter and answers BLOB_UPLOAD_INVALID without it; Wharf's session
    // URL carries only the id, so a made-up id is simply unknown.
    const repo = ctx.repo();
    await pushBlob(ctx.client, repo, randomBlob(10));
    const session = ctx.client.resolve(`/v2/${repo}/blobs/uploads/${randomUUID()}`);
    expectError(await ctx.client.request('GET', session), 404, 'BLOB_UPLOAD_UNKNOWN');
    expectError(await patch(ctx, session, randomBlob(10), '0-9'), 404, 'BLOB_UPLOAD_UNKNOWN');
    const data = randomBlob(10);
    expectError(await ctx.client.request('PUT', withDigest(session, digestOf(data)), { body: data }), 404,
      'BLOB_UPLOAD_UNKNOWN');
    expectError(await ctx.client.request('DELETE', session), 404, 'BLOB_UPLOAD_UNKNOWN');
  });

push.add({ level: 'optional', spec: 'spec.md § Pushing blobs ("SHOULD respond 400"); Error Codes DIGEST_INVALID' },
  async function putWithWrongDigestIsDigestInvalid(ctx) {
    const repo = ctx.repo();
    const data = randomBlob(256);
    const wrong = digestOf(randomBlob(256));
    const location = await startUpload(ctx.client, repo);
    const res = await ctx.client.request('PUT', withDigest(location, wrong), {
      headers: { 'content-type': 'application/octet-stream' }, body: data,
    });
    expectError(res, 400, 'DIGEST_INVALID');
    await expectNoBlob(ctx, repo, wrong, 'after a PUT whose digest did not match');
    await expectNoBlob(ctx, repo, digestOf(data), 'after a PUT whose digest did not match');
  });

push.add({ level: 'optional', spec: 'spec.md § Pushing blobs ("digest is invalid or uses an unsupported algorithm … 400")' },
  async function putWithMalformedDigestIs400(ctx) {
    const repo = ctx.repo();
    const data = randomBlob(32);
    for (const digest of ['sha256:not-hex', `sha256:${'a'.repeat(63)}`, `md5:${'0'.repeat(32)}`, 'nodigest']) {
      const location = await startUpload(ctx.client, repo);
      const res = await ctx.client.request('PUT', withDigest(location, digest), {
        headers: { 'content-type': 'application/octet-stream' }, body: data,
      });
      expectError(res, 400, ['DIGEST_INVALID', 'UNSUPPORTED']);
    }
  });

// --- Mounting ----------------------------------------------------------------------------------------------------

push.add({ level: 'required', spec: 'spec.md § Mounting a blob from another repository (end-11)' },
  async function mountAnswers201Or202(ctx) {
    const source = ctx.repo('source');
    const target = ctx.repo('target');
    const data = randomBlob(400);
    const blob = await pushBlob(ctx.client, source, data);
    const res = await ctx.client.request('POST', `/v2/${target}/blobs/uploads/`, { query: { mount: blob.digest, from: source } });
    expectStatus(res, 201, 202);
    expectHeader(res, 'location');
    if (res.status === 201) await expectBlob(ctx, target, blob.digest, data);
  });

push.add({ level: 'optional', spec: 'spec.md § Mounting a blob from another repository ("successful mount MUST be 201")' },
  async function mountFromAnotherRepository(ctx) {
    const source = ctx.repo('source');
    const target = ctx.repo('target');
    const data = randomBlob(400);
    const blob = await pushBlob(ctx.client, source, data);
    const res = await ctx.client.request('POST', `/v2/${target}/blobs/uploads/`, { query: { mount: blob.digest, from: source } });
    expectStatus(res, 201);
    const pulled = await ctx.client.request('GET', ctx.client.resolve(expectHeader(res, 'location')));
    expectBody(pulled, data);
    expectHeader(res, 'docker-content-digest', blob.digest);
    await expectBlob(ctx, target, blob.digest, data);
  });

push.add({ level: 'optional', spec: 'spec.md § Mounting a blob ("unable to mount … SHOULD return a 202")' },
  async function mountOfUnknownBlobStartsUpload(ctx) {
    const source = ctx.repo('source');
    const target = ctx.repo('target');
    await pushBlob(ctx.client, source, randomBlob(10));
    const data = randomBlob(300);
    const digest = digestOf(data);
    const res = await ctx.client.request('POST', `/v2/${target}/blobs/uploads/`, { query: { mount: digest, from: source } });
    expectStatus(res, 202);
    // The answer is a usable upload session.
    const put = await ctx.client.request('PUT', withDigest(ctx.client.resolve(expectHeader(res, 'location')), digest), {
      headers: { 'content-type': 'application/octet-stream' }, body: data,
    });
    expectStatus(put, 201);
    await expectBlob(ctx, target, digest, data);
  });

push.add({ level: 'required', spec: 'spec.md § Mounting a blob ("MAY treat the from parameter as optional")' },
  async function mountWithoutFromAnswers201Or202(ctx) {
    const source = ctx.repo('source');
    const target = ctx.repo('target');
    const blob = await pushBlob(ctx.client, source, randomBlob(200));
    const res = await ctx.client.request('POST', `/v2/${target}/blobs/uploads/`, { query: { mount: blob.digest } });
    expectStatus(res, 201, 202);
    expectHeader(res, 'location');
  });

push.add({ level: 'optional', features: ['mount-without-from'],
  spec: 'spec.md § Mounting a blob ("MAY cross-mount the blob if it can be found")' },
async function mountWithoutFromMounts(ctx) {
  const source = ctx.repo('source');
  const target = ctx.repo('target');
  const data = randomBlob(200);
  const blob = await pushBlob(ctx.client, source, data);
  const res = await ctx.client.request('POST', `/v2/${target}/blobs/uploads/`, { query: { mount: blob.digest } });
  expectStatus(res, 201);
  await expectBlob(ctx, target, blob.digest, data);
});

// --- Other digest algorithms -------------------------------------------------------------------------------------

push.add({ level: 'optional', features: ['sha512'], spec: 'spec.md § Pushing a blob in chunks (end-4c digest-algorithm)' },
  async function sha512ChunkedUpload(ctx) {
    const repo = ctx.repo();
    const data = randomBlob(5000);
    const digest = digestOf(data, 'sha512');
    const location = await startUpload(ctx.client, repo, { 'digest-algorithm': 'sha512' });
    const chunk = await patch(ctx, location, data, `0-${data.length - 1}`);
    expectStatus(chunk, 202);
    const res = await ctx.client.request('PUT', withDigest(ctx.client.resolve(expectHeader(chunk, 'location')), digest));
    expectStatus(res, 201);
    const got = await ctx.client.request('GET', `/v2/${repo}/blobs/${digest}`);
    expectStatus(got, 200);
    expectBody(got, data);
    // "If present, the value of this header MUST be a digest matching that of the response body": registry:2
    // answers with the sha256 digest of the same bytes, which is allowed.
    const header = expectHeader(got, 'docker-content-digest');
    const [alg] = header.split(':');
    expectTrue((alg === 'sha256' || alg === 'sha512') && header === digestOf(data, alg),
      `${got.describe()}: Docker-Content-Digest ${header} does not match the body`);
    const head = await ctx.client.request('HEAD', `/v2/${repo}/blobs/${digest}`);
    expectStatus(head, 200);
    expectHeader(head, 'content-length', String(data.length));
  });

push.add({ level: 'optional', features: ['sha512'], spec: 'spec.md § POST then PUT; image-spec descriptor.md § sha512' },
  async function sha512MonolithicUpload(ctx) {
    const repo = ctx.repo();
    const data = randomBlob(900);
    const blob = await pushBlob(ctx.client, repo, data, { algorithm: 'sha512' });
    await expectBlob(ctx, repo, blob.digest, data);
    // A wrong sha512 digest is refused like a wrong sha256 one.
    const location = await startUpload(ctx.client, repo);
    const bad = await ctx.client.request('PUT', withDigest(location, digestOf(randomBlob(9), 'sha512')), { body: data });
    expectError(bad, 400, 'DIGEST_INVALID');
  });

push.add({ level: 'optional', features: ['sha512'], spec: 'spec.md § Pushing Manifests (by digest); image-spec descriptor.md § sha512' },
  async function sha512ManifestByDigest(ctx) {
    // A manifest whose layer is a sha512 blob, pushed and pulled by the manifest's own sha512 digest.
    const repo = ctx.repo();
    const config = await pushBlob(ctx.client, repo, ociConfigBlob(), { mediaType: MediaType.ociConfig });
    const layer = await pushBlob(ctx.client, repo, randomBlob(300), { algorithm: 'sha512', mediaType: MediaType.ociLayer });
    const manifest = imageManifest({ config, layers: [layer] });
    const digest = digestOf(manifest.body, 'sha512');
    const res = await putManifest(ctx.client, repo, digest, manifest);
    expectStatus(res, 201);
    expectHeader(res, 'docker-content-digest', digest);
    const got = await ctx.client.request('GET', `/v2/${repo}/manifests/${digest}`);
    expectStatus(got, 200);
    expectBody(got, manifest.body);
    expectHeader(got, 'docker-content-digest', digest);
  });

// --- Pushing manifests -------------------------------------------------------------------------------------------

push.add({ level: 'required', spec: 'spec.md § Pushing Manifests (end-7a)' }, async function manifestPutByTag(ctx) {
  const repo = ctx.repo();
  const config = await pushBlob(ctx.client, repo, ociConfigBlob(), { mediaType: MediaType.ociConfig });
  const layer = await pushBlob(ctx.client, repo, randomBlob(99), { mediaType: MediaType.ociLayer });
  const manifest = imageManifest({ config, layers: [layer] });
  const res = await putManifest(ctx.client, repo, 'v1', manifest);
  expectStatus(res, 201);
  expectHeader(res, 'docker-content-digest', manifest.digest);
  // "<location> is a pullable manifest URL"
  const got = await ctx.client.request('GET', ctx.client.resolve(expectHeader(res, 'location')), {
    headers: { accept: manifest.mediaType },
  });
  expectStatus(got, 200);
  expectBody(got, manifest.body);
});

push.add({ level: 'required', spec: 'spec.md § Pushing Manifests ("Docker-Content-Digest … MUST be equal to the client provided digest")' },
  async function manifestPutByDigest(ctx) {
    const repo = ctx.repo();
    const config = await pushBlob(ctx.client, repo, ociConfigBlob(), { mediaType: MediaType.ociConfig });
    const layer = await pushBlob(ctx.client, repo, randomBlob(100), { mediaType: MediaType.ociLayer });
    const manifest = imageManifest({ config, layers: [layer] });
    const res = await putManifest(ctx.client, repo, manifest.digest, manifest);
    expectStatus(res, 201);
    expectHeader(res, 'location');
    expectHeader(res, 'docker-content-digest', manifest.digest);
  });

push.add({ level: 'required', spec: 'spec.md § Pushing Manifests; image-spec image-index.md' }, async function ociIndexPush(ctx) {
  const repo = ctx.repo();
  const amd = await pushImage(ctx.client, repo);
  const arm = await pushImage(ctx.client, repo);
  const index = indexManifest([
    { ...amd.manifest.descriptor, platform: { architecture: 'amd64', os: 'linux' } },
    { ...arm.manifest.descriptor, platform: { architecture: 'arm64', os: 'linux' } },
  ]);
  const res = await putManifest(ctx.client, repo, 'multi', index);
  expectStatus(res, 201);
  expectHeader(res, 'docker-content-digest', index.digest);
  const got = await ctx.client.request('GET', `/v2/${repo}/manifests/multi`, { headers: { accept: MediaType.ociIndex } });
  expectStatus(got, 200);
  expectBody(got, index.body);
  expectContentType(got, MediaType.ociIndex);
});

/** Pushes a Docker schema2 image (config + one layer) by digest and returns its manifest. */
async function pushDockerImage(ctx: Context, repo: string) {
  const config = await pushBlob(ctx.client, repo, ociConfigBlob(), { mediaType: MediaType.dockerConfig });
  const layer = await pushBlob(ctx.client, repo, randomBlob(300), { mediaType: MediaType.dockerLayer });
  const manifest = buildManifest({ schemaVersion: 2, mediaType: MediaType.dockerManifest, config, layers: [layer] });
  const res = await putManifest(ctx.client, repo, 'docker', manifest);
  expectStatus(res, 201);
  return manifest;
}

push.add({ level: 'optional', spec: 'Docker Image Manifest V2 Schema 2 (application/vnd.docker.distribution.manifest.v2+json)' },
  async function dockerSchema2ManifestPush(ctx) {
    const repo = ctx.repo();
    const manifest = await pushDockerImage(ctx, repo);
    const got = await ctx.client.request('GET', `/v2/${repo}/manifests/docker`, { headers: { accept: MediaType.dockerManifest } });
    expectStatus(got, 200);
    expectBody(got, manifest.body);
    expectContentType(got, MediaType.dockerManifest);
    expectHeader(got, 'docker-content-digest', manifest.digest);
  });

push.add({ level: 'optional', spec: 'Docker Image Manifest V2 Schema 2 (manifest list)' },
  async function dockerManifestListPush(ctx) {
    const repo = ctx.repo();
    const child = await pushDockerImage(ctx, repo);
    const list = buildManifest({
      schemaVersion: 2,
      mediaType: MediaType.dockerManifestList,
      manifests: [{ ...child.descriptor, platform: { architecture: 'amd64', os: 'linux' } }],
    });
    expectStatus(await putManifest(ctx.client, repo, 'list', list), 201);
    const got = await ctx.client.request('GET', `/v2/${repo}/manifests/list`, {
      headers: { accept: `${MediaType.dockerManifestList}, ${MediaType.dockerManifest}` },
    });
    expectStatus(got, 200);
    expectBody(got, list.body);
    expectContentType(got, MediaType.dockerManifestList);
  });

push.add({ level: 'required', spec: 'spec.md § Pushing Manifests; image-spec manifest.md § Guidelines for Artifact Usage' },
  async function artifactWithEmptyConfig(ctx) {
    const repo = ctx.repo();
    const empty = await pushBlob(ctx.client, repo, EMPTY_JSON, { mediaType: MediaType.ociEmpty });
    expectTrue(empty.digest === emptyDescriptor.digest, 'the empty descriptor digest is that of "{}"');
    const payload = await pushBlob(ctx.client, repo, randomBlob(128), { mediaType: 'application/vnd.conformance.data' });
    const manifest = imageManifest({
      artifactType: 'application/vnd.conformance.artifact.v1',
      config: emptyDescriptor,
      layers: [{ ...payload, mediaType: 'application/vnd.conformance.data' }],
      annotations: { 'org.opencontainers.image.created': '2024-01-01T00:00:00Z' },
    });
    expectStatus(await putManifest(ctx.client, repo, 'artifact', manifest), 201);
    const got = await ctx.client.request('GET', `/v2/${repo}/manifests/artifact`, { headers: { accept: MediaType.ociManifest } });
    expectStatus(got, 200);
    expectBody(got, manifest.body);
    const config = await ctx.client.request('GET', `/v2/${repo}/blobs/${emptyDescriptor.digest}`);
    expectStatus(config, 200);
    expectBody(config, EMPTY_JSON);
  });

push.add({ level: 'required', spec: 'spec.md § Push ("MUST initially accept … a subject … that does not exist")' },
  async function manifestWithUnknownSubjectIsAccepted(ctx) {
    const repo = ctx.repo();
    const subject: Descriptor = { mediaType: MediaType.ociManifest, digest: unknownDigest(), size: 1234 };
    await pushArtifact(ctx.client, repo, { artifactType: 'application/vnd.conformance.sig', subject });
  });

/** A manifest whose `missing` part points at a blob nobody pushed. */
async function manifestMissing(ctx: Context, repo: string, missing: 'layer' | 'config') {
  const config = await pushBlob(ctx.client, repo, ociConfigBlob(), { mediaType: MediaType.ociConfig });
  const layer = await pushBlob(ctx.client, repo, randomBlob(100), { mediaType: MediaType.ociLayer });
  const ghost: Descriptor = { mediaType: missing === 'layer' ? MediaType.ociLayer : MediaType.ociConfig,
    digest: unknownDigest(), size: 42 };
  return imageManifest(missing === 'layer' ? { config, layers: [layer, ghost] } : { config: ghost, layers: [layer] });
}

push.add({ level: 'required', spec: 'spec.md § Push ("MAY reject … it MUST result in MANIFEST_BLOB_UNKNOWN")' },
  async function manifestWithUnknownBlobIsAcceptedOrBlobUnknown(ctx) {
    const repo = ctx.repo();
    for (const missing of ['layer', 'config'] as const) {
      const res = await putManifest(ctx.client, repo, `missing-${missing}`, await manifestMissing(ctx, repo, missing));
      if (res.status !== 201) expectError(res, 400, 'MANIFEST_BLOB_UNKNOWN');
    }
  });

push.add({ level: 'strict', spec: 'Wharf: a manifest referencing an unknown blob is 400 MANIFEST_BLOB_UNKNOWN' },
  async function manifestWithUnknownBlobIsRejected(ctx) {
    const repo = ctx.repo();
    for (const missing of ['layer', 'config'] as const) {
      const manifest = await manifestMissing(ctx, repo, missing);
      expectError(await putManifest(ctx.client, repo, `missing-${missing}`, manifest), 400, 'MANIFEST_BLOB_UNKNOWN');
      const res = await ctx.client.request('HEAD', `/v2/${repo}/manifests/missing-${missing}`);
      expectStatus(res, 404);
    }
  });

push.add({ level: 'strict', features: ['complete-index'],
  spec: 'Wharf: an index naming a child the repository lacks is 400 MANIFEST_BLOB_UNKNOWN (unless sparse indexes are on)' },
  async function indexWithUnknownChildIsRejected(ctx) {
    const repo = ctx.repo();
    const index = indexManifest([{ mediaType: MediaType.ociManifest, digest: unknownDigest(), size: 321 }]);
    expectError(await putManifest(ctx.client, repo, 'missing-child', index), 400, 'MANIFEST_BLOB_UNKNOWN');
    expectStatus(await ctx.client.request('HEAD', `/v2/${repo}/manifests/missing-child`), 404);
  });

push.add({ level: 'optional', spec: 'spec.md § Error Codes MANIFEST_INVALID' }, async function invalidManifestJsonIsManifestInvalid(ctx) {
  const repo = ctx.repo();
  await pushImage(ctx.client, repo, 'exists');
  for (const body of ['{"schemaVersion": 2, "mediaType": ', 'not json at all', '[]']) {
    const res = await ctx.client.request('PUT', `/v2/${repo}/manifests/broken`, {
      headers: { 'content-type': MediaType.ociManifest }, body,
    });
    expectError(res, 400, 'MANIFEST_INVALID');
  }
});

push.add({ level: 'required', spec: 'spec.md § Pushing Manifests (digest MUST equal the client provided digest); DIGEST_INVALID' },
  async function manifestDigestMismatchIsDigestInvalid(ctx) {
    const repo = ctx.repo();
    const image = await pushImage(ctx.client, repo);
    const other = imageManifest({ config: image.config, layers: image.layers, annotations: { nonce: randomToken() } });
    // The URL names one digest, the body hashes to another.
    const res = await putManifest(ctx.client, repo, unknownDigest(), other);
    expectError(res, 400, 'DIGEST_INVALID');
    expectStatus(await ctx.client.request('HEAD', `/v2/${repo}/manifests/${other.digest}`), 404);
  });

/** Tags outside `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}` (spec.md § Pulling manifests). */
const INVALID_TAGS = ['-leading-dash', '.leading-dot', `t${'a'.repeat(128)}`, 'has+plus'];

push.add({ level: 'required', spec: 'spec.md § Pulling manifests (tag grammar, "MUST NOT be in any other format")' },
  async function invalidTagIsRejected(ctx) {
    const repo = ctx.repo();
    const image = await pushImage(ctx.client, repo);
    for (const tag of INVALID_TAGS) {
      const res = await putManifest(ctx.client, repo, tag, image.manifest);
      // The route may not match at all (404); if it does, the registry must refuse.
      expectStatus(res, 400, 404);
      if (res.status === 400) expectError(res, 400, ['MANIFEST_INVALID', 'TAG_INVALID']);
    }
  });

push.add({ level: 'strict', spec: 'Wharf: invalid tag is 400 MANIFEST_INVALID (TAG_INVALID is legacy, spec.md § Legacy error codes)' },
  async function invalidTagIsManifestInvalid(ctx) {
    const repo = ctx.repo();
    const image = await pushImage(ctx.client, repo);
    for (const tag of INVALID_TAGS) {
      expectError(await putManifest(ctx.client, repo, tag, image.manifest), 400, ['MANIFEST_INVALID', 'TAG_INVALID']);
    }
  });

push.add({ level: 'strict', spec: 'Wharf: Content-Type must agree with the manifest mediaType (spec.md § Pushing Manifests)' },
  async function manifestMediaTypeMismatchIsManifestInvalid(ctx) {
    const repo = ctx.repo();
    const image = await pushImage(ctx.client, repo);
    const res = await putManifest(ctx.client, repo, 'mismatch', image.manifest, MediaType.ociIndex);
    expectError(res, 400, 'MANIFEST_INVALID');
  });

push.add({ level: 'required', spec: 'spec.md § Pushing Manifests (PUT by tag points the tag at the new manifest)' },
  async function manifestPutMovesTag(ctx) {
    const repo = ctx.repo();
    const first = await pushImage(ctx.client, repo, 'moving');
    const second = await pushImage(ctx.client, repo, 'moving');
    const res = await ctx.client.request('GET', `/v2/${repo}/manifests/moving`, { headers: { accept: MediaType.ociManifest } });
    expectHeader(res, 'docker-content-digest', second.manifest.digest);
    expectBody(res, second.manifest.body);
    expectStatus(await ctx.client.request('HEAD', `/v2/${repo}/manifests/${first.manifest.digest}`), 200);
  });

push.add({ level: 'optional', spec: 'spec.md § Pushing Manifests ("SHOULD expect … at least 4 megabytes")' },
  async function largeManifestIsAccepted(ctx) {
    const repo = ctx.repo();
    const image = await pushImage(ctx.client, repo);
    const manifest = imageManifest({ config: image.config, layers: image.layers,
      annotations: { 'conformance.padding': 'x'.repeat(3_900_000) } });
    expectTrue(manifest.body.length < 4 * 1000 * 1000, 'padding keeps the manifest under 4 MB');
    expectStatus(await putManifest(ctx.client, repo, 'large', manifest), 201);
    const got = await ctx.client.request('GET', `/v2/${repo}/manifests/large`, { headers: { accept: MediaType.ociManifest } });
    expectBody(got, manifest.body);
  });

push.add({ level: 'optional', spec: 'spec.md § Pushing Manifests ("over this limit … SHOULD respond 413")' },
  async function oversizedManifestIs413(ctx) {
    const repo = ctx.repo();
    const image = await pushImage(ctx.client, repo);
    const manifest = imageManifest({ config: image.config, layers: image.layers,
      annotations: { 'conformance.padding': 'x'.repeat(16 * 1024 * 1024) } });
    const res = await ctx.client.request('PUT', `/v2/${repo}/manifests/huge`, {
      headers: { 'content-type': manifest.mediaType }, body: manifest.body, earlyReply: true,
    });
    expectStatus(res, 413);
    expectStatus(await ctx.client.request('HEAD', `/v2/${repo}/manifests/huge`), 404);
  });

push.add({ level: 'optional', features: ['tag-query'], spec: 'spec.md § Pushing Manifests (end-7b, "MUST include an OCI-Tag response header")' },
  async function manifestPutWithSeveralTags(ctx) {
    const repo = ctx.repo();
    const image = await pushImage(ctx.client, repo);
    const tags = ['1.2.3', '1.2', '1', 'latest'];
    const res = await ctx.client.request('PUT', `/v2/${repo}/manifests/${image.manifest.digest}`, {
      query: { tag: tags }, headers: { 'content-type': image.manifest.mediaType }, body: image.manifest.body,
    });
    expectStatus(res, 201);
    const header = expectHeader(res, 'oci-tag');
    const accepted = header.split(',').map((t) => t.trim()).filter(Boolean);
    for (const tag of tags) {
      expectTrue(accepted.includes(tag), `${res.describe()}: OCI-Tag should list ${tag}, got OCI-Tag: ${header}`);
      const got = await ctx.client.request('HEAD', `/v2/${repo}/manifests/${tag}`);
      expectStatus(got, 200);
      expectHeader(got, 'docker-content-digest', image.manifest.digest);
    }
  });

push.add({ level: 'required', spec: 'spec.md § Pushing blobs (<name> grammar); Error Codes NAME_INVALID' },
  async function uploadToInvalidNameIsRejected(ctx) {
    const res = await ctx.client.request('POST', '/v2/Invalid-Name/blobs/uploads/');
    expectStatus(res, 400, 404);
    if (res.status === 400) expectError(res, 400, 'NAME_INVALID');
  });

push.add({ level: 'strict', spec: 'Wharf: upload to an invalid name is 400 NAME_INVALID' },
  async function uploadToInvalidNameIsNameInvalid(ctx) {
    expectError(await ctx.client.request('POST', '/v2/Invalid-Name/blobs/uploads/'), 400, 'NAME_INVALID');
    expectError(await ctx.client.request('PUT', '/v2/bad..name/manifests/latest', {
      headers: { 'content-type': MediaType.ociManifest }, body: '{}',
    }), 400, 'NAME_INVALID');
  });
