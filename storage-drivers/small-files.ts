/**
 * Reads of small files for the filesystem driver, with the bytes of settled ones kept in memory and checked by one
 * `stat` instead of read again.
 *
 * Why: the hot path of the registry (a manifest GET by tag) reads a tiny link file on every request. Node reads a
 * file with four thread-pool round trips (open, fstat, read, close), and on small VMs each round trip costs tens of
 * microseconds of CPU, more than everything else a manifest GET does. A `stat` is one round trip.
 *
 * When the kept bytes are used: the file's inode number, size, modification and change times are all as they were
 * when the bytes were read. Writers in this project replace a file by renaming a new one over it (a new inode and a
 * new change time); writers elsewhere may rewrite it in place (a new change time). The change time cannot be set by
 * a program (unlike the modification time), but the kernel stamps it from a clock that ticks only every few
 * milliseconds, so two writes within one tick can carry the same time. Bytes are therefore kept only for a file whose
 * change time was already SETTLE_MS in the past when it was stat'ed before the read: any later write stamps a later
 * time, and the stat that was taken before the read can never vouch for bytes older than itself. (Git calls the
 * opposite case "racily clean".)
 *
 * A file is kept from its second read in a while (a tag pulled over and over), not its first: a listing that reads
 * each of thousands of links once pays only `readFile`. That second read is `readFile`'s four round trips (open,
 * fstat, read, close) with the fstat kept alongside the bytes; only a kept file is checked by `stat`.
 *
 * The check of a kept file is a synchronous `stat`, on the event loop's own thread, while the driver's metadata calls
 * are quick (./quick-calls.ts): the file was read lately and its bytes are small, so its inode is in the kernel's cache
 * and the call takes a microsecond or two; going through the thread pool costs far more here (measured: 105 against
 * 91 µs of CPU per manifest GET by tag, 12% of it).
 *
 * Where not: a network filesystem (NFS, SMB, FUSE, Ceph, ...) may answer `stat` from an attribute cache for seconds,
 * while opening a file revalidates it; replicas sharing such a mount must see each other's tag moves at once, so
 * there every read goes to the file. The filesystem type is read once, at the storage root.
 */
import { close, fstat, open, read, readFile, type Stats } from 'node:fs';
import { LRUCache } from 'lru-cache';
import { call, type QuickCalls } from './quick-calls.js';

/**
 * How many files are kept (and how many read once are remembered). Enough for the links of a repository of 10,000
 * tags read over and over (the UI's repositories page reads every tag's link for its count, last push and size):
 * with 4,096 such a cycle of reads missed every time, each read four thread-pool round trips, and the page took about
 * 1 s instead of 0.2-0.3 s. A kept file costs a few hundred bytes (its path, its stat's fields and its bytes), so the
 * cache holds at most a few MB.
 */
export const KEPT_FILES = 16_384;

/** Files up to this size are kept (links are 71 bytes for sha256, 135 for sha512). */
export const SMALL_FILE_MAX = 512;
/** How long before the stat a file's change time must lie for its bytes to be kept. */
export const SETTLE_MS = 100;

interface Kept {
  ino: number;
  size: number;
  ctimeMs: number;
  mtimeMs: number;
  content: Buffer;
}

/**
 * The whole file and its stat, taken after opening and before reading: the same four round trips as `readFile`
 * (open, fstat, read, close), so keeping a file costs no extra round trip.
 */
async function readWithStat(file: string): Promise<{ content: Buffer; st: Stats }> {
  const fd = await call<number>((done) => open(file, 'r', done));
  try {
    const st = await call<Stats>((done) => fstat(fd, done));
    if (st.isDirectory()) throw isDirectoryError(file);
    const content = Buffer.allocUnsafe(st.size);
    let filled = 0;
    while (filled < content.length) {
      const n = await call<number>((done) => read(fd, content, filled, content.length - filled, filled, done));
      if (n === 0) break;
      filled += n;
    }
    return { content: filled === content.length ? content : content.subarray(0, filled), st };
  } finally {
    close(fd, () => {});
  }
}

function isDirectoryError(file: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`EISDIR: illegal operation on a directory, read '${file}'`), { code: 'EISDIR' });
}

export class SmallFileReader {
  private readonly kept: LRUCache<string, Kept>;
  /** Files read once lately: only a second read keeps the bytes, so a listing that reads each link once pays nothing. */
  private readonly seen: LRUCache<string, true>;
  /** How many times a file's bytes were read rather than taken from memory (for tests). */
  fileReads = 0;

  /** `calls`: the driver's metadata calls, which tell whether the root is local and check kept files. */
  constructor(private readonly calls: QuickCalls, entries = KEPT_FILES) {
    this.kept = new LRUCache({ max: entries });
    this.seen = new LRUCache({ max: entries });
  }

  /** The whole file, as `fs.readFile` gives it (errors included: ENOENT, EISDIR, ...). */
  async read(file: string): Promise<Buffer> {
    return (await this.load(file, false)).content;
  }

  /**
   * The whole file, as `read` gives it, and the modification time of the version read: from the `stat` that vouched
   * for kept bytes, or from the `fstat` of the descriptor they were read from.
   */
  async readWithModTime(file: string): Promise<{ content: Buffer; mtimeMs: number }> {
    const { content, st } = await this.load(file, true);
    return { content, mtimeMs: st!.mtimeMs };
  }

  /** The file's bytes, and with `wantStat` the stat (or kept stat) that describes them. */
  private async load(file: string, wantStat: boolean): Promise<{ content: Buffer; st?: Stats | Kept }> {
    if (!(await this.calls.isLocal())) {
      this.fileReads++;
      if (wantStat) return readWithStat(file);
      return { content: await call<Buffer>((done) => readFile(file, done)) };
    }
    const kept = this.kept.get(file);
    if (kept) {
      let st: Stats | undefined;
      try {
        st = await this.calls.statIfExists(file);
      } catch (err) {
        this.kept.delete(file);
        throw err;
      }
      if (st && kept.ino === st.ino && kept.size === st.size && kept.ctimeMs === st.ctimeMs && kept.mtimeMs === st.mtimeMs && !st.isDirectory()) {
        return { content: Buffer.from(kept.content), st: kept }; // a copy: callers own what they are given
      }
      // Changed, or gone (undefined): the read below answers, with the file's bytes or its error.
      this.kept.delete(file);
    }
    this.fileReads++;
    if (!this.seen.has(file)) {
      this.seen.set(file, true);
      // The same four round trips as readFile: reading the stat along costs nothing more.
      if (wantStat) return readWithStat(file);
      return { content: await call<Buffer>((done) => readFile(file, done)) };
    }
    const before = Date.now();
    const { content, st } = await readWithStat(file);
    if (st.size <= SMALL_FILE_MAX && content.length === st.size && st.ctimeMs < before - SETTLE_MS) {
      this.kept.set(file, { ino: st.ino, size: st.size, ctimeMs: st.ctimeMs, mtimeMs: st.mtimeMs, content: Buffer.from(content) });
    }
    return { content, st };
  }
}
