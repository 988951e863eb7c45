/**
 * The server's half of the garbage-collection protocol (see ./worker.ts): watch the GC lock, and while it is held
 *   - record every digest the server links, mounts or a pushed manifest references, before the link is written;
 *   - keep the blob-descriptor cache unused (an in-memory one also emptied), so no "exists" answer comes from a
 *     cache while blobs may be deleted (see "Caches" below).
 * The lock is re-read every LOCK_POLL_MS. When the last successful read is older than LOCK_STALE_MS (storage slow
 * or failing, event loop stalled) the server assumes a lock is held: it records and bypasses the cache.
 *
 * Lock and live set are in Redis when it is configured, else in storage (./redis-state.ts, ./state.ts). A server
 * without Redis that sees the storage marker of a worker using Redis refuses every write it would have to record
 * (503 UNAVAILABLE): its records would go where that worker does not look.
 *
 * Caches, and why no replica answers "exists" for a blob a collection deleted:
 *   - a collection deletes only while its lock exists; while this server sees it (or cannot tell), its descriptor
 *     cache answers nothing and takes nothing in (the gate), so no answer comes from any cache during a run;
 *   - a per-process (in-memory) cache is out of the worker's reach: it is emptied whenever the gate opens again, and
 *     a storage read begun while the gate was closed is never cached after it opens (`GatedDescriptorCache.reset`);
 *   - a shared (Redis) cache is not emptied: the worker forgets every digest and link it deletes there (`forget`,
 *     `forgetLink`, with a tombstone against racing writes) before it releases the lock, so when the gate opens the
 *     cache no longer holds any fact the run made false, and everything else in it is still true. Emptying it on every
 *     replica at every run would throw away the whole shared cache for nothing. A run that could not do that (it
 *     died, lost Redis, an invalidation failed, or it ran without Redis) is reported by the probe (`uncleanRun`):
 *     the shared cache is then emptied, a new generation for every replica, before this server's gate opens.
 */
import type { StorageDriver } from '../../storage-drivers/driver.js';
import type { GatedDescriptorCache } from '../cache/index.js';
import { RegistryError } from '../registry/errors.js';
import { LOCK_POLL_MS, LOCK_STALE_MS, StorageLiveSet, StorageLockProbe, type LiveSet, type LockInfo, type LockProbe } from './state.js';

export interface RecorderOptions {
  probe?: LockProbe;
  liveSet?: LiveSet;
  pollMs?: number;
  staleMs?: number;
  /** The live set is in Redis (./redis-state.ts). Without it, a collection whose lock is in Redis makes writes fail. */
  redis?: boolean;
  /** Called when a check fails (for logging). */
  onError?: (err: unknown) => void;
}

export class GcRecorder {
  private readonly probe: LockProbe;
  private readonly liveSet: LiveSet;
  private readonly pollMs: number;
  private readonly staleMs: number;
  private held = false;
  /** The lock seen by the last successful read. */
  private lock?: LockInfo;
  /** The last unfinished run after which the shared caches were emptied. */
  private cleanedAfter?: string;
  private checkedAt = 0;
  private timer?: NodeJS.Timeout;
  private inflight?: Promise<void>;
  /** A read queued behind `inflight`, for callers that need a read begun after their call. */
  private queued?: Promise<void>;
  private readonly caches: GatedDescriptorCache[] = [];

  constructor(driver: StorageDriver, private readonly options: RecorderOptions = {}) {
    this.probe = options.probe ?? new StorageLockProbe(driver);
    this.liveSet = options.liveSet ?? new StorageLiveSet(driver);
    this.pollMs = options.pollMs ?? LOCK_POLL_MS;
    this.staleMs = options.staleMs ?? LOCK_STALE_MS;
  }

  /** Gate this descriptor cache on the lock: unused and empty while a collection may be deleting. */
  guard(cache: GatedDescriptorCache): void {
    this.caches.push(cache);
    cache.setGate(() => this.cacheUsable());
  }

  /** Start polling the lock; resolves after the first check. */
  async start(): Promise<void> {
    await this.check();
    const tick = () => {
      this.timer = setTimeout(() => void this.check().finally(tick), this.pollMs);
      this.timer.unref();
    };
    tick();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /**
   * Re-read the lock: resolves after a read that began after this call (one read at a time). A read already under
   * way may have begun before the caller changed the lock, so it is waited for and then followed by a new read (or
   * by joining one that began after it).
   */
  check(): Promise<void> {
    if (!this.inflight) {
      this.inflight = this.read().finally(() => {
        this.inflight = undefined;
      });
      return this.inflight;
    }
    this.queued ??= this.inflight.then(() => {
      this.queued = undefined;
      return this.check();
    });
    return this.queued;
  }

  private async read(): Promise<void> {
    try {
      const lock = await this.probe.current();
      const unclean = lock ? undefined : this.probe.uncleanRun?.();
      if (unclean !== undefined && unclean !== this.cleanedAfter) {
        // Before this server answers from a shared cache again (see the header). Never rejects: a Redis cache that
        // cannot be reached starts a new generation before it answers anyway.
        await Promise.all(this.caches.filter((c) => c.backend === 'redis').map((c) => c.clear()));
        this.cleanedAfter = unclean;
      }
      const wasClosed = this.mayBeCollecting();
      this.lock = lock;
      this.held = lock !== undefined;
      this.checkedAt = Date.now();
      // The gate opens again (see the header). Emptying on close too frees memory nobody reads meanwhile.
      if (wasClosed !== this.mayBeCollecting()) for (const cache of this.caches) cache.reset();
    } catch (err) {
      this.options.onError?.(err);
    }
  }

  private fresh(): boolean {
    return Date.now() - this.checkedAt <= this.staleMs;
  }

  /** Whether a collection may be running: a lock was seen, or our knowledge is too old to say it is not. */
  mayBeCollecting(): boolean {
    return this.held || !this.fresh();
  }

  cacheUsable(): boolean {
    return !this.mayBeCollecting();
  }

  /**
   * Record digests about to be linked or referenced in `repository`. Call before writing the link: the sweeper
   * re-checks this record after moving a file aside, so a record written first always wins.
   */
  async record(repository: string, digests: string[]): Promise<void> {
    if (!this.fresh()) await this.check();
    if (!this.mayBeCollecting()) return;
    if (this.lock?.backend === 'redis' && !this.options.redis) {
      throw new RegistryError('UNAVAILABLE', 'a garbage collection using redis is running and this server has no redis configured; writes are refused until it ends', {
        detail: { run: this.lock.runId },
      });
    }
    await this.liveSet.record(repository, digests);
  }
}
