/**
 * The blob-descriptor cache as configured (`storage.cache.blobdescriptor`), for the server and for any separate
 * process (the garbage collector) that must reach the same cache to invalidate it:
 *
 *   const cache = await createDescriptorCache(config, { logger });   // undefined when no cache is configured
 *   await cache?.forget(digest);                                     // before/after deleting the blob's bytes
 *   await cache?.close();
 */
import type { RedisConfig, WharfConfig } from '../config/index.js';
import type { DescriptorCache, CacheStatus, CachedDescriptor } from './cache.js';
import { InMemoryDescriptorCache } from './memory.js';
import { RedisDescriptorCache, type CacheLogger, type RedisCacheOptions, type RedisConnectionOptions } from './redis.js';

export { CacheUnavailableError, type CacheStatus, type CachedDescriptor, type DescriptorCache } from './cache.js';
export { InMemoryDescriptorCache } from './memory.js';
export { RedisDescriptorCache, type CacheLogger } from './redis.js';

/** Connection options for the configured Redis (for the cache and any later Redis user). */
export function redisConnectionOptions(redis: RedisConfig): RedisConnectionOptions {
  const out: RedisConnectionOptions = {
    tls: { ...redis.tls },
    dialTimeoutMs: redis.dialtimeout,
    commandTimeoutMs: Math.max(redis.readtimeout, redis.writetimeout),
  };
  if (redis.url !== undefined) out.url = redis.url;
  if (redis.addr !== undefined) out.addr = redis.addr;
  if (redis.username !== undefined) out.username = redis.username;
  if (redis.password !== undefined) out.password = redis.password;
  if (redis.db !== undefined) out.db = redis.db;
  return out;
}

export interface CreateCacheOptions {
  logger?: CacheLogger;
  /** Extra Redis cache options (key prefix, timeouts) — tests use these. */
  redis?: Partial<RedisCacheOptions>;
}

/**
 * The configured blob-descriptor cache, or undefined when none is configured. A Redis cache has made its first
 * connection attempt when this resolves; if Redis is down it is returned anyway (switched off until Redis is back).
 */
export async function createDescriptorCache(config: WharfConfig, options: CreateCacheOptions = {}): Promise<DescriptorCache | undefined> {
  const kind = config.storage.cache.blobdescriptor;
  if (kind === 'inmemory') return new InMemoryDescriptorCache({ maxEntries: config.storage.cache.blobdescriptorsize });
  if (kind !== 'redis') return undefined;
  if (!config.redis) throw new Error('storage.cache.blobdescriptor: redis needs redis.addr or redis.url');
  const cache = new RedisDescriptorCache({ ...redisConnectionOptions(config.redis), logger: options.logger, ...options.redis });
  await cache.connect();
  return cache;
}

/**
 * A cache that a gate can switch off (the garbage collector's recorder does while a collection may be deleting):
 * while closed, reads miss and writes are skipped; invalidations always go through. Writes may carry a `ticket()`
 * taken before the storage read they report: they are skipped when the gate was reset since (server/gc/recorder.ts
 * says why).
 */
export class GatedDescriptorCache implements DescriptorCache {
  private gate: () => boolean = () => true;
  private generation = 0;

  constructor(readonly inner: DescriptorCache) {}

  get backend(): CacheStatus['backend'] {
    return this.inner.backend;
  }

  setGate(gate: () => boolean): void {
    this.gate = gate;
  }

  stat(digest: string): Promise<CachedDescriptor | undefined> {
    return this.gate() ? this.inner.stat(digest) : Promise.resolve(undefined);
  }

  /** Take before reading storage; pass to `set`/`setLinked` with what the read found. */
  ticket(): number {
    return this.generation;
  }
  private open(ticket?: number): boolean {
    return this.gate() && (ticket === undefined || ticket === this.generation);
  }
  async set(digest: string, descriptor: CachedDescriptor, ticket?: number): Promise<void> {
    if (this.open(ticket)) await this.inner.set(digest, descriptor);
  }

  async isLinked(repository: string, digest: string): Promise<boolean> {
    return this.gate() ? this.inner.isLinked(repository, digest) : false;
  }

  async setLinked(repository: string, digest: string, ticket?: number): Promise<void> {
    if (this.open(ticket)) await this.inner.setLinked(repository, digest);
  }

  forget(digest: string): Promise<void> {
    return this.inner.forget(digest);
  }

  forgetLink(repository: string, digest: string): Promise<void> {
    return this.inner.forgetLink(repository, digest);
  }

  /** Never rejects; usable without awaiting. */
  clear(): Promise<void> {
    return this.inner.clear().catch(() => {});
  }
  /**
   * The gate opened or closed: writes holding an older ticket are refused from now on, and a per-process cache is
   * emptied (nothing else can tell it what a collection deleted). A shared cache is left alone: the collector itself
   * forgets there what it deletes.
   */
  reset(): void {
    this.generation++;
    if (this.inner.backend === 'inmemory') void this.clear();
  }

  healthy(): boolean {
    return this.inner.healthy();
  }

  status(): CacheStatus {
    return this.inner.status();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
