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
