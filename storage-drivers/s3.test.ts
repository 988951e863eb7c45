/**
 * The S3 driver against a real S3 (a throw-away Ceph RADOS Gateway on loopback, see testing/s3-test-server.ts): the shared
 * behaviour suite, then what only S3 has: multipart rules, multipart copy, aborts, paging, presigned URLs, retries
 * and the startup check.
 */
import test, { type ExecutionContext } from 'ava';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { HeadObjectCommand, ListMultipartUploadsCommand, ListPartsCommand } from '@aws-sdk/client-s3';
import pLimit from 'p-limit';
import { checkedDriver } from './checked.js';
import { Writable } from 'node:stream';
import { InvalidPathError, PathNotFoundError, StorageDriverError, copyIntoOf, type FileInfo, type StorageDriver } from './driver.js';
import { PartBudget, S3Driver, S3_LIMITS, copyRanges, maxUploadSize, partBufferSize, partSize, type S3DriverOptions } from './s3.js';
import { startS3TestServer, type S3TestServer } from '../testing/s3-test-server.js';
import { driverSuite } from '../testing/storage-suite.js';
import { S3FaultProxy, faultyProxy } from '../testing/faults-s3.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

let server: Promise<S3TestServer> | undefined;
const s3 = () => (server ??= startS3TestServer());
test.after.always(async () => {
  if (server) await (await server).stop();
});

/** A driver on the test server under a fresh root directory. */
async function driverOn(overrides: Partial<S3DriverOptions> = {}): Promise<{ raw: S3Driver; root: string; cleanup(): Promise<void> }> {
  const root = `t-${randomUUID()}`;
  const raw = new S3Driver({
    ...(await driverOptions()),
    rootDirectory: `/${root}/`,
    chunkSize: 5 * MiB,
    ...overrides,
  });
  return {
    raw,
    root,
    cleanup: async () => {
      await raw.delete('/').catch(() => {});
      raw.destroy();
    },
  };
}

driverSuite('s3', async () => {
  const { raw, cleanup } = await driverOn();
  return { driver: raw, cleanup, redirects: true };
});

async function setup(t: ExecutionContext, overrides: Partial<S3DriverOptions> = {}) {
  const { raw, root, cleanup } = await driverOn(overrides);
  t.teardown(cleanup);
  return { raw, root, driver: checkedDriver(raw), srv: await s3() };
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function writeIn(w: { write(c: Uint8Array): Promise<void> }, data: Buffer, piece: number): Promise<void> {
  for (let at = 0; at < data.length; at += piece) await w.write(data.subarray(at, at + piece));
}

/** Wait (polling, no fixed delays) until `probe` returns a value; fail after a generous deadline. */
async function until<T>(what: string, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function openUploads(raw: S3Driver, prefix: string) {
  const res = await raw.client.send(new ListMultipartUploadsCommand({ Bucket: raw.bucket, Prefix: prefix }));
  return res.Uploads ?? [];
}

async function etag(raw: S3Driver, path: string): Promise<string> {
  const res = await raw.client.send(new HeadObjectCommand({ Bucket: raw.bucket, Key: raw.key(path) }));
  return res.ETag ?? '';
}

// ---- arithmetic ----------------------------------------------------------------------------------------------------

test('s3: part sizes start at chunksize, never exceed 5 GiB, and 10,000 parts cover well over 100 GiB', (t) => {
  for (const chunk of [5 * MiB, 10 * MiB, 64 * MiB]) {
    t.is(partSize(1, chunk), chunk);
    t.is(partSize(1000, chunk), chunk);
    t.is(partSize(1001, chunk), 2 * chunk);
    let total = 0;
    for (let n = 1; n <= S3_LIMITS.maxParts; n++) {
      const size = partSize(n, chunk);
      t.true(size >= S3_LIMITS.minPartSize && size <= S3_LIMITS.maxPartSize);
      if (n > 1) t.true(size >= partSize(n - 1, chunk), 'sizes never shrink');
      total += size;
    }
    t.is(maxUploadSize(chunk), total);
    t.true(total >= 100 * GiB, `chunksize ${chunk / MiB} MiB covers only ${total / GiB} GiB`);
  }
  // With the smallest chunk size, a 100 GiB layer needs parts of at most 80 MiB (the memory a writer may buffer).
  let sum = 0;
  let n = 0;
  while (sum < 100 * GiB) sum += partSize(++n, 5 * MiB);
  t.true(n <= S3_LIMITS.maxParts);
  t.true(partSize(n, 5 * MiB) <= 80 * MiB, `part ${n} is ${partSize(n, 5 * MiB) / MiB} MiB`);
});

test('s3: copy ranges are contiguous, at most the chunk and 5 GiB, and at least 5 MiB each', (t) => {
  const cases: Array<[number, number]> = [
    [5 * MiB, 5 * MiB],
    [5 * MiB + 1, 5 * MiB],
    [12 * MiB, 5 * MiB],
    [1 * MiB, 32 * MiB],
    [6 * GiB, 5 * GiB],
    [6 * GiB + 7, 32 * MiB],
    [100 * GiB, 5 * GiB],
  ];
  for (const [size, chunk] of cases) {
    const ranges = copyRanges(size, chunk);
    t.is(ranges[0]!.start, 0);
    t.is(ranges.at(-1)!.end, size - 1);
    for (let i = 0; i < ranges.length; i++) {
      const n = ranges[i]!.end - ranges[i]!.start + 1;
      if (i > 0) t.is(ranges[i]!.start, ranges[i - 1]!.end + 1);
      t.true(n <= S3_LIMITS.maxCopySize, `${size}/${chunk}: range ${i} is ${n}`);
      if (i < ranges.length - 1) {
        t.true(n >= S3_LIMITS.minPartSize && n <= Math.max(chunk, S3_LIMITS.minPartSize * 2), `${size}/${chunk}: range ${i} is ${n}`);
        t.is(n, ranges[0]!.end + 1, 'all ranges but the last have one size');
      }
    }
    t.true(ranges.length <= S3_LIMITS.maxParts);
  }
  t.is(copyRanges(6 * GiB, 5 * GiB).length, 2, 'an object over 5 GiB is copied in more than one part');
});

// ---- uploads -------------------------------------------------------------------------------------------------------

test('s3: a writer sends parts of exactly chunksize while the upload is open, and commits them as one object', async (t) => {
  const { raw, driver } = await setup(t);
  const data = randomBytes(12 * MiB + 12345);
  const w = await driver.writer('/up/data', false);
  await writeIn(w, data.subarray(0, 11 * MiB), 64 * 1024);
  // Two full parts are due; the second may still be in flight when write() resolves.
  const key = raw.key('/up/data');
  const uploads = await openUploads(raw, key);
  t.is(uploads.length, 1);
  const parts = await until('two parts', async () => {
    const res = await raw.client.send(new ListPartsCommand({ Bucket: raw.bucket, Key: key, UploadId: uploads[0]!.UploadId }));
    return (res.Parts ?? []).length >= 2 ? res.Parts! : undefined;
  });
  t.deepEqual(parts.map((p) => p.Size), [5 * MiB, 5 * MiB]);
  await writeIn(w, data.subarray(11 * MiB), 1000); // small writes are buffered, not sent as tiny parts
  await w.commit();
  t.regex(await etag(raw, '/up/data'), /-3"?$/, 'three parts: two of 5 MiB and the rest');
  t.is(sha(await driver.getContent('/up/data')), sha(data));
  t.deepEqual(await openUploads(raw, key), []);
});

test('s3: small PATCH-sized appends are combined, and a large file is continued by server-side copy', async (t) => {
  const { raw, driver } = await setup(t);
  await driver.putContent('/up/data', '');
  const pieces = [randomBytes(100), randomBytes(3 * MiB), randomBytes(3 * MiB), randomBytes(10), randomBytes(2 * MiB)];
  const tags: string[] = [];
  for (const piece of pieces) {
    const w = await driver.writer('/up/data', true);
    await writeIn(w, piece, 4096);
    await w.close();
    tags.push(await etag(raw, '/up/data'));
  }
  const all = Buffer.concat(pieces);
  t.is((await driver.stat('/up/data')).size, all.length);
  t.is(sha(await driver.getContent('/up/data')), sha(all));
  // Under 5 MiB the object is rewritten whole (one PutObject); from 5 MiB on it is continued as a multipart
  // upload whose first part is the old object, copied server-side.
  t.notRegex(tags[1]!, /-\d+"?$/);
  t.regex(tags[2]!, /-\d+"?$/);
  t.regex(tags[4]!, /-2"?$/);
  t.deepEqual(await openUploads(raw, raw.key('/up')), []);
});

test('s3: an upload left open by a writer that never closed is resumed by another driver instance', async (t) => {
  const { raw, driver, root } = await setup(t);
  const data = randomBytes(11 * MiB);
  const crashed = await driver.writer('/up/data', false);
  await writeIn(crashed, data, MiB);
  const key = raw.key('/up/data');
  const [upload] = await openUploads(raw, key);
  await until('two flushed parts', async () => {
    const res = await raw.client.send(new ListPartsCommand({ Bucket: raw.bucket, Key: key, UploadId: upload!.UploadId }));
    return (res.Parts ?? []).length >= 2 ? true : undefined;
  });
  // `crashed` is abandoned here: its last 1 MiB was only in its memory.
  const other = new S3Driver({ ...(await driverOptions()), rootDirectory: root, chunkSize: 5 * MiB });
  t.teardown(() => other.destroy());
  const w = await checkedDriver(other).writer('/up/data', true);
  t.is(w.size, 10 * MiB, 'the flushed parts are the file');
  const more = randomBytes(1234);
  await w.write(more);
  await w.commit();
  t.is(sha(await driver.getContent('/up/data')), sha(Buffer.concat([data.subarray(0, 10 * MiB), more])));
  t.deepEqual(await openUploads(raw, key), []);
});

test('s3: cancel aborts the multipart upload; delete aborts abandoned ones; a truncating writer aborts stale ones', async (t) => {
  const { raw, driver } = await setup(t);
  const prefix = raw.key('/up');
  const w = await driver.writer('/up/a/data', false);
  await writeIn(w, randomBytes(11 * MiB), MiB);
  t.is((await openUploads(raw, prefix)).length, 1);
  await w.cancel();
  t.deepEqual(await openUploads(raw, prefix), [], 'ListMultipartUploads is empty after cancel');
  await t.throwsAsync(driver.stat('/up/a/data'), { instanceOf: PathNotFoundError });

  // Abandoned (never closed) writers under a directory that is deleted, as the registry deletes an upload.
  await driver.putContent('/up/b/startedat', 'now');
  const abandoned = await driver.writer('/up/b/data', false);
  await writeIn(abandoned, randomBytes(6 * MiB), MiB);
  t.is((await openUploads(raw, prefix)).length, 1);
  await driver.delete('/up/b');
  t.deepEqual(await openUploads(raw, prefix), []);

  const stale = await driver.writer('/up/c/data', false);
  await writeIn(stale, randomBytes(6 * MiB), MiB);
  const fresh = await driver.writer('/up/c/data', false);
  t.deepEqual(await openUploads(raw, prefix), []);
  await fresh.write(Buffer.from('fresh'));
  await fresh.commit();
  const again = await driver.writer('/up/c/data', true);
  t.is(again.size, 5, 'the stale upload did not come back');
  await again.close();
});

test('s3: the SDK builds a command\'s middleware once per client, not for every request', async (t) => {
  const { raw } = await setup(t);
  await raw.putContent('/cached/a', 'abc');
  // Only this driver's requests count: other tests run at the same time with clients of their own.
  const config = (raw as unknown as { client: { config: unknown } }).client.config;
  const original = HeadObjectCommand.prototype.resolveMiddleware;
  let built = 0;
  HeadObjectCommand.prototype.resolveMiddleware = function (this: HeadObjectCommand, ...args: Parameters<typeof original>) {
    if (args[1] === config) built++;
    return original.apply(this, args);
  };
  t.teardown(() => {
    HeadObjectCommand.prototype.resolveMiddleware = original;
  });
  for (let i = 0; i < 4; i++) t.is((await raw.stat('/cached/a')).size, 3);
  t.true(built <= 1, `the middleware of HeadObject was built ${built} times for 4 requests`);
});

test('s3: a failed part upload fails the writer and leaves no multipart upload behind', async (t) => {
  const { raw, driver } = await setup(t);
  const w = await driver.writer('/up/data', false);
  await writeIn(w, randomBytes(MiB), MiB);
  // Another process deletes the whole tree, aborting this upload; the writer must notice, not hang or succeed.
  await writeIn(w, randomBytes(5 * MiB), MiB);
  const key = raw.key('/up/data');
  await until('the part upload', async () => ((await openUploads(raw, key)).length > 0 ? true : undefined));
  await driver.delete('/up').catch(() => {});
  await raw.client.send(new ListMultipartUploadsCommand({ Bucket: raw.bucket, Prefix: key })).then(async (res) => {
    for (const u of res.Uploads ?? []) await raw.abortUpload(key, u.UploadId!);
  });
  await t.throwsAsync(async () => {
    await writeIn(w, randomBytes(5 * MiB), MiB);
    await w.commit();
  }, { instanceOf: StorageDriverError });
  t.deepEqual(await openUploads(raw, key), []);
});

// ---- move ----------------------------------------------------------------------------------------------------------

test('s3: move above multipartcopythresholdsize copies in parts of multipartcopychunksize; below, in one copy', async (t) => {
  const { raw, driver } = await setup(t, {
    multipartCopyThresholdSize: 5 * MiB,
    multipartCopyChunkSize: 5 * MiB,
    multipartCopyMaxConcurrency: 2,
  });
  const big = randomBytes(12 * MiB + 7);
  await driver.putContent('/m/big', big);
  await driver.move('/m/big', '/m/blobs/big');
  t.regex(await etag(raw, '/m/blobs/big'), /-2"?$/, 'a multipart copy of two parts (each at least 5 MiB)');
  t.is(sha(await driver.getContent('/m/blobs/big')), sha(big));
  await t.throwsAsync(driver.stat('/m/big'), { instanceOf: PathNotFoundError });

  const small = randomBytes(MiB);
  await driver.putContent('/m/small', small);
  await driver.move('/m/small', '/m/blobs/small');
  t.notRegex(await etag(raw, '/m/blobs/small'), /-\d+"?$/);
  t.true((await driver.getContent('/m/blobs/small')).equals(small));
  t.deepEqual(await openUploads(raw, raw.key('/m')), []);
});

// ---- listing -------------------------------------------------------------------------------------------------------

test('s3: list, walk and delete page through more than 1000 keys', async (t) => {
  const { driver } = await setup(t);
  const names = Array.from({ length: 1100 }, (_, i) => `tag${String(i).padStart(5, '0')}`);
  const limit = pLimit(32);
  await Promise.all(names.map((name) => limit(() => driver.putContent(`/repo/tags/${name}/current/link`, name))));
  const listed = await driver.list('/repo/tags');
  t.is(listed.length, names.length);
  t.deepEqual(listed, names.map((n) => `/repo/tags/${n}`));

  const walked: FileInfo[] = [];
  for await (const info of driver.walk('/repo/tags', { descend: () => false })) walked.push(info);
  t.is(walked.length, names.length);

  const after: string[] = [];
  for await (const info of driver.walk('/repo/tags', { startAfter: `/repo/tags/${names[1050]}/current/link` })) after.push(info.path);
  t.is(after.length, 49 * 3);
  t.is(after[0], `/repo/tags/${names[1051]}`);

  await driver.delete('/repo');
  await t.throwsAsync(driver.list('/repo/tags'), { instanceOf: PathNotFoundError });
  t.deepEqual(await driver.list('/'), []);
});

test('s3: listFiles lists every file below a prefix, 1000 keys a page, with sizes; deleteFiles deletes by the batch', async (t) => {
  const { driver } = await setup(t);
  const paths = Array.from({ length: 1100 }, (_, i) => `/blobs/sha256/${String(i % 7).padStart(2, '0')}/b${String(i).padStart(5, '0')}/data`);
  const limit = pLimit(32);
  await Promise.all(paths.map((path, i) => limit(() => driver.putContent(path, 'x'.repeat(i % 5)))));
  await driver.putContent('/blobs-elsewhere/data', 'not below the prefix');
  const listed: FileInfo[] = [];
  for await (const info of driver.listFiles!('/blobs')) listed.push(info);
  t.deepEqual(listed.map((i) => i.path).sort(), [...paths].sort());
  t.true(listed.every((i) => !i.isDir && i.size === Number(/b(\d+)/.exec(i.path)![1]) % 5 && i.modTime.getTime() > 0));
  const none: FileInfo[] = [];
  for await (const info of driver.listFiles!('/absent')) none.push(info);
  t.deepEqual(none, []);

  // 1,050 present and one absent (not an error): two DeleteObjects.
  await driver.deleteFiles!([...paths.slice(0, 1050), '/blobs/sha256/00/never/data']);
  const left: string[] = [];
  for await (const info of driver.listFiles!('/blobs')) left.push(info.path);
  t.deepEqual(left.sort(), paths.slice(1050).sort());
  t.is((await driver.getContent('/blobs-elsewhere/data')).toString(), 'not below the prefix');
  await t.throwsAsync(driver.deleteFiles!(['/a/../b']), { instanceOf: InvalidPathError });
});

test('s3: a ranged read of an empty file is an empty stream', async (t) => {
  const { driver } = await setup(t);
  await driver.putContent('/empty', '');
  const chunks: Buffer[] = [];
  for await (const c of await driver.reader('/empty', 0, 10)) chunks.push(c as Buffer);
  t.is(Buffer.concat(chunks).length, 0);
});

test('s3: keys are rootdirectory + path, the layout registry:2 uses', async (t) => {
  const { raw, driver, root } = await setup(t);
  await driver.putContent('/docker/registry/v2/blobs/sha256/ab/abcd/data', 'x');
  const res = await raw.client.send(new HeadObjectCommand({ Bucket: raw.bucket, Key: `${root}/docker/registry/v2/blobs/sha256/ab/abcd/data` }));
  t.is(res.ContentLength, 1);
});

// ---- redirects -----------------------------------------------------------------------------------------------------

test('s3: a presigned redirect URL downloads the bytes, and expires', async (t) => {
  const { driver } = await setup(t);
  const data = randomBytes(100_000);
  await driver.putContent('/blob', data);
  const url = await driver.redirectURL('/blob', { method: 'GET', expiresIn: 60 });
  t.truthy(url);
  const res = await fetch(url!);
  t.is(res.status, 200);
  t.true(Buffer.from(await res.arrayBuffer()).equals(data));
  const head = await fetch((await driver.redirectURL('/blob', { method: 'HEAD' }))!, { method: 'HEAD' });
  t.is(head.status, 200);
  t.is(head.headers.get('content-length'), String(data.length));
  // The signature covers the key: the URL cannot be bent to another object.
  const other = new URL(url!);
  other.pathname = other.pathname.replace(/blob$/, 'other');
  await driver.putContent('/other', 'secret');
  t.is((await fetch(other)).status, 403);
});

// ---- errors --------------------------------------------------------------------------------------------------------

async function driverOptions(): Promise<S3DriverOptions> {
  return (await s3()).driverOptions();
}

test('s3: startup check names a wrong secret, an unknown access key and a missing bucket', async (t) => {
  const base = await driverOptions();
  const check = async (options: S3DriverOptions) => {
    const d = new S3Driver({ ...options, maxAttempts: 1 });
    try {
      return await d.verify();
    } finally {
      d.destroy();
    }
  };
  // Ceph RGW honours If-None-Match, so nothing to warn about.
  t.deepEqual(await check(base), []);
  await t.throwsAsync(check({ ...base, secretKey: 'wrong' }), { instanceOf: StorageDriverError, message: /secret key is wrong/ });
  await t.throwsAsync(check({ ...base, accessKey: 'NOSUCHKEY' }), { instanceOf: StorageDriverError, message: /access key is not known/ });
  await t.throwsAsync(check({ ...base, bucket: 'no-such-bucket' }), { instanceOf: StorageDriverError, message: /bucket "no-such-bucket" does not exist/ });
});

test('s3: transient errors (503 SlowDown, connection resets) are retried with backoff', async (t) => {
  const base = await driverOptions();
  const proxy = await faultyProxy(base.regionEndpoint!, (n) => (n === 1 || n === 4 ? 'slowdown' : n === 2 || n === 5 ? 'reset' : undefined));
  t.teardown(proxy.close);
  const raw = new S3Driver({ ...base, regionEndpoint: proxy.url, rootDirectory: `t-${randomUUID()}` });
  t.teardown(async () => {
    await raw.delete('/').catch(() => {});
    raw.destroy();
  });
  const d = checkedDriver(raw);
  await d.putContent('/retried', 'made it');
  t.is((await d.getContent('/retried')).toString(), 'made it');
  t.deepEqual(proxy.faults, ['PUT slowdown', 'PUT reset', 'GET slowdown', 'GET reset']);
  t.is(proxy.count(), 6);

  // A permanent error is not retried forever and arrives as a StorageDriverError.
  const denied = await faultyProxy(base.regionEndpoint!, () => 'slowdown');
  t.teardown(denied.close);
  const hopeless = new S3Driver({ ...base, regionEndpoint: denied.url, maxAttempts: 3 });
  t.teardown(() => hopeless.destroy());
  await t.throwsAsync(checkedDriver(hopeless).getContent('/x'), { instanceOf: StorageDriverError, message: /SlowDown/ });
  t.is(denied.count(), 3);
});

test('s3: copies and multipart completions, during which S3 sends nothing, may take longer than the stall timeout', async (t) => {
  const { driver, root } = await setup(t);
  const big = randomBytes(6 * MiB + 3);
  await driver.putContent('/slow/big', big);
  await driver.putContent('/slow/small', 'small');
  const base = await driverOptions();
  // Every copy and every completion is answered 4 s late: S3 busy copying, as a loaded gateway is. The stall bound
  // (3 s) leaves room for the other requests of the move (a HEAD, the part uploads) on a loaded CI machine.
  const proxy = await S3FaultProxy.start(base.regionEndpoint!);
  t.teardown(() => proxy.close());
  proxy.set({
    fault: { kind: 'latency', ms: 4_000 },
    match: (r) => Boolean(r.headers['x-amz-copy-source']) || (r.method === 'POST' && r.query.has('uploadId')),
  });
  const slow = new S3Driver({
    ...base,
    regionEndpoint: proxy.url,
    rootDirectory: `/${root}/`,
    stallTimeoutMs: 3_000,
    multipartCopyThresholdSize: 5 * MiB,
    multipartCopyChunkSize: 5 * MiB,
  });
  t.teardown(() => slow.destroy());
  const d = checkedDriver(slow);
  await d.move('/slow/big', '/slow/big-moved');
  await d.move('/slow/small', '/slow/small-moved');
  t.is(sha(await driver.getContent('/slow/big-moved')), sha(big));
  t.is((await driver.getContent('/slow/small-moved')).toString(), 'small');
  t.true(proxy.faults.length >= 3, `a part copy, its completion and a copy were slow: ${proxy.faults.join(', ')}`);
  // Anything else still has the short bound: a read answered late fails (after its retries), it does not wait.
  proxy.set({ fault: { kind: 'latency', ms: 4_000 }, match: (r) => r.method === 'GET' });
  await t.throwsAsync(d.getContent('/slow/small-moved'), { instanceOf: StorageDriverError });
});

test('s3: a multipart move whose part copy fails starts no further parts, aborts its upload and keeps the source', async (t) => {
  const { raw, root, driver } = await setup(t);
  const big = randomBytes(20 * MiB + 7);
  await driver.putContent('/m/big', big);
  const base = await driverOptions();
  // Every UploadPartCopy (a PUT naming a copy source) is refused; with one attempt and one part at a time, the
  // first part's failure must keep the other three from starting.
  const proxy = await faultyProxy(base.regionEndpoint!, (_n, req) => (req.method === 'PUT' && req.headers['x-amz-copy-source'] ? 'slowdown' : undefined));
  t.teardown(proxy.close);
  const failing = new S3Driver({
    ...base,
    regionEndpoint: proxy.url,
    rootDirectory: `/${root}/`,
    maxAttempts: 1,
    multipartCopyThresholdSize: 5 * MiB,
    multipartCopyChunkSize: 5 * MiB,
    multipartCopyMaxConcurrency: 1,
  });
  t.teardown(() => failing.destroy());
  await t.throwsAsync(checkedDriver(failing).move('/m/big', '/m/moved'), { instanceOf: StorageDriverError, message: /SlowDown/ });
  t.deepEqual(proxy.faults, ['PUT slowdown'], 'one part copy tried, none after it');
  t.deepEqual(await openUploads(raw, raw.key('/m')), []);
  t.is(sha(await driver.getContent('/m/big')), sha(big));
  await t.throwsAsync(driver.stat('/m/moved'), { instanceOf: PathNotFoundError });
});

test('s3: a missing object is PathNotFoundError and a missing bucket is a StorageDriverError saying so', async (t) => {
  const { driver } = await setup(t);
  await t.throwsAsync(driver.getContent('/nothing'), { instanceOf: PathNotFoundError });
  const d: StorageDriver = checkedDriver(new S3Driver({ ...(await driverOptions()), bucket: 'gone', maxAttempts: 1 }));
  const err = await t.throwsAsync(d.getContent('/x'), { instanceOf: StorageDriverError });
  t.regex(err!.message, /NoSuchBucket/);
});

test('s3: a conditional put answered 409 (another conditional write in progress) is asked again, not taken for "exists"', async (t) => {
  const { root, driver } = await setup(t);
  const base = await driverOptions();
  const proxy = await S3FaultProxy.start(base.regionEndpoint!);
  t.teardown(() => proxy.close());
  const conflicted = new S3Driver({ ...base, regionEndpoint: proxy.url, rootDirectory: `/${root}/` });
  t.teardown(() => conflicted.destroy());
  const d = checkedDriver(conflicted);
  // The driver's one-time probe of conditional puts goes first, untouched.
  t.true(await d.putContentIfAbsent('/cond/warm-up', 'x'));
  proxy.set({ fault: { kind: 'status', status: 409 }, match: (r) => r.method === 'PUT' && r.headers['if-none-match'] === '*', times: 2 });
  t.true(await d.putContentIfAbsent('/cond/key', 'mine'), 'the put was decided after the conflicts: it created the object');
  t.is(proxy.faults.length, 2);
  t.is((await driver.getContent('/cond/key')).toString(), 'mine');
  // And a real 412 still means the object exists.
  t.false(await d.putContentIfAbsent('/cond/key', 'other'));
  t.is((await driver.getContent('/cond/key')).toString(), 'mine');
});

// ---- memory of writers and the blob GET path -------------------------------------------------------------------

test('s3: writers hold at most uploadbuffermemory in part buffers at once; the others wait, and every object is whole', async (t) => {
  const { raw, driver } = await setup(t, { uploadBufferMemory: 10 * MiB });
  const budget = raw.partBudget;
  const blobs = Array.from({ length: 5 }, () => randomBytes(7 * MiB + 4321));
  // No size hint: each writer reserves a whole part (5 MiB) before it buffers, so at most two fill at once.
  await Promise.all(blobs.map(async (data, i) => {
    const w = await driver.writer(`/many/${i}`, false);
    await writeIn(w, data, 256 * 1024);
    t.true(budget.held <= budget.limit, `held ${budget.held} within ${budget.limit}`);
    await w.commit();
  }));
  t.true(budget.peak <= 10 * MiB, `peak ${budget.peak} within the budget`);
  t.true(budget.peak >= 5 * MiB, 'part buffers were reserved');
  t.true(budget.peakWaiting > 0, 'some writers waited for a buffer');
  t.is(budget.held, 0, 'every buffer was given back');
  for (const [i, data] of blobs.entries()) t.is(sha(await driver.getContent(`/many/${i}`)), sha(data));
});

test('s3: a writer told how many bytes are coming reserves only that; more than told still arrives whole', async (t) => {
  const { raw, driver } = await setup(t);
  const budget = raw.partBudget;
  const small = randomBytes(300_000);
  const w = await driver.writer('/hinted/small', false);
  w.expect!(small.length);
  await w.write(small.subarray(0, 1000));
  t.is(budget.held, partBufferSize(small.length), 'a buffer of the announced size, not of a part (5 MiB)');
  await writeIn(w, small.subarray(1000), 50_000);
  await w.commit();
  t.is(budget.held, 0);
  t.is(sha(await driver.getContent('/hinted/small')), sha(small));

  // Told too little: the buffer grows (without waiting) up to a part, and parts are still of chunksize.
  const large = randomBytes(6 * MiB + 77);
  const u = await driver.writer('/hinted/large', false);
  u.expect!(1000);
  await writeIn(u, large, 100_000);
  await u.commit();
  t.is(budget.held, 0);
  t.regex(await etag(raw, '/hinted/large'), /-2"?$/, 'one part of 5 MiB and the rest');
  t.is(sha(await driver.getContent('/hinted/large')), sha(large));

  // An append reads a small object back into its buffer, sized for the object and what is announced.
  const more = randomBytes(2000);
  const a = await driver.writer('/hinted/small', true);
  a.expect!(more.length);
  await a.write(more);
  t.is(budget.held, partBufferSize(small.length + more.length));
  await a.commit();
  t.is(sha(await driver.getContent('/hinted/small')), sha(Buffer.concat([small, more])));
  t.is(budget.held, 0);
});

test('s3: part buffers given back are reused by the next writers, and together with those held stay within the budget', async (t) => {
  const { raw, driver } = await setup(t, { uploadBufferMemory: 12 * MiB });
  const budget = raw.partBudget;
  const first = randomBytes(3 * MiB + 5);
  const w = await driver.writer('/pool/first', false);
  w.expect!(first.length);
  await writeIn(w, first, 256 * 1024);
  await w.commit();
  t.is(budget.held, 0);
  t.is(budget.pooled, partBufferSize(first.length), 'the buffer was kept');
  // Writers of the same size take kept buffers; what is held and kept never passes the budget.
  const blobs = Array.from({ length: 6 }, (_, i) => randomBytes(3 * MiB + 100 - i));
  await Promise.all(blobs.map(async (data, i) => {
    const u = await driver.writer(`/pool/${i}`, false);
    u.expect!(data.length);
    await writeIn(u, data, 256 * 1024);
    t.true(budget.held + budget.pooled <= budget.limit, `held ${budget.held} + kept ${budget.pooled} within ${budget.limit}`);
    await u.commit();
  }));
  t.is(budget.held, 0);
  t.is(budget.pooled, 3 * partBufferSize(first.length), 'as many kept as fit in the budget');
  // Reused memory never leaks one object's bytes into another.
  for (const [i, data] of blobs.entries()) t.is(sha(await driver.getContent(`/pool/${i}`)), sha(data));
  t.is(sha(await driver.getContent('/pool/first')), sha(first));
});

test('part budget: a reservation takes a kept buffer of its size, makes room by dropping kept ones, and kept ones go when idle', async (t) => {
  const budget = new PartBudget(4 * MiB, 50);
  const a = await budget.reserve(MiB);
  const b = await budget.reserve(MiB + 1);
  t.is(a.length, MiB);
  t.is(b.length, 2 * MiB, 'sizes are rounded up to whole MiB');
  budget.release(a);
  budget.release(b);
  t.is(budget.pooled, 3 * MiB);
  const c = await budget.reserve(MiB - 1000);
  t.is(c, a, 'the kept buffer of that size is reused');
  t.is(budget.pooled, 2 * MiB);
  // 1 MiB held + 2 MiB kept: a new 3 MiB buffer drops the kept 2 MiB one to stay within 4 MiB.
  const d = await budget.reserve(3 * MiB);
  t.not(d, b);
  t.is(budget.held, 4 * MiB);
  t.is(budget.pooled, 0);
  // A reservation that does not fit waits for a buffer to come back.
  let waited: Buffer | undefined;
  const e = budget.reserve(MiB).then((buffer) => { waited = buffer; });
  await new Promise((resolve) => setImmediate(resolve));
  t.is(waited, undefined);
  budget.release(c);
  await e;
  t.is(waited, c);
  budget.release(waited!);
  budget.release(d);
  t.is(budget.held, 0);
  t.true(budget.pooled > 0);
  const deadline = Date.now() + 5000;
  while (budget.pooled > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  t.is(budget.pooled, 0, 'kept buffers were dropped once idle');
  t.is(partBufferSize(1), 64 * 1024);
  t.is(partBufferSize(300_000), 5 * 64 * 1024);
  t.is(partBufferSize(5 * MiB), 5 * MiB);
});

test('s3: a cancelled or failed writer gives its part buffers back', async (t) => {
  const { raw, driver } = await setup(t);
  const w = await driver.writer('/gone', false);
  await w.write(randomBytes(1000));
  t.is(raw.partBudget.held, 5 * MiB);
  await w.cancel();
  t.is(raw.partBudget.held, 0);
  const u = await driver.writer('/closed', false);
  await u.write(randomBytes(1000));
  await u.close();
  t.is(raw.partBudget.held, 0);
  t.is((await driver.stat('/closed')).size, 1000);
});

/** A Writable that keeps what it is given, taking each chunk after `delayMs` (so the copy must wait for it). */
function sink(delayMs = 0): Writable & { received(): Buffer } {
  const chunks: Buffer[] = [];
  const w = new Writable({
    highWaterMark: 16 * 1024,
    write(chunk: Buffer, _enc, cb) {
      chunks.push(Buffer.from(chunk));
      if (delayMs > 0) setTimeout(cb, delayMs);
      else cb();
    },
  });
  return Object.assign(w, { received: () => Buffer.concat(chunks) });
}

test('s3: a reader copies itself into a Writable (COPY_INTO), whole and ranged, with backpressure', async (t) => {
  const { driver } = await setup(t);
  const data = randomBytes(3 * MiB + 999);
  await driver.putContent('/copied', data);
  for (const [offset, length] of [[0, undefined], [12345, 2 * MiB], [data.length - 10, 10]] as Array<[number, number | undefined]>) {
    const stream = await driver.reader('/copied', offset, length);
    const copyInto = copyIntoOf(stream);
    t.truthy(copyInto, 'the checked stream forwards the S3 reader\'s COPY_INTO');
    const dest = sink(offset === 0 ? 1 : 0);
    const err = await new Promise<unknown>((resolve) => copyInto!(dest, resolve));
    t.falsy(err);
    t.is(sha(dest.received()), sha(data.subarray(offset, length === undefined ? undefined : offset + length)));
  }
  // A destination that goes away stops the copy without an error, and the body is released.
  const stream = await driver.reader('/copied');
  const dest = sink(5);
  const done = new Promise<unknown>((resolve) => copyIntoOf(stream)!(dest, resolve));
  setTimeout(() => dest.destroy(), 20);
  t.falsy(await done);
  t.true(dest.received().length < data.length);
});
