/**
 * Redis faults (issue #15): real Wharf processes and a real redis-server that is down at start-up, SIGKILLed in the
 * middle of pushes and pulls, restarted on the same port with the data it had on disk, and killed under a garbage
 * collection. What docs/redis.md promises: serving goes on from storage, nothing stale is read once Redis is back,
 * and a collection that needs the Redis lock does not run (or stops deleting) without it.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { watch } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { startWharf, type RunningWharf } from '../../testing/harness.js';
import { runWharf, type CliRun } from '../../testing/gc-helpers.js';
import { sha256, waitFor } from '../../testing/helpers.js';
import {
  boundedFetch, flappingRedis, isCleanFault, listFiles, makeImage, pullImage, pushImage,
  type Failure, type FlappingRedis, type Image,
} from '../../testing/faults-redis.js';

/** Wharf's `storage`/`redis` sections for a Redis blob-descriptor cache (and, with it, the Redis GC lock). */
function redisConfig(redis: FlappingRedis) {
  return {
    storage: { cache: { blobdescriptor: 'redis' } },
    redis: { addr: redis.host, readtimeout: '1s', writetimeout: '1s', dialtimeout: '1s' },
  };
}

/** A shared storage directory, one Redis and `n` replicas on them; all stopped and removed when the test ends. */
async function cluster(t: ExecutionContext, n: number, options: { redisDown?: boolean } = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-faults-redis-'));
  const root = join(dir, 'data');
  const redis = await flappingRedis({ down: options.redisDown });
  const replicas: RunningWharf[] = [];
  t.teardown(async () => {
    await Promise.all(replicas.map((r) => r.stop()));
    await redis.cleanup();
    await rm(dir, { recursive: true, force: true });
  });
  for (let i = 0; i < n; i++) replicas.push(await startWharf({ rootDirectory: root, config: redisConfig(redis) }));
  /** A configuration file for `wharf garbage-collect` on the same storage and Redis. */
  const gcConfig = async (): Promise<string> => {
    const path = join(dir, 'gc.yml');
    await writeFile(path, stringify({
      version: '0.1',
      storage: { filesystem: { rootdirectory: root }, delete: { enabled: true }, ...redisConfig(redis).storage },
      redis: redisConfig(redis).redis,
    }));
    return path;
  };
  return { root, redis, replicas, gcConfig };
}

const alive = (r: RunningWharf) => r.process.exitCode === null && r.process.signalCode === null;

async function readyz(base: string): Promise<{ status: number; body: { checks?: Record<string, string> } }> {
  const res = await boundedFetch(`${base}/readyz`);
  return { status: res.status, body: (await res.json()) as { checks?: Record<string, string> } };
}

async function blobStatus(base: string, repo: string, digest: string, method: 'HEAD' | 'GET' = 'HEAD'): Promise<number> {
  const res = await boundedFetch(`${base}/v2/${repo}/blobs/${digest}`, { method });
  await res.arrayBuffer();
  return res.status;
}

/** Push `count` blobs to `repo` that no manifest references: what a collection deletes. */
async function pushGarbage(base: string, repo: string, count: number): Promise<string[]> {
  return [...(await pushGarbageBytes(base, repo, count)).keys()];
}

async function pushGarbageBytes(base: string, repo: string, count: number): Promise<Map<string, Buffer>> {
  const blobs = new Map<string, Buffer>();
  for (let i = 0; i < count; i++) {
    const bytes = randomBytes(512);
    const res = await boundedFetch(`${base}/v2/${repo}/blobs/uploads/?digest=${sha256(bytes)}`, {
      method: 'POST', body: bytes, headers: { 'Content-Type': 'application/octet-stream' },
    });
    if (res.status !== 201) throw new Error(`garbage push answered ${res.status}: ${await res.text()}`);
    blobs.set(sha256(bytes), bytes);
  }
  return blobs;
}

const blobFile = (root: string, digest: string) => {
  const hex = digest.slice('sha256:'.length);
  return `docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`;
};

test('Redis down at start-up: Wharf starts, pushes and pulls from storage, stays ready, and uses Redis once it is up', async (t) => {
  const { redis, replicas: [wharf] } = await cluster(t, 1, { redisDown: true });
  const first = makeImage('down/app', 'v1');
  t.is(await pushImage(wharf!.url, first), undefined, 'push with Redis down');
  t.is(await pullImage(wharf!.url, first), undefined, 'pull with Redis down');
  const down = await readyz(wharf!.url);
  t.is(down.status, 200, 'a Redis outage does not make the replica unready (docs/replicas.md)');
  t.is(down.body.checks?.redis, 'unavailable');

  await redis.start();
  // Wharf uses Redis again: a pull writes the blob's descriptor into the cache.
  const layer = [...first.blobs.keys()][1]!;
  await waitFor('the blob-descriptor cache to be written to Redis again', async () => {
    t.is(await pullImage(wharf!.url, first), undefined);
    const keys = await redis.cli('--scan', '--pattern', `wharf:blobdescriptor:g*:${layer}`);
    return keys.length > 0 ? true : undefined;
  });
  t.is((await readyz(wharf!.url)).body.checks?.redis, 'ok');
  const second = makeImage('down/app', 'v2');
  t.is(await pushImage(wharf!.url, second), undefined);
  t.is(await pullImage(wharf!.url, second), undefined);
  t.true(alive(wharf!));
});

/**
 * A stream of pushes and pulls over two replicas until `finish`: each round pushes an image through one replica and
 * pulls an earlier one back through the other. Every request is bounded (a hang throws); what a request refused is
 * kept in `failures`.
 */
function pushPullStream(a: RunningWharf, b: RunningWharf, prefix: string) {
  const acknowledged: Image[] = [];
  const failures: Failure[] = [];
  let rounds = 0;
  let stopping = false;
  let broken: Error | undefined;
  const stream = (async () => {
    for (let i = 0; !stopping; i++) {
      const [pushTo, pullFrom] = i % 2 ? [a, b] : [b, a];
      const image = makeImage(`${prefix}/app${i % 3}`, `t${i}`);
      const pushed = await pushImage(pushTo.url, image);
      if (pushed) failures.push(pushed);
      else acknowledged.push(image);
      const earlier = acknowledged[i % Math.max(1, acknowledged.length)];
      if (earlier) {
        const pulled = await pullImage(pullFrom.url, earlier);
        if (pulled) failures.push(pulled);
      }
      rounds++;
    }
  })().catch((err: Error) => { broken = err; });
  return {
    acknowledged,
    failures,
    /** Wait until `n` more rounds have completed (or the stream broke: then throw). */
    async goOn(n: number): Promise<void> {
      const target = rounds + n;
      await waitFor(`${n} more rounds of pushes and pulls`, async () => {
        if (broken) throw broken;
        return rounds >= target ? true : undefined;
      }, 60_000, 20);
    },
    async finish(): Promise<void> {
      stopping = true;
      await stream;
      if (broken) throw broken;
    },
  };
}

/** After a stream: only clean faults, and every acknowledged image pulls back completely through both replicas. */
async function checkStream(t: ExecutionContext, a: RunningWharf, b: RunningWharf, s: ReturnType<typeof pushPullStream>, least: number) {
  t.deepEqual(s.failures.filter((f) => !isCleanFault(f)), [], 'a request that failed failed with a retryable 5xx OCI error');
  t.true(s.acknowledged.length >= least, `pushes went on (${s.acknowledged.length} acknowledged, ${s.failures.length} refused)`);
  for (const image of s.acknowledged) {
    t.is(await pullImage(a.url, image), undefined, `${image.repo}:${image.tag} through A`);
    t.is(await pullImage(b.url, image), undefined, `${image.repo}:${image.tag} through B`);
  }
  t.true(alive(a) && alive(b), 'no replica crashed');
}

test('Redis SIGKILLed and restarted twice during pushes and pulls on two replicas: every acknowledged push pulls back, failures are clean 5xx', async (t) => {
  const { redis, replicas } = await cluster(t, 2);
  const [a, b] = replicas as [RunningWharf, RunningWharf];
  const stream = pushPullStream(a, b, 'killed');
  await stream.goOn(4);
  await redis.kill();
  await stream.goOn(4);
  await redis.start();
  await stream.goOn(4);
  await redis.kill();
  await stream.goOn(2);
  await redis.start();
  await stream.goOn(4);
  await stream.finish();
  await checkStream(t, a, b, stream, 10);
});

test('Redis frozen (SIGSTOP) during pushes and pulls on two replicas: requests stay bounded and go on; nothing is lost', async (t) => {
  const { redis, replicas } = await cluster(t, 2);
  const [a, b] = replicas as [RunningWharf, RunningWharf];
  t.teardown(() => redis.resume());
  const stream = pushPullStream(a, b, 'frozen');
  await stream.goOn(4);
  redis.pause();
  // Every command waits at most redis.readtimeout (1 s) and then the cache is off: the stream keeps going.
  await stream.goOn(6);
  redis.resume();
  await stream.goOn(4);
  await stream.finish();
  await checkStream(t, a, b, stream, 10);
});

test('a blob deleted while Redis is down is not served by any replica after Redis comes back with its old data', async (t) => {
  const { redis, replicas } = await cluster(t, 2);
  const [a, b] = replicas as [RunningWharf, RunningWharf];
  const image = makeImage('stale/app', 'v1');
  t.is(await pushImage(a.url, image), undefined);
  const layer = [...image.blobs.keys()][1]!;
  // Both replicas have the blob and its repository link cached in Redis.
  t.is(await blobStatus(a.url, image.repo, layer), 200);
  t.is(await blobStatus(b.url, image.repo, layer), 200);
  const cached = `wharf:blobdescriptor:g*:${layer}`;
  const before = await redis.cli('--scan', '--pattern', cached);
  t.not(before, '', 'the descriptor is cached');
  t.regex(await redis.cli('HKEYS', before.split('\n')[0]!), new RegExp(`repo:${image.repo}`));

  // A crash: the append-only file keeps every entry. The delete cannot invalidate anything.
  await redis.kill();
  const deleted = await boundedFetch(`${a.url}/v2/${image.repo}/blobs/${layer}`, { method: 'DELETE' });
  t.is(deleted.status, 202);
  t.is(await blobStatus(b.url, image.repo, layer), 404, 'B, with Redis down, asks storage');
  const manifestDeleted = await boundedFetch(`${b.url}/v2/${image.repo}/manifests/${image.manifestDigest}`, { method: 'DELETE' });
  t.is(manifestDeleted.status, 202);

  const epoch = Number(await redis.cli('GET', 'wharf:blobdescriptor:epoch').catch(() => '0')) || 0;
  await redis.start();
  t.is(await redis.cli('--scan', '--pattern', cached), before, 'Redis came back with the stale entry');
  // From the first request after the restart until both replicas have reconnected (each starts a new generation),
  // and after: the deleted blob and manifest are absent on both.
  const check = async () => {
    for (const r of [a, b]) {
      t.is(await blobStatus(r.url, image.repo, layer), 404);
      t.is(await blobStatus(r.url, image.repo, layer, 'GET'), 404);
      const m = await boundedFetch(`${r.url}/v2/${image.repo}/manifests/${image.manifestDigest}`, { method: 'HEAD' });
      t.is(m.status, 404);
    }
  };
  await waitFor('both replicas to use Redis again', async () => {
    await check();
    const generations = Number(await redis.cli('GET', 'wharf:blobdescriptor:epoch')) - epoch;
    const ready = await Promise.all([a, b].map(async (r) => (await readyz(r.url)).body.checks?.redis === 'ok'));
    return generations >= 2 && ready.every(Boolean) ? true : undefined;
  }, 30_000, 50);
  await check();
  // The other blobs are still served (and cached again), so the cache is in use, not merely off.
  const config = [...image.blobs.keys()][0]!;
  t.is(await blobStatus(b.url, image.repo, config), 200);
  t.not(await redis.cli('--scan', '--pattern', `wharf:blobdescriptor:g*:${config}`), '');
});

test('wharf garbage-collect with the Redis lock configured and Redis down: exits 1 with a clear message and deletes nothing', async (t) => {
  const { root, redis, replicas: [wharf], gcConfig } = await cluster(t, 1);
  const keep = makeImage('gc/keep', 'v1');
  t.is(await pushImage(wharf!.url, keep), undefined);
  const garbage = await pushGarbage(wharf!.url, 'gc/junk', 5);
  await redis.kill();
  const before = await listFiles(root);
  const run = await runWharf(['garbage-collect', await gcConfig(), '--grace', '0s']);
  t.is(run.code, 1, run.stderr);
  t.regex(run.stderr, /garbage collection failed: .*redis.*unreachable/i);
  t.notRegex(run.stderr, /^\s+at /m, 'a message, not a stack trace');
  t.deepEqual(await listFiles(root), before, 'storage untouched');

  // The same collection with Redis up deletes the garbage: what was spared above was collectable.
  await redis.start();
  const again = await runWharf(['garbage-collect', await gcConfig(), '--grace', '0s']);
  t.is(again.code, 0, again.stderr);
  const after = new Set(await listFiles(root));
  t.true(garbage.every((d) => !after.has(blobFile(root, d))), 'garbage collected once Redis is up');
  t.is(await pullImage(wharf!.url, keep), undefined);
});

test('Redis SIGKILLed during a collection: the collector stops without deleting, pulls go on, pushes are refused cleanly or kept', async (t) => {
  const { root, redis, replicas: [wharf], gcConfig } = await cluster(t, 1);
  const keep = makeImage('gc/keep', 'v1');
  t.is(await pushImage(wharf!.url, keep), undefined);
  const garbage = await pushGarbage(wharf!.url, 'gc/junk', 20);
  const config = await gcConfig();

  let gcPid = 0;
  let gcExited = false;
  const collection: Promise<CliRun> = runWharf(['garbage-collect', config, '--grace', '0s'], (pid, done) => {
    gcPid = pid;
    void done.then(() => { gcExited = true; });
  });
  // Only a collector that is still running is signalled (its PID is not reused while we have not reaped it).
  t.teardown(() => { if (gcPid && !gcExited) process.kill(gcPid, 'SIGKILL'); });
  // The collector holds the Redis lock (and then waits for every replica to see it before it marks): kill Redis now.
  await waitFor('the collector to take its Redis lock', async () => (await redis.cli('EXISTS', 'wharf:gc:lock')) === '1' ? true : undefined, 30_000, 10);
  await redis.kill();

  // During the outage, with the collection running: pulls are served; a push is refused with a 5xx or kept.
  t.is(await pullImage(wharf!.url, keep), undefined);
  const during = makeImage('gc/during', 'v1');
  const pushed = await pushImage(wharf!.url, during);
  if (pushed) t.true(isCleanFault(pushed), JSON.stringify(pushed));

  const run = await Promise.race([
    collection,
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the collector did not stop within 60 s')), 60_000)),
  ]);
  t.is(run.code, 1, `the collection failed\n${run.stdout}\n${run.stderr}`);
  t.regex(run.stderr, /garbage collection failed: redis \(garbage-collection lock\) unavailable/, 'says why it stopped');
  t.notRegex(run.stderr, /^\s+at /m, 'a message, not a stack trace');

  const files = new Set(await listFiles(root));
  t.true(garbage.every((d) => files.has(blobFile(root, d))), 'a collector that lost Redis deleted nothing');
  t.is(await pullImage(wharf!.url, keep), undefined, 'the tagged image pulls back completely');
  if (!pushed) t.is(await pullImage(wharf!.url, during), undefined, 'the push acknowledged during the collection is kept');
  // The collector removed its storage marker as it stopped (the replica reads it once a second while Redis is
  // down): with Redis still down, pushes work again, at once and for good.
  t.false(files.has('docker/registry/v2/_wharf/gc/lock'), `no marker left: ${[...files].filter((f) => f.includes('gc')).join(', ')}`);
  const started = Date.now();
  let attempt = 0;
  const after = await waitFor('a push to be accepted again', async () => {
    const image = makeImage('gc/after', `v${attempt++}`);
    const failed = await pushImage(wharf!.url, image);
    if (failed) t.true(isCleanFault(failed), JSON.stringify(failed));
    return failed ? undefined : image;
  }, 15_000, 200);
  t.log(`pushes accepted again ${Date.now() - started} ms after the collector exited`);
  t.is(await pullImage(wharf!.url, after), undefined);
  const again = makeImage('gc/after', 'again');
  t.is(await pushImage(wharf!.url, again), undefined);
  t.true(alive(wharf!));
});

test('Redis SIGKILLed while a collection sweeps: an image pushed meanwhile that reuses swept layers pulls back completely', async (t) => {
  const { root, redis, replicas: [wharf], gcConfig } = await cluster(t, 1);
  const keep = makeImage('gc/keep', 'v1');
  t.is(await pushImage(wharf!.url, keep), undefined);
  const garbage = await pushGarbageBytes(wharf!.url, 'gc/junk', 300);
  const config = await gcConfig();

  // The collector is paused (SIGSTOP) the moment it sets its first file aside (the sweep has begun), so that the
  // push and the kill below land in the middle of its sweep, and then let go (SIGCONT).
  const gcDir = join(root, 'docker/registry/v2/_wharf/gc');
  await mkdir(gcDir, { recursive: true });
  let gcPid = 0;
  let paused!: () => void;
  const sweeping = new Promise<void>((resolve) => { paused = resolve; });
  const watcher = watch(gcDir, (_event, name) => {
    if (name === 'trash' && gcPid && !gcExited) {
      process.kill(gcPid, 'SIGSTOP');
      watcher.close();
      paused();
    }
  });
  let gcExited = false;
  t.teardown(() => {
    watcher.close();
    if (gcPid && !gcExited) {
      process.kill(gcPid, 'SIGCONT');
      process.kill(gcPid, 'SIGKILL');
    }
  });
  const collection: Promise<CliRun> = runWharf(['garbage-collect', config, '--grace', '0s'], (pid, done) => {
    gcPid = pid;
    void done.then(() => { gcExited = true; });
  });
  await Promise.race([
    sweeping,
    collection.then((r) => { throw new Error(`the collection ended before its sweep was seen:\n${r.stdout}\n${r.stderr}`); }),
  ]);

  // A client pushes an image whose layers include ten of the garbage blobs (stored again if set aside), then Redis dies.
  const reused = [...garbage.values()].slice(0, 10);
  const during = makeImage('gc/during', 'v1', 1, 4096, reused);
  const pushed = await pushImage(wharf!.url, during);
  t.is(pushed, undefined, 'Redis was up: the push is recorded in the live set and acknowledged');
  await redis.kill();
  process.kill(gcPid, 'SIGCONT');

  const run = await Promise.race([
    collection,
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the collector did not stop within 60 s')), 60_000)),
  ]);
  t.log(`collector exit ${run.code}: ${run.stderr.split('\n').find((l) => l.includes('garbage collection')) ?? ''}`);
  t.true(run.code === 0 || run.code === 1, run.stderr);
  if (run.code === 1) {
    t.regex(run.stderr, /garbage collection failed: redis \(garbage-collection lock\) unavailable/, 'says why it stopped');
    t.notRegex(run.stderr, /^\s+at /m, 'a message, not a stack trace');
  }
  t.is(await pullImage(wharf!.url, keep), undefined, 'the tagged image pulls back completely');
  t.is(await pullImage(wharf!.url, during), undefined, 'the image pushed during the sweep pulls back completely');
  const files = await listFiles(root);
  t.deepEqual(files.filter((f) => f.includes('_wharf/gc/trash/')), [], 'nothing left set aside');
  t.true(alive(wharf!));
});
