/**
 * The collector's scenarios, written once and run against every storage driver (like testing/storage-suite.ts):
 * `gcScenarios('s3', open)` registers them for a fixture over that driver. Each scenario pushes through the real
 * registry domain, makes the content old, collects, and checks what pulls and what storage holds, through the
 * driver only (so the same checks hold for a bucket and a directory).
 *
 * Object stores cannot set modification times back, so a fixture "ages" content by shifting the grace period the
 * collector is given instead (`grace`); the filesystem fixture really sets the times back.
 */
import test, { type ExecutionContext } from 'ava';
import { ifExists, type StorageDriver } from '../storage-drivers/driver.js';
import * as layout from '../server/registry/layout.js';
import { parseDigest, parseReference } from '../server/registry/reference.js';
import type { LocalRegistry } from '../server/registry/registry.js';
import { StorageGcLock } from '../server/gc/state.js';
import {
  pullsCompletely, pushBlob, pushImage, pushIndex, randomBlob, runWharf, sha256, storedBlobs,
} from './gc-helpers.js';
import { collectGarbage, type GcOptions } from '../server/gc/worker.js';

const HOUR = 3_600_000;

export interface GcFixture {
  driver: StorageDriver;
  registry: LocalRegistry;
  /** Make everything stored so far `ms` older, as the collector sees it. */
  age(ms: number): Promise<void>;
  /** The grace period to give the collector so that it means `graceMs` after the ageing done so far. */
  grace(graceMs: number): number;
  /** A configuration file for `wharf garbage-collect` over the same storage. */
  configFile(): Promise<string>;
  /** Leave an unfinished multipart upload at `path` (object stores only), as a crashed writer does. */
  leaveMultipartUpload?(path: string): Promise<void>;
  /** Multipart uploads still open at or below `path` (object stores only). */
  openMultipartUploads?(path: string): Promise<number>;
  remove(): Promise<void>;
}

export async function blobStored(driver: StorageDriver, digest: string): Promise<boolean> {
  return (await ifExists(driver.stat(layout.blobDataPath(parseDigest(digest))))) !== undefined;
}

async function exists(driver: StorageDriver, path: string): Promise<boolean> {
  return (await ifExists(driver.stat(path))) !== undefined;
}

/** Register every scenario for the driver `name`; `open` gives a fresh, empty fixture. */
export function gcScenarios(name: string, open: () => Promise<GcFixture>, options: { killGarbage?: number } = {}): void {
  const title = (what: string) => `${name}: ${what}`;

  async function setup(t: ExecutionContext): Promise<GcFixture> {
    const f = await open();
    t.teardown(f.remove);
    return f;
  }

  /** A run with no server around: no propagation wait, a short lock settle. */
  function gc(f: GcFixture, o: GcOptions = {}) {
    return collectGarbage(f.driver, {
      propagationMs: 0,
      lock: new StorageGcLock(f.driver, { settleMs: 5 }),
      ...o,
      graceMs: f.grace(o.graceMs ?? 60_000),
    });
  }

  test(title('two images sharing a layer: untag one, the shared layer and the other image survive'), async (t) => {
    const f = await setup(t);
    const shared = randomBlob(4096);
    const a = await pushImage(f.registry, 'team/app', 'a', [shared, randomBlob()]);
    const b = await pushImage(f.registry, 'team/app', 'b', [a.layers[0]!, randomBlob()]);
    await f.registry.manifests.delete('team/app', parseReference('a'));
    await f.age(HOUR);

    const stats = await gc(f, { deleteUntagged: true });

    t.true(await pullsCompletely(f.registry, 'team/app', 'b'));
    t.true(await blobStored(f.driver, a.layers[0]!.digest), 'shared layer kept');
    for (const gone of [a.manifest, a.config, a.layers[1]!]) {
      t.false(await blobStored(f.driver, gone.digest), `${gone.digest} deleted`);
      // Its folder went with it (on an object store there never was one).
      t.false(await exists(f.driver, layout.blobDataPath(parseDigest(gone.digest)).replace(/\/data$/, '')), `${gone.digest} folder`);
    }
    t.false(await f.registry.manifests.hasRevision('team/app', parseDigest(a.manifest.digest)));
    t.false(await f.registry.blobs.isLinked('team/app', parseDigest(a.layers[1]!.digest)), 'exclusive layer link removed');
    const revision = `${layout.repositoryPath('team/app')}/_manifests/revisions/sha256/${parseDigest(a.manifest.digest).hex}`;
    t.false(await exists(f.driver, revision), 'the revision link folder is removed');
    t.is(stats.blobsDeleted, 3);
    t.is(stats.manifestsDeleted, 1);
    t.is(stats.bytesFreed, a.manifest.size + a.config.size + a.layers[1]!.size);
    t.deepEqual([...(await storedBlobs(f.driver))].sort(), [b.manifest.digest, b.config.digest, ...b.layers.map((l) => l.digest)].sort());
    // The lock is released, the trash removed, and the metrics of the run are in storage.
    t.false(await exists(f.driver, layout.GC_LOCK_PATH));
    t.false(await exists(f.driver, layout.GC_TRASH_ROOT));
    t.regex((await f.driver.getContent(layout.GC_METRICS_PATH)).toString('utf8'), /wharf_gc_blobs_deleted 3\n/);
  });

  test(title('multi-arch index with --delete-untagged keeps its untagged children; a dangling manifest goes'), async (t) => {
    const f = await setup(t);
    const amd = await pushImage(f.registry, 'multi', undefined, [randomBlob()]);
    const arm = await pushImage(f.registry, 'multi', undefined, [randomBlob()]);
    const stray = await pushImage(f.registry, 'multi', undefined, [randomBlob()]);
    await pushIndex(f.registry, 'multi', 'latest', [amd.manifest, arm.manifest]);
    await f.age(HOUR);

    const stats = await gc(f, { deleteUntagged: true });
    t.true(await pullsCompletely(f.registry, 'multi', 'latest'));
    for (const kept of [amd, arm]) t.true(await f.registry.manifests.hasRevision('multi', parseDigest(kept.manifest.digest)));
    t.false(await f.registry.manifests.hasRevision('multi', parseDigest(stray.manifest.digest)));
    for (const gone of [stray.manifest, stray.config, ...stray.layers]) t.false(await blobStored(f.driver, gone.digest));
    t.is(stats.manifestsDeleted, 1);
    t.is(stats.blobsDeleted, 3);
  });

  test(title('referrers live as long as their subject'), async (t) => {
    const f = await setup(t);
    const live = await pushImage(f.registry, 'signed', 'v1', [randomBlob()]);
    const dead = await pushImage(f.registry, 'signed', 'v0', [randomBlob()]);
    const sig = { artifactType: 'application/vnd.example.sig' };
    const sigLive = await pushImage(f.registry, 'signed', undefined, [randomBlob(64)], { ...sig, subject: live.manifest });
    const sigDead = await pushImage(f.registry, 'signed', undefined, [randomBlob(64)], { ...sig, subject: dead.manifest });
    // The SBOM of the signature: a referrer of a referrer, live through the chain.
    const sbom = await pushImage(f.registry, 'signed', undefined, [randomBlob(64)], { subject: sigLive.manifest, artifactType: 'application/vnd.example.sbom' });
    // The subject is deleted outright: even without --delete-untagged its referrer goes.
    await f.registry.manifests.delete('signed', parseReference(dead.manifest.digest));
    await f.age(HOUR);

    const stats = await gc(f);
    t.deepEqual((await f.registry.manifests.referrers('signed', parseDigest(live.manifest.digest))).map((d) => d.digest), [sigLive.manifest.digest]);
    t.deepEqual((await f.registry.manifests.referrers('signed', parseDigest(dead.manifest.digest))).map((d) => d.digest), []);
    t.true(await pullsCompletely(f.registry, 'signed', sigLive.manifest.digest));
    t.true(await pullsCompletely(f.registry, 'signed', sbom.manifest.digest));
    t.false(await f.registry.manifests.hasRevision('signed', parseDigest(sigDead.manifest.digest)));
    for (const gone of [dead.manifest, dead.config, ...dead.layers, sigDead.manifest, ...sigDead.layers]) {
      t.false(await blobStored(f.driver, gone.digest), `${gone.digest} deleted`);
    }
    t.is(stats.manifestsDeleted, 1);

    // With --delete-untagged the referrers of the tagged subject still survive.
    await gc(f, { deleteUntagged: true });
    t.true(await pullsCompletely(f.registry, 'signed', sigLive.manifest.digest));
    t.true(await pullsCompletely(f.registry, 'signed', sbom.manifest.digest));
  });

  test(title('dry run reports what a real run deletes and deletes nothing'), async (t) => {
    const f = await setup(t);
    const a = await pushImage(f.registry, 'dry', 'a', [randomBlob()]);
    await pushImage(f.registry, 'dry', 'b', [randomBlob()]);
    await f.registry.manifests.delete('dry', parseReference('a'));
    await pushBlob(f.registry, 'gone/repo', randomBlob());
    await f.age(HOUR);
    const before = await storedBlobs(f.driver);

    const wouldDelete: string[] = [];
    const dry = await gc(f, { dryRun: true, deleteUntagged: true, onDelete: (kind, what) => wouldDelete.push(`${kind} ${what}`) });
    t.deepEqual(await storedBlobs(f.driver), before);
    t.true(await pullsCompletely(f.registry, 'dry', a.manifest.digest), 'the untagged revision is still there');
    t.true(wouldDelete.includes(`blob ${a.config.digest}`));
    t.true(wouldDelete.includes('repository gone/repo'));

    const real = await gc(f, { deleteUntagged: true });
    for (const key of ['blobsDeleted', 'manifestsDeleted', 'bytesFreed', 'linksDeleted', 'repositoriesDeleted'] as const) {
      t.is(real[key], dry[key], key);
    }
    t.is(real.repositoriesDeleted, 1);
    t.deepEqual((await f.registry.catalog()).repositories, ['dry']);
    // The emptied repository's folders are gone, its namespace folder too.
    t.false(await exists(f.driver, layout.repositoryPath('gone')));
  });

  test(title('stale upload sessions are purged (with their unfinished multipart uploads), fresh ones kept'), async (t) => {
    const f = await setup(t);
    await pushImage(f.registry, 'up', 'v', [randomBlob()]);
    const stale = await f.registry.uploads.start('up');
    await f.driver.putContent(layout.uploadStartedAtPath('up', stale.id), new Date(Date.now() - 2 * HOUR).toISOString());
    const staleData = layout.uploadDataPath('up', stale.id);
    if (f.leaveMultipartUpload) {
      await f.leaveMultipartUpload(staleData);
      t.is(await f.openMultipartUploads!(staleData), 1, 'a crashed writer left its multipart upload open');
    }
    await f.age(2 * HOUR);
    const fresh = await f.registry.uploads.start('up');
    const stats = await gc(f, { uploadAgeMs: HOUR });
    t.is(stats.uploadsPurged, 1);
    await t.throwsAsync(f.registry.uploads.status('up', stale.id));
    t.is((await f.registry.uploads.status('up', fresh.id)).offset, 0);
    if (f.openMultipartUploads) t.is(await f.openMultipartUploads(layout.uploadDir('up', stale.id)), 0, 'the multipart upload is aborted');
  });

  test(title('a worker killed mid-sweep and started again leaves a consistent registry'), async (t) => {
    const f = await setup(t);
    const config = await f.configFile();
    const kept: string[] = [];
    for (let i = 0; i < 6; i++) {
      await pushImage(f.registry, `kill/r${i % 2}`, `t${i}`, [randomBlob(), randomBlob()]);
      if (i % 3 === 0) await f.registry.manifests.delete(`kill/r${i % 2}`, parseReference(`t${i}`));
      else kept.push(`kill/r${i % 2}:t${i}`);
    }
    // Enough garbage that the sweep is still going when the kill lands.
    const garbage = Array.from({ length: options.killGarbage ?? 2000 }, () => randomBlob(64));
    for (let i = 0; i < garbage.length; i += 50) {
      await Promise.all(garbage.slice(i, i + 50).map((b) => f.driver.putContent(layout.blobDataPath(parseDigest(sha256(b))), b)));
    }
    await f.age(HOUR);
    const grace = `--grace=${f.grace(HOUR)}ms`;

    const killed = await runWharf(['garbage-collect', config, '--delete-untagged', '--quiet', grace], (pid, done) => {
      let exited = false;
      void done.then(() => { exited = true; });
      // The sweep has started once something was moved aside.
      const watch = async () => {
        while (!exited && !(await exists(f.driver, layout.GC_TRASH_ROOT))) await new Promise((r) => setImmediate(r));
        if (!exited) process.kill(pid, 'SIGKILL');
      };
      void watch();
    });
    t.is(killed.signal, 'SIGKILL', `the worker finished before the kill: ${killed.stdout}`);
    t.true(await exists(f.driver, layout.GC_LOCK_PATH), 'the dead worker left its lock');
    t.true((await storedBlobs(f.driver)).size > 20, 'the sweep was interrupted');

    const rerun = await runWharf(['garbage-collect', config, '--delete-untagged', grace]);
    t.is(rerun.code, 0, rerun.stderr);
    t.regex(rerun.stdout, /garbage collection finished/);
    for (const ref of kept) {
      const [repo, tag] = ref.split(':');
      t.true(await pullsCompletely(f.registry, repo!, tag!), ref);
    }
    // Exactly the live content is left: 4 images of manifest + config + 2 layers; no trash, no lock.
    t.is((await storedBlobs(f.driver)).size, kept.length * 4);
    t.false(await exists(f.driver, layout.GC_TRASH_ROOT));
    t.false(await exists(f.driver, layout.GC_LOCK_PATH));
  });
}
