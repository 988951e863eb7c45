/**
 * Mirror TTL expiry in the garbage collector, over a real filesystem tree written through the registry domain (as
 * the mirror writes it) with last-pull records dated by the test: what expires, what a live index or a recent pull
 * keeps, local namespaces, dry runs, a TTL of 0, and a pull recorded during the run.
 */
import test from 'ava';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseConfig } from '../config/load.js';
import type { ProxyConfig } from '../config/index.js';
import * as layout from '../registry/layout.js';
import { parseDigest } from '../registry/reference.js';
import { ProxyExpiry } from './proxy-expiry.js';
import { PolicyRules } from '../policies/rules.js';
import { newStats, summaryText, metricsText, type GcStats } from './report.js';
import { StorageLiveSet } from './state.js';
import {
  ageAll, fixture, pullsCompletely, pushImage, pushIndex, randomBlob, storedBlobs, type BlobRef, type Fixture, type PushedImage,
} from '../../testing/gc-helpers.js';
import { collectGarbage, type GcOptions } from './worker.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

function proxyConfig(extra = ''): ProxyConfig {
  const yaml = `version: 0.1\nstorage: inmemory\nproxy:\n  remoteurl: http://127.0.0.1:1\n  ttl: 24h\n  localnamespaces: [mine]\n${extra}`;
  return parseConfig(yaml, {}, 'x').config.proxy!;
}

/** Write a last-pull record for each digest, dated `ago` ms back (naming `upstream`, as the mirror does, if given). */
async function pulled(f: Fixture, repo: string, digests: string[], ago: number, upstream?: string): Promise<void> {
  for (const d of digests) {
    const p = parseDigest(d);
    const date = new Date(Date.now() - ago).toISOString();
    await f.driver.putContent(`${layout.PROXY_LAST_PULL_ROOT}/${repo}/${p.algorithm}/${p.hex}`, upstream ? `${date} ${upstream}` : date);
  }
}

const digestsOf = (img: PushedImage) => [img.manifest.digest, img.config.digest, ...img.layers.map((l) => l.digest)];

async function gc(f: Fixture, proxy: ProxyConfig, options: GcOptions = {}): Promise<GcStats> {
  const stats = options.stats ?? newStats(options.dryRun ?? false);
  return collectGarbage(f.driver, {
    propagationMs: 0,
    graceMs: HOUR,
    stats,
    expiry: new ProxyExpiry(f.driver, proxy, { dryRun: options.dryRun ?? false, stats }),
    ...options,
  });
}

/** Three repositories, everything written two days ago: a mirrored image last pulled two days ago, one pulled an
 *  hour ago, and a local one. */
async function scene(f: Fixture) {
  const old = await pushImage(f.registry, 'hub/old', 'v1', [randomBlob(), randomBlob()]);
  const recent = await pushImage(f.registry, 'hub/recent', 'v1', [randomBlob()]);
  const local = await pushImage(f.registry, 'mine/app', 'v1', [randomBlob()]);
  await ageAll(f.root, 2 * DAY);
  await pulled(f, 'hub/old', digestsOf(old), 2 * DAY);
  await pulled(f, 'hub/recent', digestsOf(recent), HOUR);
  return { old, recent, local };
}

test('content not pulled within the TTL is expired with its blobs; recent pulls and local namespaces stay', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  const { old, recent, local } = await scene(f);
  const stats = await gc(f, proxyConfig());

  t.false(await pullsCompletely(f.registry, 'hub/old', 'v1'));
  t.is(await f.registry.manifests.resolveTag('hub/old', 'v1'), undefined);
  t.false(await f.registry.manifests.hasRevision('hub/old', parseDigest(old.manifest.digest)));
  const stored = await storedBlobs(f.driver);
  for (const d of digestsOf(old)) t.false(stored.has(d), `${d} deleted`);
  t.true(await pullsCompletely(f.registry, 'hub/recent', 'v1'));
  t.true(await pullsCompletely(f.registry, 'mine/app', 'v1'));
  for (const d of [...digestsOf(recent), ...digestsOf(local)]) t.true(stored.has(d));

  // The expired repository is gone, with its last-pull records; the recent one keeps its records.
  t.false(existsSync(join(f.root, layout.repositoryPath('hub/old'))));
  t.false(existsSync(join(f.root, layout.PROXY_LAST_PULL_ROOT, 'hub/old')));
  t.true(existsSync(join(f.root, layout.PROXY_LAST_PULL_ROOT, 'hub/recent/sha256', recent.manifest.digest.slice(7))));

  t.like(stats, { expiredTags: 1, expiredManifests: 1, manifestsDeleted: 1, blobsDeleted: 4 });
  t.regex(summaryText(stats), /mirror TTL: 1 tags and 1 manifests expired/);
  t.regex(metricsText(stats, true), /^wharf_gc_proxy_expired_tags 1$/m);
});

test('a dry run reports the expiry and deletes nothing', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  const { old } = await scene(f);
  const noted: string[] = [];
  const stats = newStats(true);
  await collectGarbage(f.driver, {
    dryRun: true, graceMs: HOUR, stats,
    onDelete: (kind, what) => noted.push(`${kind} ${what}`),
    expiry: new ProxyExpiry(f.driver, proxyConfig(), { dryRun: true, stats, note: (kind, what) => noted.push(`${kind} ${what}`) }),
  });
  t.true(noted.includes('tag hub/old:v1'));
  t.true(noted.includes(`manifest hub/old@${old.manifest.digest}`));
  t.true(noted.includes(`blob ${old.layers[0]!.digest}`));
  t.like(stats, { expiredTags: 1, expiredManifests: 1 });
  t.regex(summaryText(stats), /1 manifests would expire/);
  t.true(await pullsCompletely(f.registry, 'hub/old', 'v1'));
  t.true(existsSync(join(f.root, layout.PROXY_LAST_PULL_ROOT, 'hub/old')));
});

test('without records the links\' own times count; a TTL of 0 and a longer upstream TTL keep content', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  await pushImage(f.registry, 'hub/norecord', 'v1', [randomBlob()]);
  await pushImage(f.registry, 'ghcr/owner/app', 'v1', [randomBlob()]);
  await ageAll(f.root, 2 * DAY);
  const forever = proxyConfig('  upstreams: [{url: "http://127.0.0.1:2", prefix: ghcr, ttl: 0}]\n');
  await gc(f, forever);
  t.true(await pullsCompletely(f.registry, 'ghcr/owner/app', 'v1'), 'ttl 0: never expires');
  t.false(await pullsCompletely(f.registry, 'hub/norecord', 'v1'), 'no record: the links are two days old');

  const g = await fixture();
  t.teardown(g.remove);
  await pushImage(g.registry, 'ghcr/owner/app', 'v1', [randomBlob()]);
  await ageAll(g.root, 2 * DAY);
  await gc(g, proxyConfig('  upstreams: [{url: "http://127.0.0.1:2", prefix: ghcr, ttl: 72h}]\n'));
  t.true(await pullsCompletely(g.registry, 'ghcr/owner/app', 'v1'), 'the upstream\'s own ttl applies');
});

test('a repository only containerd\'s ?ns= reaches expires by the TTL of the upstream its records name', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  // No upstream without a prefix: `team/...` has no route by its name, only through ?ns=quay.io.
  const proxy = parseConfig(
    'version: 0.1\nstorage: inmemory\nproxy:\n  upstreams: [{name: quay, url: "http://127.0.0.1:3", prefix: quayio, namespaces: [quay.io], ttl: 24h}]\n',
    {}, 'x',
  ).config.proxy!;
  const stale = await pushImage(f.registry, 'team/stale', 'v1', [randomBlob()]);
  const fresh = await pushImage(f.registry, 'team/fresh', 'v1', [randomBlob()]);
  await pushImage(f.registry, 'team/unrecorded', 'v1', [randomBlob()]);
  await ageAll(f.root, 2 * DAY);
  await pulled(f, 'team/stale', digestsOf(stale), 2 * DAY, 'quay');
  await pulled(f, 'team/fresh', digestsOf(fresh), HOUR, 'quay');
  const stats = await gc(f, proxy);
  t.false(await pullsCompletely(f.registry, 'team/stale', 'v1'), 'expired by the named upstream\'s 24h');
  t.false((await storedBlobs(f.driver)).has(stale.layers[0]!.digest), 'its blob is collected');
  t.true(await pullsCompletely(f.registry, 'team/fresh', 'v1'), 'pulled an hour ago: kept');
  t.true(await pullsCompletely(f.registry, 'team/unrecorded', 'v1'), 'no record and no route: not known to be mirrored');
  t.is(stats.expiredTags, 1);
});

test('an expired platform manifest that a live index still needs stays; an expired untagged revision goes', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  const amd = await pushImage(f.registry, 'hub/multi', undefined, [randomBlob()]);
  const arm = await pushImage(f.registry, 'hub/multi', undefined, [randomBlob()]);
  const index: BlobRef = await pushIndex(f.registry, 'hub/multi', 'v1', [amd.manifest, arm.manifest]);
  const stale = await pushImage(f.registry, 'hub/multi', undefined, [randomBlob()]);
  await ageAll(f.root, 2 * DAY);
  await pulled(f, 'hub/multi', [index.digest, ...digestsOf(amd)], HOUR);
  await pulled(f, 'hub/multi', [...digestsOf(arm), ...digestsOf(stale)], 2 * DAY);
  const stats = await gc(f, proxyConfig());
  t.true(await pullsCompletely(f.registry, 'hub/multi', 'v1'), 'the index and both platforms still pull');
  t.false(await f.registry.manifests.hasRevision('hub/multi', parseDigest(stale.manifest.digest)));
  t.false((await storedBlobs(f.driver)).has(stale.layers[0]!.digest));
  t.like(stats, { expiredTags: 0, expiredManifests: 1 });
});

test('a tag pulled through the mirror while the collection runs is kept, with everything it needs', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  const { old } = await scene(f);
  const liveSet = new StorageLiveSet(f.driver);
  const stats = newStats(false);
  const expiry = new ProxyExpiry(f.driver, proxyConfig(), { dryRun: false, stats });
  await collectGarbage(f.driver, {
    propagationMs: 0, graceMs: HOUR, stats, liveSet,
    expiry: {
      // The mirror records what it serves (here: the tag's manifest) before it looks in storage.
      beforeMark: async (scan, context) => {
        if (scan.name === 'hub/old') await liveSet.record('hub/old', [old.manifest.digest]);
        await expiry.beforeMark(scan, context);
      },
      afterRepository: (name) => expiry.afterRepository(name),
    },
  });
  t.true(await pullsCompletely(f.registry, 'hub/old', 'v1'));
  t.is((await f.registry.manifests.resolveTag('hub/old', 'v1'))?.value, old.manifest.digest);
  t.like(stats, { expiredTags: 0, expiredManifests: 0 });
  // The records of what stays are kept too.
  t.true(existsSync(join(f.root, layout.PROXY_LAST_PULL_ROOT, 'hub/old/sha256', old.manifest.digest.slice(7))));
});

test('an immutable tag never expires: it, its manifest and blobs stay while other tags of the repository go', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  const pinned = await pushImage(f.registry, 'hub/old', 'v1', [randomBlob()]);
  const loose = await pushImage(f.registry, 'hub/old', 'latest', [randomBlob()]);
  await ageAll(f.root, 2 * DAY);
  await pulled(f, 'hub/old', [...digestsOf(pinned), ...digestsOf(loose)], 2 * DAY);
  const config = parseConfig('version: 0.1\nstorage: inmemory\npolicies:\n  immutabletags: [{repositories: [hub/**], tags: [v*]}]\n', {}, 'x').config;
  const stats = newStats(false);
  await gc(f, proxyConfig(), { stats, expiry: new ProxyExpiry(f.driver, proxyConfig(), { dryRun: false, stats, policies: new PolicyRules(config) }) });
  t.true(await pullsCompletely(f.registry, 'hub/old', 'v1'), 'the immutable tag and all it needs are kept');
  t.is(await f.registry.manifests.resolveTag('hub/old', 'latest'), undefined, 'the mutable tag expired');
  const stored = await storedBlobs(f.driver);
  for (const d of digestsOf(pinned)) t.true(stored.has(d));
  t.false(stored.has(loose.layers[0]!.digest));
});
