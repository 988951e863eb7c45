/**
 * The blob-descriptor cache: what the registry knows about blobs without asking storage.
 *
 * Two facts are cached, both only ever positive (absence is never cached, so a blob pushed through another replica
 * is found at once):
 *   - digest → descriptor: the blob's bytes are in the content store, with this size (and media type, if known);
 *   - repository membership: repository R links digest D (`_layers/<alg>/<hex>/link` exists).
 * Blob content is immutable, so an entry can only go stale when something is deleted: the garbage collector removing
 * a blob (`forget`), or a repository unlinking one (`forgetLink`). Both leave a short-lived tombstone so that a reader
 * that looked at storage just before the delete cannot put the old fact back just after it.
 *
 * Storage stays the truth: everything here can be lost at any moment (Nothing is stored only in the cache).
 *
 * Names: `DescriptorCache` is the interface, implemented per backing store by `InMemoryDescriptorCache` (one
 * process) and `RedisDescriptorCache` (shared by every replica and by the garbage collector); `testing/cache-suite.ts`
 * is the behaviour both pass. `GatedDescriptorCache` (index.ts) is either behind the garbage collector's gate, with
 * tickets for writes: what the registry holds.
 */

export interface CachedDescriptor {
  size: number;
  mediaType?: string;
}

/** Health as a future health endpoint (or an operator) sees it. */
export interface CacheStatus {
  backend: 'inmemory' | 'redis';
  /** False while the cache is bypassed (Redis unreachable, or not yet re-validated after an outage). */
  healthy: boolean;
  /** When the current state began (ms since the epoch). */
  since: number;
  /** The last error seen while unhealthy (no credentials in it). */
  lastError?: string;
}

export interface DescriptorCache {
  readonly backend: CacheStatus['backend'];
  /** The cached descriptor of `digest`'s bytes, or undefined when unknown (ask storage). Never throws. */
  stat(digest: string): Promise<CachedDescriptor | undefined>;
  /** Remember that `digest`'s bytes exist in the content store. Ignored inside a tombstone's window. Never throws. */
  set(digest: string, descriptor: CachedDescriptor): Promise<void>;
  /** True only when the cache knows `repository` links `digest`; false means "ask storage". Never throws. */
  isLinked(repository: string, digest: string): Promise<boolean>;
  /** Remember that `repository` links `digest`. Ignored inside a tombstone's window. Never throws. */
  setLinked(repository: string, digest: string): Promise<void>;
  /**
   * The blob's bytes are (about to be) deleted: drop its descriptor and every repository membership of it.
   * Rejects with `CacheUnavailableError` when the invalidation may not have reached the shared cache; the cache then
   * stops answering until it is reachable again and has started a new generation, so this process never serves what
   * it could not invalidate. A caller deleting content it cannot invalidate should know (the GC may stop).
   */
  forget(digest: string): Promise<void>;
  /** `repository` no longer links `digest`. Rejects like `forget`. */
  forgetLink(repository: string, digest: string): Promise<void>;
  /**
   * Forget everything (in Redis: start a new generation, for every replica). The garbage collector's recorder empties
   * in-memory caches with it when a collection starts or ends (never the shared Redis one: see server/gc/recorder.ts).
   * Never rejects; a failure switches the cache off as any other failure does.
   */
  clear(): Promise<void>;
  /** True while the cache is answering (always true in memory). */
  healthy(): boolean;
  status(): CacheStatus;
  /** Release connections and timers. */
  close(): Promise<void>;
}

/** An invalidation that could not be delivered; the cache has stopped answering until it can start afresh. */
export class CacheUnavailableError extends Error {
  override readonly name = 'CacheUnavailableError';
}

/** How long a tombstone blocks re-caching a digest after `forget`/`forgetLink` (ms). */
export const DEFAULT_TOMBSTONE_MS = 60_000;
