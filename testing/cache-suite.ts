/**
 * The behaviour every blob-descriptor cache shows, run against each implementation (as `testing/storage-suite.ts`
 * is for drivers): `cacheSuite('redis', async () => ({ cache, cleanup }))`. Each test gets a fresh, empty cache.
 * `second`, when the factory offers it, is another handle on the same shared cache (another replica).
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import type { BlobDescriptorCache } from '../server/cache/cache.js';

export type CacheFactory = (options?: { tombstoneMs?: number }) => Promise<{
  cache: BlobDescriptorCache;
  /** Another process's view of the same cache, for shared implementations. */
  second?: () => Promise<BlobDescriptorCache>;
  cleanup(): Promise<void>;
}>;

const digest = () => `sha256:${randomBytes(32).toString('hex')}`;

export function cacheSuite(name: string, factory: CacheFactory): void {
  const it = (title: string, fn: (cache: BlobDescriptorCache, second?: () => Promise<BlobDescriptorCache>) => Promise<void>, options?: { tombstoneMs?: number }) =>
    test(`${name} cache: ${title}`, async (t) => {
      const { cache, second, cleanup } = await factory(options);
      t.teardown(cleanup);
      t.true(cache.healthy(), 'a fresh cache is healthy');
      await fn(cache, second);
      t.pass();
    });

  it('an unknown digest is a miss, never an error', async (cache) => {
    const d = digest();
    assert((await cache.stat(d)) === undefined, 'unknown digest misses');
    assert((await cache.isLinked('library/app', d)) === false, 'unknown membership is "ask storage"');
  });

  it('remembers size and media type by digest', async (cache) => {
    const a = digest();
    const b = digest();
    await cache.set(a, { size: 1234, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' });
    await cache.set(b, { size: 0 });
    deepEqual(await cache.stat(a), { size: 1234, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' });
    deepEqual(await cache.stat(b), { size: 0 });
    // Sizes past 2^32 survive (a 100 GiB layer).
    await cache.set(b, { size: 100 * 2 ** 30 });
    deepEqual(await cache.stat(b), { size: 100 * 2 ** 30 });
  });

  it('membership is per repository', async (cache) => {
    const d = digest();
    await cache.setLinked('team/a', d);
    assert(await cache.isLinked('team/a', d), 'linked repository');
    assert(!(await cache.isLinked('team/b', d)), 'another repository is not told it links the blob');
    assert(!(await cache.isLinked('team/a', digest())), 'another digest is not linked');
    assert((await cache.stat(d)) === undefined, 'membership alone says nothing about size');
  });

  it('forget drops the descriptor and every membership of a digest, and leaves others alone', async (cache) => {
    const d = digest();
    const other = digest();
    await cache.set(d, { size: 10 });
    await cache.setLinked('r1', d);
    await cache.setLinked('r2', d);
    await cache.set(other, { size: 20 });
    await cache.setLinked('r1', other);
    await cache.forget(d);
    assert((await cache.stat(d)) === undefined, 'descriptor forgotten');
    assert(!(await cache.isLinked('r1', d)) && !(await cache.isLinked('r2', d)), 'memberships forgotten');
    deepEqual(await cache.stat(other), { size: 20 });
    assert(await cache.isLinked('r1', other), 'other digest untouched');
  });

  it('forgetLink drops one membership only', async (cache) => {
    const d = digest();
    await cache.set(d, { size: 10 });
    await cache.setLinked('r1', d);
    await cache.setLinked('r2', d);
    await cache.forgetLink('r1', d);
    assert(!(await cache.isLinked('r1', d)), 'unlinked repository forgotten');
    assert(await cache.isLinked('r2', d), 'other repository still linked');
    deepEqual(await cache.stat(d), { size: 10 });
    await cache.forgetLink('never-linked', digest()); // forgetting nothing is fine
  });

  it('a write racing with an invalidation cannot bring the old fact back (tombstone)', async (cache) => {
    const d = digest();
    await cache.set(d, { size: 10 });
    await cache.setLinked('r', d);
    // A reader looked at storage before the delete and writes what it saw after it:
    await cache.forget(d);
    await cache.set(d, { size: 10 });
    await cache.setLinked('r', d);
    assert((await cache.stat(d)) === undefined, 'descriptor not re-cached inside the tombstone window');
    assert(!(await cache.isLinked('r', d)), 'membership not re-cached inside the tombstone window');
    const e = digest();
    await cache.setLinked('r', e);
    await cache.forgetLink('r', e);
    await cache.setLinked('r', e);
    assert(!(await cache.isLinked('r', e)), 'membership not re-cached after forgetLink');
  });

  it('a digest can be cached again once its tombstone has expired', async (cache) => {
    const d = digest();
    await cache.forget(d);
    // tombstoneMs is 1 here: wait on the condition (the tombstone gone), not on a clock.
    for (let i = 0; ; i++) {
      await cache.set(d, { size: 5 });
      if ((await cache.stat(d)) !== undefined) break;
      if (i > 2000) throw new Error('the tombstone never expired');
      await new Promise((r) => setTimeout(r, 5));
    }
    deepEqual(await cache.stat(d), { size: 5 });
  }, { tombstoneMs: 1 });

  it('shared caches: what one replica caches and forgets, the other sees at once', async (cache, second) => {
    if (!second) return; // a per-process cache has no second view
    const other = await second();
    try {
      const d = digest();
      await cache.set(d, { size: 42 });
      await cache.setLinked('shared/repo', d);
      deepEqual(await other.stat(d), { size: 42 });
      assert(await other.isLinked('shared/repo', d), 'membership shared');
      await other.forgetLink('shared/repo', d);
      assert(!(await cache.isLinked('shared/repo', d)), 'unlink on one replica is seen by the other');
      await other.forget(d);
      assert((await cache.stat(d)) === undefined, 'forget on one replica is seen by the other');
    } finally {
      await other.close();
    }
  });

  it('clear forgets everything, for every view of a shared cache', async (cache, second) => {
    const d = digest();
    await cache.set(d, { size: 1 });
    await cache.setLinked('r', d);
    const other = second ? await second() : undefined;
    try {
      await cache.clear();
      assert((await cache.stat(d)) === undefined, 'descriptor cleared');
      assert(!(await cache.isLinked('r', d)), 'membership cleared');
      if (other) assert((await other.stat(d)) === undefined, 'cleared for the other replica too');
      await cache.set(d, { size: 1 });
      deepEqual(await cache.stat(d), { size: 1 });
    } finally {
      await other?.close();
    }
  });

  it('repository names and digests with unusual characters are kept apart', async (cache) => {
    const d = digest();
    await cache.setLinked('a/b', d);
    await cache.setLinked('a-b.c_d/e', d);
    assert(await cache.isLinked('a/b', d), 'a/b');
    assert(await cache.isLinked('a-b.c_d/e', d), 'a-b.c_d/e');
    assert(!(await cache.isLinked('a', d)), 'a prefix of a name is another name');
    const sha512 = `sha512:${randomBytes(64).toString('hex')}`;
    await cache.set(sha512, { size: 7 });
    deepEqual(await cache.stat(sha512), { size: 7 });
  });
}

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`expected: ${message}`);
}

function deepEqual(actual: unknown, expected: unknown): void {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`expected ${e}, got ${a}`);
}
