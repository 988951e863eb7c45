/**
 * Bounded caches of entries counted one by one. lru-cache's `max` allocates every slot when the cache is made (an
 * array of keys, one of values and three index arrays: about 28 bytes per entry, 2.8 MB for 100,000) whether or not
 * an entry ever comes, in every process. Counting each entry as 1 against `maxSize` evicts the same way, least
 * recently used first, and takes memory only for the entries held.
 */
import { LRUCache } from 'lru-cache';

/** Options of lru-cache other than the bound, which `entries` sets (`ttl`, `updateAgeOnGet`, ...). */
export type LruOptions<K extends {}, V extends {}> = Omit<LRUCache.Options<K, V, unknown>, 'max' | 'maxSize' | 'sizeCalculation'>;

/** An LRUCache of at most `entries` entries that allocates as entries come. */
export function lruOfEntries<K extends {}, V extends {}>(entries: number, options: LruOptions<K, V> = {}): LRUCache<K, V> {
  return new LRUCache<K, V>({ ...options, maxSize: entries, sizeCalculation: () => 1 });
}
