/**
 * Listings of folders for the filesystem driver: the sorted names of a folder read again are kept in memory and
 * checked by one `stat` of the folder instead of read again.
 *
 * Why: a page of the tags list (and of the UI's tags by name) walks the repository's tags folder from just after the
 * last tag it showed, so every page read the whole folder (a `readdir` through the thread pool, and a sort): for
 * 10,000 tags most of the 8-12 ms of CPU a page took, however small the page.
 *
 * When kept names are used: the folder's inode number, change and modification times are all as they were when the
 * names were read. Creating, removing or renaming an entry of a folder stamps both times of the folder (what happens
 * inside its subfolders does not, and does not change its names either). As for small files (./small-files.ts), the
 * kernel stamps them from a clock that ticks only every few milliseconds, so names are kept only for a folder whose
 * change time was already SETTLE_MS in the past when it was stat'ed before the read: any later change stamps a later
 * time, and a change between that stat and the read is in the names but not in the kept times, so the next check
 * reads the folder again.
 *
 * A folder is kept from its second read in a while, not its first: a walk over thousands of folders read once (the
 * garbage collector's) pays only the `readdir`. Only a kept folder is checked by `stat`.
 *
 * Where not: a network filesystem, for the reason small files are not kept there (its attribute cache).
 */
import { readdir } from 'node:fs';
import { LRUCache } from 'lru-cache';
import { call, type QuickCalls } from './quick-calls.js';
import { SETTLE_MS } from './small-files.js';

/** How many names are kept in all (a folder of 10,000 tags counts 10,000; a kept folder costs tens of bytes a name). */
export const KEPT_NAMES = 65_536;
/** How many folders read once lately are remembered (only a second read keeps names). */
const SEEN_FOLDERS = 16_384;

interface Kept {
  ino: number;
  ctimeMs: number;
  mtimeMs: number;
  names: readonly string[];
}

export class ListingReader {
  private readonly kept: LRUCache<string, Kept>;
  private readonly seen = new LRUCache<string, true>({ max: SEEN_FOLDERS });
  /** How many times a folder was read rather than answered from memory (for tests). */
  folderReads = 0;

  /** `calls`: the driver's metadata calls, which tell whether the root is local and check kept folders. */
  constructor(private readonly calls: QuickCalls, names = KEPT_NAMES) {
    this.kept = new LRUCache({ maxSize: names, sizeCalculation: (k) => k.names.length + 1 });
  }

  /**
   * The names in folder `dir`, sorted, as `fs.readdir` gives them (errors included: ENOENT, ENOTDIR). Shared with
   * later callers: the caller must not change the array.
   */
  async names(dir: string): Promise<readonly string[]> {
    if (!(await this.calls.isLocal())) return this.read(dir);
    const kept = this.kept.get(dir);
    if (kept) {
      let st;
      try {
        st = await this.calls.statIfExists(dir);
      } catch (err) {
        this.kept.delete(dir);
        throw err;
      }
      if (st && st.isDirectory() && st.ino === kept.ino && st.ctimeMs === kept.ctimeMs && st.mtimeMs === kept.mtimeMs) return kept.names;
      // Changed, or gone: the read below answers, with the names or the error.
      this.kept.delete(dir);
    }
    if (!this.seen.has(dir)) {
      this.seen.set(dir, true);
      return this.read(dir);
    }
    const before = Date.now();
    const st = await this.calls.stat(dir);
    const names = await this.read(dir);
    if (st.isDirectory() && st.ctimeMs < before - SETTLE_MS) this.kept.set(dir, { ino: st.ino, ctimeMs: st.ctimeMs, mtimeMs: st.mtimeMs, names });
    return names;
  }

  private async read(dir: string): Promise<string[]> {
    this.folderReads++;
    return (await call<string[]>((done) => readdir(dir, done))).sort();
  }
}
