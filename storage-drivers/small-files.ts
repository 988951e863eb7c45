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
 * The check of a kept file is a synchronous `stat`, on the event loop's own thread. The file was read lately and its
 * bytes are small, so its inode is in the kernel's cache and the call takes a microsecond or two; going through the
 * thread pool costs far more here (measured: 105 against 91 µs of CPU per manifest GET by tag, 12% of it). A stat
 * that does reach the disk blocks the event loop while it waits, so one that took longer than SLOW_STAT_MS turns
 * the synchronous checks off for SYNC_PAUSE_MS: a disk under pressure costs one slow stat a minute, not one per GET.
 *
 * Where not: a network filesystem (NFS, SMB, FUSE, Ceph, ...) may answer `stat` from an attribute cache for seconds,
 * while opening a file revalidates it; replicas sharing such a mount must see each other's tag moves at once, so
 * there every read goes to the file. The filesystem type is read once, at the storage root.
 */
import { close, fstat, open, read, readFile, stat, statSync, statfs, type Stats, type StatsFs } from 'node:fs';
import { dirname } from 'node:path';
import { LRUCache } from 'lru-cache';

/** Files up to this size are kept (links are 71 bytes for sha256, 135 for sha512). */
export const SMALL_FILE_MAX = 512;
/** How long before the stat a file's change time must lie for its bytes to be kept. */
export const SETTLE_MS = 100;
/** A synchronous stat that took longer than this (the disk was read) ... */
export const SLOW_STAT_MS = 2;
/** ... sends the checks of kept files through the thread pool for this long. */
export const SYNC_PAUSE_MS = 60_000;

/** Local filesystems, by `statfs` type: their `stat` always tells the file as it is now. */
const LOCAL_FILESYSTEMS = new Set([
  0xef53, // ext2/3/4
  0x58465342, // xfs
  0x9123683e, // btrfs
  0x01021994, // tmpfs
  0x794c7630, // overlayfs
  0x2fc12fc1, // zfs
  0xf2f52010, // f2fs
  0x858458f6, // ramfs
]);

interface Kept {
  ino: number;
  size: number;
  ctimeMs: number;
  mtimeMs: number;
  content: Buffer;
}

/** A callback `fs` call as a promise: the callback API costs less than `fs/promises` on these hot paths. */
function call<T>(fn: (done: (err: NodeJS.ErrnoException | null, value: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, value) => (err ? reject(err) : resolve(value))));
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

/** Whether `dir` (or, while it does not exist yet, its nearest existing parent) is on a local filesystem. */
export async function isLocalFilesystem(dir: string): Promise<boolean> {
  for (let path = dir; ; path = dirname(path)) {
    try {
      return LOCAL_FILESYSTEMS.has((await call<StatsFs>((done) => statfs(path, done))).type);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || dirname(path) === path) return false;
    }
  }
}

function isDirectoryError(file: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`EISDIR: illegal operation on a directory, read '${file}'`), { code: 'EISDIR' });
}

export class SmallFileReader {
  private readonly kept: LRUCache<string, Kept>;
  /** Files read once lately: only a second read keeps the bytes, so a listing that reads each link once pays nothing. */
  private readonly seen: LRUCache<string, true>;
  private local: Promise<boolean> | undefined;
  /** Until when kept files are checked through the thread pool (after a slow synchronous stat). */
  private pausedUntil = 0;
  /** How many times a file's bytes were read rather than taken from memory (for tests). */
  fileReads = 0;
  /** How many kept files were checked through the thread pool rather than synchronously (for tests). */
  poolStats = 0;

  /** `slowStatMs`: for tests, the threshold of a slow synchronous stat (SLOW_STAT_MS). */
  constructor(private readonly root: string, entries = 4_096, private readonly slowStatMs = SLOW_STAT_MS) {
    this.kept = new LRUCache({ max: entries });
    this.seen = new LRUCache({ max: entries });
  }

  /** A kept file's stat (undefined when it is gone): synchronous unless a slow one paused that (see above). */
  private async check(file: string): Promise<Stats | undefined> {
    if (Date.now() < this.pausedUntil) {
      this.poolStats++;
      return call<Stats>((done) => stat(file, done));
    }
    const started = performance.now();
    const st = statSync(file, { throwIfNoEntry: false });
    if (performance.now() - started > this.slowStatMs) this.pausedUntil = Date.now() + SYNC_PAUSE_MS;
    return st;
  }

  /** The whole file, as `fs.readFile` gives it (errors included: ENOENT, EISDIR, ...). */
  async read(file: string): Promise<Buffer> {
    this.local ??= isLocalFilesystem(this.root);
    if (!(await this.local)) {
      this.fileReads++;
      return call<Buffer>((done) => readFile(file, done));
    }
    const kept = this.kept.get(file);
    if (kept) {
      let st: Stats | undefined;
      try {
        st = await this.check(file);
      } catch (err) {
        this.kept.delete(file);
        throw err;
      }
      if (st && kept.ino === st.ino && kept.size === st.size && kept.ctimeMs === st.ctimeMs && kept.mtimeMs === st.mtimeMs && !st.isDirectory()) {
        return Buffer.from(kept.content); // a copy: callers own what they are given
      }
      // Changed, or gone (undefined): the read below answers, with the file's bytes or its error.
      this.kept.delete(file);
    }
    this.fileReads++;
    if (!this.seen.has(file)) {
      this.seen.set(file, true);
      return call<Buffer>((done) => readFile(file, done));
    }
    const before = Date.now();
    const { content, st } = await readWithStat(file);
    if (st.size <= SMALL_FILE_MAX && content.length === st.size && st.ctimeMs < before - SETTLE_MS) {
      this.kept.set(file, { ino: st.ino, size: st.size, ctimeMs: st.ctimeMs, mtimeMs: st.mtimeMs, content: Buffer.from(content) });
    }
    return content;
  }
}
