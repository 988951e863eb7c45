/**
 * Collections and the blob-descriptor cache (server/gc/recorder.ts says why this is enough): a shared Redis cache is
 * invalidated digest by digest by the worker and otherwise kept; an in-memory one is emptied when the gate opens, and
 * a storage read begun before that is not cached after it.
 */
import test from 'ava';
import { createDescriptorCache, GatedDescriptorCache, InMemoryDescriptorCache, type RedisDescriptorCache } from '../cache/index.js';
import { startRedis, until } from '../../testing/redis-test-server.js';
import { parseConfig } from '../config/index.js';
import { parseDigest } from '../registry/reference.js';
import { LocalRegistry } from '../registry/registry.js';
import { garbageCollectCommand } from './command.js';
import { GcRecorder } from './recorder.js';
import { RedisGcConnection, RedisGcLock, serverGcState } from './redis-state.js';
import { ageAll, fixture, hasBlob, pushBlob, pushImage, randomBlob } from '../../testing/gc-helpers.js';
import { DEFAULT_UPLOAD_AGE_MS } from './worker.js';

const HOUR = 3_600_000;

type Teardown = { teardown(fn: () => Promise<void> | void): void };

/** Redis and a filesystem tree, with the configuration `wharf serve` and `wharf garbage-collect` would read. */
async function setting(t: Teardown) {
  const redis = await startRedis();
  const f = await fixture();
  t.teardown(async () => {
    await redis.stop();
    await f.remove();
  });
  const config = parseConfig(
    `version: 0.1\nstorage: { filesystem: { rootdirectory: ${f.root} }, cache: { blobdescriptor: redis } }\nredis: { addr: '${redis.host}' }\n`,
  ).config;
  return { redis, f, config };
}

/** A replica over that storage and Redis, with its recorder and cache wired as `wharf serve` does; connected. */
async function replica(t: Teardown, { f, config }: Awaited<ReturnType<typeof setting>>) {
  const state = await serverGcState(config, f.driver);
  const recorder = new GcRecorder(f.driver, { probe: state.probe, liveSet: state.liveSet, redis: true, pollMs: 20, staleMs: 60_000 });
  const registry = new LocalRegistry(f.driver, { descriptorCache: await createDescriptorCache(config), recorder });
  recorder.guard(registry.descriptorCache!);
  await recorder.start();
  t.teardown(async () => {
    recorder.stop();
    await registry.descriptorCache!.close();
    await state.close();
  });
  const redis = registry.descriptorCache!.inner as RedisDescriptorCache;
  await until(() => redis.healthy(), 'the cache is connected'); // a loaded machine may take a moment
  return { registry, recorder, redis };
}

test('with a Redis cache: no replica answers "exists" for a blob the collector deleted, and unrelated entries survive', async (t) => {
  const env = await setting(t);
  const { f, config } = env;
  // Two replicas over the same storage and Redis.
  const a = await replica(t, env);
  const b = await replica(t, env);
  const replicas = [a, b];

  const garbage = await pushBlob(a.registry, 'junk', randomBlob());
  const kept = await pushImage(a.registry, 'keep', 'v1', [randomBlob()]);
  const g = parseDigest(garbage.digest);
  const k = parseDigest(kept.layers[0]!.digest);
  for (const r of replicas) {
    await r.registry.blobs.stat('junk', g);
    await r.registry.blobs.stat('keep', k);
  }
  t.deepEqual(await a.redis.stat(garbage.digest), { size: garbage.size }, 'the garbage blob is cached in Redis');
  t.true(await a.redis.isLinked('junk', garbage.digest));

  await ageAll(f.root, HOUR);
  const code = await garbageCollectCommand(config, {
    configPath: 'unused', dryRun: false, deleteUntagged: false, graceMs: HOUR / 2, uploadAgeMs: DEFAULT_UPLOAD_AGE_MS, quiet: true,
  });
  t.is(code, 0);
  t.false(await hasBlob(f.root, garbage.digest), 'the collector deleted the blob');

  for (const [name, r] of [['a', a], ['b', b]] as const) {
    await r.recorder.check(); // the replica has seen the lock released: its cache answers again
    t.false(r.recorder.mayBeCollecting());
    await t.throwsAsync(r.registry.blobs.stat('junk', g), { message: /blob unknown/ }, `replica ${name}: the deleted blob is unknown`);
    t.is(await r.registry.blobs.statContent(g), undefined, `replica ${name}: its bytes are unknown`);
  }
  t.is(await b.redis.stat(garbage.digest), undefined, 'the worker forgot the deleted digest in Redis');
  t.false(await b.redis.isLinked('junk', garbage.digest), 'and its repository link');
  t.deepEqual(await b.redis.stat(kept.layers[0]!.digest), { size: kept.layers[0]!.size }, 'an unrelated entry survived the run');
  t.true(await b.redis.isLinked('keep', kept.layers[0]!.digest), 'and its membership');
});

test('an in-memory cache is emptied when the gate opens, and a storage read begun before that is not cached after', async (t) => {
  const inner = new InMemoryDescriptorCache();
  const cache = new GatedDescriptorCache(inner);
  await cache.set('sha256:aa', { size: 1 });
  const ticket = cache.ticket(); // a request starts reading storage...
  cache.reset(); // ...a collection starts or ends meanwhile
  t.is(inner.size, 0, 'emptied');
  await cache.set('sha256:bb', { size: 2 }, ticket);
  t.is(await cache.stat('sha256:bb'), undefined, 'what that request read is not cached');
  await cache.set('sha256:bb', { size: 2 }, cache.ticket());
  t.deepEqual(await cache.stat('sha256:bb'), { size: 2 }, 'a read begun after it is');
});

test('a run that ends without a clean release: the shared cache is emptied before a replica answers from it again', async (t) => {
  const env = await setting(t);
  const { registry, recorder, redis: cache } = await replica(t, env);
  const workers: RedisGcConnection[] = [];
  t.teardown(async () => {
    for (const w of workers) await w.close();
  });
  const worker = async (options: ConstructorParameters<typeof RedisGcLock>[1]) => {
    const c = new RedisGcConnection({ url: env.redis.url });
    workers.push(c);
    await c.connect(true);
    return new RedisGcLock(c, options);
  };

  const blob = await pushBlob(registry, 'r', randomBlob());
  const d = parseDigest(blob.digest);
  await registry.blobs.stat('r', d);
  t.deepEqual(await cache.stat(blob.digest), { size: blob.size }, 'cached');

  // A worker takes the lock and dies (no renewal, no release): whatever it deleted, it may not have forgotten.
  await (await worker({ ttlMs: 300, renewMs: 0 })).acquire();
  await until(() => recorder.mayBeCollecting(), 'the replica sees the lock');
  await until(() => !recorder.mayBeCollecting(), 'the dead worker\'s lock expires and the replica opens its cache');
  t.is(await cache.stat(blob.digest), undefined, 'the shared cache was emptied before the replica used it again');

  // The next worker empties it too (for replicas that missed that moment), and its clean release ends the matter.
  let cleared = 0;
  const next = await worker({ clearSharedCache: async () => { cleared++; return true; } });
  await next.acquire();
  t.is(cleared, 1);
  await next.release();
  await recorder.check();
  await registry.blobs.stat('r', d);
  t.deepEqual(await cache.stat(blob.digest), { size: blob.size }, 'cached again');
  const clean = await worker({ clearSharedCache: async () => { cleared++; return true; } });
  await clean.acquire();
  await recorder.check();
  await clean.release();
  await recorder.check();
  t.is(cleared, 1, 'after a clean run the next worker empties nothing');
  t.deepEqual(await cache.stat(blob.digest), { size: blob.size }, 'and the replica keeps the shared cache');
});
