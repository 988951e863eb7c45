/**
 * Sweep: delete what mark left unreferenced, one file at a time, each with the live-set re-check:
 *
 *   if live(d): keep                       a server recorded d while we held the lock
 *   move path → trash/<run>/<path>         the file is no longer visible at its path
 *   if live(d): move back, keep            a server recorded d before or while we moved it: it wins
 *   delete trash/<run>/<path>
 *
 * A server records d before it checks or writes anything that relies on d, so either the record is there when we
 * look the second time, or the server's check runs after our move and finds nothing (and stores the bytes again, or
 * fails cleanly with MANIFEST_BLOB_UNKNOWN). A run killed between the move and the delete leaves the file in trash;
 * the next run puts it back before it marks (`restoreTrash`), and decides again.
 */
import { PathNotFoundError, type StorageDriver } from '../../storage-drivers/driver.js';
import { orUndefined } from '../registry/blobs.js';
import { ROOT } from '../registry/layout.js';
import { TRASH_ROOT, type LiveSet } from './state.js';

export class Sweeper {
  constructor(
    private readonly driver: StorageDriver,
    private readonly liveSet: LiveSet,
    private readonly runId: string,
  ) {}

  private trashPath(path: string): string {
    return `${TRASH_ROOT}/${this.runId}/${path.slice(ROOT.length + 1)}`;
  }

  /** Delete `path`, which holds or names `digest`, unless the live set has it. True when deleted. */
  async remove(path: string, digest: string): Promise<boolean> {
    if (await this.liveSet.has(digest)) return false;
    const trash = this.trashPath(path);
    try {
      await this.driver.move(path, trash);
    } catch (err) {
      if (err instanceof PathNotFoundError) return false;
      throw err;
    }
    if (await this.liveSet.has(digest)) {
      await this.driver.move(trash, path);
      return false;
    }
    await orUndefined(this.driver.delete(trash));
    return true;
  }

  /** Delete a folder that holds no files (only empty folders), unless a server wrote to `repository` meanwhile. */
  async removeEmptyRepositoryParts(repository: string, paths: string[]): Promise<boolean> {
    if (await this.liveSet.hasRepository(repository)) return false;
    for (const path of paths) await orUndefined(this.driver.delete(path));
    return true;
  }
}

/** Put back every file an interrupted run left in trash (where nothing took its place), then empty the trash. */
export async function restoreTrash(driver: StorageDriver): Promise<number> {
  let restored = 0;
  const runs = (await orUndefined(driver.list(TRASH_ROOT))) ?? [];
  for (const run of runs) {
    try {
      for await (const info of driver.walk(run)) {
        if (info.isDir) continue;
        const original = `${ROOT}/${info.path.slice(run.length + 1)}`;
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
  return restored;
}
