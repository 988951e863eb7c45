/**
 * Pull: determining support, pulling manifests and blobs, checking existence with HEAD, ranged reads, and the
 * errors a puller sees (unknown content, invalid names, unknown routes).
 */
import { area, type Context } from '../check.js';
import {
  expectBody, expectContentType, expectEmptyBody, expectEnvelopeIfJson, expectError, expectErrorEnvelope, expectHeader,
  expectStatus, fail,
} from '../expect.js';
import { pushBlob, pushImage, randomBlob, randomToken, unknownDigest } from '../fixtures.js';

const pull = area('pull');
export const pullChecks = pull.checks;

// --- Determining support -----------------------------------------------------------------------------------------

pull.add({ level: 'required', spec: 'spec.md § Determining Support (end-1)' }, async function apiBaseAnswers200(ctx) {
  const res = await ctx.client.request('GET', '/v2/');
  expectStatus(res, 200);
});

pull.add({ level: 'optional', spec: 'spec.md § Legacy Docker support HTTP headers' },
  async function apiBaseSendsDistributionApiVersion(ctx) {
    const res = await ctx.client.request('GET', '/v2/');
    expectHeader(res, 'docker-distribution-api-version', 'registry/2.0');
  });

// --- Pulling blobs -----------------------------------------------------------------------------------------------

pull.add({ level: 'required', spec: 'spec.md § Pulling blobs' }, async function blobGetReturnsContentAndDigest(ctx) {
  const repo = ctx.repo();
  const data = randomBlob(3000);
  const blob = await pushBlob(ctx.client, repo, data);
  const res = await ctx.client.request('GET', `/v2/${repo}/blobs/${blob.digest}`);
  expectStatus(res, 200);
  expectBody(res, data);
  expectHeader(res, 'docker-content-digest', blob.digest);
});

pull.add({ level: 'required', spec: 'spec.md § Checking if content exists in the registry' },
  async function blobHeadReturnsSizeAndDigest(ctx) {
    const repo = ctx.repo();
    const data = randomBlob(1234);
    const blob = await pushBlob(ctx.client, repo, data);
    const res = await ctx.client.request('HEAD', `/v2/${repo}/blobs/${blob.digest}`);
    expectStatus(res, 200);
    expectHeader(res, 'content-length', String(data.length));
    expectHeader(res, 'docker-content-digest', blob.digest);
    expectEmptyBody(res);
  });

pull.add({ level: 'required', spec: 'spec.md § Pulling blobs (404 when not found)' },
  async function blobUnknownIs404BlobUnknown(ctx) {
    const repo = ctx.repo();
    await pushBlob(ctx.client, repo, randomBlob(10)); // the repository exists; only the blob is unknown
    const res = await ctx.client.request('GET', `/v2/${repo}/blobs/${unknownDigest()}`);
    expectError(res, 404, 'BLOB_UNKNOWN');
  });

pull.add({ level: 'required', spec: 'spec.md § Checking if content exists in the registry' },
  async function blobHeadUnknownIs404WithoutBody(ctx) {
    const repo = ctx.repo();
    await pushBlob(ctx.client, repo, randomBlob(10));
    const res = await ctx.client.request('HEAD', `/v2/${repo}/blobs/${unknownDigest()}`);
    expectStatus(res, 404);
    expectEmptyBody(res);
  });

pull.add({ level: 'required', spec: 'spec.md § Pulling blobs ("not found in the repository")' },
  async function blobOfAnotherRepositoryIsNotServed(ctx) {
    const owner = ctx.repo('owner');
    const other = ctx.repo('other');
    const blob = await pushBlob(ctx.client, owner, randomBlob(100));
    await pushBlob(ctx.client, other, randomBlob(100));
    const res = await ctx.client.request('GET', `/v2/${other}/blobs/${blob.digest}`);
    expectError(res, 404, 'BLOB_UNKNOWN');
  });

// --- Range requests (spec: "A registry SHOULD support the Range request header", RFC 9110 § 14) -----------------

pull.add({ level: 'optional', spec: 'spec.md § Pulling blobs (Range); RFC 9110 § 14.3' },
  async function blobAdvertisesAcceptRanges(ctx) {
    const repo = ctx.repo();
    const blob = await pushBlob(ctx.client, repo, randomBlob(100));
    const res = await ctx.client.request('HEAD', `/v2/${repo}/blobs/${blob.digest}`);
    expectHeader(res, 'accept-ranges', 'bytes');
  });

/** Pushes a blob and GETs it with the given Range header; returns the blob and the reply. */
async function rangedGet(ctx: Context, size: number, range: string) {
  const repo = ctx.repo();
  const data = randomBlob(size);
  const blob = await pushBlob(ctx.client, repo, data);
  const res = await ctx.client.request('GET', `/v2/${repo}/blobs/${blob.digest}`, { headers: { range } });
  return { data, res };
}

pull.add({ level: 'optional', spec: 'spec.md § Pulling blobs (Range); RFC 9110 § 14.1.2 bytes=first-last' },
  async function blobRangeFirstLast(ctx) {
    const { data, res } = await rangedGet(ctx, 1000, 'bytes=100-199');
    expectStatus(res, 206);
    expectHeader(res, 'content-range', 'bytes 100-199/1000');
    expectBody(res, data.subarray(100, 200));
  });

pull.add({ level: 'optional', spec: 'spec.md § Pulling blobs (Range); RFC 9110 § 14.1.2 bytes=first-' },
  async function blobRangeOpenEnded(ctx) {
    const { data, res } = await rangedGet(ctx, 1000, 'bytes=900-');
    expectStatus(res, 206);
    expectHeader(res, 'content-range', 'bytes 900-999/1000');
    expectBody(res, data.subarray(900));
  });

pull.add({ level: 'optional', spec: 'spec.md § Pulling blobs (Range); RFC 9110 § 14.1.2 bytes=-suffix' },
  async function blobRangeSuffix(ctx) {
    const { data, res } = await rangedGet(ctx, 1000, 'bytes=-50');
    expectStatus(res, 206);
    expectHeader(res, 'content-range', 'bytes 950-999/1000');
    expectBody(res, data.subarray(950));
  });

pull.add({ level: 'optional', spec: 'spec.md § Pulling blobs (Range); RFC 9110 § 15.5.17 416' },
  async function blobRangeUnsatisfiableIs416(ctx) {
    const { res } = await rangedGet(ctx, 1000, 'bytes=5000-5100');
    expectStatus(res, 416);
    // RFC 9110: a 416 to a byte-range request SHOULD carry Content-Range "bytes */<complete-length>".
    const cr = res.header('content-range');
    if (cr !== undefined && cr !== 'bytes */1000') fail(`${res.describe()}: expected Content-Range: bytes */1000, got ${cr}`);
  });

// --- Pulling manifests -------------------------------------------------------------------------------------------

pull.add({ level: 'required', spec: 'spec.md § Pulling manifests' }, async function manifestGetByTagIsByteIdentical(ctx) {
  const repo = ctx.repo();
  const image = await pushImage(ctx.client, repo, 'v1');
  const res = await ctx.client.request('GET', `/v2/${repo}/manifests/v1`, {
    headers: { accept: image.manifest.mediaType },
  });
  expectStatus(res, 200);
  expectBody(res, image.manifest.body);
  expectContentType(res, image.manifest.mediaType);
  expectHeader(res, 'docker-content-digest', image.manifest.digest);
});

pull.add({ level: 'required', spec: 'spec.md § Pulling manifests' }, async function manifestGetByDigestIsByteIdentical(ctx) {
  const repo = ctx.repo();
  const image = await pushImage(ctx.client, repo);
  const res = await ctx.client.request('GET', `/v2/${repo}/manifests/${image.manifest.digest}`, {
    headers: { accept: image.manifest.mediaType },
  });
  expectStatus(res, 200);
  expectBody(res, image.manifest.body);
  expectContentType(res, image.manifest.mediaType);
  expectHeader(res, 'docker-content-digest', image.manifest.digest);
});

pull.add({ level: 'required', spec: 'spec.md § Checking if content exists in the registry' },
  async function manifestHeadByTagAndDigest(ctx) {
    const repo = ctx.repo();
    const image = await pushImage(ctx.client, repo, 'latest');
    for (const ref of ['latest', image.manifest.digest]) {
      const res = await ctx.client.request('HEAD', `/v2/${repo}/manifests/${ref}`, {
        headers: { accept: image.manifest.mediaType },
      });
      expectStatus(res, 200);
      expectHeader(res, 'docker-content-digest', image.manifest.digest);
      expectHeader(res, 'content-length', String(image.manifest.body.length));
      expectEmptyBody(res);
    }
  });

pull.add({ level: 'optional', spec: 'spec.md § Pulling manifests ("SHOULD NOT include parameters on Content-Type")' },
  async function manifestContentTypeHasNoParameters(ctx) {
    const repo = ctx.repo();
    const image = await pushImage(ctx.client, repo, 'v1');
    const res = await ctx.client.request('GET', `/v2/${repo}/manifests/v1`, { headers: { accept: image.manifest.mediaType } });
    expectHeader(res, 'content-type', image.manifest.mediaType);
  });

pull.add({ level: 'required', spec: 'spec.md § Pulling manifests (404 when not found)' },
  async function manifestUnknownTagIs404ManifestUnknown(ctx) {
    const repo = ctx.repo();
    await pushImage(ctx.client, repo, 'exists');
    const res = await ctx.client.request('GET', `/v2/${repo}/manifests/missing-${randomToken()}`);
    expectError(res, 404, 'MANIFEST_UNKNOWN');
  });

pull.add({ level: 'required', spec: 'spec.md § Pulling manifests (404 when not found)' },
  async function manifestUnknownDigestIs404ManifestUnknown(ctx) {
    const repo = ctx.repo();
    await pushImage(ctx.client, repo, 'exists');
    const res = await ctx.client.request('GET', `/v2/${repo}/manifests/${unknownDigest()}`);
    expectError(res, 404, 'MANIFEST_UNKNOWN');
  });

pull.add({ level: 'required', spec: 'spec.md § Checking if content exists in the registry' },
  async function manifestHeadUnknownIs404WithoutBody(ctx) {
    const repo = ctx.repo();
    await pushImage(ctx.client, repo, 'exists');
    const res = await ctx.client.request('HEAD', `/v2/${repo}/manifests/missing`);
    expectStatus(res, 404);
    expectEmptyBody(res);
  });

pull.add({ level: 'required', spec: 'spec.md § Pushing Manifests ("pull a nonexistent repository MUST return 404")' },
  async function manifestOfNonexistentRepositoryIs404(ctx) {
    const res = await ctx.client.request('GET', `/v2/${ctx.repo('never-pushed')}/manifests/latest`);
    expectError(res, 404, ['NAME_UNKNOWN', 'MANIFEST_UNKNOWN']);
  });

// --- Names and routes --------------------------------------------------------------------------------------------

/** Repository names outside the grammar `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/…)*` of spec.md § Pulling manifests. */
const INVALID_NAMES = ['Upper/case', 'trailing-/repo', 'double..dot', '-leading', 'a___b'];

pull.add({ level: 'required', spec: 'spec.md § Pulling manifests (<name> grammar); Error Codes NAME_INVALID' },
  async function invalidRepositoryNameIsRejected(ctx) {
    for (const name of INVALID_NAMES) {
      const res = await ctx.client.request('GET', `/v2/${name}/manifests/latest`);
      // A name the router cannot even match may answer 404; a name it parses must be refused as NAME_INVALID.
      if (res.status === 404) continue;
      expectError(res, 400, 'NAME_INVALID');
    }
  });

pull.add({ level: 'strict', spec: 'Wharf: every invalid name is 400 NAME_INVALID (spec.md Error Codes code-8)' },
  async function invalidRepositoryNameIsNameInvalid(ctx) {
    for (const name of INVALID_NAMES) {
      const res = await ctx.client.request('GET', `/v2/${name}/manifests/latest`);
      expectError(res, 400, 'NAME_INVALID');
    }
    const long = `${ctx.namespace()}/${'a'.repeat(256)}`;
    expectError(await ctx.client.request('GET', `/v2/${long}/tags/list`), 400, 'NAME_INVALID');
  });

pull.add({ level: 'required', spec: 'spec.md § Error Codes ("if the response body is JSON it MUST have this format")' },
  async function unknownRouteErrorIsEnvelopeIfJson(ctx) {
    const res = await ctx.client.request('GET', `/v2/${ctx.repo()}/nonsense/${randomToken()}`);
    expectStatus(res, 404);
    expectEnvelopeIfJson(res);
  });

pull.add({ level: 'strict', spec: 'Wharf: unknown routes answer 404 with the JSON error envelope' },
  async function unknownRouteAnswersJsonEnvelope(ctx) {
    for (const path of [`/v2/${ctx.repo()}/nonsense/x`, '/v3/', `/v2/${ctx.repo()}/blobs/`]) {
      const res = await ctx.client.request('GET', path);
      expectStatus(res, 404);
      expectContentType(res, 'application/json');
      expectErrorEnvelope(res);
    }
  });

pull.add({ level: 'strict', spec: 'Wharf: a method a route does not allow is 405 with Allow and the JSON envelope' },
  async function unsupportedMethodAnswers405Envelope(ctx) {
    const repo = ctx.repo();
    const res = await ctx.client.request('PATCH', `/v2/${repo}/manifests/latest`, { body: '{}' });
    expectError(res, 405, 'UNSUPPORTED');
    expectHeader(res, 'allow');
  });
