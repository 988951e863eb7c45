/**
 * The filesystem driver: driver path `/a/b` is the file `<rootDirectory>/a/b`, the same tree registry:2's
 * filesystem driver writes, so either server can use the other's data directory.
 *
 * Atomicity and concurrency
 *   - putContent writes a temporary file in the target's directory and renames it over the target, so readers
 *     see the old or the new bytes, never a mix. Two concurrent putContents each use their own temporary file;
 *     the last rename wins and the file is always one of the values, whole.
 *   - move is a rename (atomic, replaces the destination); across devices it copies into a temporary file next
 *     to the destination, renames that into place and then removes the source.
 *   - Temporary files are named `.tmp-<random>`. The registry never uses names starting with '.', and list and
 *     walk skip these names, so a crash can leave one behind but never makes it look like content.
 *   - A writer writes in place (the bytes are visible as they are written, as the contract allows).
 *   - putContentIfAbsent is an exclusive create (O_EXCL), atomic on local filesystems and NFS v3 and later.
 *   - Creating a parent directory can race with a concurrent delete of that directory; operations that create
 *     parents retry a few times when their directory vanishes under them.
 */
import { close, constants, fdatasync, fstat, fsync, open as openFd, statfs, writev, type Dirent, type Stats, type StatsFs } from 'node:fs';
import { copyFile, lstat, open, readdir, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import { QuickCalls, call } from './quick-calls.js';
import { SmallFileReader } from './small-files.js';
import { ListingReader } from './kept-listings.js';
import { Readable, type Writable } from 'node:stream';
import {
  InvalidOffsetError,
  PathNotFoundError,
  StorageDriverError,
  comparePaths,
  firstComponent,
  isBelow,
  joinPath,
  type ContentWithInfo,
  type DeleteOptions,
  type FileInfo,
  type FileWriter,
  type MoveOptions,
  type StorageDriver,
  type WalkOptions,
  COPY_INTO,
  type CopyInto,
} from './driver.js';

export interface FilesystemDriverOptions {
  /** Directory under which everything is stored; created when missing. */
  rootDirectory: string;
  /**
   * fsync files before they become visible through putContent/move-by-copy, and on writer commit
   * (default true). Turning it off trades crash durability for speed (tests, caches).
   */
  fsync?: boolean;
  /** For tests: the threshold of a slow synchronous metadata call (see ./quick-calls.ts). */
  slowCallMs?: number;
}

/** Prefix of the temporary files this driver creates; list and walk never show such names. */
export const TEMP_PREFIX = '.tmp-';
/** Chunk size of reader streams. */
export const READ_CHUNK = 1 << 20;
/** How many times an operation is retried when a concurrent delete removes the directory it just created. */
const PARENT_RETRIES = 5;

const NAME = 'filesystem';

function code(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/**
 * `mkdir -p`, from the deepest level up: one mkdir(2) when the folder exists (Node's recursive mkdir follows the
 * EEXIST with a stat, a second call on the thread pool for every write into an existing folder), and each missing
 * level once, as Node's does. Resolves with the first (highest) folder it made, or undefined when the folder was
 * there. Errors are the real ones: Node's recursive mkdir reports ENOENT for every failure on the way down (a
 * read-only filesystem, a denied permission). Something other than a folder in the way is not reported here: what is
 * then created inside it fails with ENOTDIR.
 */
async function makeDirectory(calls: QuickCalls, dir: string): Promise<string | undefined> {
  try {
    await calls.mkdir(dir);
    return dir;
  } catch (err) {
    if (code(err) === 'EEXIST') return undefined;
    if (code(err) !== 'ENOENT' || dirname(dir) === dir) throw err;
  }
  const made = await makeDirectory(calls, dirname(dir));
  try {
    await calls.mkdir(dir);
    return made ?? dir;
  } catch (err) {
    if (code(err) !== 'EEXIST') throw err;
    return made;
  }
}

/** Remove the folders from `dir` up to `made` (one of its ancestors, or itself) while they are empty. */
async function removeLevels(calls: QuickCalls, dir: string, made: string): Promise<void> {
  for (let level = dir; ; level = dirname(level)) {
    try {
      await calls.rmdir(level);
    } catch {
      return; // Not empty (another writer uses it) or gone: either way it is not ours to remove.
    }
    if (level === made || dirname(level) === level) return;
  }
}

function isNotFound(err: unknown): boolean {
  const c = code(err);
  return c === 'ENOENT' || c === 'ENOTDIR';
}

function tempName(): string {
  return TEMP_PREFIX + randomBytes(12).toString('hex');
}

function toInfo(path: string, st: Stats): FileInfo {
  const isDir = st.isDirectory();
  return { path, size: isDir ? 0 : st.size, modTime: st.mtime, isDir };
}

export class FilesystemDriver implements StorageDriver {
  readonly name = NAME;
  readonly rootDirectory: string;
  private readonly fsync: boolean;
  private readonly smallFiles: SmallFileReader;
  private readonly listings: ListingReader;
  /** Metadata calls, made on the event loop's thread while they are quick (./quick-calls.ts). */
  readonly calls: QuickCalls;
  /**
   * Whether countDirectories may read link counts: the device of the storage root when its filesystem counts
   * subdirectories in them, null when it does not, undefined until known (the root may not exist yet).
   */
  private countingDevice: number | null | undefined;

  constructor(options: FilesystemDriverOptions) {
    if (!options.rootDirectory) throw new StorageDriverError(NAME, 'rootDirectory is required');
    this.rootDirectory = resolve(options.rootDirectory);
    this.fsync = options.fsync ?? true;
    this.calls = new QuickCalls(this.rootDirectory, options.slowCallMs);
    this.smallFiles = new SmallFileReader(this.calls);
    this.listings = new ListingReader(this.calls);
  }

  /**
   * The OS path of a (validated) driver path. A valid path is already normal (no '.', '..' or empty components), so
   * it is appended as it is: `path.join` normalised it again, character by character, on every storage call.
   */
  fullPath(path: string): string {
    if (path === '/') return this.rootDirectory;
    return this.rootDirectory === '/' ? path : this.rootDirectory + path;
  }

  async getContent(path: string): Promise<Buffer> {
    try {
      return await this.smallFiles.read(this.fullPath(path));
    } catch (err) {
      if (isNotFound(err) || code(err) === 'EISDIR') throw new PathNotFoundError(path, NAME);
      throw err;
    }
  }

  async getContentWithInfo(path: string): Promise<ContentWithInfo> {
    try {
      const { content, mtimeMs } = await this.smallFiles.readWithModTime(this.fullPath(path));
      // Rounded as Node's `Stats.mtime` is, so that the time is the one `stat` gives.
      return { content, info: { path, size: content.length, modTime: new Date(Math.round(mtimeMs)), isDir: false } };
    } catch (err) {
      if (isNotFound(err) || code(err) === 'EISDIR') throw new PathNotFoundError(path, NAME);
      throw err;
    }
  }

  async putContent(path: string, content: Uint8Array | string): Promise<void> {
    const target = this.fullPath(path);
    await this.withParent(target, async () => {
      // Created exclusively: never reuse an existing file, even in the astronomically unlikely case of a name collision.
      const temp = join(dirname(target), tempName());
      await this.calls.writeFile(temp, content, this.fsync);
      try {
        await this.calls.rename(temp, target);
      } catch (err) {
        await this.calls.unlink(temp).catch(() => {});
        throw err;
      }
    });
  }

  /**
   * open(2) with O_CREAT|O_EXCL: the kernel (or the NFS server, v3 and later) decides which creator wins. The content
   * is written after the create, so a reader may briefly see the file empty. Not flushed to disk (see the contract):
   * a crash of the machine ends every process on this filesystem that could rely on it.
   */
  async putContentIfAbsent(path: string, content: Uint8Array | string): Promise<boolean> {
    const target = this.fullPath(path);
    try {
      await this.withParent(target, () => this.calls.writeFile(target, content, false));
    } catch (err) {
      if (code(err) === 'EEXIST' || code(err) === 'EISDIR') return false;
      throw err;
    }
    return true;
  }

  async reader(path: string, offset = 0, length?: number): Promise<Readable> {
    let handle: FileHandle;
    try {
      handle = await open(this.fullPath(path), 'r');
    } catch (err) {
      if (isNotFound(err)) throw new PathNotFoundError(path, NAME);
      throw err;
    }
    try {
      const st = await handle.stat();
      if (st.isDirectory()) throw new PathNotFoundError(path, NAME);
      if (offset < 0 || offset > st.size) throw new InvalidOffsetError(path, offset);
      if (length === 0 || offset === st.size) {
        await handle.close();
        return Readable.from([], { objectMode: false });
      }
      // The stream owns the handle from here on and closes it when it ends or is destroyed. Without a length
      // it reads to the end of the file as it is when read (a file being appended to may give more).
      const stream = handle.createReadStream({
        start: offset,
        end: length === undefined ? undefined : offset + length - 1,
        highWaterMark: READ_CHUNK,
      });
      const end = length === undefined ? st.size : Math.min(offset + length, st.size);
      const copyInto: CopyInto = (dest, done) => {
        // The stream (never read) owns the handle: destroying it closes the file, before `done` goes on.
        copyThroughPool(handle, offset, end, dest).then(
          () => { stream.destroy(); done(); },
          (err: unknown) => { stream.destroy(); done(err); },
        );
      };
      return Object.assign(stream, { [COPY_INTO]: copyInto });
    } catch (err) {
      await handle.close().catch(() => {});
      throw err;
    }
  }

  async writer(path: string, append: boolean): Promise<FileWriter> {
    const target = this.fullPath(path);
    if (append) {
      let file: WritableFile;
      try {
        file = await WritableFile.open(target, constants.O_RDWR);
      } catch (err) {
        if (isNotFound(err) || code(err) === 'EISDIR') throw new PathNotFoundError(path, NAME);
        throw err;
      }
      try {
        const st = await file.stat();
        return new FilesystemWriter(target, file, st.size, this.fsync);
      } catch (err) {
        await file.close().catch(() => {});
        throw err;
      }
    }
    const file = await this.withParent(target, () => WritableFile.open(target, 'w'));
    return new FilesystemWriter(target, file, 0, this.fsync);
  }

  async stat(path: string): Promise<FileInfo> {
    try {
      return toInfo(path, await this.calls.stat(this.fullPath(path)));
    } catch (err) {
      // The root always exists, even before the first write creates its directory.
      if (path === '/' && code(err) === 'ENOENT') return { path, size: 0, modTime: new Date(0), isDir: true };
      if (isNotFound(err)) throw new PathNotFoundError(path, NAME);
      throw err;
    }
  }

  async list(path: string): Promise<string[]> {
    return (await this.children(path)).map((name) => joinPath(path, name));
  }

  async move(sourcePath: string, destPath: string, options?: MoveOptions): Promise<void> {
    const source = this.fullPath(sourcePath);
    const dest = this.fullPath(destPath);
    // Replacing a large file frees its data, which can take the kernel tens of milliseconds: not on the event loop.
    const large = options?.mayReplace === true;
    try {
      // One rename when the destination's folder exists (the garbage collector moves many files into one folder).
      await this.calls.rename(source, dest, large);
      return;
    } catch (err) {
      if (!isNotFound(err)) {
        if (code(err) === 'EXDEV') return moveAcrossDevices(source, dest, this.fsync);
        throw err;
      }
    }
    // The destination's folder is missing, or the source is. The folder is made first and the source checked only
    // if the move fails again, so that a new blob's move costs no extra call; what was made for a missing source is
    // removed, so that it leaves no empty folders behind.
    const parent = dirname(dest);
    for (let attempt = 1; ; attempt++) {
      let made: string | undefined;
      try {
        made = await makeDirectory(this.calls, parent);
        await this.calls.rename(source, dest, large);
        return;
      } catch (err) {
        if (code(err) === 'EXDEV') return moveAcrossDevices(source, dest, this.fsync);
        if (!isNotFound(err)) throw err;
        // ENOENT from rename may be about either side.
        if (!(await exists(source))) {
          if (made !== undefined) await removeLevels(this.calls, parent, made);
          throw new PathNotFoundError(sourcePath, NAME);
        }
        // A folder on the way vanished (a concurrent delete of the tree, or removeEmptyDirectory): make it again.
        if (code(err) !== 'ENOENT' || attempt >= PARENT_RETRIES) throw err;
      }
    }
  }

  async delete(path: string, options?: DeleteOptions): Promise<void> {
    const full = this.fullPath(path);
    // Unlinking a large file frees its data, which can take the kernel tens of milliseconds: not on the event loop.
    const large = options?.mayBeLarge === true;
    if (path === '/') {
      // The root always exists: empty it rather than remove it.
      for (const name of await this.children('/', true)) await removeTree(this.calls, join(full, name), large);
      return;
    }
    // A file (the common case) is one unlink; a directory refuses it (EISDIR on Linux, EPERM elsewhere).
    try {
      await this.calls.unlink(full, large);
      return;
    } catch (err) {
      if (isNotFound(err)) throw new PathNotFoundError(path, NAME);
      if (code(err) !== 'EISDIR' && code(err) !== 'EPERM') throw err;
    }
    // A concurrent delete of the same tree (or part of it) is not an error once we saw it existed.
    await removeTree(this.calls, full, large);
  }

  /**
   * A directory's subdirectories from its link count (2 plus their number), where the filesystem keeps it so (see
   * SUBDIRECTORY_COUNTING): one `stat` instead of a listing. Undefined, so that the caller lists, on any other
   * filesystem, on a directory of another device below the root, and where the count was given up (ext4 past 65,000
   * subdirectories reports 1).
   */
  async countDirectories(path: string): Promise<number | undefined> {
    this.countingDevice ??= await subdirectoryCountingDevice(this.rootDirectory);
    if (this.countingDevice == null) return undefined;
    let info: Stats | undefined;
    try {
      info = await this.calls.statIfExists(this.fullPath(path));
    } catch {
      return undefined; // not a directory on the way, say: the listing reports it as it should
    }
    if (!info) return 0;
    if (!info.isDirectory() || info.dev !== this.countingDevice || info.nlink < 2) return undefined;
    return info.nlink - 2;
  }

  /** rmdir(2): atomic, and fails (false) when the directory holds anything, temporary files included. */
  async removeEmptyDirectory(path: string): Promise<boolean> {
    if (path === '/') return false;
    try {
      await this.calls.rmdir(this.fullPath(path));
      return true;
    } catch (err) {
      const c = code(err);
      if (c === 'ENOTEMPTY' || c === 'EEXIST' || c === 'ENOENT' || c === 'ENOTDIR') return false;
      throw err;
    }
  }

  async redirectURL(): Promise<string | null> {
    return null;
  }

  async *walk(path: string, options: WalkOptions = {}): AsyncIterable<FileInfo> {
    const names = await this.children(path);
    yield* this.walkDir(path, names, options);
  }

  /**
   * Depth-first walk of `dir`, whose sorted entry names are `names`. A subdirectory is read only when it will
   * be descended into and something in it can come after `startAfter`.
   */
  private async *walkDir(dir: string, names: string[], options: WalkOptions): AsyncGenerator<FileInfo> {
    const { startAfter, descend } = options;
    // The entries named before the one that is or holds startAfter lie before it with all below them: found by a
    // binary search, not by a path made and compared for each (a middle page of 10,000 tags).
    let from = 0;
    if (startAfter !== undefined && isBelow(startAfter, dir)) {
      const held = firstComponent(startAfter, dir);
      let end = names.length;
      while (from < end) {
        const mid = (from + end) >>> 1;
        if (names[mid]! < held) from = mid + 1;
        else end = mid;
      }
    }
    for (let i = from; i < names.length; i++) {
      const name = names[i]!;
      const path = joinPath(dir, name);
      // With startAfter beyond this entry and not inside it, the entry and its whole subtree are skipped.
      if (startAfter !== undefined && comparePaths(path, startAfter) < 0 && !isBelow(startAfter, path)) continue;
      let st: Stats;
      try {
        st = await this.calls.stat(this.fullPath(path));
      } catch (err) {
        if (isNotFound(err)) continue; // deleted while we walk
        throw err;
      }
      const info = toInfo(path, st);
      if (startAfter === undefined || comparePaths(path, startAfter) > 0) yield info;
      if (!info.isDir || (descend && !descend(info))) continue;
      let childNames: string[];
      try {
        childNames = await this.children(path);
      } catch (err) {
        if (err instanceof PathNotFoundError) continue;
        throw err;
      }
      yield* this.walkDir(path, childNames, options);
    }
  }

  /**
   * Sorted entry names of a directory, without temporary files unless `withTemp`. A root directory that was
   * not created yet is empty (the root always exists).
   */
  private async children(path: string, withTemp = false): Promise<string[]> {
    let names: readonly string[];
    try {
      // Kept and checked by one stat when read again lately (kept-listings.ts).
      names = await this.listings.names(this.fullPath(path));
    } catch (err) {
      if (path === '/' && code(err) === 'ENOENT') return [];
      if (isNotFound(err)) throw new PathNotFoundError(path, NAME);
      throw err;
    }
    return withTemp ? [...names] : names.filter((n) => !n.startsWith(TEMP_PREFIX));
  }

  /**
   * Create `target`'s parent directory and run `fn`; when `fn` fails because that directory vanished (a concurrent
   * delete of the tree, or removeEmptyDirectory), create it again and retry (at most PARENT_RETRIES times in all; an
   * ENOENT about something else, such as a missing move source, is retried too, harmlessly). A recursive mkdir fails
   * with ENOENT too when a directory it found vanishes before it checks it, so it is inside the retry.
   */
  private async withParent<T>(target: string, fn: () => Promise<T>): Promise<T> {
    const parent = dirname(target);
    for (let attempt = 1; ; attempt++) {
      try {
        await makeDirectory(this.calls, parent);
        return await fn();
      } catch (err) {
        // Not "does the parent exist now": another writer may have created it again meanwhile.
        if (code(err) !== 'ENOENT' || attempt >= PARENT_RETRIES) throw err;
      }
    }
  }
}

/** Entries of one directory removed at once by removeTree. */
const REMOVE_AT_ONCE = 64;
/** How many times removeTree reads a directory again that something was added to while it emptied it. */
const REMOVE_RETRIES = 5;

/**
 * `rm -r` in fewer system calls than Node's: one readdir per directory, which gives the entries' types (no lstat of
 * each), their unlinks at once, then rmdir. An upload session (its start time, a claims folder with one claim) goes
 * in 6 calls against Node's 13. What is already gone (a concurrent delete) is skipped; an entry added meanwhile
 * makes rmdir fail, and the directory is emptied again. A symbolic link is removed, never followed.
 */
async function removeTree(calls: QuickCalls, dir: string, large = false): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    let entries: Dirent[];
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      if (code(err) === 'ENOENT') return;
      if (code(err) !== 'ENOTDIR') throw err;
      // A file now (replaced meanwhile): unlinked, and an error other than its absence is thrown.
      return calls.unlink(dir, large).catch((e: unknown) => {
        if (code(e) !== 'ENOENT') throw e;
      });
    }
    for (let i = 0; i < entries.length; i += REMOVE_AT_ONCE) {
      await Promise.all(entries.slice(i, i + REMOVE_AT_ONCE).map((entry) => {
        const path = join(dir, entry.name);
        return entry.isDirectory() ? removeTree(calls, path, large) : removeFile(calls, path, large);
      }));
    }
    try {
      await calls.rmdir(dir);
      return;
    } catch (err) {
      if (code(err) === 'ENOENT') return;
      if ((code(err) !== 'ENOTEMPTY' && code(err) !== 'EEXIST') || attempt >= REMOVE_RETRIES) throw err;
    }
  }
}

/** unlink, of a file that may be gone already or have become a directory meanwhile; `large` as for QuickCalls.unlink. */
async function removeFile(calls: QuickCalls, path: string, large: boolean): Promise<void> {
  try {
    await calls.unlink(path, large);
  } catch (err) {
    if (code(err) === 'ENOENT') return;
    if (code(err) !== 'EISDIR' && code(err) !== 'EPERM') throw err;
    await removeTree(calls, path, large);
  }
}

/** Read buffers kept for reuse across copies (at most this many idle), and how many one copy keeps in flight. */
const SPARE_BUFFERS = 16;
const BUFFERS_IN_FLIGHT = 2;
const spareBuffers: Buffer[] = [];

/**
 * Copy bytes [start, end) of `handle` into `dest` (see COPY_INTO in driver.ts). Fresh memory for every chunk was
 * most of the CPU a blob download cost: page faults and zeroing of new pages, and garbage collection (about 0.3 s
 * per 200 MB against 0.1 s with reused buffers on a 2-core VM). A buffer goes back to the pool only when its write
 * succeeded; after a failed one `dest` (a socket) may still hold it, so it is left to the garbage collector. Stops
 * when `dest` closes (client gone). Does not end `dest` (the caller does).
 */
async function copyThroughPool(handle: FileHandle, start: number, end: number, dest: Writable): Promise<void> {
  const inFlight = new Set<Promise<void>>();
  let closed = false;
  // A Writable closes once (an HTTP response at its end or when the client goes away): the listener goes with it.
  const gone = new Promise<void>((resolve) => dest.once('close', () => {
    closed = true;
    resolve();
  }));
  const giveBack = (buffer: Buffer) => {
    if (spareBuffers.length < SPARE_BUFFERS) spareBuffers.push(buffer);
  };
  try {
    for (let pos = start; pos < end && !closed; ) {
      if (inFlight.size >= BUFFERS_IN_FLIGHT) await Promise.race([...inFlight, gone]);
      if (closed) break;
      const buffer = spareBuffers.pop() ?? Buffer.allocUnsafeSlow(READ_CHUNK);
      const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, end - pos), pos);
      if (bytesRead === 0) {
        giveBack(buffer);
        throw new Error(`file ended at ${pos} of ${end} bytes`);
      }
      pos += bytesRead;
      const written = new Promise<void>((resolve) => {
        dest.write(buffer.subarray(0, bytesRead), (err) => {
          if (!err) giveBack(buffer);
          resolve();
        });
      });
      inFlight.add(written);
      void written.then(() => inFlight.delete(written));
    }
    if (!closed) await Promise.race([Promise.all(inFlight), gone]);
  } catch (err) {
    // A consumer that went away is not an error (the read may fail because the stream closed the file meanwhile).
    if (!closed) throw err;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Move a file between filesystems: copy it to a temporary file beside `dest`, rename that into place (so
 * `dest` is replaced atomically, as with a plain rename), then remove `source`. Exported for tests.
 */
export async function moveAcrossDevices(source: string, dest: string, fsync = true): Promise<void> {
  const temp = join(dirname(dest), tempName());
  try {
    await copyFile(source, temp, constants.COPYFILE_EXCL);
    if (fsync) {
      const handle = await open(temp, 'r');
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
    }
    await rename(temp, dest);
  } catch (err) {
    await unlink(temp).catch(() => {});
    throw err;
  }
  await unlink(source).catch((err) => {
    // A concurrent move of the same source finished first: the bytes are in place either way.
    if (code(err) !== 'ENOENT') throw err;
  });
}

/**
 * Filesystems (`statfs` types) whose link count of a directory is 2 plus its subdirectories, exactly and at once:
 * ext2/3/4 (up to 65,000 of them, 1 beyond), XFS and tmpfs. Others differ: btrfs and merged overlayfs directories
 * report 1, ZFS counts files too, and network or FUSE filesystems report what their server or daemon chooses.
 */
const SUBDIRECTORY_COUNTING = new Set([0xef53, 0x58465342, 0x01021994]);

/**
 * The device of `root` when its filesystem counts subdirectories (SUBDIRECTORY_COUNTING), null when it does not,
 * undefined while `root` does not exist.
 */
async function subdirectoryCountingDevice(root: string): Promise<number | null | undefined> {
  try {
    const [fs, info] = await Promise.all([call<StatsFs>((done) => statfs(root, done)), stat(root)]);
    return SUBDIRECTORY_COUNTING.has(fs.type) ? info.dev : null;
  } catch (err) {
    return code(err) === 'ENOENT' ? undefined : null;
  }
}

/**
 * A file open for writing, by its descriptor, through the callback API of `fs`. A writer makes a call per batch of
 * chunks, and FileHandle's promise methods cost more per call: about 8% of the server's CPU over 20 concurrent 10 MB
 * pushes. Unlike a FileHandle, a descriptor is not closed by the garbage collector: every writer ends in commit, close
 * or cancel, which close it. Exported for tests.
 */
export class WritableFile {
  private constructor(private readonly fd: number) {}

  static async open(path: string, flags: string | number): Promise<WritableFile> {
    return new WritableFile(await call<number>((done) => openFd(path, flags, done)));
  }

  /** Write `chunks` at `position`; resolves with how many bytes the kernel took (a short write is possible). */
  writev(chunks: Uint8Array[], position: number): Promise<number> {
    return call<number>((done) => writev(this.fd, chunks, position, done));
  }

  stat(): Promise<Stats> {
    return call<Stats>((done) => fstat(this.fd, done));
  }

  datasync(): Promise<void> {
    return call((done) => fdatasync(this.fd, done));
  }

  sync(): Promise<void> {
    return call((done) => fsync(this.fd, done));
  }

  close(): Promise<void> {
    return call((done) => close(this.fd, done));
  }
}

type WriterState = 'open' | 'committed' | 'closed' | 'cancelled';

/** Most chunks written by one system call (writev), well under every platform's IOV_MAX. */
const MAX_BATCH = 256;

interface PendingWrite {
  chunk: Uint8Array;
  resolve(): void;
  reject(err: unknown): void;
}

/**
 * Bytes written since a writer's last background flush after which it starts the next one (see FilesystemWriter).
 */
export const WRITEBACK_EVERY = 16 * 1024 * 1024;
/**
 * Background flushes running at once in the process. Each holds a thread of libuv's pool (4 by default) for as long
 * as the disk takes, so a few are enough to keep the disk busy without leaving the writes and reads of other
 * requests waiting for a thread.
 */
const MAX_BACKGROUND_FLUSHES = 1;
let backgroundFlushes = 0;

/**
 * Writes go straight to the file at increasing positions. Each write() resolves once the kernel has the bytes
 * (nothing is buffered here); calls made without awaiting are queued and applied in order, and the chunks queued
 * while a write is in progress go to the file together in the next one (one writev), so a caller that keeps
 * several writes outstanding pays one thread-pool round trip per batch rather than per chunk. After a failed
 * write every later write and the commit fail too, so a gap in the file can never be committed.
 *
 * With fsync on, commit() flushes the file to disk. So that a large file does not leave all of that to the commit
 * (a few hundred milliseconds for 200 MB, with the client waiting), the writer starts a flush of what it has
 * written (fdatasync) in the background every WRITEBACK_EVERY bytes, while it goes on writing; the commit's own
 * flush then has only the tail left. A background flush that fails makes the commit fail: Linux reports a
 * write-back error to one flush only.
 */
class FilesystemWriter implements FileWriter {
  /** Chunks queued in one turn go out in one writev (see flush). */
  readonly joinsWrites = true;
  private state: WriterState = 'open';
  private failure: { error: unknown } | undefined;
  private pending: PendingWrite[] = [];
  /** The loop writing out `pending`, while it runs. */
  private flushing: Promise<void> | undefined;
  private written: number;
  /** The background flush in progress, and how far the file was written when the last one started. */
  private writeback: Promise<void> | undefined;
  private flushedUpTo: number;
  private writebackFailure: { error: unknown } | undefined;

  constructor(
    private readonly file: string,
    private readonly handle: WritableFile,
    initialSize: number,
    private readonly fsync: boolean,
  ) {
    this.written = initialSize;
    this.flushedUpTo = initialSize;
  }

  get size(): number {
    return this.written;
  }

  private notOpen(): StorageDriverError {
    return new StorageDriverError(NAME, `writer is ${this.state}: ${this.file}`);
  }

  private failed(): StorageDriverError {
    return new StorageDriverError(NAME, `an earlier write failed: ${this.file}`, this.failure?.error);
  }

  write(chunk: Uint8Array): Promise<void> {
    if (this.state !== 'open') return Promise.reject(this.notOpen());
    // Refused here, not queued: flush() must never finish before `flushing` is set (it would clear `flushing`
    // first, and the stale promise left in it would keep every later write queued for ever). Started from here
    // with no failure known, its first batch always waits for the disk.
    if (this.failure) return Promise.reject(this.failed());
    return new Promise((resolve, reject) => {
      this.pending.push({ chunk, resolve, reject });
      this.flushing ??= this.flush();
    });
  }

  /**
   * Write out the queued chunks, a batch per system call, until none are left. It starts after the turn that queued
   * the first chunk, so that every chunk queued in that turn goes out in the first system call.
   */
  private async flush(): Promise<void> {
    await Promise.resolve();
    while (this.pending.length > 0) {
      const batch = this.pending.splice(0, MAX_BATCH);
      try {
        if (this.failure) throw this.failed();
        await this.writeAll(batch.map((w) => w.chunk));
      } catch (error) {
        this.failure ??= { error };
        for (const w of batch) w.reject(error);
        continue;
      }
      for (const w of batch) w.resolve();
      this.startWriteback();
    }
    this.flushing = undefined;
  }

  /** Start a background flush when enough was written since the last one and the process has room for one. */
  private startWriteback(): void {
    if (!this.fsync || this.writeback || this.written - this.flushedUpTo < WRITEBACK_EVERY) return;
    if (backgroundFlushes >= MAX_BACKGROUND_FLUSHES) return;
    backgroundFlushes++;
    this.flushedUpTo = this.written;
    this.writeback = this.handle.datasync().then(
      () => {},
      (error: unknown) => { this.writebackFailure ??= { error }; },
    ).finally(() => {
      backgroundFlushes--;
      this.writeback = undefined;
    });
  }

  /** Resolves once no write and no background flush is in progress. */
  private async settled(): Promise<void> {
    await this.drained();
    while (this.writeback) await this.writeback;
  }

  /** Write `chunks` at the end of what was written, however many calls the kernel needs. */
  private async writeAll(chunks: Uint8Array[]): Promise<void> {
    let rest = chunks.filter((c) => c.byteLength > 0);
    while (rest.length > 0) {
      let bytesWritten = await this.handle.writev(rest, this.written);
      this.written += bytesWritten;
      // A short write: drop what went out and retry with the remainder.
      while (rest.length > 0 && bytesWritten >= rest[0]!.byteLength) bytesWritten -= rest.shift()!.byteLength;
      if (bytesWritten > 0) rest[0] = rest[0]!.subarray(bytesWritten);
    }
  }

  /** Resolves once every write queued so far has been written (or has failed). */
  private async drained(): Promise<void> {
    while (this.flushing) await this.flushing;
  }

  async commit(): Promise<void> {
    if (this.state !== 'open') throw this.notOpen();
    this.state = 'committed';
    await this.settled();
    try {
      if (this.failure) throw this.failed();
      if (this.writebackFailure) {
        throw new StorageDriverError(NAME, `flushing ${this.file} to disk failed`, this.writebackFailure.error);
      }
      if (this.fsync) await this.handle.sync();
    } finally {
      await this.handle.close();
    }
  }

  async close(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'closed';
    await this.settled();
    await this.handle.close();
  }

  async cancel(): Promise<void> {
    if (this.state === 'cancelled') return;
    if (this.state !== 'open') throw this.notOpen();
    this.state = 'cancelled';
    await this.settled();
    const own = await this.handle.stat().catch(() => undefined);
    await this.handle.close();
    // Remove the file only if the path still names the file we wrote (it may have been moved or replaced).
    const current = await stat(this.file).catch(() => undefined);
    if (own && current && own.ino === current.ino && own.dev === current.dev) {
      await unlink(this.file).catch((err) => {
        if (code(err) !== 'ENOENT') throw err;
      });
    }
  }
}
