/**
 * The behaviour every blob-descriptor cache shows, run against each implementation (as `testing/storage-suite.ts`
 * is for drivers): `cacheSuite('redis', async () => ({ cache, cleanup }))`. Each test gets a fresh, empty cache.
 * `second`, which the factory of a shared cache (`{ shared: true }`) must offer, is another handle on the same cache
 * (another replica); the tests about sharing are registered for shared caches only.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import type { DescriptorCache } from '../server/cache/cache.js';

export type CacheFactory = (options?: { tombstoneMs?: number }) => Promise<{
  cache: DescriptorCache;
  /** Another process's view of the same cache, for shared implementations. */
  second?: () => Promise<DescriptorCache>;
  cleanup(): Promise<void>;
}>;

const digest = () => `sha256:${randomBytes(32).toString('hex')}`;

type Body = (t: ExecutionContext, cache: DescriptorCache, second?: () => Promise<DescriptorCache>) => Promise<void>;

export function cacheSuite(name: string, factory: CacheFactory, kind: { shared: boolean } = { shared: false }): void {
  const it = (title: string, fn: Body, options?: { tombstoneMs?: number }) =>
    test(`${name} cache: ${title}`, async (t) => {
      const { cache, second, cleanup } = await factory(options);
      t.teardown(cleanup);
      t.true(cache.healthy(), 'a fresh cache is healthy');
      if (kind.shared) t.truthy(second, 'a shared cache offers a second view');
      await fn(t, cache, second);
    });
  const itShared = kind.shared ? it : () => {};

  it('an unknown digest is a miss, never an error', async (t, cache) => {
    const d = digest();
    t.is(await cache.stat(d), undefined, 'unknown digest misses');
    t.false(await cache.isLinked('library/app', d), 'unknown membership is "ask storage"');
  });

  it('remembers size and media type by digest', async (t, cache) => {
    const a = digest();
    const b = digest();
    await cache.set(a, { size: 1234, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' });
    await cache.set(b, { size: 0 });
    t.deepEqual(await cache.stat(a), { size: 1234, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' });
    t.deepEqual(await cache.stat(b), { size: 0 });
    // Sizes past 2^32 survive (a 100 GiB layer).
    await cache.set(b, { size: 100 * 2 ** 30 });
    t.deepEqual(await cache.stat(b), { size: 100 * 2 ** 30 });
  });

  it('membership is per repository', async (t, cache) => {
    const d = digest();
    await cache.setLinked('team/a', d);
    t.true(await cache.isLinked('team/a', d), 'linked repository');
    t.false(await cache.isLinked('team/b', d), 'another repository is not told it links the blob');
    t.false(await cache.isLinked('team/a', digest()), 'another digest is not linked');
    t.is(await cache.stat(d), undefined, 'membership alone says nothing about size');
  });

  it('forget drops the descriptor and every membership of a digest, and leaves others alone', async (t, cache) => {
    const d = digest();
    const other = digest();
    await cache.set(d, { size: 10 });
    await cache.setLinked('r1', d);
    await cache.setLinked('r2', d);
    await cache.set(other, { size: 20 });
    await cache.setLinked('r1', other);
    await cache.forget(d);
    t.is(await cache.stat(d), undefined, 'descriptor forgotten');
    t.false(await cache.isLinked('r1', d), 'membership in r1 forgotten');
    t.false(await cache.isLinked('r2', d), 'membership in r2 forgotten');
    t.deepEqual(await cache.stat(other), { size: 20 });
    t.true(await cache.isLinked('r1', other), 'other digest untouched');
  });

  it('forgetLink drops one membership only', async (t, cache) => {
    const d = digest();
    await cache.set(d, { size: 10 });
    await cache.setLinked('r1', d);
    await cache.setLinked('r2', d);
    await cache.forgetLink('r1', d);
    t.false(await cache.isLinked('r1', d), 'unlinked repository forgotten');
    t.true(await cache.isLinked('r2', d), 'other repository still linked');
    t.deepEqual(await cache.stat(d), { size: 10 });
    await t.notThrowsAsync(cache.forgetLink('never-linked', digest()), 'forgetting nothing is fine');
  });

  it('a write racing with an invalidation cannot bring the old fact back (tombstone)', async (t, cache) => {
    const d = digest();
    await cache.set(d, { size: 10 });
    await cache.setLinked('r', d);
    // A reader looked at storage before the delete and writes what it saw after it:
    await cache.forget(d);
    await cache.set(d, { size: 10 });
    await cache.setLinked('r', d);
    t.is(await cache.stat(d), undefined, 'descriptor not re-cached inside the tombstone window');
    t.false(await cache.isLinked('r', d), 'membership not re-cached inside the tombstone window');
    const e = digest();
    await cache.setLinked('r', e);
    await cache.forgetLink('r', e);
    await cache.setLinked('r', e);
    t.false(await cache.isLinked('r', e), 'membership not re-cached after forgetLink');
  });

  it('a digest can be cached again once its tombstone has expired', async (t, cache) => {
    const d = digest();
    await cache.forget(d);
    // tombstoneMs is 1 here: wait on the condition (the tombstone gone), not on a clock.
    for (let i = 0; ; i++) {
      await cache.set(d, { size: 5 });
      if ((await cache.stat(d)) !== undefined) break;
      if (i > 2000) throw new Error('the tombstone never expired');
      await new Promise((r) => setTimeout(r, 5));
    }
    t.deepEqual(await cache.stat(d), { size: 5 });
  }, { tombstoneMs: 1 });

  itShared('shared caches: what one replica caches and forgets, the other sees at once', async (t, cache, second) => {
    const other = await second!();
    try {
      const d = digest();
      await cache.set(d, { size: 42 });
      await cache.setLinked('shared/repo', d);
      t.deepEqual(await other.stat(d), { size: 42 });
      t.true(await other.isLinked('shared/repo', d), 'membership shared');
      await other.forgetLink('shared/repo', d);
      t.false(await cache.isLinked('shared/repo', d), 'unlink on one replica is seen by the other');
      await other.forget(d);
      t.is(await cache.stat(d), undefined, 'forget on one replica is seen by the other');
    } finally {
      await other.close();
    }
  });

  it('clear forgets everything, for every view of a shared cache', async (t, cache, second) => {
    const d = digest();
    await cache.set(d, { size: 1 });
    await cache.setLinked('r', d);
    const other = second ? await second() : undefined;
    try {
      await cache.clear();
      t.is(await cache.stat(d), undefined, 'descriptor cleared');
      t.false(await cache.isLinked('r', d), 'membership cleared');
      if (other) t.is(await other.stat(d), undefined, 'cleared for the other replica too');
      await cache.set(d, { size: 1 });
      t.deepEqual(await cache.stat(d), { size: 1 });
    } finally {
      await other?.close();
    }
  });

  it('repository names and digests with unusual characters are kept apart', async (t, cache) => {
    const d = digest();
    await cache.setLinked('a/b', d);
    await cache.setLinked('a-b.c_d/e', d);
    t.true(await cache.isLinked('a/b', d), 'a/b');
    t.true(await cache.isLinked('a-b.c_d/e', d), 'a-b.c_d/e');
    t.false(await cache.isLinked('a', d), 'a prefix of a name is another name');
    const sha512 = `sha512:${randomBytes(64).toString('hex')}`;
    await cache.set(sha512, { size: 7 });
    t.deepEqual(await cache.stat(sha512), { size: 7 });
  });
}
