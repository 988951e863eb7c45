/**
 * The collector over a driver that has the optional batch operations (`listFiles`, `deleteFiles`), as S3's has:
 * the filesystem driver with both added on top, so the paths the S3 driver takes run here without an RGW (the
 * S3 scenarios in ./s3.test.ts run them against the real thing). Every scenario, then the live-set re-check.
 */
import test from 'ava';
import { PathNotFoundError, ifExists, type FileInfo, type StorageDriver } from '../../storage-drivers/driver.js';
import * as layout from '../registry/layout.js';
import { ageAll, fixture, hasBlob, pushBlob, randomBlob } from '../../testing/gc-helpers.js';
import { gcScenarios, type GcFixture } from '../../testing/gc-scenarios.js';
import { filesystemGcFixture } from '../../testing/gc-helpers.js';
import { StorageLiveSet } from './state.js';
import { collectGarbage } from './worker.js';

const HOUR = 3_600_000;

interface Calls {
  listFiles: number;
  deleteFiles: number;
  deleted: number;
}

/** `inner` with listFiles (its walk, files only) and deleteFiles (delete one by one; absent is fine), counted. */
function withBatchOps(inner: StorageDriver, calls: Calls): StorageDriver {
  const driver = Object.create(inner) as StorageDriver;
  driver.listFiles = async function* listFiles(path: string): AsyncIterable<FileInfo> {
    calls.listFiles++;
    try {
      for await (const info of inner.walk(path)) if (!info.isDir) yield info;
    } catch (err) {
      if (!(err instanceof PathNotFoundError)) throw err;
    }
  };
  driver.deleteFiles = async (paths: string[]) => {
    calls.deleteFiles++;
    for (const path of paths) {
      if ((await ifExists(inner.stat(path)))?.isDir) throw new Error(`deleteFiles was given a directory: ${path}`);
      await ifExists(inner.delete(path));
      calls.deleted++;
    }
  };
  return driver;
}

gcScenarios('filesystem + batch operations', async (): Promise<GcFixture> => {
  const f = await filesystemGcFixture();
  return { ...f, driver: withBatchOps(f.driver, { listFiles: 0, deleteFiles: 0, deleted: 0 }) };
});

test('batch operations: unreferenced blobs go through listFiles and deleteFiles; one recorded meanwhile is kept', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  const blobs = await Promise.all(Array.from({ length: 300 }, () => pushBlob(f.registry, 'batch', randomBlob(32))));
  await ageAll(f.root, HOUR);
  const calls: Calls = { listFiles: 0, deleteFiles: 0, deleted: 0 };
  const driver = withBatchOps(f.driver, calls);
  const liveSet = new StorageLiveSet(driver);
  const rescued = blobs[7]!.digest;
  const stats = await collectGarbage(driver, {
    propagationMs: 0,
    graceMs: 60_000,
    liveSet,
    // A server pushing a manifest that uses the blob records it while it sits in trash.
    beforeBlobDelete: (d) => (d === rescued ? liveSet.record('other', [d]) : undefined),
  });
  t.is(stats.blobsSeen, 300);
  t.is(stats.blobsDeleted, 299);
  t.true(await hasBlob(f.root, rescued), 'the recorded blob is back in place');
  for (const b of blobs) if (b.digest !== rescued) t.false(await hasBlob(f.root, b.digest));
  t.true(calls.listFiles >= 1);
  // 300 blobs are two sweep pages; their layer links went in the mark phase's batch (256 + 44).
  t.true(calls.deleteFiles >= 2);
  t.true(calls.deleted >= 299 + 300);
  t.is(await ifExists(f.driver.stat(layout.GC_TRASH_ROOT)), undefined, 'the trash is gone');
});
