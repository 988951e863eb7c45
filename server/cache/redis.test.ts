/**
 * The Redis blob-descriptor cache against the shared cache suite, on a real redis-server started on loopback, and
 * what it does when that Redis stops, hangs and comes back.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CacheUnavailableError } from './cache.js';
import { RedisDescriptorCache, clientOptions, type RedisCacheOptions } from './redis.js';
import { startRedis, until, type RunningRedis } from '../../testing/redis-test-server.js';
import { cacheSuite } from '../../testing/cache-suite.js';

// One redis-server for the suite (tests run concurrently: share the promise, not its result).
let shared: Promise<RunningRedis> | undefined;
const sharedRedis = () => (shared ??= startRedis());
test.after.always(async () => {
  await (await shared)?.stop();
});

/** A cache on its own key prefix, connected. */
async function open(options: RedisCacheOptions): Promise<RedisDescriptorCache> {
  const cache = new RedisDescriptorCache(options);
  await cache.connect();
  return cache;
}

cacheSuite('redis', async (options) => {
  const redis = await sharedRedis();
  const prefix = `test:${randomBytes(6).toString('hex')}:`;
  // A loaded machine may take longer than the dial timeout to connect: wait on the condition, not the clock.
  const connected = async () => {
    const c = await open({ url: redis.url, prefix, ...options });
    await until(() => c.healthy(), 'the cache is connected');
    return c;
  };
  const cache = await connected();
  return {
    cache,
    second: connected,
    cleanup: () => cache.close(),
  };
}, { shared: true });

function memoryLogger() {
  const lines: { level: string; msg: string; obj: object }[] = [];
  return {
    lines,
    warn: (obj: object, msg: string) => lines.push({ level: 'warn', msg, obj }),
    info: (obj: object, msg: string) => lines.push({ level: 'info', msg, obj }),
  };
}

const digest = () => `sha256:${randomBytes(32).toString('hex')}`;

test.serial('redis stopped and restarted: the cache misses meanwhile, logs once, and comes back with nothing stale', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-redis-persist-'));
  let redis = await startRedis({ dir });
  const port = redis.port;
  const logger = memoryLogger();
  const a = await open({ url: redis.url, logger, commandTimeoutMs: 500, recoveryIntervalMs: 50 });
  const b = await open({ url: redis.url, commandTimeoutMs: 500, recoveryIntervalMs: 50 });
  t.teardown(async () => {
    await a.close();
    await b.close();
    await redis.stop();
    await rm(dir, { recursive: true, force: true });
  });
  const x = digest();
  const y = digest();
  await a.set(x, { size: 10 });
  await a.setLinked('repo', x);
  await a.set(y, { size: 20 });
  t.deepEqual(await b.stat(x), { size: 10 }, 'both replicas see the entry');

  await redis.stop(); // Redis goes away (its data is on disk: it will come back with x and y)
  await until(() => !a.healthy() && !b.healthy(), 'both caches notice the outage');
  t.is(await a.stat(y), undefined, 'a cache that is down misses: the registry asks storage');
  t.false(await a.isLinked('repo', x));
  await a.set(y, { size: 20 }); // skipped, no error
  // A delete happens while Redis is down: the invalidation cannot be delivered.
  await t.throwsAsync(a.forgetLink('repo', x), { instanceOf: CacheUnavailableError });
  await t.throwsAsync(a.forget(x), { instanceOf: CacheUnavailableError });
  for (let i = 0; i < 20; i++) await a.stat(y); // many requests during the outage...
  t.is(logger.lines.filter((l) => l.level === 'warn').length, 1, '...one warning per outage');
  t.false(a.status().healthy);
  t.truthy(a.status().lastError);

  redis = await startRedis({ port, dir }); // back, with the old data (including the stale x)
  await until(() => a.healthy() && b.healthy(), 'both caches are back');
  t.is(await b.stat(x), undefined, 'the entry the failed invalidation was about is not served by the other replica');
  t.false(await b.isLinked('repo', x), 'nor its membership');
  t.is(await a.stat(y), undefined, 'nothing from before the outage is served (new generation)');
  await a.set(y, { size: 20 });
  t.deepEqual(await b.stat(y), { size: 20 }, 'the cache works again');
  t.deepEqual(
    logger.lines.map((l) => `${l.level} ${l.msg}`),
    [
      'warn redis blob-descriptor cache unavailable; serving from storage until it is back',
      'info redis blob-descriptor cache available again; started a new cache generation',
    ],
  );
});

test.serial('redis hanging: commands time out, the cache switches off and returns once Redis answers again', async (t) => {
  const redis = await startRedis();
  const a = await open({ url: redis.url, commandTimeoutMs: 200, recoveryIntervalMs: 50 });
  const b = await open({ url: redis.url, commandTimeoutMs: 200, recoveryIntervalMs: 50 });
  t.teardown(async () => {
    redis.resume();
    await a.close();
    await b.close();
    await redis.stop();
  });
  const x = digest();
  await a.set(x, { size: 1 });
  await a.setLinked('r', x);
  redis.pause(); // connections stay open, nothing answers
  t.is(await a.stat(x), undefined, 'a read that times out is a miss, not an error or a hang');
  t.false(a.healthy());
  await t.throwsAsync(a.forget(x), { instanceOf: CacheUnavailableError });
  redis.resume();
  await until(() => a.healthy(), 'the cache recovers on a live connection');
  // b never noticed the hang, but a started a new generation before answering again: b cannot see x either.
  t.is(await b.stat(x), undefined);
  t.false(await b.isLinked('r', x));
});

test.serial('redis down at startup: connect resolves, the cache stays off, and turns on when Redis appears', async (t) => {
  const { freePort } = await import('../../testing/harness.js');
  const port = await freePort();
  const cache = await open({ url: `redis://127.0.0.1:${port}`, dialTimeoutMs: 500, recoveryIntervalMs: 50 });
  let redis: RunningRedis | undefined;
  t.teardown(async () => {
    await cache.close();
    await redis?.stop();
  });
  t.false(cache.healthy());
  t.is(await cache.stat(digest()), undefined);
  redis = await startRedis({ port });
  await until(() => cache.healthy(), 'the cache connects once Redis is there');
  const d = digest();
  await cache.set(d, { size: 3 });
  t.deepEqual(await cache.stat(d), { size: 3 });
});

test('redis with a password: connects with it, and the password is in no log line or status', async (t) => {
  const password = `pw-${randomBytes(8).toString('hex')}`;
  const redis = await startRedis({ password });
  const logger = memoryLogger();
  const good = await open({ addr: redis.host, password, logger });
  await until(() => good.healthy(), 'the cache with the right password is connected');
  const bad = await open({ url: `redis://:wrong-${password}@${redis.host}`, logger, recoveryIntervalMs: 50 });
  t.teardown(async () => {
    await good.close();
    await bad.close();
    await redis.stop();
  });
  t.true(good.healthy(), 'authenticated');
  const d = digest();
  await good.set(d, { size: 9 });
  t.deepEqual(await good.stat(d), { size: 9 });
  t.false(bad.healthy(), 'a wrong password leaves the cache off');
  const everything = JSON.stringify(logger.lines) + JSON.stringify(bad.status()) + JSON.stringify(good.status());
  t.false(everything.includes(password), 'no password anywhere');
});

test('clientOptions maps registry:2 keys onto node-redis options', (t) => {
  const options = clientOptions({ addr: 'redis.internal:6380', password: 's3cret', db: 2, dialTimeoutMs: 1500, commandTimeoutMs: 700 }) as any;
  t.is(options.socket.host, 'redis.internal');
  t.is(options.socket.port, 6380);
  t.is(options.socket.connectTimeout, 1500);
  t.is(options.password, 's3cret');
  t.is(options.database, 2);
  t.is(options.commandOptions.timeout, 700);
  t.true(options.disableOfflineQueue, 'commands are never queued while disconnected (no request waits on Redis)');
  t.is(options.socket.tls, undefined);
  const tls = clientOptions({ addr: '[::1]:6379', tls: { enabled: true } }) as any;
  t.is(tls.socket.host, '::1');
  t.true(tls.socket.tls);
  t.true((clientOptions({ url: 'rediss://cache:6379' }) as any).socket.tls, 'rediss:// means TLS');
});
