/**
 * The byte-level storage driver interface.
 *
 * A driver stores opaque bytes under slash-separated paths. It knows nothing of OCI: the registry layer
 * (server/registry) decides what the paths mean. Every driver (filesystem, inmemory, s3) passes the same
 * behaviour suite (testing/storage-suite.ts), so the edge cases written here are the contract.
 *
 * Paths
 *   - Absolute, '/'-separated, each component made of [A-Za-z0-9._-] and never '.' or '..'
 *     (see `validatePath`). The root is '/'. A driver maps them under its own root directory or prefix.
 *   - At most MAX_COMPONENT_LENGTH characters per component (a file name limit on every common filesystem) and
 *     MAX_PATH_LENGTH characters in all (S3's key limit is 1024 bytes).
 *   - Path order: paths are ordered component by component (`comparePaths`), which is plain string order
 *     except that '/' sorts before every other character. That is the order a depth-first walk over sorted
 *     directory listings produces; it differs from raw string order because '-' and '.' sort before '/'
 *     ('/a/b/c' comes before '/a/b-c').
 *   - Drivers never receive an unvalidated path: `checkedDriver()` wraps every driver and rejects bad paths
 *     with `InvalidPathError` before the driver sees them.
 *
 * Errors
 *   - A missing path is always `PathNotFoundError` (never ENOENT, NoSuchKey or the like).
 *   - A read past the end is `InvalidOffsetError`.
 *   - Anything else the backend reports is wrapped in `StorageDriverError` with the driver's name.
 */
import type { Readable, Writable } from 'node:stream';

export interface FileInfo {
  /** The path asked about, as given. */
  path: string;
  /** Size in bytes; 0 for directories. */
  size: number;
  /** Last modification time (for directories, the driver's best estimate; may be the epoch). */
  modTime: Date;
  isDir: boolean;
  /**
   * Where the backend names each version of a file's content (S3's ETag), that name: a file written again with
   * other bytes gets another. Given by `stat`, `getContentWithInfo` and `listFiles` of drivers that have it.
   */
  etag?: string;
}

/** A file's bytes and the info of that version of it (`StorageDriver.getContentWithInfo`). */
export interface ContentWithInfo {
  content: Buffer;
  info: FileInfo;
}

/**
 * An open, resumable writer. Bytes written become readable at `path` no later than `commit()`;
 * drivers may make them visible earlier (the filesystem does), so callers write uploads to private paths and
 * `move()` them into place.
 */
export interface FileWriter {
  /** Append bytes. Resolves when the driver can accept more (backpressure). */
  write(chunk: Uint8Array): Promise<void>;
  /**
   * True when chunks written in the same turn, without awaiting in between, are written together (the filesystem:
   * with one system call), so that a caller gains by handing its chunks over in batches. Such a writer is done with a
   * chunk's memory once its write settled: the caller may then reuse it (uploads copy request bodies into pooled
   * buffers).
   */
  readonly joinsWrites?: boolean;
  /** Bytes in the file so far, including those there before an append-mode open. */
  readonly size: number;
  /** Make all written bytes durable and visible; the writer is closed afterwards. */
  commit(): Promise<void>;
  /** Release resources without committing. Bytes already flushed may stay (resume with append). */
  close(): Promise<void>;
  /** Discard the file: everything written, including what was there before an append-mode open. */
  cancel(): Promise<void>;
  /**
   * Optional hint, before writing: about `bytes` more are coming (a request's length). A driver that buffers in
   * memory (S3) reserves no more than that; writing more or fewer is allowed.
   */
  expect?(bytes: number): void;
}

export interface MoveOptions {
  /**
   * A file, possibly a large one, may be at the destination already. Replacing it frees its data, which takes the
   * kernel time in proportion to its size however fast the disk is: a driver that makes quick calls on the event
   * loop's thread (the filesystem's) makes this one on its thread pool.
   */
  mayReplace?: boolean;
}

export interface DeleteOptions {
  /**
   * What is deleted may be, or hold, a large file (an upload's data). Freeing its data takes the kernel time in
   * proportion to its size however fast the disk is: a driver that makes quick calls on the event loop's thread (the
   * filesystem's) makes its unlinks on its thread pool.
   */
  mayBeLarge?: boolean;
}

export interface WalkOptions {
  /**
   * Return false to not descend into a directory (it is still yielded if it comes after `startAfter`).
   * Consulted before entering any directory, including one that is not yielded because `startAfter` lies
   * inside it. An exception thrown here ends the walk and reaches the caller unchanged.
   */
  descend?: (dir: FileInfo) => boolean;
  /**
   * Yield only entries that come after this path in path order (`comparePaths`); used for paging listings.
   * It need not exist. Subtrees that lie entirely before it are skipped without being read where possible.
   */
  startAfter?: string;
}

export interface RedirectOptions {
  method: 'GET' | 'HEAD';
  /** Lifetime of the URL in seconds. */
  expiresIn?: number;
}

export interface StorageDriver {
  /** Short name, such as 'filesystem'. */
  readonly name: string;

  /** Whole content of a (small) file. PathNotFoundError when absent or a directory. */
  getContent(path: string): Promise<Buffer>;

  /**
   * Whole content of a (small) file and its info, read together: `getContent` and `stat` in one call, where the
   * backend can answer both at once (one GetObject on S3; on the filesystem a kept small file's one `stat`). The
   * info is that of the bytes returned. Drivers without it are asked both ways (`contentWithInfo`).
   */
  getContentWithInfo?(path: string): Promise<ContentWithInfo>;

  /**
   * Replace the content of a file atomically: a concurrent reader sees either the old or the new bytes, never
   * a mix or a partial file. Creates parent directories as needed.
   */
  putContent(path: string, content: Uint8Array | string): Promise<void>;

  /**
   * Create a file only if nothing is stored at `path`, as one atomic step: resolves true when this call created
   * it with `content`, false when a file (or directory) was there already, which is then left as it is. Of any
   * number of concurrent calls for one path, from any processes sharing the storage, exactly one resolves true.
   * Creates parent directories as needed. Used for ownership markers (the upload claims of server/registry), which
   * matter only to running processes: unlike putContent's, the file need not survive a crash of the machine.
   * A backend that cannot decide between creators rejects with UnsupportedOperationError (never a wrong true).
   */
  putContentIfAbsent(path: string, content: Uint8Array | string): Promise<boolean>;

  /**
   * A stream of the file's bytes from `offset` (default 0), at most `length` bytes when given.
   * PathNotFoundError when absent; InvalidOffsetError when offset is negative or beyond the size
   * (offset === size yields an empty stream). The stream may also offer COPY_INTO (below).
   */
  reader(path: string, offset?: number, length?: number): Promise<Readable>;

  /**
   * Open a writer. `append` false truncates (or creates); `append` true continues a file written earlier by a
   * writer that was closed (its `size` starts at the bytes already there). Appending to a missing file is
   * PathNotFoundError.
   */
  writer(path: string, append: boolean): Promise<FileWriter>;

  /** Metadata. PathNotFoundError when neither a file nor a directory exists at path. */
  stat(path: string): Promise<FileInfo>;

  /**
   * Direct children of a directory, as full paths, sorted lexically. PathNotFoundError when the directory
   * does not exist (an existing empty directory gives []; the root always exists).
   */
  list(path: string): Promise<string[]>;

  /**
   * Move a file to a new path, replacing any file there. Atomic where the backend allows it (the filesystem
   * renames). PathNotFoundError when the source is absent.
   */
  move(sourcePath: string, destPath: string, options?: MoveOptions): Promise<void>;

  /** Delete a file or a whole directory tree. PathNotFoundError when absent. */
  delete(path: string, options?: DeleteOptions): Promise<void>;

  /**
   * Optional. Remove the directory at `path` only if it is empty, as one atomic step (rmdir): resolves true when
   * it was removed, false when it holds anything, is a file, is absent, or is the root. It never removes
   * anything but an empty directory, so it cannot race a writer: a file created in the directory first makes
   * it fail, and a writer whose parent directory vanishes creates it again (every write creates its parents).
   * Use it to tidy folders left empty by deletes, never "list, then delete". Drivers whose directories exist
   * only through what is stored below them (S3) have nothing to remove and resolve false. `checkedDriver`
   * always provides it.
   */
  removeEmptyDirectory?(path: string): Promise<boolean>;

  /**
   * Optional. How many directories the directory at `path` holds, when the driver can tell without listing it;
   * undefined when it cannot (then list), 0 when nothing is at `path`. A filesystem whose link count of a directory
   * is 2 plus its subdirectories answers with one `stat`; it may be a moment behind other processes, like a listing.
   */
  countDirectories?(path: string): Promise<number | undefined>;

  /**
   * Optional. Every file below `path` (directories are not entries), in no particular order, with its size and
   * modification time; nothing when `path` is absent. For a store that lists a whole prefix at once (S3's
   * ListObjectsV2 without a delimiter: 1,000 keys a request, sizes and times included), where `walk` lists one
   * directory at a time and a `stat` is a request per file. Files created or removed meanwhile may or may not be
   * seen. The garbage collector lists the content store with it when the driver has it.
   */
  listFiles?(path: string): AsyncIterable<FileInfo>;

  /**
   * Optional. Delete each of `paths`, every one a file (never a directory); one already absent is not an error.
   * For a store with a batch delete (S3's DeleteObjects: 1,000 keys a request), where `delete` is a request or
   * more per path (it also removes a directory of the same name). Without it, callers `delete` path by path.
   */
  deleteFiles?(paths: string[]): Promise<void>;

  /**
   * A URL the client may fetch the bytes from directly (e.g. a presigned S3 URL), or null when the driver
   * serves bytes itself.
   */
  redirectURL(path: string, options: RedirectOptions): Promise<string | null>;

  /**
   * Every file and directory below `path` (not `path` itself), depth-first with the children of each directory
   * in lexical order, so the output is sorted by `comparePaths` and a directory comes right before its
   * contents. PathNotFoundError when `path` does not exist or is a file. Entries that vanish during the walk
   * are skipped; entries created during it may or may not be seen.
   */
  walk(path: string, options?: WalkOptions): AsyncIterable<FileInfo>;
}

export class StorageError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * Whether `err` (or an error it was caused by) says the storage is full (ENOSPC, EDQUOT) or read-only (EROFS): a
 * condition of the storage an operator must fix, not a fault of the request or a bug.
 */
export function storageCondition(err: unknown): 'full' | 'read-only' | undefined {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC' || code === 'EDQUOT') return 'full';
    if (code === 'EROFS') return 'read-only';
  }
  return undefined;
}

export class PathNotFoundError extends StorageError {
  constructor(readonly path: string, readonly driver = '') {
    super(`path not found: ${path}`);
  }
}

/** The value of `p`, or undefined when it fails because the path does not exist; any other failure is thrown. */
export async function ifExists<T>(p: Promise<T>): Promise<T | undefined> {
  try {
    return await p;
  } catch (err) {
    if (err instanceof PathNotFoundError) return undefined;
    throw err;
  }
}

/**
 * A file's content and info: in one call where the driver offers it, else by `getContent` and `stat` side by side
 * (which may then describe two versions of a file replaced meanwhile).
 */
export async function contentWithInfo(driver: StorageDriver, path: string): Promise<ContentWithInfo> {
  if (driver.getContentWithInfo) return driver.getContentWithInfo(path);
  const [content, info] = await Promise.all([driver.getContent(path), driver.stat(path)]);
  return { content, info };
}

/** How long the loser of an exclusive create waits for the winner's content (see `readAfterLostCreate`). */
export const LOST_CREATE_WAIT_MS = 2_000;

/**
 * The content of a file that another writer has just created with `putContentIfAbsent` (this caller's exclusive create
 * lost), or undefined when it is gone. The filesystem creates the file empty and writes the content after it, so an
 * empty file is read again, with a growing pause, until it has content or `waitMs` have passed (then it is returned
 * empty: the caller must not take it for the content).
 */
export async function readAfterLostCreate(driver: StorageDriver, path: string, waitMs = LOST_CREATE_WAIT_MS): Promise<Buffer | undefined> {
  const deadline = Date.now() + waitMs;
  for (let pause = 1; ; pause = Math.min(pause * 2, 50)) {
    const content = await ifExists(driver.getContent(path));
    if (content === undefined || content.byteLength > 0 || Date.now() >= deadline) return content;
    await new Promise((resolve) => setTimeout(resolve, pause));
  }
}

export class InvalidPathError extends StorageError {
  constructor(readonly path: string) {
    super(`invalid path: ${JSON.stringify(path)}`);
  }
}

export class InvalidOffsetError extends StorageError {
  constructor(readonly path: string, readonly offset: number) {
    super(`invalid offset ${offset} for ${path}`);
  }
}

/** The backend cannot provide an operation (such as an S3-compatible service ignoring conditional writes). */
export class UnsupportedOperationError extends StorageError {
  constructor(readonly driver: string, readonly operation: string, reason: string) {
    super(`${driver}: ${operation} is not supported: ${reason}`);
  }
}

export class StorageDriverError extends StorageError {
  constructor(readonly driver: string, message: string, cause?: unknown) {
    super(`${driver}: ${message}`, { cause });
  }
}

/** A character a path component may hold: A-Z, a-z, 0-9, '.', '_' and '-'. */
function isComponentChar(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x2e || c === 0x5f || c === 0x2d;
}

/**
 * Optional on a reader's stream that has not been read: `stream[COPY_INTO](dest, done)` copies the stream's bytes
 * into `dest` (any Writable) instead of the stream being read, through buffers the driver reuses: each goes back to
 * the driver once `dest`'s write callback says it was taken, rather than a fresh buffer per chunk. It stops early
 * when `dest` closes (its consumer went away) and never ends `dest`. `done` is called once, with the error if the
 * copy failed, after the stream has released what it held. Call it at most once; `copyIntoOf` finds it. The
 * filesystem driver offers it; the checked driver's stream forwards it (see checked.ts). Who copies where is the
 * caller's choice: the HTTP layer uses it to send a blob (server/http/send-blob.ts).
 */
export const COPY_INTO = Symbol('wharf.copyInto');
export type CopyInto = (dest: Writable, done: (err?: unknown) => void) => void;

/** The stream's COPY_INTO, when its driver offers one. */
export function copyIntoOf(stream: Readable): CopyInto | undefined {
  return (stream as Readable & { [COPY_INTO]?: CopyInto })[COPY_INTO];
}

/** Longest accepted path component. */
export const MAX_COMPONENT_LENGTH = 255;
/** Longest accepted path, in characters (all ASCII, so also bytes). */
export const MAX_PATH_LENGTH = 1024;

/** True when `path` is an acceptable driver path (see the module comment). */
export function isValidPath(path: string): boolean {
  if (path === '/') return true;
  if (typeof path !== 'string' || path.length > MAX_PATH_LENGTH || path.charCodeAt(0) !== 0x2f) return false;
  // One pass over the characters, without a string per component: every storage call of every request comes here.
  let start = 1;
  for (let i = 1; i <= path.length; i++) {
    const c = i < path.length ? path.charCodeAt(i) : 0x2f;
    if (c !== 0x2f) {
      if (!isComponentChar(c)) return false;
      continue;
    }
    // A component ends: not empty (no '//' and no trailing '/'), not too long, not '.' or '..'.
    const length = i - start;
    if (length === 0 || length > MAX_COMPONENT_LENGTH) return false;
    if (path.charCodeAt(start) === 0x2e && (length === 1 || (length === 2 && path.charCodeAt(start + 1) === 0x2e))) return false;
    start = i + 1;
  }
  return true;
}

/**
 * Path order (see the module comment): negative when `a` comes before `b`, 0 when equal, positive after.
 * A directory comes before everything below it, and everything below it comes before its next sibling.
 */
export function comparePaths(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    if (x === 0x2f) return -1; // '/' sorts before everything
    if (y === 0x2f) return 1;
    return x - y;
  }
  return a.length - b.length;
}

/** True when `path` lies strictly below directory `dir` (`dir` itself is not below itself). */
export function isBelow(path: string, dir: string): boolean {
  if (dir === '/') return path !== '/' && path.startsWith('/');
  return path.length > dir.length + 1 && path.startsWith(dir) && path.charCodeAt(dir.length) === 0x2f;
}

/** The first component of `path` below directory `dir` (`path` must lie below `dir`). */
export function firstComponent(path: string, dir: string): string {
  const rest = dir === '/' ? path.slice(1) : path.slice(dir.length + 1);
  const slash = rest.indexOf('/');
  return slash < 0 ? rest : rest.slice(0, slash);
}

/** The driver path of `name` inside directory `dir`. */
export function joinPath(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

export function validatePath(path: string): void {
  if (!isValidPath(path)) throw new InvalidPathError(path);
}
