/**
 * Retention as a garbage-collection phase over a real filesystem tree written through the registry domain: what
 * goes and what stays (kept images still pull completely, the deleted ones' blobs are collected in the same run),
 * dry runs, `runRetention` alone, the pull recorder's batching, and pushes racing the deletes through the live set.
 */
import test from 'ava';
import { utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { parseConfig } from '../config/load.js';
import * as layout from '../registry/layout.js';
import { LocalRegistry } from '../registry/registry.js';
import { parseDigest, parseReference } from '../registry/reference.js';
import { newStats, metricsText, summaryText } from '../gc/report.js';
import { StorageLiveSet, type LiveSet } from '../gc/state.js';
import { collectGarbage, runRetention, type GcOptions } from '../gc/worker.js';
import {
  ageAll, fixture, pullsCompletely, pushImage, pushIndex, randomBlob, storedBlobs, type Fixture, type PushedImage,
} from '../../testing/gc-helpers.js';
import { PullRecorder, readPulls, readPullsSince } from './pulls.js';
import { Policies } from './rules.js';
import type { RetentionItem } from './retention-run.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

function policies(retention: string, extra = ''): Policies {
  return new Policies(parseConfig(`version: 0.1\nstorage: inmemory\npolicies:\n  retention:\n${retention}\n${extra}`, {}, 'x').config);
}

const RULE = `    - repositories: ['ci/**']
      keep: {mostrecent: 1, pulledwithin: 24h, tags: ['latest']}
      untagged: {olderthan: 24h}`;

/** Set a stored file's modification time `ms` back. */
async function age(f: Fixture, path: string, ms: number): Promise<void> {
  const when = new Date(Date.now() - ms);
  await utimes(join(f.root, path), when, when);
}

const digestsOf = (img: PushedImage) => [img.manifest.digest, img.config.digest, ...img.layers.map((l) => l.digest)];

/**
 * ci/app: `new` (pushed an hour ago), `old` (10 days, never pulled), `pulled` (10 days, pulled 2 hours ago by
 * digest), `latest` (10 days; keep.tags) and `rel` (10 days; immutable), plus an old untagged image, an old untagged
 * signature of `new`, and a multi-platform index under `old`. other/app: an old image no rule covers.
 */
async function scene(f: Fixture) {
  const repo = 'ci/app';
  const oldChild = await pushImage(f.registry, repo, undefined, [randomBlob()]);
  const oldIndex = await pushIndex(f.registry, repo, 'old', [oldChild.manifest]);
  const pulled = await pushImage(f.registry, repo, 'pulled', [randomBlob()]);
  const latest = await pushImage(f.registry, repo, 'latest', [randomBlob()]);
  const rel = await pushImage(f.registry, repo, 'rel', [randomBlob()]);
  const untagged = await pushImage(f.registry, repo, undefined, [randomBlob()]);
  const other = await pushImage(f.registry, 'other/app', 'v1', [randomBlob()]);
  await ageAll(f.root, 10 * DAY);
  const fresh = await pushImage(f.registry, repo, 'new', [randomBlob()]);
  const signature = await pushImage(f.registry, repo, undefined, [randomBlob(32)], { subject: fresh.manifest, artifactType: 'application/vnd.example.sig' });
  for (const p of [layout.revisionLinkPath(repo, parseDigest(signature.manifest.digest))]) await age(f, p, 10 * DAY);
  await age(f, layout.tagCurrentLinkPath(repo, 'new'), HOUR);
  // A pull of `pulled` (by digest) two hours ago, written by the recorder and dated by the test.
  const recorder = new PullRecorder(f.driver);
  recorder.record(repo, parseReference(pulled.manifest.digest), pulled.manifest.digest);
  await recorder.close();
  await age(f, layout.pullDigestPath(repo, parseDigest(pulled.manifest.digest)), 2 * HOUR);
  // Pulls have been recorded for 30 days (longer than the rule's pulledwithin), so "never pulled" can be trusted.
  await recordedSince(f, 30 * DAY);
  return { repo, oldChild, oldIndex, pulled, latest, rel, untagged, other, fresh, signature };
}

/** Say that pulls have been recorded for `ms` (what the servers' recorder wrote when it began). */
async function recordedSince(f: Fixture, ms: number): Promise<void> {
  await f.driver.putContent(layout.PULLS_SINCE_PATH, `${new Date(Date.now() - ms).toISOString()}\n`);
}

const IMMUTABLE = "  immutabletags:\n    - repositories: ['ci/**']\n      tags: ['rel']";

async function gc(f: Fixture, p: Policies, options: GcOptions = {}) {
  const items: RetentionItem[] = [];
  const stats = await collectGarbage(f.driver, { propagationMs: 0, graceMs: HOUR, retention: p, onRetention: (i) => items.push(i), ...options });
  return { stats, items };
}

test('garbage-collect applies retention first: what the rule drops is collected in the same run, kept images pull', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  const s = await scene(f);
  const { stats, items } = await gc(f, policies(RULE, IMMUTABLE));

  const tags = new Set((await f.registry.manifests.listTags(s.repo)).tags);
  t.deepEqual([...tags].sort(), ['latest', 'new', 'pulled', 'rel']);
  for (const tag of tags) t.true(await pullsCompletely(f.registry, s.repo, tag), tag);
  t.true(await pullsCompletely(f.registry, 'other/app', 'v1'));
  // The signature of the kept `new` stays (a referrer of a kept manifest), though untagged and old.
  t.true(await f.registry.manifests.hasRevision(s.repo, parseDigest(s.signature.manifest.digest)));
  const stored = await storedBlobs(f.driver);
  for (const d of [s.oldIndex.digest, ...digestsOf(s.oldChild), ...digestsOf(s.untagged)]) t.false(stored.has(d), `${d} collected`);
  for (const d of [...digestsOf(s.fresh), ...digestsOf(s.signature), ...digestsOf(s.rel), ...digestsOf(s.other)]) t.true(stored.has(d), `${d} kept`);

  t.is(stats.retentionTagsDeleted, 1);
  t.is(stats.retentionManifestsDeleted, 3); // the index, its child, the untagged image
  const oldTag = items.find((i) => i.kind === 'tag')!;
  t.is(oldTag.what, 'ci/app:old');
  t.is(oldTag.rule, 'policies.retention[0] (ci/**)');
  t.is(oldTag.reason, 'not among the 1 most recently pushed; never pulled; matches none of keep.tags');
  t.regex(summaryText(stats), /retention: 1 repositories under a rule, 1 tags and 3 untagged manifests deleted/);
  t.regex(metricsText(stats, true), /wharf_gc_retention_tags_deleted 1\n[^]*wharf_gc_retention_manifests_deleted 3\n/);
});

test('a dry run deletes nothing and lists every tag and manifest that would go, with rule and reason', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  const s = await scene(f);
  const before = await storedBlobs(f.driver);
  const listed: string[] = [];
  const { stats, items } = await gc(f, policies(RULE, IMMUTABLE), { dryRun: true, onDelete: (kind, what) => listed.push(`${kind} ${what}`) });
  t.deepEqual(await storedBlobs(f.driver), before);
  t.is(await f.registry.manifests.resolveTag(s.repo, 'old').then((d) => d?.value), s.oldIndex.digest);
  t.deepEqual(items.map((i) => `${i.kind} ${i.what}`).sort(), [
    'tag ci/app:old', `manifest ci/app@${s.oldIndex.digest}`, `manifest ci/app@${s.oldChild.manifest.digest}`, `manifest ci/app@${s.untagged.manifest.digest}`,
  ].sort());
  t.true(listed.includes('tag ci/app:old (policies.retention[0] (ci/**): not among the 1 most recently pushed; never pulled; matches none of keep.tags)'));
  t.true(listed.some((l) => l.startsWith(`manifest ci/app@${s.oldIndex.digest} (policies.retention[0] (ci/**): untagged once old goes`)));
  t.is(stats.retentionTagsDeleted, 1);
});

test('runRetention alone deletes tags and revision links; their blobs wait for the next collection', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  const s = await scene(f);
  const stats = await runRetention(f.driver, { propagationMs: 0, retention: policies(RULE, IMMUTABLE), stats: newStats(false) });
  t.is(stats.retentionTagsDeleted, 1);
  t.is(await f.registry.manifests.resolveTag(s.repo, 'old'), undefined);
  t.false(await f.registry.manifests.hasRevision(s.repo, parseDigest(s.untagged.manifest.digest)));
  t.true((await storedBlobs(f.driver)).has(s.untagged.manifest.digest));
  // The lock is free again: a collection can run and collects them.
  const after = await collectGarbage(f.driver, { propagationMs: 0, graceMs: HOUR });
  t.true(after.blobsDeleted >= 5);
  t.false((await storedBlobs(f.driver)).has(s.untagged.manifest.digest));
});

test('the pull recorder batches: many pulls, one write per key, none before the flush, and readPulls sees them', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  const img = await pushImage(f.registry, 'ci/app', 'v1', [randomBlob()]);
  const recorder = new PullRecorder(f.driver, { flushMs: 60_000 });
  const registry = new LocalRegistry(f.driver, { pulls: recorder });
  for (let i = 0; i < 50; i++) await registry.getManifest('ci/app', parseReference('v1'));
  t.is(recorder.writes, 0);
  t.is((await readPulls(f.driver, 'ci/app')).tags.size, 0);
  await recorder.flush();
  t.is(recorder.writes, 2); // the tag and the digest
  const pulls = await readPulls(f.driver, 'ci/app');
  t.true(pulls.tags.has('v1'));
  t.true(pulls.digests.has(img.manifest.digest));
  // Written recently: more pulls write nothing more.
  for (let i = 0; i < 10; i++) await registry.getManifest('ci/app', parseReference(img.manifest.digest));
  await recorder.close();
  t.is(recorder.writes, 2);
  // Bounded: past maxPending, notes are dropped (and counted), never queued without limit.
  const small = new PullRecorder(f.driver, { maxPending: 2 });
  for (let i = 0; i < 5; i++) small.record(`ci/r${i}`, parseReference('v1'), img.manifest.digest);
  t.true(small.dropped > 0);
  await small.close();
});

/** A live set that lets the test act as a server at the moment retention first asks it about a repository. */
class RacingLiveSet implements LiveSet {
  constructor(private readonly inner: LiveSet, private readonly onFirstAsk: () => Promise<void>) {}
  private fired = false;
  record = (repository: string, digests: string[]) => this.inner.record(repository, digests);
  has = (digest: string) => this.inner.has(digest);
  prune = (before: Date) => this.inner.prune(before);
  async recorded(digests: string[]) {
    await this.fire();
    return this.inner.recorded(digests);
  }
  async hasRepository(repository: string) {
    await this.fire();
    return this.inner.hasRepository(repository);
  }
  private async fire() {
    if (this.fired) return;
    this.fired = true;
    await this.onFirstAsk();
  }
}

test('pushes racing retention keep their images: a re-tag of an old untagged manifest and a new tag; the repository\'s tags and the old tag\'s index children stay', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  const s = await scene(f);
  const inner = new StorageLiveSet(f.driver);
  // A server while the lock is held: it records before it writes (server/gc/recorder.ts).
  const server = new LocalRegistry(f.driver, { recorder: inner });
  const liveSet = new RacingLiveSet(inner, async () => {
    // Re-tag the old untagged image and push a new image just as retention is about to delete.
    await server.manifests.put(s.repo, parseReference('revived'), (await server.manifests.get(s.repo, parseReference(s.untagged.manifest.digest))).content, undefined);
    await pushImage(server, s.repo, 'racer', [randomBlob()]);
  });
  const { stats } = await gc(f, policies(RULE, IMMUTABLE), { liveSet });
  for (const tag of ['revived', 'racer', 'new', 'old', 'latest', 'rel', 'pulled']) t.true(await pullsCompletely(f.registry, s.repo, tag), tag);
  t.is(stats.retentionTagsDeleted, 0);
  t.true(stats.retentionSkipped >= 1);
  t.true(await f.registry.manifests.hasRevision(s.repo, parseDigest(s.untagged.manifest.digest)));
});

test('a manifest recorded between the sweeper\'s two looks is put back, and stays pullable by digest', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  const s = await scene(f);
  const inner = new StorageLiveSet(f.driver);
  let calls = 0;
  // Retention's first question is the repository's (no tag-phase writes); the manifest sweep then looks twice: a
  // server uses the untagged image between the looks (after its revision link was moved aside).
  const liveSet: LiveSet = {
    record: (r, d) => inner.record(r, d),
    has: (d) => inner.has(d),
    prune: (b) => inner.prune(b),
    hasRepository: (r) => inner.hasRepository(r),
    recorded: async (digests) => {
      calls++;
      if (calls === 2 && digests.includes(s.untagged.manifest.digest)) await inner.record(s.repo, [s.untagged.manifest.digest]);
      return inner.recorded(digests);
    },
  };
  const { stats } = await gc(f, policies(RULE, IMMUTABLE), { liveSet });
  t.true(await f.registry.manifests.hasRevision(s.repo, parseDigest(s.untagged.manifest.digest)));
  t.true(await pullsCompletely(f.registry, s.repo, s.untagged.manifest.digest));
  t.is(stats.retentionManifestsDeleted, 2);
});

test('the revisions retention removes are released from the quota rules, in a collection and in runRetention alone', async (t) => {
  for (const alone of [false, true]) {
    const f = await fixture();
    t.teardown(f.remove);
    const s = await scene(f);
    const released: string[] = [];
    const quotas: GcOptions['quotas'] = {
      release: async (repository, kind, digest) => void released.push(`${kind} ${repository}@${digest}`),
      recount: async () => [],
    };
    const p = policies(RULE, IMMUTABLE);
    if (alone) await runRetention(f.driver, { propagationMs: 0, retention: p, stats: newStats(false), quotas });
    else await collectGarbage(f.driver, { propagationMs: 0, graceMs: HOUR, retention: p, quotas });
    t.false(await f.registry.manifests.hasRevision(s.repo, parseDigest(s.untagged.manifest.digest)));
    t.true(released.includes(`manifest ${s.repo}@${s.untagged.manifest.digest}`), `${alone ? 'runRetention' : 'collectGarbage'}: ${released.join(', ')}`);
    // Nothing kept is released.
    t.false(released.some((r) => r.endsWith(s.fresh.manifest.digest) || r.endsWith(s.rel.manifest.digest)));
  }
});

test('pulledwithin deletes nothing before pulls have been recorded for that long (or at all): a tag may have been pulled before', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  const s = await scene(f);
  for (const since of [undefined, 2 * HOUR]) {
    if (since === undefined) await f.driver.delete(layout.PULLS_SINCE_PATH);
    else await recordedSince(f, since);
    const items: RetentionItem[] = [];
    await runRetention(f.driver, { dryRun: true, propagationMs: 0, retention: policies(RULE, IMMUTABLE), stats: newStats(true), onRetention: (i) => items.push(i) });
    t.false(items.some((i) => i.kind === 'tag'), JSON.stringify(items));
    t.true(await f.registry.manifests.resolveTag(s.repo, 'old') !== undefined);
  }
  // Once the records cover the window, the tag nobody pulled goes.
  await recordedSince(f, 2 * DAY);
  const items: RetentionItem[] = [];
  await runRetention(f.driver, { dryRun: true, propagationMs: 0, retention: policies(RULE, IMMUTABLE), stats: newStats(true), onRetention: (i) => items.push(i) });
  t.true(items.some((i) => i.kind === 'tag' && i.what === `${s.repo}:old`), JSON.stringify(items));
});

test('the recorder records only where a rule asks for pull times, and marks since when once', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  let rules = false;
  const recorder = new PullRecorder(f.driver, { shouldRecord: (name) => rules && name.startsWith('ci/'), anyRecorded: () => rules });
  const d = parseDigest(`sha256:${'a'.repeat(64)}`);
  recorder.record('ci/app', parseReference('v1'), d.value);
  await recorder.flush();
  t.is(recorder.writes, 0);
  t.is(await readPullsSince(f.driver), undefined, 'no rule: nothing of Wharf\'s own is written');
  rules = true;
  recorder.record('ci/app', parseReference('v1'), d.value);
  recorder.record('other/app', parseReference('v1'), d.value);
  await recorder.close();
  t.is(recorder.writes, 2, 'the tag and the digest of ci/app only');
  const since = await readPullsSince(f.driver);
  t.true(since !== undefined && Date.now() - since < 60_000);
  await f.driver.putContent(layout.PULLS_SINCE_PATH, '2020-01-01T00:00:00.000Z\n');
  const again = new PullRecorder(f.driver, { anyRecorded: () => true });
  await again.close();
  t.is(await readPullsSince(f.driver), Date.parse('2020-01-01T00:00:00.000Z'), 'the earliest mark stays');
});
