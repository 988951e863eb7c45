/**
 * The collector over the real registry domain and the real filesystem driver: the scenarios every driver runs
 * (./scenarios.ts), then the grace rule, the live-set re-check, the descriptor cache, and the lock.
 */
import test from 'ava';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parseDigest, parseReference } from '../registry/reference.js';
import * as layout from '../registry/layout.js';
import { GcRecorder } from './recorder.js';
import { LockBusyError, StorageGcLock, StorageLiveSet } from './state.js';
import { restoreTrash } from './sweep.js';
import {
  OCI_MANIFEST, ageAll, filesystemGcFixture, fixture, hasBlob, pullsCompletely, pushBlob, pushImage, randomBlob, sha256, storedBlobs,
  type Fixture,
} from '../../testing/gc-helpers.js';
import { startRegistry2 } from '../../testing/compat-fixtures.js';
import { gcScenarios } from '../../testing/gc-scenarios.js';
import { collectGarbage, type GcOptions } from './worker.js';
import { ifExists } from '../../storage-drivers/driver.js';

const HOUR = 3_600_000;

// Shared layer, multi-arch, referrers, dry run, stale uploads, a worker killed mid-sweep: ./scenarios.ts.
gcScenarios('filesystem', filesystemGcFixture);

/** A run with no server around: no propagation wait, a short lock settle. */
function gc(f: Fixture, options: GcOptions = {}) {
  return collectGarbage(f.driver, {
    graceMs: 60_000,
    propagationMs: 0,
    lock: new StorageGcLock(f.driver, { settleMs: 5 }),
    ...options,
  });
}

test('without --delete-untagged an untagged revision and its blobs are kept', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  const a = await pushImage(f.registry, 'app', 'a', [randomBlob()]);
  await f.registry.manifests.delete('app', parseReference('a'));
  const orphan = await pushBlob(f.registry, 'app', randomBlob());
  await ageAll(f.root, HOUR);
  const stats = await gc(f);
  t.true(await pullsCompletely(f.registry, 'app', a.manifest.digest));
  t.false(await hasBlob(f.root, orphan.digest), 'an unreferenced layer is collected');
  t.is(stats.blobsDeleted, 1);
  t.is(stats.manifestsDeleted, 0);
});

test('nothing younger than the grace period is deleted', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  const old = await pushBlob(f.registry, 'g', randomBlob());
  await ageAll(f.root, HOUR);
  // Uploaded just now and not yet referenced by a manifest (the client is about to push it).
  const young = await pushBlob(f.registry, 'g', randomBlob());
  const stats = await gc(f, { graceMs: 10 * 60_000 });
  t.false(await hasBlob(f.root, old.digest));
  t.true(await hasBlob(f.root, young.digest));
  t.true(await f.registry.blobs.isLinked('g', parseDigest(young.digest)));
  t.is(stats.blobsDeleted, 1);
  // A manifest pushed later still finds it.
  await pushImage(f.registry, 'g', 'now', [{ digest: young.digest, size: young.size, mediaType: young.mediaType }]);
  t.true(await pullsCompletely(f.registry, 'g', 'now'));
});

test('a digest the server records while the sweeper works is kept (re-check before delete)', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  const blobs = [await pushBlob(f.registry, 'race', randomBlob()), await pushBlob(f.registry, 'race', randomBlob())];
  await ageAll(f.root, HOUR);
  const liveSet = new StorageLiveSet(f.driver);
  const rescued = blobs[0]!.digest;
  const stats = await gc(f, {
    liveSet,
    // A server pushing a manifest that uses the blob records it at this very moment.
    beforeBlobDelete: (d) => (d === rescued ? liveSet.record('other', [d]) : undefined),
  });
  t.true(await hasBlob(f.root, rescued));
  t.false(await hasBlob(f.root, blobs[1]!.digest));
  t.is(stats.blobsDeleted, 1);
  t.is(await ifExists(f.driver.stat(layout.GC_TRASH_ROOT)), undefined, 'the rescued blob was moved back, the other deleted, the trash removed');
});

test('a manifest PUT needing a blob the collector removed fails with MANIFEST_BLOB_UNKNOWN', async (t) => {
  const f = await fixture({ descriptorCacheSize: 100 });
  t.teardown(f.remove);
  const layer = await pushBlob(f.registry, 'late', randomBlob());
  const config = await pushBlob(f.registry, 'late', Buffer.from('{}'), 'application/vnd.oci.image.config.v1+json');
  await ageAll(f.root, HOUR);
  await gc(f);
  t.false(await hasBlob(f.root, layer.digest));
  const bytes = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
    layers: [{ mediaType: layer.mediaType, digest: layer.digest, size: layer.size }],
  }));
  const err = await t.throwsAsync(f.registry.manifests.put('late', parseReference('t'), bytes, 'application/vnd.oci.image.manifest.v1+json'));
  t.is((err as { code?: string }).code, 'MANIFEST_BLOB_UNKNOWN');
  t.false(await f.registry.manifests.hasRevision('late', parseDigest(`sha256:${(await import('node:crypto')).createHash('sha256').update(bytes).digest('hex')}`)));
});

test('a server with a descriptor cache never answers "exists" for a blob the collector deleted', async (t) => {
  const f = await fixture({ descriptorCacheSize: 100 });
  t.teardown(f.remove);
  // A long staleness window, so the cache is open until the lock appears however slowly a loaded machine polls.
  const recorder = new GcRecorder(f.driver, { pollMs: 20, staleMs: 60_000 });
  recorder.guard(f.registry.descriptorCache!);
  await recorder.start();
  t.teardown(() => recorder.stop());
  const blob = await pushBlob(f.registry, 'cached', randomBlob());
  const d = parseDigest(blob.digest);
  t.truthy(await f.registry.blobs.statContent(d));
  t.is((await f.registry.descriptorCache!.stat(blob.digest))?.size, blob.size, 'the positive answer is cached');
  await ageAll(f.root, HOUR);
  await gc(f, { propagationMs: 300 });
  t.false(await hasBlob(f.root, blob.digest));
  t.is(await f.registry.blobs.statContent(d), undefined);
  await t.throwsAsync(f.registry.blobs.stat('cached', d));
});

test('a server that has not checked the lock recently assumes a collection may be running', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  const recorder = new GcRecorder(f.driver, { pollMs: 60_000, staleMs: 60_000 });
  t.true(recorder.mayBeCollecting(), 'never checked: record everything');
  await recorder.check();
  t.false(recorder.mayBeCollecting(), 'checked just now, no lock');
  const stale = new GcRecorder(f.driver, { pollMs: 60_000, staleMs: 0 });
  await stale.check();
  await new Promise((r) => setTimeout(r, 5));
  t.true(stale.mayBeCollecting(), 'a check older than staleMs no longer counts');
});

test('the server records what it links while a lock is held, and only then', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  // A long staleness window: only the lock decides here, not how fast a loaded machine polls.
  const recorder = new GcRecorder(f.driver, { pollMs: 20, staleMs: 60_000 });
  await recorder.start();
  t.teardown(() => recorder.stop());
  const { LocalRegistry } = await import('../registry/registry.js');
  const registry = new LocalRegistry(f.driver, { recorder });
  const liveSet = new StorageLiveSet(f.driver);

  const before = await pushBlob(registry, 'rec', randomBlob());
  t.false(await liveSet.has(before.digest), 'no lock: nothing recorded');

  const lock = new StorageGcLock(f.driver, { settleMs: 5 });
  await lock.acquire();
  await recorder.check();
  t.true(recorder.mayBeCollecting());
  const during = await pushImage(registry, 'rec', 'x', [randomBlob(), before]);
  for (const d of [during.manifest, during.config, ...during.layers]) t.true(await liveSet.has(d.digest), `${d.digest} recorded`);
  t.true(await liveSet.hasRepository('rec'));
  const unrecorded = `sha256:${'0'.repeat(64)}`;
  const batch = await liveSet.recorded([during.manifest.digest, unrecorded, ...during.layers.map((d) => d.digest)]);
  t.deepEqual([...batch].sort(), [during.manifest.digest, ...during.layers.map((d) => d.digest)].sort(), 'recorded() returns the recorded subset');
  await lock.release();
  await recorder.check();
  t.false(recorder.mayBeCollecting());
});

test('never two collections at once; a crashed holder on this host is taken over', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  const first = new StorageGcLock(f.driver, { settleMs: 5 });
  await first.acquire();
  await t.throwsAsync(gc(f), { instanceOf: LockBusyError });
  await first.release();
  await t.notThrowsAsync(gc(f));

  // A lock left by a process that no longer exists on this host.
  const dead = { owner: 'x', runId: 'r', host: (await import('node:os')).hostname(), pid: 2 ** 22 + 12345, acquiredAt: new Date().toISOString(), expiresAt: new Date(Date.now() + HOUR).toISOString() };
  await f.driver.putContent(layout.GC_LOCK_PATH, JSON.stringify(dead));
  await t.notThrowsAsync(gc(f));
  // One held by a live process elsewhere (another host) blocks until it expires.
  await f.driver.putContent(layout.GC_LOCK_PATH, JSON.stringify({ ...dead, host: 'elsewhere' }));
  await t.throwsAsync(gc(f), { instanceOf: LockBusyError });
  await f.driver.putContent(layout.GC_LOCK_PATH, JSON.stringify({ ...dead, host: 'elsewhere', expiresAt: new Date(Date.now() - 1).toISOString() }));
  await t.notThrowsAsync(gc(f));
});

test('files an interrupted run left in trash are put back', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  const img = await pushImage(f.registry, 'tr', 'v', [randomBlob(), randomBlob()]);
  const [d, e] = img.layers.map((l) => parseDigest(l.digest)) as [ReturnType<typeof parseDigest>, ReturnType<typeof parseDigest>];
  t.true(await pullsCompletely(f.registry, 'tr', 'v'));
  // A blob's data as the sweeper sets it aside (flat), and as earlier versions did (its path below the run).
  await f.driver.move(layout.blobDataPath(d), `${layout.GC_TRASH_ROOT}/deadrun/blobs/${d.algorithm}/${d.hex}`);
  await f.driver.move(layout.blobDataPath(e), `${layout.GC_TRASH_ROOT}/olderrun/${layout.blobDataPath(e).slice(layout.ROOT.length + 1)}`);
  t.false(await pullsCompletely(f.registry, 'tr', 'v'));
  t.is(await restoreTrash(f.driver), 2);
  t.true(await pullsCompletely(f.registry, 'tr', 'v'));
  t.is(await ifExists(f.driver.stat(layout.GC_TRASH_ROOT)), undefined, 'the emptied trash folder is removed');
});

test('many blobs: only the garbage goes, memory follows live digests', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  // 20 images of 10 layers, half of them untagged; plus 2000 stray blobs written straight into the content store.
  const keep: string[] = [];
  for (let i = 0; i < 20; i++) {
    await pushImage(f.registry, `scale/r${i % 5}`, `t${i}`, Array.from({ length: 10 }, () => randomBlob(32)));
    if (i % 2 === 0) await f.registry.manifests.delete(`scale/r${i % 5}`, parseReference(`t${i}`));
    else keep.push(`scale/r${i % 5}:t${i}`);
  }
  const { sha256 } = await import('../../testing/gc-helpers.js');
  for (let batch = 0; batch < 20; batch++) {
    await Promise.all(Array.from({ length: 100 }, () => {
      const bytes = randomBlob(16);
      return f.driver.putContent(layout.blobDataPath(parseDigest(sha256(bytes))), bytes);
    }));
  }
  await ageAll(f.root, HOUR);
  const total = (await storedBlobs(f.driver)).size;
  const stats = await gc(f, { deleteUntagged: true });
  t.is(stats.blobsDeleted, 2000 + 10 * 12);
  t.is((await storedBlobs(f.driver)).size, total - stats.blobsDeleted);
  t.is(stats.blobsMarked, 10 * 12);
  for (const ref of keep) {
    const [repo, tag] = ref.split(':');
    t.true(await pullsCompletely(f.registry, repo!, tag!), ref);
  }
  // A blob folder an interrupted run emptied but did not remove goes in the next run.
  const leftover = join(f.root, layout.BLOBS_ROOT, 'sha256', 'ab', `ab${'0'.repeat(62)}`);
  await mkdir(leftover, { recursive: true });
  await gc(f, { deleteUntagged: true });
  // No folder the deletes emptied is left behind (only an upload folder the pushes left, which is not ours).
  const empty: string[] = [];
  for await (const info of f.driver.walk(layout.ROOT)) {
    if (info.isDir && (await f.driver.list(info.path)).length === 0 && !info.path.endsWith('/_uploads')) empty.push(info.path);
  }
  t.deepEqual(empty, []);
});

test('registry:2 serves what a collection left, with the emptied folders removed', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  const kept = await pushImage(f.registry, 'team/app', 'v1', [randomBlob(), randomBlob()]);
  const gone = await pushImage(f.registry, 'team/app', 'old', [randomBlob()]);
  await f.registry.manifests.delete('team/app', parseReference('old'));
  await pushBlob(f.registry, 'other/only', randomBlob());
  await ageAll(f.root, HOUR);
  const stats = await gc(f, { deleteUntagged: true });
  t.is(stats.repositoriesDeleted, 1);

  const r2 = await startRegistry2(f.root);
  t.teardown(() => r2.stop());
  const manifest = await fetch(`${r2.url}/v2/team/app/manifests/v1`, { headers: { Accept: OCI_MANIFEST } });
  t.is(manifest.status, 200);
  t.is(sha256(Buffer.from(await manifest.arrayBuffer())), kept.manifest.digest);
  for (const b of [kept.config, ...kept.layers]) {
    const res = await fetch(`${r2.url}/v2/team/app/blobs/${b.digest}`);
    t.is(res.status, 200, b.digest);
    t.is(sha256(Buffer.from(await res.arrayBuffer())), b.digest);
  }
  t.is((await fetch(`${r2.url}/v2/team/app/manifests/${gone.manifest.digest}`, { headers: { Accept: OCI_MANIFEST } })).status, 404);
  t.is((await fetch(`${r2.url}/v2/team/app/blobs/${gone.layers[0]!.digest}`)).status, 404);
  t.deepEqual(await (await fetch(`${r2.url}/v2/team/app/tags/list`)).json(), { name: 'team/app', tags: ['v1'] });
  t.deepEqual(await (await fetch(`${r2.url}/v2/_catalog`)).json(), { repositories: ['team/app'] });
});
