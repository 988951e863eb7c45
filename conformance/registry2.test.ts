/**
 * The suite checked against the reference implementation: CNCF distribution's registry:2 (2.8, Debian's
 * `docker-registry`), started on loopback with a throw-away storage directory.
 *
 * This keeps the suite honest in both directions: every check that registry:2 gets right must pass (so a check
 * cannot demand something the spec does not), and the known gaps of registry:2 2.8 must fail (so those checks can
 * fail at all). The list below is also the documentation of where registry:2 2.8 departs from the spec's main
 * branch or from Wharf's stricter promises.
 *
 * Skipped when registry:2 2.8 is not installed.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { REGISTRY2_BIN, startRegistry2 } from '../testing/harness.js';
import { runSuite } from './suite.js';

/** Checks registry:2 2.8 fails, and why. */
const KNOWN_FAILURES: Record<string, string> = {
  // pull
  blobRangeUnsatisfiableIs416: 'answers 416 with Content-Length of the whole blob but a short body',
  invalidRepositoryNameIsNameInvalid: 'names outside the grammar hit the router: plain-text 404 or MANIFEST_UNKNOWN',
  unknownRouteAnswersJsonEnvelope: 'unknown routes answer a plain-text "404 page not found"',
  unsupportedMethodAnswers405Envelope: '405 has a plain-text body',
  // push
  singlePostUploadsBlob: 'no single-POST upload: answers 202 and discards the body',
  outOfOrderChunkIs416: 'ignores Content-Range on PATCH',
  outOfOrderFinalChunkInPutIs416: 'ignores Content-Range on the closing PUT',
  unknownUploadSessionIs404: 'a session URL without its signed _state is BLOB_UPLOAD_INVALID',
  mountWithoutFromMounts: 'mount needs from',
  invalidTagIsManifestInvalid: 'invalid tags do not route: plain-text 404',
  oversizedManifestIs413: 'answers 400 MANIFEST_INVALID "http: request body too large"',
  manifestPutWithSeveralTags: 'no ?tag= support (spec main branch)',
  uploadToInvalidNameIsNameInvalid: 'invalid names do not route: plain-text 404',
  sha512ManifestByDigest: 'verifies a manifest PUT against its sha256 digest only: DIGEST_INVALID',
  nonDistributableLayersWithUrlsNeedNotBePushed: 'refuses layer URLs by default with 500 UNKNOWN (plus MANIFEST_BLOB_UNKNOWN), not MANIFEST_INVALID',
  // discovery
  tagsListWithN: 'no tag pagination in 2.8',
  tagsListWithNZero: 'no tag pagination in 2.8',
  tagsListWithLast: 'no tag pagination in 2.8',
  tagsListWithNAndLast: 'no tag pagination in 2.8',
  tagsListLinkWalksAllTags: 'no tag pagination in 2.8',
  // management
  deleteTagRemovesOnlyTheTag: 'no tag deletion in 2.8 (answers 400, which the spec allows)',
  // referrers: the API does not exist in 2.8
  subjectPushAnswersOciSubject: 'no referrers API',
  referrersListsArtifactWithTypeAndAnnotations: 'no referrers API',
  referrersArtifactTypeFallsBackToConfigMediaType: 'no referrers API',
  referrersIncludesIndexes: 'no referrers API',
  referrersFilterIsReportedTruthfully: 'no referrers API',
  referrersFilterByArtifactType: 'no referrers API',
  referrersOfUnknownSubjectIsEmptyIndex: 'no referrers API',
  referrersWithInvalidDigestIs400: 'no referrers API',
  referrersBeforeSubjectExists: 'no referrers API',
  referrersAreScopedToRepository: 'no referrers API',
  deletedReferrerIsNotListed: 'no referrers API',
  referrersWithInvalidDigestIsDigestInvalid: 'no referrers API',
};

/**
 * Known failures whose outcome depends on the machine: registry:2 2.8 returns tags in directory order, which on
 * some filesystems happens to be sorted.
 */
const MAY_PASS = new Set(['tagsListIsSorted']);

function registry2Version(): string | undefined {
  if (!existsSync(REGISTRY2_BIN)) return undefined;
  const out = spawnSync(REGISTRY2_BIN, ['--version'], { encoding: 'utf8' });
  return /\b2\.8\.\d+/.exec(out.stdout ?? '')?.[0];
}

const version = registry2Version();

(version ? test : test.skip)(`the suite against registry:2 ${version ?? '(not installed)'}`, async (t) => {
  const registry2 = await startRegistry2({ config: { log: { level: 'error' } } });
  t.teardown(() => registry2.stop());
  const results = await runSuite({ url: registry2.url, strict: true });

  const failed = results.filter((r) => r.status === 'fail');
  const unexpected = failed.filter((r) => !(r.check.name in KNOWN_FAILURES) && !MAY_PASS.has(r.check.name));
  const passedButKnown = results.filter((r) => r.status === 'pass' && r.check.name in KNOWN_FAILURES);
  t.deepEqual(unexpected.map((r) => `${r.check.name}: ${r.message}`), [],
    'checks that registry:2 gets right must pass');
  t.deepEqual(passedButKnown.map((r) => `${r.check.name} (${KNOWN_FAILURES[r.check.name]})`), [],
    'known registry:2 gaps must be detected');
  for (const name of Object.keys(KNOWN_FAILURES)) {
    t.true(results.some((r) => r.check.name === name), `KNOWN_FAILURES names a check that exists: ${name}`);
  }
});
