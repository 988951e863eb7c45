/**
 * The blob-descriptor cache of one process (`storage.cache.blobdescriptor: inmemory`): a bounded LRU map by digest.
 * Each entry holds the descriptor (when known) and the repositories known to link the digest.
 */
import type { LRUCache } from 'lru-cache';
import { lruOfEntries } from '../lru.js';
import { DEFAULT_TOMBSTONE_MS, type CacheStatus, type CachedDescriptor, type DescriptorCache } from './cache.js';

interface Entry {
  descriptor?: CachedDescriptor;
  repositories: Set<string>;
}

export interface InMemoryCacheOptions {
  /** Most digests kept (least recently used dropped first); 0 means no limit. Default 10000. */
  maxEntries?: number;
  tombstoneMs?: number;
}

export class InMemoryDescriptorCache implements DescriptorCache {
  readonly backend = 'inmemory' as const;
  /** By digest; reads (`get`) make an entry the most recently used. */
  private readonly entries: LRUCache<string, Entry>;
  /** digest → time (ms) until which it may not be cached again. */
  private readonly tombstones = new Map<string, number>();
  private readonly tombstoneMs: number;
  private readonly since = Date.now();

  constructor(options: InMemoryCacheOptions = {}) {
    const maxEntries = options.maxEntries ?? 10_000;
    // "No limit" is a total no process reaches.
    this.entries = lruOfEntries(maxEntries > 0 ? maxEntries : Number.MAX_SAFE_INTEGER);
    this.tombstoneMs = options.tombstoneMs ?? DEFAULT_TOMBSTONE_MS;
  }

  async stat(digest: string): Promise<CachedDescriptor | undefined> {
    const descriptor = this.entries.get(digest)?.descriptor;
    return descriptor && { ...descriptor };
  }

  async set(digest: string, descriptor: CachedDescriptor): Promise<void> {
    const entry = this.entryFor(digest);
    if (entry) entry.descriptor = { ...descriptor };
  }

  async isLinked(repository: string, digest: string): Promise<boolean> {
    return this.entries.get(digest)?.repositories.has(repository) ?? false;
  }

  async setLinked(repository: string, digest: string): Promise<void> {
    this.entryFor(digest)?.repositories.add(repository);
  }

  async forget(digest: string): Promise<void> {
    this.bury(digest);
    this.entries.delete(digest);
  }

  async forgetLink(repository: string, digest: string): Promise<void> {
    this.bury(digest);
    this.entries.peek(digest)?.repositories.delete(repository);
  }

  async clear(): Promise<void> {
    this.entries.clear();
  }

  healthy(): boolean {
    return true;
  }

  status(): CacheStatus {
    return { backend: this.backend, healthy: true, since: this.since };
  }

  async close(): Promise<void> {
    this.entries.clear();
  }

  /** Number of digests held (for tests and metrics). */
  get size(): number {
    return this.entries.size;
  }

  /** The entry to write into, created if needed; undefined while a tombstone forbids caching the digest. */
  private entryFor(digest: string): Entry | undefined {
    const until = this.tombstones.get(digest);
    if (until !== undefined) {
      if (Date.now() < until) return undefined;
      this.tombstones.delete(digest);
    }
    let entry = this.entries.get(digest);
    if (!entry) {
      entry = { repositories: new Set() };
      this.entries.set(digest, entry);
    }
    return entry;
  }

  private bury(digest: string): void {
    const now = Date.now();
    // Drop expired tombstones now and then so a long-running process does not collect them.
    if (this.tombstones.size > 1000) for (const [d, until] of this.tombstones) if (until <= now) this.tombstones.delete(d);
    this.tombstones.set(digest, now + this.tombstoneMs);
  }
}
