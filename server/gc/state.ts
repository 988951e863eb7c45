/**
 * The garbage collector's shared state: its lock and the live set the servers record while the lock is held.
 *
 * Both sit behind small interfaces (`GcLock`, `LockProbe`, `LiveSet`) so a Redis implementation can replace the
 * storage one. The storage implementation keeps everything under a Wharf-only folder that registry:2 never reads
 * (it only walks `blobs/` and `repositories/`): `_wharf/gc/` (the lock, live markers, trash and metrics; their
 * paths are in server/registry/layout.ts).
 *
 * See ./worker.ts for the protocol these pieces implement.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { PathNotFoundError, type StorageDriver, ifExists } from '../../storage-drivers/driver.js';
import { GC_LIVE_ROOT, GC_LOCK_PATH, gcLiveBlobPath, gcLiveBlobsDir, gcLiveRepositoryPath } from '../registry/layout.js';
import { tryParseDigest } from '../registry/reference.js';
import { forEachLimited } from '../registry/scan.js';

/**
 * How often a server re-reads the lock. The worker waits LOCK_PROPAGATION_MS after taking the lock before it marks,
 * so every server has seen the lock (and records) before the first thing is read for marking.
 */
export const LOCK_POLL_MS = 1_000;
/** Longest a server may act on a lock state it read earlier: after this it treats the lock as held. */
export const LOCK_STALE_MS = 3 * LOCK_POLL_MS;
/** The worker's wait between taking the lock and marking: longer than any server's view of "no lock" can be old. */
export const LOCK_PROPAGATION_MS = LOCK_STALE_MS + 2_000;

export interface LockInfo {
  /** Random token of the holder; only the holder renews or releases. */
  owner: string;
  runId: string;
  host: string;
  pid: number;
  acquiredAt: string;
  expiresAt: string;
  /**
   * 'redis' when the run holds its lock in Redis: the lock object in storage is then only a marker, so that a
   * server without Redis configured sees a collection running and refuses writes it cannot record (./redis-state.ts).
   */
  backend?: 'redis';
}

export class LockBusyError extends Error {
  constructor(readonly holder: LockInfo) {
    super(`another garbage collection holds the lock (run ${holder.runId} on ${holder.host}, pid ${holder.pid}, expires ${holder.expiresAt})`);
    this.name = 'LockBusyError';
  }
}

export class LockLostError extends Error {
  constructor(message = 'the garbage-collection lock was lost (expired or taken by another run)') {
    super(message);
    this.name = 'LockLostError';
  }
}

/** Held by the worker for a whole run. */
export interface GcLock {
  /** Take the lock or throw LockBusyError. */
  acquire(): Promise<LockInfo>;
  /** Throw LockLostError unless we still hold an unexpired lock; extend it when it is past a third of its life. */
  verify(): Promise<void>;
  release(): Promise<void>;
}

/** What a server asks: is a collection running now? */
export interface LockProbe {
  /** The unexpired lock, or undefined when none is held. */
  current(): Promise<LockInfo | undefined>;
  /**
   * After a `current()` that found no lock: the id of a run that ended without forgetting what it deleted in the
   * shared (Redis) descriptor cache (it died, lost Redis, or ran without Redis), so that cache must be emptied before
   * it is used again. Undefined when there is none (always, for the storage probe: see ./redis-state.ts).
   */
  uncleanRun?(): string | undefined;
}

/** Digests (and repositories) the servers used while a lock was held. */
export interface LiveSet {
  record(repository: string, digests: string[]): Promise<void>;
  has(digest: string): Promise<boolean>;
  /** Which of `digests` are recorded: one round trip (or a few) for a whole batch, for the sweeper. */
  recorded(digests: string[]): Promise<Set<string>>;
  hasRepository(repository: string): Promise<boolean>;
  /** Forget records older than `before` (they belong to earlier runs). */
  prune(before: Date): Promise<void>;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function parseLock(raw: Buffer | undefined): LockInfo | undefined {
  if (!raw) return undefined;
  try {
    const info = JSON.parse(raw.toString('utf8')) as LockInfo;
    return typeof info.owner === 'string' && typeof info.expiresAt === 'string' ? info : undefined;
  } catch {
    return undefined;
  }
}

function unexpired(info: LockInfo | undefined, now = Date.now()): LockInfo | undefined {
  return info && new Date(info.expiresAt).getTime() > now ? info : undefined;
}

export class StorageLockProbe implements LockProbe {
  constructor(protected readonly driver: StorageDriver) {}

  async current(): Promise<LockInfo | undefined> {
    return unexpired(parseLock(await ifExists(this.driver.getContent(GC_LOCK_PATH))));
  }
}

export interface StorageLockOptions {
  /** Lock lifetime; renewed while the run goes on (default 10 minutes). */
  ttlMs?: number;
  /** Wait between writing the lock and reading it back (default 1s): two racing writers, one survives. */
  settleMs?: number;
}

/**
 * A lock object in storage. Storage drivers offer no compare-and-swap, so taking it is: read (free or expired),
 * write our token, wait `settleMs`, read back; only the last writer finds its own token. The holder re-reads the lock
 * before every batch of deletes (`verify`) and stops when it is not its own. With Redis, SET NX PX makes this strict.
 */
export class StorageGcLock extends StorageLockProbe implements GcLock {
  private mine?: LockInfo;
  private readonly ttlMs: number;
  private readonly settleMs: number;

  constructor(driver: StorageDriver, options: StorageLockOptions = {}) {
    super(driver);
    this.ttlMs = options.ttlMs ?? 10 * 60_000;
    this.settleMs = options.settleMs ?? 1_000;
  }

  private fresh(base: Omit<LockInfo, 'expiresAt'>): LockInfo {
    return { ...base, expiresAt: new Date(Date.now() + this.ttlMs).toISOString() };
  }

  async acquire(): Promise<LockInfo> {
    const held = await this.current();
    // A holder on this very host whose process is gone crashed: its lock need not wait for expiry.
    if (held && !(held.host === hostname() && !processAlive(held.pid))) throw new LockBusyError(held);
    const info = this.fresh({
      owner: randomUUID(),
      runId: `${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*$/, '')}-${randomUUID().slice(0, 8)}`,
      host: hostname(),
      pid: process.pid,
      acquiredAt: new Date().toISOString(),
    });
    await this.driver.putContent(GC_LOCK_PATH, JSON.stringify(info));
    await new Promise((r) => setTimeout(r, this.settleMs));
    const now = await this.current();
    if (!now || now.owner !== info.owner) throw new LockBusyError(now ?? info);
    this.mine = info;
    return info;
  }

  async verify(): Promise<void> {
    if (!this.mine) throw new LockLostError('the garbage-collection lock is not held');
    const now = await this.current();
    if (!now || now.owner !== this.mine.owner) throw new LockLostError();
    const left = new Date(now.expiresAt).getTime() - Date.now();
    if (left < (this.ttlMs * 2) / 3) {
      this.mine = this.fresh(this.mine);
      await this.driver.putContent(GC_LOCK_PATH, JSON.stringify(this.mine));
    }
  }

  async release(): Promise<void> {
    if (!this.mine) return;
    const now = parseLock(await ifExists(this.driver.getContent(GC_LOCK_PATH)));
    if (now?.owner === this.mine.owner) await ifExists(this.driver.delete(GC_LOCK_PATH));
    this.mine = undefined;
  }
}

function blobMarker(digest: string): string | undefined {
  const d = tryParseDigest(digest);
  return d ? gcLiveBlobPath(d) : undefined;
}

/** The live set as small marker files in storage, so every replica and the worker see it. */
export class StorageLiveSet implements LiveSet {
  constructor(private readonly driver: StorageDriver) {}

  async record(repository: string, digests: string[]): Promise<void> {
    const writes = [...new Set(digests)].map((d) => {
      const path = blobMarker(d);
      return path ? this.driver.putContent(path, d) : Promise.resolve();
    });
    writes.push(this.driver.putContent(gcLiveRepositoryPath(repository), repository));
    await Promise.all(writes);
  }

  async has(digest: string): Promise<boolean> {
    const path = blobMarker(digest);
    return path !== undefined && (await ifExists(this.driver.stat(path))) !== undefined;
  }

  /** One listing of `live/blobs/<alg>` per algorithm in the batch, not a stat per digest. */
  async recorded(digests: string[]): Promise<Set<string>> {
    const found = new Set<string>();
    const byAlgorithm = new Map<string, string[]>();
    for (const digest of new Set(digests)) {
      const d = tryParseDigest(digest);
      if (!d) continue;
      const list = byAlgorithm.get(d.algorithm) ?? [];
      list.push(digest);
      byAlgorithm.set(d.algorithm, list);
    }
    for (const [algorithm, wanted] of byAlgorithm) {
      const folder = gcLiveBlobsDir(algorithm);
      const markers = new Set(((await ifExists(this.driver.list(folder))) ?? []).map((p) => p.slice(folder.length + 1)));
      for (const digest of wanted) if (markers.has(digest.slice(algorithm.length + 1))) found.add(digest);
    }
    return found;
  }

  async hasRepository(repository: string): Promise<boolean> {
    return (await ifExists(this.driver.stat(gcLiveRepositoryPath(repository)))) !== undefined;
  }

  /** Delete the old markers, then the folders that left empty (rmdir-style, so a server's new marker survives). */
  async prune(before: Date): Promise<void> {
    const old: string[] = [];
    const folders: string[] = [];
    try {
      for await (const info of this.driver.walk(GC_LIVE_ROOT)) {
        if (info.isDir) folders.push(info.path);
        else if (info.modTime.getTime() < before.getTime()) old.push(info.path);
        if (old.length >= 1000) await this.deleteAll(old.splice(0));
      }
    } catch (err) {
      if (!(err instanceof PathNotFoundError)) throw err;
    }
    await this.deleteAll(old);
    // Walk order puts a folder before its contents; the reverse, after them.
    for (const folder of folders.reverse()) await this.driver.removeEmptyDirectory?.(folder);
  }

  private async deleteAll(paths: string[]): Promise<void> {
    await forEachLimited(paths, 8, (p) => ifExists(this.driver.delete(p)));
  }
}
