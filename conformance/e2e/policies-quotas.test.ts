/**
 * Quotas (docs/policies.md#quotas) against real Wharf processes: shared blobs counted once per rule, refusals with
 * DENIED and the figures (a monolithic POST before its body is read), deletes freeing bytes, two replicas with Redis
 * racing for the last bytes, two replicas without Redis seeing each other's usage, the same over S3 (one shared Ceph
 * RGW), skopeo into a full quota, the garbage collector's recount equal to the running count, and SIGHUP.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parse, stringify } from 'yaml';
import { freePort, startWharf, type RunningWharf } from '../../testing/harness.js';
import { runWharf } from '../../testing/gc-helpers.js';
import { postBlob, pushBlob, sha256, waitFor } from '../../testing/helpers.js';
import { allBlobs, generateImage, writeOciLayout } from '../../testing/e2e/image.js';
import { run } from '../../testing/e2e/target.js';
import { startRedis, type RunningRedis } from '../../testing/redis-test-server.js';
import { startS3TestServer, type S3TestServer } from '../../testing/s3-test-server.js';
import { call } from '../../testing/ui-fixtures.js';

const KiB = 1024;
let redis: RunningRedis;
let s3: S3TestServer | undefined;
let dirs = 0;

test.before(async () => {
  redis = await startRedis();
});
test.after.always(async () => {
  await redis?.stop();
  await s3?.stop();
});

/** The S3 gateway, started by the first test that needs it (slow to start) and shared. */
async function sharedS3(t: ExecutionContext): Promise<S3TestServer> {
  t.timeout(180_000);
  s3 ??= await startS3TestServer({ memoryBytes: 512 * 1024 * 1024 });
  return s3;
}

interface Deployment {
  /** The config every process of the deployment shares (storage, redis, policies), as written to `configPath`. */
  config: Record<string, any>;
  configPath: string;
  replicas: RunningWharf[];
  /** Start a replica; with `debugPort`, its metrics are served there. */
  replica(debugPort?: number): Promise<RunningWharf>;
  /** `wharf quota <config> --json`: each rule's running count and recount. */
  quota(): Promise<Array<{ rule: string; usage: number; running?: number; repositories: number; maxsize: number }>>;
}

/** Replicas over one storage (a filesystem folder, or an S3 prefix), with or without Redis, with these quota rules. */
async function deployment(
  t: ExecutionContext,
  quotas: Array<{ repositories: string[]; maxsize: string | number }>,
  options: { redis?: boolean; s3?: S3TestServer } = {},
): Promise<Deployment> {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-quotas-'));
  const storage = options.s3
    ? { s3: options.s3.storageConfig({ rootdirectory: `/quotas-${process.pid}-${dirs++}` }), delete: { enabled: true }, redirect: { disable: true } }
    : { filesystem: { rootdirectory: join(dir, 'data') }, delete: { enabled: true } };
  const config: Record<string, any> = {
    version: '0.1',
    log: { level: 'warn' },
    storage,
    policies: { quotas },
    ...(options.redis ? { redis: { addr: redis.host, readtimeout: '2s', writetimeout: '2s' } } : {}),
  };
  const configPath = join(dir, 'config.yml');
  await writeFile(configPath, stringify(config));
  const replicas: RunningWharf[] = [];
  // Rules with the same patterns share a count in Redis: each deployment starts from an empty one.
  if (options.redis) await flushRedis();
  t.teardown(async () => {
    await Promise.all(replicas.map((r) => r.stop()));
    await rm(dir, { recursive: true, force: true });
  });
  return {
    config,
    configPath,
    replicas,
    async replica(debugPort?: number) {
      const { policies, redis: r, storage: s } = config;
      const debug = debugPort ? { http: { debug: { addr: `127.0.0.1:${debugPort}`, prometheus: { enabled: true } } } } : {};
      const w = await startWharf({
        startTimeoutMs: 120_000,
        ...(options.s3 ? {} : { rootDirectory: s.filesystem.rootdirectory }),
        config: { storage: s, policies, ...(r ? { redis: r } : {}), ...debug },
      });
      replicas.push(w);
      return w;
    },
    async quota() {
      const out = await runWharf(['quota', configPath, '--json']);
      if (out.code !== 0) throw new Error(`wharf quota exited ${out.code}: ${out.stderr}`);
      return (JSON.parse(out.stdout) as { quotas: any[] }).quotas;
    },
  };
}

async function flushRedis(): Promise<void> {
  const { createClient } = await import('redis');
  const client = createClient({ url: redis.url });
  await client.connect();
  await client.flushAll();
  await client.quit();
}

/** The OCI error of a refused push. */
async function refusal(res: Response): Promise<{ status: number; code: string; message: string; detail: any }> {
  const body = (await res.json()) as { errors: Array<{ code: string; message: string; detail: any }> };
  return { status: res.status, ...body.errors[0]! };
}

/** Files under a folder (recursively), or [] when it does not exist. */
async function filesUnder(path: string): Promise<string[]> {
  try {
    return (await readdir(path, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
  } catch {
    return [];
  }
}

test.serial('one replica without Redis: shared blobs counted once, DENIED with the figures, a monolithic POST refused before its body, deletes free the bytes', async (t) => {
  const d = await deployment(t, [{ repositories: ['team/**'], maxsize: 64 * KiB }, { repositories: ['team/small/**'], maxsize: 16 * KiB }]);
  const w = await d.replica();
  const shared = randomBytes(10 * KiB);
  const digest = await pushBlob(w.url, 'team/a', shared);
  await pushBlob(w.url, 'team/b', shared);
  const res = await call(w.url, `/v2/team/c/blobs/uploads/?mount=${digest}&from=team/a`, { method: 'POST' });
  t.is(res.status, 201);
  let [outer, inner] = await d.quota();
  t.like(outer, { rule: 'policies.quotas[0] (team/**)', usage: 10 * KiB, running: 10 * KiB, repositories: 3 });
  t.like(inner, { usage: 0, repositories: 0 });

  // The inner rule is smaller: a push within the outer one's room but past the inner one's is refused, naming it.
  const big = randomBytes(20 * KiB);
  const denied = await refusal(await postBlob(w.url, 'team/small/x', big));
  t.is(denied.status, 403);
  t.is(denied.code, 'DENIED');
  t.is(denied.message, 'quota policies.quotas[1] (team/small/**) exceeded: 0 B of 16 KiB used, this blob needs 20 KiB');
  t.deepEqual(denied.detail, { rule: 'policies.quotas[1] (team/small/**)', maxsize: 16 * KiB, usage: 0, size: 20 * KiB });

  // A monolithic POST announcing more than fits is answered before its body is sent at all: the request below never
  // sends one, so an answer proves the server did not wait for it; nothing is left in storage.
  const status = await new Promise<number>((resolve, reject) => {
    const url = new URL(`${w.url}/v2/team/a/blobs/uploads/?digest=${sha256(randomBytes(8))}`);
    const req = request({ host: url.hostname, port: url.port, path: url.pathname + url.search, method: 'POST', headers: { 'Content-Length': String(100 * KiB), 'Content-Type': 'application/octet-stream' } });
    req.on('response', (r) => { resolve(r.statusCode!); r.resume(); req.destroy(); });
    req.on('error', reject);
    req.flushHeaders();
  });
  t.is(status, 403);
  t.deepEqual(await filesUnder(join(w.rootDirectory, 'docker/registry/v2/repositories/team/a/_uploads')), [], 'no session left behind');

  // Fill the outer rule, then free bytes with a delete: the next push fits again.
  const filler = await pushBlob(w.url, 'team/a', randomBytes(50 * KiB));
  t.is((await postBlob(w.url, 'team/b', randomBytes(8 * KiB))).status, 403);
  t.is((await call(w.url, `/v2/team/a/blobs/${filler}`, { method: 'DELETE' })).status, 202);
  t.is((await postBlob(w.url, 'team/b', randomBytes(8 * KiB))).status, 201);
  [outer, inner] = await d.quota();
  t.like(outer, { usage: 18 * KiB, running: 18 * KiB });
});

/** Push `count` blobs of `size` bytes through the replicas in turn, all at once. */
async function race(replicas: RunningWharf[], count: number, size: number, repo = (i: number) => `team/r${i % 4}`): Promise<Array<{ status: number; repo: string; digest: string }>> {
  return Promise.all(Array.from({ length: count }, async (_, i) => {
    const bytes = randomBytes(size);
    const res = await postBlob(replicas[i % replicas.length]!.url, repo(i), bytes);
    await res.arrayBuffer();
    return { status: res.status, repo: repo(i), digest: sha256(bytes) };
  }));
}

/** Two replicas with Redis: the race for the last bytes, then concurrent pushes and deletes, then a GC run. */
async function redisReplicas(t: ExecutionContext, s3server?: S3TestServer): Promise<void> {
  const d = await deployment(t, [{ repositories: ['team/**'], maxsize: 40 * KiB }], { redis: true, ...(s3server ? { s3: s3server } : {}) });
  const [a, b] = [await d.replica(), await d.replica()];
  const pushed = await race([a, b], 24, 4 * KiB);
  t.is(pushed.filter((p) => p.status === 201).length, 10, 'exactly maxsize / size pushes fit');
  t.true(pushed.every((p) => p.status === 201 || p.status === 403));
  let [q] = await d.quota();
  t.like(q, { usage: 40 * KiB, running: 40 * KiB });

  // Deletes through one replica while the other pushes (some fit once the deletes land, some do not).
  const work = await Promise.all([
    ...pushed.filter((p) => p.status === 201).slice(0, 5).map(async (p) => {
      const res = await call(a.url, `/v2/${p.repo}/blobs/${p.digest}`, { method: 'DELETE' });
      return res.status;
    }),
    ...(await race([b], 8, 3 * KiB)).map((p) => p.status),
  ]);
  t.true(work.every((s) => [201, 202, 403].includes(s)), String(work));
  [q] = await d.quota();
  t.is(q!.running, q!.usage, 'after the race, the running count equals a recount');
  t.true(q!.usage <= 40 * KiB);
  const gc = await runWharf(['garbage-collect', d.configPath, '--grace=1ms', '--quiet']);
  t.is(gc.code, 0, gc.stderr);
  t.regex(gc.stdout, /quota policies\.quotas\[0\] \(team\/\*\*\): .*running count \(redis\) (\d+), recount \1 bytes/);
  [q] = await d.quota();
  t.is(q!.running, q!.usage, 'after the GC run, the recount equals the running count');
}

test.serial('two replicas with Redis (filesystem) racing for the last bytes never exceed maxsize together; after pushes, deletes and a GC run the recount equals the running count', async (t) => {
  await redisReplicas(t);
});

/** A replica's `wharf_quota_usage_bytes` for the first rule, from its metrics. */
async function usageMetric(debugPort: number): Promise<number | undefined> {
  const text = await (await fetch(`http://127.0.0.1:${debugPort}/metrics`)).text();
  const m = /^wharf_quota_usage_bytes\{rule="policies\.quotas\[0\] [^"]*"\} (\d+)$/m.exec(text);
  return m ? Number(m[1]) : undefined;
}

/** Two replicas without Redis: each sees the other's pushes within the refresh interval. */
async function storageReplicas(t: ExecutionContext, s3server?: S3TestServer): Promise<void> {
  const d = await deployment(t, [{ repositories: ['team/**'], maxsize: 32 * KiB }], s3server ? { s3: s3server } : {});
  const [portA, portB] = [await freePort(), await freePort()];
  const [a, b] = [await d.replica(portA), await d.replica(portB)];
  t.is((await postBlob(b.url, 'team/b', randomBytes(4 * KiB))).status, 201);
  t.is((await postBlob(a.url, 'team/a', randomBytes(24 * KiB))).status, 201);
  // b's figure catches up with a's push within the refresh interval (5 s; the scrape itself recounts when older).
  await waitFor('b to count a\'s push', async () => ((await usageMetric(portB)) === 28 * KiB ? true : undefined), 15_000, 250);
  const denied = await refusal(await postBlob(b.url, 'team/b', randomBytes(8 * KiB)));
  t.is(denied.code, 'DENIED');
  t.is(denied.detail.usage, 28 * KiB);
  t.is((await postBlob(a.url, 'team/a', randomBytes(2 * KiB))).status, 201);
  await waitFor('b to count a\'s second push', async () => ((await usageMetric(portB)) === 30 * KiB ? true : undefined), 15_000, 250);
  const [q] = await d.quota();
  t.like(q, { usage: 30 * KiB, running: 30 * KiB, repositories: 2 });
  // The limit gauge shows the rule's maxsize.
  const text = await (await fetch(`http://127.0.0.1:${portB}/metrics`)).text();
  t.regex(text, new RegExp(`^wharf_quota_limit_bytes\\{rule="policies\\.quotas\\[0\\] [^"]*"\\} ${32 * KiB}$`, 'm'));
}

test.serial('two replicas without Redis (filesystem) see each other\'s usage', async (t) => {
  await storageReplicas(t);
});

test.serial('S3: two replicas with Redis never exceed maxsize together and the GC recount equals the running count; without Redis they see each other', async (t) => {
  const server = await sharedS3(t);
  await redisReplicas(t, server);
  await storageReplicas(t, server);
});

test.serial('skopeo copy into a full quota fails with the DENIED message', async (t) => {
  const d = await deployment(t, [{ repositories: ['team/**'], maxsize: 100 * KiB }]);
  const w = await d.replica();
  const dir = await mkdtemp(join(tmpdir(), 'wharf-quotas-oci-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const image = generateImage({ firstLayerBytes: 512 * KiB });
  await writeOciLayout(dir, [{ tag: 'v1', target: image.manifest }], allBlobs(image));
  const out = await run('skopeo', ['--insecure-policy', 'copy', '--dest-tls-verify=false', `oci:${dir}:v1`, `docker://${w.host}/team/app:v1`]);
  t.not(out.code, 0);
  t.regex(out.stderr, /denied|DENIED/);
  t.regex(out.stderr, /quota policies\.quotas\[0\] \(team\/\*\*\) exceeded: .* used, this (blob|upload) needs/);
});

test.serial('SIGHUP changing maxsize applies to the next push', async (t) => {
  const w = await startWharf({ config: { log: { level: 'info' }, policies: { quotas: [{ repositories: ['team/**'], maxsize: 8 * KiB }] } } });
  t.teardown(() => w.stop());
  t.is((await postBlob(w.url, 'team/a', randomBytes(6 * KiB))).status, 201);
  t.is((await postBlob(w.url, 'team/a', randomBytes(4 * KiB))).status, 403);
  // The harness writes its config beside the data folder.
  const configPath = join(dirname(w.rootDirectory), 'config.yml');
  const config = parse(await readFile(configPath, 'utf8'));
  config.policies.quotas[0].maxsize = 16 * KiB;
  await writeFile(configPath, stringify(config));
  w.process.kill('SIGHUP');
  await waitFor('the reload', async () => (/policies: configuration reloaded/.test(w.output()) ? true : undefined));
  t.is((await postBlob(w.url, 'team/a', randomBytes(4 * KiB))).status, 201);
});
