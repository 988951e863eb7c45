/**
 * Sweep: delete what mark left unreferenced, a batch of files at a time, with the live-set re-check:
 *
 *   live := liveSet.recorded(batch)            first look: keep what servers recorded while we held the lock
 *   move each other path → trash/<run>/...     the files are no longer visible at their paths (a blob's data goes to
 *                                              trash/<run>/blobs/<alg>/<hex>, one folder for all; others keep
 *                                              their path below the run)
 *   live := liveSet.recorded(moved)            second look, begun after every move of the batch has finished
 *   for each moved file:
 *     d in live:  move it back, keep           a server recorded d before or while we moved it: it wins
 *     otherwise:  delete it from trash, then remove the folders it leaves empty
 *                 (a driver with deleteFiles, S3: the live ones go back first, then one batch delete for the rest)
 *
 * A server records d before it checks or writes anything that relies on d, so either the record is complete when
 * the second look begins (and is seen), or the server's check runs after our move and finds nothing (it stores the
 * bytes again, or fails cleanly with MANIFEST_BLOB_UNKNOWN). The first look is not needed for safety; it keeps a
 * file the servers are known to use from disappearing, even for the moment between move and move back.
 * A run killed between the move and the delete leaves files in trash; the next run puts them back before it marks
 * (`restoreTrash`), and decides again.
 *
 * Empty folders are removed with the driver's `removeEmptyDirectory` (rmdir: it fails while anything is inside), so
 * a server writing into the same folder at that moment never loses its file: it either wins and the folder stays,
 * or finds the folder gone and creates it again.
 */
import { PathNotFoundError, type StorageDriver, ifExists } from '../../storage-drivers/driver.js';
import { GC_TRASH_ROOT, gcTrashOrigin, gcTrashPath, gcTrashRunDir } from '../registry/layout.js';
import { forEachLimited, removeEmptyParents } from '../registry/scan.js';
import type { LiveSet } from './state.js';

export interface Doomed {
  /** The file to delete. */
  path: string;
  /** The digest it holds or names: kept when the live set has it. */
  digest: string;
  /** The folder up to which emptied folders are removed (it stays itself); default: none are removed. */
  keep?: string;
}

export class Sweeper {
  constructor(
    private readonly driver: StorageDriver,
    private readonly liveSet: LiveSet,
    private readonly runId: string,
    private readonly concurrency = 8,
  ) {}

  /**
   * Delete each item's file unless the live set has its digest; `beforeSecondLook` runs between the move and the
   * second look (tests use it to act as a server at the worst moment). Resolves to the items deleted.
   */
  async removeAll<T extends Doomed>(items: T[], beforeSecondLook?: (item: T) => Promise<void> | void): Promise<T[]> {
    if (items.length === 0) return [];
    const first = await this.liveSet.recorded(items.map((i) => i.digest));
    const moved: T[] = [];
    let second: Set<string>;
    try {
      await forEachLimited(items.filter((i) => !first.has(i.digest)), this.concurrency, async (item) => {
        try {
          await this.driver.move(item.path, gcTrashPath(this.runId, item.path));
          moved.push(item);
        } catch (err) {
          if (!(err instanceof PathNotFoundError)) throw err; // gone already: nothing to delete
        }
      });
      if (moved.length === 0) return [];
      if (beforeSecondLook) for (const item of moved) await beforeSecondLook(item);
      second = await this.liveSet.recorded(moved.map((i) => i.digest));
    } catch (err) {
      // No second look (the live set is unreachable, the lock lost, a move failed): whatever was set aside may be
      // live, so it goes back now rather than staying invisible until the next run restores it.
      // Each is tried (one that fails stays in trash, and the next run's restoreTrash puts it back).
      await forEachLimited(moved, this.concurrency, (item) => this.driver.move(gcTrashPath(this.runId, item.path), item.path).catch(() => {}));
      throw err;
    }
    const deleted: T[] = [];
    // A driver with a batch delete (S3's DeleteObjects) removes the batch's trash in one request (only this run
    // writes below its trash, and each of these is a file it moved there), once what is live is back in place.
    const deleteFiles = this.driver.deleteFiles?.bind(this.driver);
    if (deleteFiles) {
      await forEachLimited(moved.filter((item) => second.has(item.digest)), this.concurrency,
        (item) => this.driver.move(gcTrashPath(this.runId, item.path), item.path));
      const doomed = moved.filter((item) => !second.has(item.digest));
      await deleteFiles(doomed.map((item) => gcTrashPath(this.runId, item.path)));
      deleted.push(...doomed);
      if (!this.driver.removeEmptyDirectory) return deleted;
    }
    await forEachLimited(deleteFiles ? deleted : moved, this.concurrency, async (item) => {
      const trash = gcTrashPath(this.runId, item.path);
      if (!deleteFiles) {
        if (second.has(item.digest)) {
          await this.driver.move(trash, item.path);
          return;
        }
        await ifExists(this.driver.delete(trash));
        deleted.push(item);
      }
      // The same folders, in trash and in place: removed here one by one (a recursive delete of the run's
      // trash at the end would read and remove every one of them again, all at once).
      if (item.keep) {
        await removeEmptyParents(this.driver, trash, gcTrashPath(this.runId, item.keep));
        await removeEmptyParents(this.driver, item.path, item.keep);
      }
    });
    return deleted;
  }

  /** Remove this run's trash folder once the run is over (only this run writes below it). */
  async emptyTrash(): Promise<void> {
    await ifExists(this.driver.delete(gcTrashRunDir(this.runId)));
    await this.driver.removeEmptyDirectory?.(GC_TRASH_ROOT);
  }
}

/** Put back every file an interrupted run left in trash (where nothing took its place), then empty the trash. */
export async function restoreTrash(driver: StorageDriver): Promise<number> {
  let restored = 0;
  const runs = (await ifExists(driver.list(GC_TRASH_ROOT))) ?? [];
  for (const run of runs) {
    try {
      for await (const info of driver.walk(run)) {
        if (info.isDir) continue;
        const original = gcTrashOrigin(info.path.slice(run.length + 1));
        if ((await ifExists(driver.stat(original))) === undefined) {
          await driver.move(info.path, original);
          restored++;
        }
      }
    } catch (err) {
      if (!(err instanceof PathNotFoundError)) throw err;
    }
    await ifExists(driver.delete(run));
  }
  await driver.removeEmptyDirectory?.(GC_TRASH_ROOT);
  return restored;
}
