/**
 * The garbage collector's lock and live set in Redis (./redis-state.ts), on a real redis-server on loopback: one lock
 * holder at a time, expiry after a worker is SIGKILLed, renewal, owner-only release, the live set's answers, and what
 * happens when Redis goes away under a server or a worker.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { freePort, startWharf } from '../../testing/harness.js';
import { createDriver } from '../../storage-drivers/index.js';
import { startRedis, until } from '../../testing/redis-test-server.js';
import { parseConfig } from '../config/index.js';
import { RegistryError } from '../registry/errors.js';
import { GC_LOCK_PATH } from '../registry/layout.js';
import { parseDigest } from '../registry/reference.js';
import { LocalRegistry } from '../registry/registry.js';
import { garbageCollectCommand } from './command.js';
import { GcRecorder } from './recorder.js';
import {
  DualLiveSet, DualLockProbe, RedisGcConnection, RedisGcLock, RedisLiveSet, RedisLockProbe, serverGcState, workerGcState,
} from './redis-state.js';
import { LockBusyError, LockLostError, StorageGcLock, StorageLiveSet, StorageLockProbe } from './state.js';
import { ageAll, fixture, hasBlob, pushBlob, pushImage, randomBlob, sha256, storedBlobs } from '../../testing/gc-helpers.js';
import { collectGarbage } from './worker.js';

const HOUR = 3_600_000;
const digest = () => `sha256:${randomBytes(32).toString('hex')}`;

/** A redis-server of its own for one test, and connections to it that are closed with it. */
async function redisFor(t: { teardown(fn: () => Promise<void> | void): void }) {
  const redis = await startRedis();
  const connections: RedisGcConnection[] = [];
  t.teardown(async () => {
    for (const c of connections) await c.close();
    await redis.stop();
  });
  const connect = async (options: { commandTimeoutMs?: number } = {}) => {
    const c = new RedisGcConnection({ url: redis.url, ...options });
    connections.push(c);
    await c.connect(true);
    return c;
  };
  return { redis, connect };
}

test('two workers at once: exactly one takes the lock, the other gets LockBusyError naming the holder', async (t) => {
  const { connect } = await redisFor(t);
  for (let round = 0; round < 10; round++) {
    const a = new RedisGcLock(await connect());
    const b = new RedisGcLock(await connect());
    const results = await Promise.allSettled([a.acquire(), b.acquire()]);
    const won = results.filter((r) => r.status === 'fulfilled');
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    t.is(won.length, 1, `round ${round}: one holder`);
    t.true(lost[0]?.reason instanceof LockBusyError, `round ${round}: the other is told the lock is busy`);
    const holder = (won[0] as PromiseFulfilledResult<{ runId: string }>).value;
    t.is((lost[0]!.reason as LockBusyError).holder.runId, holder.runId);
    await a.release();
    await b.release();
  }
});

const here = fileURLToPath(new URL('.', import.meta.url));

test('a SIGKILLed worker\'s lock expires and the next run takes it', async (t) => {
  const { redis, connect } = await redisFor(t);
  // A worker in its own process takes the lock (3 s lifetime, renewed while it lives) and is then killed.
  const script = `
    const { RedisGcConnection, RedisGcLock } = await import(${JSON.stringify(`${here}redis-state.js`)});
    const c = new RedisGcConnection({ url: ${JSON.stringify(redis.url)} });
    await c.connect(true);
    await new RedisGcLock(c, { ttlMs: 3000 }).acquire();
    process.stdout.write('held\\n');
    setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((r) => child.once('exit', r));
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.setEncoding('utf8').on('data', (d: string) => { if (d.includes('held')) resolve(); });
    child.once('exit', (code) => reject(new Error(`worker exited with ${code}`)));
  });
  const next = new RedisGcLock(await connect());
  // The child renews every second: its lock is there while it lives.
  const busy = await t.throwsAsync(next.acquire(), { instanceOf: LockBusyError });
  t.is((busy as LockBusyError).holder.pid, child.pid!);
  child.kill('SIGKILL');
  await exited;
  let taken = false;
  await until(async () => {
    try {
      await next.acquire();
      taken = true;
    } catch (err) {
      if (!(err instanceof LockBusyError)) throw err;
    }
    return taken;
  }, 'the dead worker\'s lock expires');
  t.true(taken);
  await next.verify();
  await next.release();
});

test('renewal keeps a long run\'s lock past its lifetime; release is the owner\'s only', async (t) => {
  const { connect } = await redisFor(t);
  // Renewed every third of its lifetime: only a process starved for two thirds of it (over 3 s) could lose it.
  const ttlMs = 5000;
  const a = new RedisGcLock(await connect(), { ttlMs });
  const info = await a.acquire();
  const started = Date.now();
  await until(() => Date.now() - started > 2 * ttlMs, 'two lifetimes have passed');
  await t.notThrowsAsync(a.verify(), 'still ours after two lifetimes');
  const other = new RedisGcLock(await connect(), { ttlMs });
  t.is(((await t.throwsAsync(other.acquire(), { instanceOf: LockBusyError })) as LockBusyError).holder.owner, info.owner);
  await other.release(); // not its lock: nothing happens
  t.is((await new RedisLockProbe(await connect()).current())?.owner, info.owner, 'a non-owner\'s release leaves the lock');
  await a.release();
  t.is(await new RedisLockProbe(await connect()).current(), undefined, 'the owner\'s release frees it');

  // A holder whose lock expired (it stopped renewing) and was taken by another run cannot release or use it.
  const stale = new RedisGcLock(await connect(), { ttlMs: 300, renewMs: 0 }); // renews no more, as if its process stalled
  await stale.acquire();
  const fenced = new RedisLiveSet(await connect(), stale);
  const thief = new RedisGcLock(await connect(), { ttlMs: 60_000 });
  await until(async () => thief.acquire().then(() => true, (err) => {
    if (err instanceof LockBusyError) return false;
    throw err;
  }), 'the stalled holder\'s lock expires and another run takes it');
  await t.throwsAsync(stale.verify(), { instanceOf: LockLostError });
  await t.throwsAsync(fenced.has(digest()), { instanceOf: LockLostError }, 'its live-set reads are fenced');
  await stale.release();
  await t.notThrowsAsync(thief.verify(), 'the stalled holder\'s release did not free the new run\'s lock');
  await thief.release();
});

test('the live set: records, batch answers, repositories; taking the lock starts it empty, release empties it', async (t) => {
  const { connect } = await redisFor(t);
  const server = new RedisLiveSet(await connect());
  const before = digest();
  await server.record('old/repo', [before]);
  const lock = new RedisGcLock(await connect());
  await lock.acquire();
  const worker = new RedisLiveSet(await connect(), lock);
  t.false(await worker.has(before), 'a record from before the lock belongs to no run');
  t.false(await worker.hasRepository('old/repo'));
  const recorded = Array.from({ length: 1500 }, digest); // more than one script call's worth
  await server.record('team/app', [...recorded, recorded[0]!]);
  const unknown = Array.from({ length: 700 }, digest);
  const answer = await worker.recorded([...unknown, ...recorded, ...unknown]);
  t.is(answer.size, recorded.length);
  t.true(recorded.every((d) => answer.has(d)));
  t.true(await worker.has(recorded[1499]!));
  t.false(await worker.has(unknown[0]!));
  t.true(await worker.hasRepository('team/app'));
  t.false(await worker.hasRepository('team'));
  await lock.release();
  await t.throwsAsync(worker.has(recorded[0]!), { instanceOf: LockLostError }, 'the worker reads only while it holds the lock');
  t.false((await server.recorded(recorded)).size > 0, 'release empties the set');
});

test('a server records into Redis while a Redis lock is held; with Redis down a write during a collection fails, one after it succeeds', async (t) => {
  const { redis, connect } = await redisFor(t);
  const f = await fixture();
  t.teardown(f.remove);
  const config = parseConfig(`version: 0.1\nstorage: { filesystem: { rootdirectory: ${f.root} } }\nredis: { addr: '${redis.host}', readtimeout: 500ms, writetimeout: 500ms }\n`).config;
  const state = await serverGcState(config, f.driver);
  t.teardown(() => state.close());
  const recorder = new GcRecorder(f.driver, { probe: state.probe, liveSet: state.liveSet, redis: state.redis, pollMs: 20, staleMs: 60_000 });
  await recorder.start();
  t.teardown(() => recorder.stop());
  const registry = new LocalRegistry(f.driver, { recorder });

  const lock = new RedisGcLock(await connect(), { driver: f.driver });
  await lock.acquire();
  await recorder.check();
  t.true(recorder.mayBeCollecting());
  const image = await pushImage(registry, 'rec', 'v1', [randomBlob()]);
  const worker = new RedisLiveSet(await connect(), lock);
  const all = [image.manifest, image.config, ...image.layers].map((b) => b.digest);
  t.deepEqual([...(await worker.recorded(all))].sort(), [...all].sort(), 'everything the push linked is recorded in Redis');
  t.true(await worker.hasRepository('rec'));
  t.false(await new StorageLiveSet(f.driver).has(image.config.digest), 'not in storage: the worker reads Redis');

  await redis.stop();
  const bytes = randomBlob();
  const err = await t.throwsAsync(pushBlob(registry, 'rec', bytes));
  t.true(err instanceof RegistryError && err.code === 'UNAVAILABLE', `${err?.message}`);
  t.false(await registry.blobs.isLinked('rec', parseDigest(sha256(bytes))), 'the write it would have protected did not happen');

  // Redis still down, the collection over: its storage marker is gone, so the server knows no collection runs.
  await lock.release();
  await recorder.check();
  t.false(recorder.mayBeCollecting(), 'with Redis unreachable the storage marker answers');
  const after = await pushBlob(registry, 'rec', randomBlob());
  t.true(await registry.blobs.isLinked('rec', parseDigest(after.digest)), 'pushes go on while no collection runs');
});

test('a worker that loses Redis mid-sweep stops deleting', async (t) => {
  const { redis } = await redisFor(t);
  const f = await fixture();
  t.teardown(f.remove);
  const config = parseConfig(`version: 0.1\nstorage: { filesystem: { rootdirectory: ${f.root} } }\nredis: { addr: '${redis.host}', readtimeout: 500ms, writetimeout: 500ms }\n`).config;
  const garbage = [];
  for (let i = 0; i < 20; i++) garbage.push(await pushBlob(f.registry, 'junk', randomBlob()));
  await ageAll(f.root, HOUR);
  const state = await workerGcState(config, f.driver);
  t.teardown(() => state.close());
  let stopping: Promise<void> | undefined;
  await t.throwsAsync(collectGarbage(f.driver, {
    lock: state.lock, liveSet: state.liveSet, propagationMs: 0, graceMs: 0,
    beforeBlobDelete: () => (stopping ??= redis.stop()),
  }));
  t.truthy(stopping, 'the sweep reached the blobs');
  const left = await storedBlobs(f.driver);
  t.true(garbage.every((b) => left.has(b.digest)), 'nothing deleted once Redis was gone');
});

test('worker and servers configured differently: the mismatch stops writes or is recorded where the worker looks', async (t) => {
  const { connect } = await redisFor(t);
  const f = await fixture();
  t.teardown(f.remove);

  // A worker with Redis, a server without: the server sees the storage marker and refuses what it must record.
  const plain = new GcRecorder(f.driver, { pollMs: 60_000, staleMs: 60_000 });
  const registry = new LocalRegistry(f.driver, { recorder: plain });
  const redisLock = new RedisGcLock(await connect(), { driver: f.driver });
  await redisLock.acquire();
  t.is((await new StorageLockProbe(f.driver).current())?.backend, 'redis', 'the marker is in storage');
  await t.throwsAsync(new StorageGcLock(f.driver, { settleMs: 5 }).acquire(), { instanceOf: LockBusyError }, 'a worker without Redis waits');
  await plain.check();
  const refused = await t.throwsAsync(pushBlob(registry, 'mixed', randomBlob()));
  t.true(refused instanceof RegistryError && refused.code === 'UNAVAILABLE', refused?.message);
  await redisLock.release();
  t.is(await f.driver.stat(GC_LOCK_PATH).then(() => 'there', () => 'gone'), 'gone', 'release removes the marker');
  await plain.check();
  await t.notThrowsAsync(pushBlob(registry, 'mixed', randomBlob()), 'no collection: writes go on');

  // A worker without Redis, a server with: the server records into storage too, where that worker looks.
  const storageLock = new StorageGcLock(f.driver, { settleMs: 5 });
  await storageLock.acquire();
  await t.throwsAsync(new RedisGcLock(await connect(), { driver: f.driver }).acquire(), { instanceOf: LockBusyError }, 'a Redis worker waits');
  const probe = new DualLockProbe(new RedisLockProbe(await connect()), new StorageLockProbe(f.driver), 60_000);
  const dual = new GcRecorder(f.driver, {
    probe, liveSet: new DualLiveSet(new RedisLiveSet(await connect()), new StorageLiveSet(f.driver), probe), redis: true, pollMs: 60_000, staleMs: 60_000,
  });
  await dual.check();
  t.true(dual.mayBeCollecting());
  const pushed = await pushBlob(new LocalRegistry(f.driver, { recorder: dual }), 'mixed', randomBlob());
  t.true(await new StorageLiveSet(f.driver).has(pushed.digest), 'recorded in storage for the worker without Redis');
  await storageLock.release();
});

test('no lock: a server with Redis records nothing and writes go on', async (t) => {
  const { redis, connect } = await redisFor(t);
  const f = await fixture();
  t.teardown(f.remove);
  const config = parseConfig(`version: 0.1\nstorage: { filesystem: { rootdirectory: ${f.root} } }\nredis: { addr: '${redis.host}' }\n`).config;
  const state = await serverGcState(config, f.driver);
  t.teardown(() => state.close());
  const recorder = new GcRecorder(f.driver, { probe: state.probe, liveSet: state.liveSet, redis: true, pollMs: 60_000, staleMs: 60_000 });
  await recorder.check();
  t.false(recorder.mayBeCollecting());
  const b = await pushBlob(new LocalRegistry(f.driver, { recorder }), 'quiet', randomBlob());
  t.true(await hasBlob(f.root, b.digest));
  t.false((await new RedisLiveSet(await connect()).recorded([b.digest])).size > 0);
});

test('a Wharf process with Redis records its pushes into Redis during a collection, and answers 503 when Redis is gone', async (t) => {
  const { redis, connect } = await redisFor(t);
  const server = await startWharf({ config: { redis: { addr: redis.host, readtimeout: '1s', writetimeout: '1s' } } });
  t.teardown(() => server.stop());
  const driver = createDriver({ driver: 'filesystem', rootDirectory: server.rootDirectory });
  const push = (bytes: Buffer) =>
    fetch(`${server.url}/v2/live/app/blobs/uploads/?digest=${sha256(bytes)}`, {
      method: 'POST', body: bytes, headers: { 'Content-Type': 'application/octet-stream' },
    });
  const lock = new RedisGcLock(await connect(), { driver });
  await lock.acquire();
  const worker = new RedisLiveSet(await connect(), lock);
  // The server sees the lock within its poll interval; until then its pushes may go unrecorded (mark sees them).
  let recorded = false;
  await until(async () => {
    const bytes = randomBlob();
    t.is((await push(bytes)).status, 201);
    recorded = await worker.has(sha256(bytes));
    return recorded;
  }, 'the server records what it links');
  t.true(recorded);
  const bytes = randomBlob();
  t.is((await push(bytes)).status, 201);
  t.true(await worker.has(sha256(bytes)), 'every later push is recorded');
  t.true(await worker.hasRepository('live/app'));

  await redis.stop();
  const refused = await push(randomBlob());
  t.is(refused.status, 503);
  t.is(((await refused.json()) as { errors: { code: string }[] }).errors[0]?.code, 'UNAVAILABLE');
});

test('garbage-collect with an unreachable Redis fails (exit code 1) without touching storage', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  const junk = await pushBlob(f.registry, 'junk', randomBlob());
  await ageAll(f.root, HOUR);
  const port = await freePort();
  const config = parseConfig(`version: 0.1\nstorage: { filesystem: { rootdirectory: ${f.root} } }\nredis: { addr: '127.0.0.1:${port}', dialtimeout: 500ms }\n`).config;
  await t.throwsAsync(workerGcState(config, f.driver), { message: /redis \(garbage-collection lock\) unreachable/ });
  const code = await garbageCollectCommand(config, {
    configPath: 'unused', dryRun: false, deleteUntagged: false, graceMs: 0, uploadAgeMs: 0, quiet: true,
  });
  t.is(code, 1);
  t.true(await hasBlob(f.root, junk.digest), 'nothing collected');
});
