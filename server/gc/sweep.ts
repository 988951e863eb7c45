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
import { PathNotFoundError, type StorageDriver } from '../../storage-drivers/driver.js';
import { orUndefined } from '../registry/blobs.js';
import { ROOT, parentOf } from '../registry/layout.js';
import { TRASH_ROOT, runLimited, type LiveSet } from './state.js';

/** `<root>/blobs/<alg>/<xx>/<hex>/data`: algorithm and hex. */
const BLOB_DATA = new RegExp(`^${ROOT}/blobs/([a-z0-9]+)/[0-9a-f]{2}/([0-9a-f]+)/data$`);
/** A blob's data in trash, `<run>/blobs/<alg>/<hex>`, back to where it came from. */
const TRASHED_BLOB = /^blobs\/([a-z0-9]+)\/([0-9a-f]+)$/;

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

  private get runRoot(): string {
    return `${TRASH_ROOT}/${this.runId}`;
  }

  /** Where `path` waits in trash: a blob's data flat per algorithm (one folder for all), anything else mirrored. */
  private trashPath(path: string): string {
    const blob = BLOB_DATA.exec(path);
    return blob ? `${this.runRoot}/blobs/${blob[1]}/${blob[2]}` : `${this.runRoot}/${path.slice(ROOT.length + 1)}`;
  }

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
      await runLimited(items.filter((i) => !first.has(i.digest)), this.concurrency, async (item) => {
        try {
          await this.driver.move(item.path, this.trashPath(item.path));
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
      await runLimited(moved, this.concurrency, (item) => this.driver.move(this.trashPath(item.path), item.path).catch(() => {}));
      throw err;
    }
    const deleted: T[] = [];
    await runLimited(moved, this.concurrency, async (item) => {
      const trash = this.trashPath(item.path);
      if (second.has(item.digest)) {
        await this.driver.move(trash, item.path);
        return;
      }
      await orUndefined(this.driver.delete(trash));
      deleted.push(item);
      // The same folders, in trash and in place: removed here one by one (a recursive delete of the run's
      // trash at the end would read and remove every one of them again, all at once).
      if (item.keep) {
        await removeEmptyParents(this.driver, trash, this.trashPath(item.keep));
        await removeEmptyParents(this.driver, item.path, item.keep);
      }
    });
    return deleted;
  }

  /** Remove this run's trash folder once the run is over (only this run writes below it). */
  async emptyTrash(): Promise<void> {
    await orUndefined(this.driver.delete(this.runRoot));
    await this.driver.removeEmptyDirectory?.(TRASH_ROOT);
  }

  /** Delete a folder that holds no files (only empty folders), unless a server wrote to `repository` meanwhile. */
  async removeEmptyRepositoryParts(repository: string, paths: string[]): Promise<boolean> {
    if (await this.liveSet.hasRepository(repository)) return false;
    for (const path of paths) {
      if (!(await removeEmptyTree(this.driver, path))) await orUndefined(this.driver.delete(path));
    }
    return true;
  }
}

/**
 * Remove the folders above `path` that are empty, nearest first, up to but not including `keep` (an ancestor of
 * `path`); stops at the first that is not empty.
 */
export async function removeEmptyParents(driver: StorageDriver, path: string, keep: string): Promise<void> {
  if (!driver.removeEmptyDirectory) return;
  for (let dir = parentOf(path); dir.length > keep.length && dir.startsWith(`${keep}/`); dir = parentOf(dir)) {
    if (!(await driver.removeEmptyDirectory(dir))) return;
  }
}

/**
 * Remove `path` and every folder below it, deepest first, when none holds a file. True when `path` is gone (or
 * was never there); false when something is left in it.
 */
export async function removeEmptyTree(driver: StorageDriver, path: string): Promise<boolean> {
  const dirs: string[] = [];
  try {
    for await (const info of driver.walk(path)) {
      if (!info.isDir) return false;
      dirs.push(info.path);
    }
  } catch (err) {
    if (err instanceof PathNotFoundError) return true;
    throw err;
  }
  // Walk order puts a folder before its contents, so the reverse puts every folder after its contents.
  for (const dir of dirs.reverse()) await driver.removeEmptyDirectory?.(dir);
  return (await driver.removeEmptyDirectory?.(path)) || (await orUndefined(driver.stat(path))) === undefined;
}

/** Put back every file an interrupted run left in trash (where nothing took its place), then empty the trash. */
export async function restoreTrash(driver: StorageDriver): Promise<number> {
  let restored = 0;
  const runs = (await orUndefined(driver.list(TRASH_ROOT))) ?? [];
  for (const run of runs) {
    try {
      for await (const info of driver.walk(run)) {
        if (info.isDir) continue;
        const inRun = info.path.slice(run.length + 1);
        const blob = TRASHED_BLOB.exec(inRun);
        const original = blob ? `${ROOT}/blobs/${blob[1]}/${blob[2]!.slice(0, 2)}/${blob[2]}/data` : `${ROOT}/${inRun}`;
        if ((await orUndefined(driver.stat(original))) === undefined) {
          await driver.move(info.path, original);
          restored++;
        }
      }
    } catch (err) {
      if (!(err instanceof PathNotFoundError)) throw err;
    }
    await orUndefined(driver.delete(run));
  }
  await driver.removeEmptyDirectory?.(TRASH_ROOT);
  return restored;
}
