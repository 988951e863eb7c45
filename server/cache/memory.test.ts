/** The in-memory blob-descriptor cache against the shared cache suite, plus its bound. */
import test from 'ava';
import { InMemoryDescriptorCache } from './memory.js';
import { cacheSuite } from '../../testing/cache-suite.js';

cacheSuite('inmemory', async (options) => ({
  cache: new InMemoryDescriptorCache({ maxEntries: 100, ...options }),
  cleanup: async () => {},
}));

test('inmemory cache: keeps at most maxEntries digests, dropping the least recently used', async (t) => {
  const cache = new InMemoryDescriptorCache({ maxEntries: 2 });
  await cache.set('sha256:a', { size: 1 });
  await cache.set('sha256:b', { size: 2 });
  t.deepEqual(await cache.stat('sha256:a'), { size: 1 }); // a is now the most recently used
  await cache.set('sha256:c', { size: 3 });
  t.is(cache.size, 2);
  t.is(await cache.stat('sha256:b'), undefined, 'the least recently used entry went');
  t.deepEqual(await cache.stat('sha256:a'), { size: 1 });
  t.deepEqual(await cache.stat('sha256:c'), { size: 3 });
});

test('inmemory cache: takes memory as digests come, not for maxEntries slots up front', (t) => {
  // lru-cache with `max` would allocate every slot when made: about 280 KB per cache of 10,000.
  const before = process.memoryUsage();
  const made = Array.from({ length: 40 }, () => new InMemoryDescriptorCache({ maxEntries: 10_000 }));
  const after = process.memoryUsage();
  const grown = after.heapUsed + after.arrayBuffers - (before.heapUsed + before.arrayBuffers);
  t.true(grown < 4 * 1024 * 1024, `40 caches took ${(grown / 1048576).toFixed(1)} MB`);
  t.is(made.length, 40);
});
