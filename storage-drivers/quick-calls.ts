/**
 * The filesystem driver's metadata calls (stat, mkdir, rename, unlink, rmdir, and small files written whole), made on
 * the event loop's own thread while they are quick.
 *
 * Why: Node runs an asynchronous file-system call on its thread pool, and on small VMs the hand-over (waking a pool
 * thread, then the completion back through the event loop) costs tens of microseconds of CPU, where the call itself
 * takes two or three on a local filesystem whose metadata is in the kernel's cache. A push makes about thirty such
 * calls (the session's files, its claim, the move into the content store, the link, the removal of the session); a
 * manifest GET checks a link by one stat; the garbage collector makes about four per blob. Made synchronously, 20
 * concurrent 10 MB pushes ran 1-7% faster here (four runs), and the collector used 45% less CPU per blob.
 *
 * The risk, bounded: a synchronous call that has to wait for the disk (an inode not in the cache, a journal under
 * pressure) blocks the event loop while it waits. So every synchronous call is timed, and the calls of this driver go
 * through the pool for a while after one slower than SLOW_CALL_MS, or once the synchronous calls of the last second
 * add up to more than BUSY_MS_PER_SECOND (a disk just slow enough to stay under the first mark, a millisecond a call,
 * would otherwise take the event loop's time call after call). The pause is FIRST_PAUSE_MS, doubled each time the
 * calls are slow again right after it (within FIRST_PAUSE_MS of its end: a disk still under pressure), up to
 * MAX_PAUSE_MS. A disk under pressure costs one slow call a minute, not one per request; a call that was slow only
 * because the thread was preempted or a garbage collection ran within it costs a second of calls through the pool.
 * What can take long however fast the disk is stays on the pool whatever happens: listings (a folder may hold
 * thousands of entries), data written by writers, reads of blobs, flushes (fsync), which wait for the disk by
 * design, and a rename that may replace a large file (a blob pushed again) or an unlink of one (an upload's data),
 * whose data the kernel frees before the call returns (`large` on rename and unlink).
 *
 * Where not: on a network filesystem (NFS, SMB, FUSE, Ceph, ...) every call is a round trip to a server, so there
 * every call goes through the pool. The filesystem type is read once, at the storage root.
 */
import {
  closeSync,
  fsync,
  mkdir,
  mkdirSync,
  openSync,
  rename,
  renameSync,
  rmdir,
  rmdirSync,
  stat,
  statSync,
  statfs,
  unlink,
  unlinkSync,
  writeSync,
  type Stats,
  type StatsFs,
} from 'node:fs';
import { open as openHandle } from 'node:fs/promises';
import { dirname } from 'node:path';

/** A synchronous call that took longer than this (it waited for the disk) ... */
export const SLOW_CALL_MS = 2;
/** Synchronous calls adding up to more than this within a second pause them too. */
export const BUSY_MS_PER_SECOND = 250;
/** A pause sends the driver's calls through the thread pool for this long at first, twice as long as the last one
 * when the calls are slow again within this long after it ended ... */
export const FIRST_PAUSE_MS = 1_000;
/** ... but never longer than this. */
export const MAX_PAUSE_MS = 60_000;
/** Small files written whole (links, a session's start time, claims) up to this size are written synchronously. */
export const SMALL_WRITE_MAX = 64 * 1024;

/** Local filesystems, by `statfs` type: their calls never leave the machine, and `stat` tells a file as it is now. */
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

/**
 * A callback `fs` call as a promise: the callback API costs less than `fs/promises` on these hot paths. A call whose
 * callback takes no value (mkdir, fsync, ...) is `call((done) => mkdir(path, done))`, a promise of nothing.
 */
export function call<T = void>(fn: (done: (err: NodeJS.ErrnoException | null, value?: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, value) => (err ? reject(err) : resolve(value as T))));
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

export class QuickCalls {
  private localCheck: Promise<boolean> | undefined;
  private local: boolean | undefined;
  /** Until when calls go through the thread pool (after a slow synchronous one), and how long that pause was. */
  private pausedUntil = 0;
  private pauseMs = 0;
  /** The time the synchronous calls took since `busySince` (a second at most). */
  private busySince = 0;
  private busyMs = 0;
  /** How many calls went through the thread pool while the filesystem was local (for tests). */
  poolCalls = 0;

  /**
   * For tests: `slowCallMs`, the threshold of a slow synchronous call (SLOW_CALL_MS), the clock, and the stopwatch that
   * times the calls (milliseconds).
   */
  constructor(
    private readonly root: string,
    private readonly slowCallMs = SLOW_CALL_MS,
    private readonly now: () => number = Date.now,
    private readonly stopwatch: () => number = () => performance.now(),
  ) {}

  /** How long the calls go through the pool from now on (0 when they are synchronous). */
  get pausedFor(): number {
    return Math.max(0, this.pausedUntil - this.now());
  }

  /** Whether the storage root is on a local filesystem (read once). */
  async isLocal(): Promise<boolean> {
    if (this.local === undefined) this.local = await (this.localCheck ??= isLocalFilesystem(this.root));
    return this.local;
  }

  /**
   * Whether the next call may be synchronous: on a local filesystem, no slow call lately, and not `large` (a call that
   * frees a large file's data, which takes the kernel time in proportion to its size: see the module comment).
   */
  private async quick(large = false): Promise<boolean> {
    if (!(this.local ?? (await this.isLocal()))) return false;
    if (large || this.now() < this.pausedUntil) {
      this.poolCalls++;
      return false;
    }
    return true;
  }

  /** Run a synchronous call, timed: a slow one pauses the synchronous calls (see above). */
  private timed<T>(fn: () => T): T {
    const started = this.stopwatch();
    try {
      return fn();
    } finally {
      this.took(this.stopwatch() - started);
    }
  }

  /** Account for a synchronous call that took `ms`: too slow, or too much in the last second, pauses them. */
  private took(ms: number): void {
    if (ms > this.slowCallMs) return this.pause();
    const now = this.now();
    if (now - this.busySince >= 1_000) {
      this.busySince = now;
      this.busyMs = 0;
    }
    this.busyMs += ms;
    if (this.busyMs > BUSY_MS_PER_SECOND) this.pause();
  }

  /** Through the pool for a while, longer when the calls were slow again right after the last pause. */
  private pause(): void {
    const now = this.now();
    const again = now < this.pausedUntil + FIRST_PAUSE_MS;
    this.pauseMs = again ? Math.min(this.pauseMs * 2, MAX_PAUSE_MS) : FIRST_PAUSE_MS;
    this.pausedUntil = now + this.pauseMs;
    this.busySince = now + this.pauseMs;
    this.busyMs = 0;
  }

  async stat(path: string): Promise<Stats> {
    if (await this.quick()) return this.timed(() => statSync(path));
    return call<Stats>((done) => stat(path, done));
  }

  /** The stat of `path`, or undefined when nothing is there (other errors are thrown). */
  async statIfExists(path: string): Promise<Stats | undefined> {
    if (await this.quick()) return this.timed(() => statSync(path, { throwIfNoEntry: false }));
    try {
      return await call<Stats>((done) => stat(path, done));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  /** mkdir(2) of one level (never recursive: see makeDirectory in filesystem.ts). */
  async mkdir(path: string): Promise<void> {
    if (await this.quick()) return void this.timed(() => mkdirSync(path));
    await call((done) => mkdir(path, done));
  }

  /**
   * With `large`, through the pool whatever happens: a rename that may replace a large file, whose data the kernel
   * frees before the call returns (about 24 ms for 200 MB here, 70 ms under strace).
   */
  async rename(from: string, to: string, large = false): Promise<void> {
    if (await this.quick(large)) return this.timed(() => renameSync(from, to));
    await call((done) => rename(from, to, done));
  }

  /**
   * With `large`, through the pool whatever happens: a file that may be large, whose data the kernel frees before the
   * call returns (about 70 ms for 200 MB just written, here).
   */
  async unlink(path: string, large = false): Promise<void> {
    if (await this.quick(large)) return this.timed(() => unlinkSync(path));
    await call((done) => unlink(path, done));
  }

  async rmdir(path: string): Promise<void> {
    if (await this.quick()) return this.timed(() => rmdirSync(path));
    await call((done) => rmdir(path, done));
  }

  /**
   * Create `path` exclusively (EEXIST when something is there) and write `content` into it; with `flush`, fsync it
   * (always on the pool) before it is closed. A failure after the create removes the file again, so that only a
   * whole file is ever left. Large contents go through the pool.
   */
  async writeFile(path: string, content: Uint8Array | string, flush: boolean): Promise<void> {
    const bytes = typeof content === 'string' ? Buffer.from(content) : content;
    const quick = bytes.byteLength <= SMALL_WRITE_MAX && (await this.quick());
    if (!quick) {
      const handle = await openHandle(path, 'wx');
      try {
        try {
          await handle.writeFile(bytes);
          if (flush) await handle.sync();
        } finally {
          await handle.close();
        }
      } catch (err) {
        await this.unlink(path).catch(() => {});
        throw err;
      }
      return;
    }
    const fd = this.timed(() => openSync(path, 'wx'));
    try {
      try {
        this.timed(() => {
          for (let done = 0; done < bytes.byteLength; ) done += writeSync(fd, bytes, done, bytes.byteLength - done);
        });
        if (flush) await call((done) => fsync(fd, done));
      } finally {
        this.timed(() => closeSync(fd));
      }
    } catch (err) {
      await this.unlink(path).catch(() => {});
      throw err;
    }
  }
}
