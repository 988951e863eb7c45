import test from 'ava';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDriver } from '../../storage-drivers/index.js';
import { PathNotFoundError, UnsupportedOperationError, type FileWriter, type StorageDriver } from '../../storage-drivers/driver.js';
import { errorResponse } from '../http/errors.js';
import { RegistryError } from './errors.js';
import * as layout from './layout.js';
import { parseDigest } from './reference.js';
import { LocalRegistry } from './registry.js';
import { BlobStore } from './blobs.js';
import { waitFor } from '../../testing/helpers.js';
import { MIN_WRITE_WINDOW, SLAB_BYTES, UNJOINED_WRITE_BUDGET, UploadStore, WRITE_BATCH, WRITE_BUDGET, WRITE_WINDOW, slabs } from './uploads.js';

const digestOf = (data: Buffer) => parseDigest(`sha256:${createHash('sha256').update(data).digest('hex')}`);

async function* chunks(parts: Buffer[]): AsyncIterable<Uint8Array> {
  yield* parts;
}

/** A driver whose upload writers fail the `failAt`-th write (counted from 1) and every later one. */
function failingWrites(driver: StorageDriver, failAt: number): StorageDriver & { outstanding: () => number } {
  let inFlight = 0;
  return Object.assign(Object.create(driver) as StorageDriver, {
    outstanding: () => inFlight,
    async writer(path: string, append: boolean): Promise<FileWriter> {
      const inner = await driver.writer(path, append);
      let calls = 0;
      return {
        async write(chunk: Uint8Array) {
          const call = ++calls;
          inFlight++;
          try {
            await new Promise((r) => setTimeout(r, 1));
            if (call >= failAt) throw new Error('disk full');
            await inner.write(chunk);
          } finally {
            inFlight--;
          }
        },
        get size() { return inner.size; },
        commit: () => inner.commit(),
        close: () => inner.close(),
        cancel: () => inner.cancel(),
      };
    },
  });
}

test('an upload keeps several writes in flight and stores every byte in order', async (t) => {
  const driver = createDriver({ driver: 'inmemory' });
  const registry = new LocalRegistry(driver);
  const parts = Array.from({ length: 40 }, (_, i) => Buffer.alloc(64 * 1024 + i, i));
  const data = Buffer.concat(parts);
  const { id } = await registry.uploads.start('r');
  const status = await registry.uploads.append('r', id, chunks(parts));
  t.is(status.offset, data.length);
  t.true((await driver.getContent(layout.uploadDataPath('r', id))).equals(data));
  const desc = await registry.uploads.complete('r', id, digestOf(data));
  t.is(desc.size, data.length);
});

test('a write failing while others are in flight fails the request, leaves no write running, and the session resumes from storage', async (t) => {
  const inner = createDriver({ driver: 'inmemory' });
  const driver = failingWrites(inner, 5);
  const registry = new LocalRegistry(driver);
  const parts = Array.from({ length: 8 }, (_, i) => Buffer.alloc(WRITE_WINDOW / 4, i + 1));
  const { id } = await registry.uploads.start('r');
  await t.throwsAsync(registry.uploads.append('r', id, chunks(parts)), { message: 'disk full' });
  t.is(driver.outstanding(), 0);

  // What storage holds is the truth: finish the session on a healthy replica under the digest of those bytes.
  const stored = await inner.getContent(layout.uploadDataPath('r', id));
  t.true(stored.equals(Buffer.concat(parts.slice(0, 4))));
  const other = new LocalRegistry(inner);
  const rest = Buffer.from('the rest');
  const { offset } = await other.uploads.status('r', id);
  t.is(offset, stored.length);
  const all = Buffer.concat([stored, rest]);
  await other.uploads.complete('r', id, digestOf(all), chunks([rest]));
  t.true((await other.blobs.getContent(digestOf(all)))?.equals(all));
});

/** A driver that notes how each upload writer it hands out ends: committed (made durable) or only closed. */
function recordingEnds(driver: StorageDriver): StorageDriver & { ends: string[] } {
  const ends: string[] = [];
  return Object.assign(Object.create(driver) as StorageDriver, {
    ends,
    async writer(path: string, append: boolean): Promise<FileWriter> {
      const inner = await driver.writer(path, append);
      return {
        write: (chunk: Uint8Array) => inner.write(chunk),
        get size() { return inner.size; },
        commit: () => { ends.push('commit'); return inner.commit(); },
        close: () => { ends.push('close'); return inner.close(); },
        cancel: () => { ends.push('cancel'); return inner.cancel(); },
      };
    },
  });
}

test('every request that stores upload bytes commits them before it is answered; a failed one only closes', async (t) => {
  const driver = recordingEnds(createDriver({ driver: 'inmemory' }));
  const registry = new LocalRegistry(driver);
  const { id } = await registry.uploads.start('r');
  driver.ends.length = 0; // creating the empty data file is not a request that stores bytes
  const first = Buffer.alloc(100_000, 1);
  await registry.uploads.append('r', id, chunks([first]));
  t.deepEqual(driver.ends, ['commit'], 'PATCH');

  async function* breaksOff(): AsyncIterable<Uint8Array> {
    yield Buffer.alloc(10, 2);
    throw new Error('client went away');
  }
  await t.throwsAsync(registry.uploads.append('r', id, breaksOff()), { message: 'client went away' });
  t.deepEqual(driver.ends, ['commit', 'close'], 'a request that fails is not committed');

  const stored = await driver.getContent(layout.uploadDataPath('r', id));
  const last = Buffer.alloc(5, 3);
  const all = Buffer.concat([stored, last]);
  await registry.uploads.complete('r', id, digestOf(all), chunks([last]));
  // The failed request dropped the running hash, so completing re-hashes the stored bytes into a private copy,
  // which is committed too before it becomes the blob.
  t.deepEqual(driver.ends, ['commit', 'close', 'commit', 'commit'], 'PUT with the last chunk, then the verified copy');
  t.true((await registry.blobs.getContent(digestOf(all)))?.equals(all));
});

test('a digest that does not match what was written makes nothing visible', async (t) => {
  const driver = createDriver({ driver: 'inmemory' });
  const registry = new LocalRegistry(driver);
  const data = Buffer.alloc(3 * WRITE_WINDOW, 7);
  const wrong = digestOf(Buffer.from('something else'));
  const { id } = await registry.uploads.start('r');
  const error = await t.throwsAsync(registry.uploads.complete('r', id, wrong, chunks([data])));
  t.true(error instanceof RegistryError && error.code === 'DIGEST_INVALID');
  t.is(await registry.blobs.getContent(wrong), undefined);
});

test('running hashes are kept for the most recently used sessions only; an evicted one is rebuilt from storage', async (t) => {
  const inner = createDriver({ driver: 'inmemory' });
  let reads = 0;
  const driver = Object.assign(Object.create(inner) as StorageDriver, {
    reader(path: string, offset?: number, length?: number) {
      reads++;
      return inner.reader(path, offset, length);
    },
  });
  const blobs = new BlobStore(driver);
  const uploads = new UploadStore(driver, blobs, {}, 2);
  const data = [Buffer.alloc(1000, 1), Buffer.alloc(2000, 2), Buffer.alloc(3000, 3)];
  const ids: string[] = [];
  for (const d of data) {
    const { id } = await uploads.start('r');
    await uploads.append('r', id, chunks([d]));
    ids.push(id);
  }
  // The third session pushed the first one's hash out; the second and third still have theirs.
  await uploads.complete('r', ids[2]!, digestOf(data[2]!));
  await uploads.complete('r', ids[1]!, digestOf(data[1]!));
  t.is(reads, 0, 'kept hashes need no read of the stored bytes');
  const wrong = await t.throwsAsync(uploads.complete('r', ids[0]!, digestOf(data[1]!)));
  t.true(wrong instanceof RegistryError && wrong.code === 'DIGEST_INVALID', 'the rebuilt hash still checks the digest');
  t.is(reads, 1, 'the evicted hash was rebuilt from storage');

  const { id } = await uploads.start('r');
  await uploads.append('r', id, chunks([data[0]!]));
  await uploads.complete('r', id, digestOf(data[0]!));
  t.true((await blobs.getContent(digestOf(data[0]!)))?.equals(data[0]!));
});

/**
 * A driver whose writers take a moment per write and note the most bytes each writer had in flight at once. Once
 * `together` is set, writers are handed out only when that many were asked for, so that all those uploads write at
 * the same time from their first chunk on.
 */
function slowWrites(driver: StorageDriver): StorageDriver & { most: number[]; together?: number } {
  const most: number[] = [];
  const waiting: Array<() => void> = [];
  const slow = Object.assign(Object.create(driver) as StorageDriver, {
    most,
    together: undefined as number | undefined,
    async writer(path: string, append: boolean): Promise<FileWriter> {
      if (slow.together !== undefined) {
        await new Promise<void>((resolve) => {
          waiting.push(resolve);
          if (waiting.length === slow.together) for (const go of waiting.splice(0)) go();
        });
      }
      const inner = await driver.writer(path, append);
      const index = most.push(0) - 1;
      let inFlight = 0;
      return {
        async write(chunk: Uint8Array) {
          inFlight += chunk.byteLength;
          most[index] = Math.max(most[index]!, inFlight);
          await new Promise((r) => setTimeout(r, 1));
          await inner.write(chunk);
          inFlight -= chunk.byteLength;
        },
        get size() { return inner.size; },
        commit: () => inner.commit(),
        close: () => inner.close(),
        cancel: () => inner.cancel(),
      };
    },
  });
  return slow;
}

test('the write window is wide for one upload and shares the budget between many (a writer that does not join writes)', async (t) => {
  const chunk = 64 * 1024;
  const parts = (n: number) => Array.from({ length: n }, (_, i) => Buffer.alloc(chunk, i));

  const alone = slowWrites(createDriver({ driver: 'inmemory' }));
  const one = new LocalRegistry(alone);
  const { id } = await one.uploads.start('r');
  await one.uploads.append('r', id, chunks(parts(40)));
  const single = alone.most.at(-1)!;
  t.true(single > MIN_WRITE_WINDOW + chunk, `one upload kept ${single} bytes in flight`);
  t.true(single <= WRITE_WINDOW + chunk);

  const shared = slowWrites(createDriver({ driver: 'inmemory' }));
  const many = new LocalRegistry(shared);
  const count = 16;
  const ids = await Promise.all(Array.from({ length: count }, async () => (await many.uploads.start('r')).id));
  shared.most.length = 0; // only the appends' writers
  shared.together = count;
  await Promise.all(ids.map((i) => many.uploads.append('r', i, chunks(parts(16)))));
  const window = Math.max(MIN_WRITE_WINDOW, UNJOINED_WRITE_BUDGET / count);
  t.is(shared.most.length, count);
  for (const most of shared.most) t.true(most <= window + chunk, `an upload among ${count} kept ${most} bytes in flight`);
});

/**
 * A driver whose upload writers note the bytes of the chunks written in each turn (a batch a writer that joins writes
 * would write with one call), and say they join writes when `joins` is set.
 */
function batchRecording(driver: StorageDriver, joins: boolean): StorageDriver & { batches: number[][] } {
  const batches: number[][] = [];
  return Object.assign(Object.create(driver) as StorageDriver, {
    batches,
    async writer(path: string, append: boolean): Promise<FileWriter> {
      const inner = await driver.writer(path, append);
      const mine: number[] = [];
      batches.push(mine);
      let turn: number[] | undefined;
      return {
        write(chunk: Uint8Array) {
          if (!turn) {
            turn = [];
            const closing = turn;
            queueMicrotask(() => { mine.push(closing.reduce((a, b) => a + b, 0)); turn = undefined; });
          }
          turn.push(chunk.byteLength);
          return inner.write(chunk);
        },
        get size() { return inner.size; },
        joinsWrites: joins,
        commit: () => inner.commit(),
        close: () => inner.close(),
        cancel: () => inner.cancel(),
      };
    },
  });
}

test('an upload hands its chunks to a writer that joins writes in batches of WRITE_BATCH bytes, and the rest at the end', async (t) => {
  const chunk = 64 * 1024;
  const recording = batchRecording(createDriver({ driver: 'inmemory' }), true);
  const registry = new LocalRegistry(recording);
  const perBatch = WRITE_BATCH / chunk;
  const parts = Array.from({ length: 5 * perBatch + 1 }, (_, i) => Buffer.alloc(chunk, i));
  const { id } = await registry.uploads.start('r');
  await registry.uploads.append('r', id, chunks(parts));
  const batches = recording.batches.at(-1)!;
  // One upload alone has the widest window, so the batch is WRITE_BATCH, 5 times, then the last chunk.
  t.deepEqual(batches, [...Array<number>(5).fill(WRITE_BATCH), chunk]);
  const data = Buffer.concat(parts);
  t.true((await recording.getContent(layout.uploadDataPath('r', id))).equals(data));
  t.is((await registry.uploads.complete('r', id, digestOf(data))).size, data.length);
});

/** A filesystem driver in a temporary directory, removed after the test. */
async function filesystemDriver(t: import('ava').ExecutionContext): Promise<StorageDriver> {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-uploads-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return createDriver({ driver: 'filesystem', rootDirectory: dir });
}

test('the bytes of a body that pauses reach a writer that joins writes without a full batch; a body cut short keeps them', async (t) => {
  const chunk = 64 * 1024;
  const recording = batchRecording(createDriver({ driver: 'inmemory' }), true);
  const registry = new LocalRegistry(recording);
  const { id } = await registry.uploads.start('r');
  const paused = pausedBody(Buffer.alloc(chunk, 1), [Buffer.alloc(chunk, 2)]);
  const appending = registry.uploads.append('r', id, paused.body);
  try {
    await paused.sent;
    // Well under WRITE_BATCH, and nothing more comes until the bytes are with the writer.
    await waitFor('the paused bytes to reach the writer', async () => (recording.batches.at(-1)?.[0] === chunk ? true : undefined), 5_000, 5);
  } finally {
    paused.release();
  }
  t.is((await appending).offset, 2 * chunk);

  // A client that goes away after sending some bytes: what it sent is stored, and the session resumes from there.
  const other = await registry.uploads.start('r');
  async function* cut(): AsyncIterable<Uint8Array> {
    yield Buffer.alloc(chunk, 3);
    throw new Error('client went away');
  }
  await t.throwsAsync(registry.uploads.append('r', other.id, cut()), { message: 'client went away' });
  t.is((await registry.uploads.status('r', other.id)).offset, chunk);
});

test('a writer that does not join writes (S3 copies each chunk into a part buffer) gets each chunk as it comes', async (t) => {
  const chunk = 64 * 1024;
  const recording = batchRecording(createDriver({ driver: 'inmemory' }), false);
  const registry = new LocalRegistry(recording);
  const parts = Array.from({ length: 12 }, (_, i) => Buffer.alloc(chunk, i));
  const { id } = await registry.uploads.start('r');
  await registry.uploads.append('r', id, chunks(parts));
  t.deepEqual(recording.batches.at(-1), Array<number>(12).fill(chunk));
  t.true(UNJOINED_WRITE_BUDGET < WRITE_BUDGET);
});

test('the filesystem writer joins writes, also behind the checked wrapper every driver is used through', async (t) => {
  const driver = await filesystemDriver(t);
  const writer = await driver.writer('/w/data', false);
  t.true(writer.joinsWrites);
  await writer.close();
  const s3like = await createDriver({ driver: 'inmemory' }).writer('/w/data', false);
  t.falsy(s3like.joinsWrites);
});


/**
 * A body whose source reuses one buffer: each chunk is yielded, then overwritten as soon as the upload asks for the
 * next one (as a socket's reader may). Returns the body and what each chunk held when it was yielded.
 */
function reusedBuffer(sizes: number[]): { body: AsyncIterable<Uint8Array>; sent: Buffer[] } {
  const sent: Buffer[] = [];
  const buffer = Buffer.alloc(Math.max(...sizes));
  async function* body(): AsyncIterable<Uint8Array> {
    for (const [i, size] of sizes.entries()) {
      for (let j = 0; j < size; j++) buffer[j] = (i * 31 + j * 7) & 0xff;
      sent.push(Buffer.from(buffer.subarray(0, size)));
      yield buffer.subarray(0, size);
      buffer.fill(0xee); // the source moves on: whatever still points at these bytes now reads garbage
    }
  }
  return { body: body(), sent };
}

// Serial: the pool is the process's, and the counts below must not see other tests' uploads.
test.serial('an upload to a writer that joins writes copies the body into pooled buffers: a chunk its source reuses is stored as it came', async (t) => {
  const driver = await filesystemDriver(t);
  const registry = new LocalRegistry(driver);
  // Sizes that cross the pooled buffers' edges in every way: smaller, larger, exactly one, one byte.
  const sizes = [50_000, 70_000, SLAB_BYTES, 1, SLAB_BYTES - 1, 3 * SLAB_BYTES + 5, 12_345, ...Array<number>(20).fill(65_255)];
  const { body, sent } = reusedBuffer(sizes);
  const { id } = await registry.uploads.start('r');
  const status = await registry.uploads.append('r', id, body);
  const data = Buffer.concat(sent);
  t.is(status.offset, data.length);
  t.true((await driver.getContent(layout.uploadDataPath('r', id))).equals(data));
  t.is((await registry.uploads.complete('r', id, digestOf(data))).size, data.length);
  t.is(slabs.held, 0, 'every pooled buffer is given back once written');

  // The next upload fills the buffers the first one gave back.
  const allocated = slabs.allocated;
  t.true(slabs.pooled > 0);
  const again = reusedBuffer(sizes);
  const second = await registry.uploads.start('r');
  await registry.uploads.append('r', second.id, again.body);
  t.true((await driver.getContent(layout.uploadDataPath('r', second.id))).equals(Buffer.concat(again.sent)));
  t.is(slabs.allocated, allocated);
  t.is(slabs.held, 0);
});

test.serial('pooled buffers come back when the writes fail, and the session resumes from what storage holds', async (t) => {
  const inner = await filesystemDriver(t);
  // Fails from the 5th write on; says it joins writes, so that the body is copied into pooled buffers.
  const failing = failingWrites(inner, 5);
  const joining = Object.assign(Object.create(failing) as StorageDriver, {
    async writer(path: string, append: boolean): Promise<FileWriter> {
      const writer = await failing.writer(path, append);
      return Object.assign(writer, { joinsWrites: true });
    },
  });
  const registry = new LocalRegistry(joining);
  const { id } = await registry.uploads.start('r');
  const { body } = reusedBuffer(Array<number>(40).fill(40_000));
  await t.throwsAsync(registry.uploads.append('r', id, body));
  t.is(failing.outstanding(), 0);
  t.is(slabs.held, 0);
  const stored = (await inner.stat(layout.uploadDataPath('r', id))).size;
  t.is((await registry.uploads.status('r', id)).offset, stored);
});

test('a request writing to a session reads the stored size once: the writer it opens after claiming checks it', async (t) => {
  const fs = await filesystemDriver(t);
  const stats: string[] = [];
  const driver = Object.assign(Object.create(fs) as StorageDriver, {
    stat(path: string) {
      stats.push(path);
      return fs.stat(path);
    },
  });
  const registry = new LocalRegistry(driver);
  const { id } = await registry.uploads.start('r');
  const data = layout.uploadDataPath('r', id);
  stats.length = 0;
  await registry.uploads.append('r', id, chunks([Buffer.from('first ')]));
  t.deepEqual(stats.filter((p) => p === data), [data], 'PATCH');
  stats.length = 0;
  const whole = Buffer.from('first last');
  await registry.uploads.complete('r', id, digestOf(whole), chunks([Buffer.from('last')]));
  t.deepEqual(stats.filter((p) => p === data), [data], 'PUT with the last chunk');
  t.deepEqual(await registry.blobs.getContent(digestOf(whole)), whole);
});

test('a session removed between reading its offset and writing is unknown, and the write leaves nothing of it behind', async (t) => {
  const fs = await filesystemDriver(t);
  let cancelNow: string | undefined;
  const driver = Object.assign(Object.create(fs) as StorageDriver, {
    async putContentIfAbsent(path: string, content: Uint8Array | string) {
      // Another request cancels the session just before this one's claim is created (which makes its folder again).
      if (cancelNow && path.startsWith(`${cancelNow}/claims/`)) await fs.delete(cancelNow);
      return fs.putContentIfAbsent(path, content);
    },
  });
  const registry = new LocalRegistry(driver);
  const { id } = await registry.uploads.start('r');
  cancelNow = layout.uploadDir('r', id);
  const err = await t.throwsAsync(registry.uploads.append('r', id, chunks([Buffer.from('late bytes')])), { instanceOf: RegistryError });
  t.is(err?.code, 'BLOB_UPLOAD_UNKNOWN');
  await t.throwsAsync(fs.stat(layout.uploadDir('r', id)), { instanceOf: PathNotFoundError });
});

/** A body that yields `first`, then waits until `release()` before yielding `rest` (a slow client). */
function pausedBody(first: Buffer, rest: Buffer[] = []) {
  let release!: () => void;
  const go = new Promise<void>((resolve) => { release = resolve; });
  let started!: () => void;
  const sent = new Promise<void>((resolve) => { started = resolve; });
  async function* body(): AsyncIterable<Uint8Array> {
    if (first.length > 0) yield first;
    started();
    await go;
    yield* rest;
  }
  return { body: body(), sent, release };
}

/** Two processes sharing one storage: each has its own UploadStore (running hashes, busy set) on the driver. */
function twoProcesses(driver: StorageDriver) {
  const blobs = new BlobStore(driver);
  return { blobs, a: new UploadStore(driver, blobs), b: new UploadStore(driver, blobs) };
}

const isCode = (err: unknown, code: string, status?: number) =>
  err instanceof RegistryError && err.code === code && (status === undefined || errorResponse(err).status === status);

test('a request of another process writing at an offset already claimed is refused with 416 and the Range', async (t) => {
  const driver = createDriver({ driver: 'inmemory' });
  const { a, b } = twoProcesses(driver);
  const { id } = await a.start('r');
  const slow = pausedBody(Buffer.alloc(0), [Buffer.from('from a')]);
  const writing = a.append('r', id, slow.body);
  await slow.sent; // a holds the claim at 0 and waits for its client
  const refused = await t.throwsAsync(b.append('r', id, chunks([Buffer.from('from b')])));
  t.true(isCode(refused, 'BLOB_UPLOAD_INVALID', 416), String(refused));
  t.is(errorResponse(refused).headers.Range, '0-0');
  const refusedPut = await t.throwsAsync(b.complete('r', id, digestOf(Buffer.from('from b')), chunks([Buffer.from('from b')])));
  t.true(isCode(refusedPut, 'BLOB_UPLOAD_INVALID', 416), String(refusedPut));
  slow.release();
  t.is((await writing).offset, 6);
  const desc = await a.complete('r', id, digestOf(Buffer.from('from a')));
  t.is(desc.size, 6);
  t.deepEqual(await driver.getContent(layout.blobDataPath(digestOf(Buffer.from('from a')))), Buffer.from('from a'));
});

/** Resolves once `path` holds `size` bytes (a write of another request has reached storage). */
async function sizeReaches(driver: StorageDriver, path: string, size: number): Promise<void> {
  while ((await driver.stat(path)).size !== size) await new Promise((r) => setTimeout(r, 5));
}

test('bytes another process wrote inside the range a running hash covers never become the blob under that digest', async (t) => {
  const driver = await filesystemDriver(t);
  const { a, b } = twoProcesses(driver);
  const { id } = await a.start('r');
  const data = layout.uploadDataPath('r', id);
  const a1 = Buffer.alloc(1000, 1);
  const a2 = Buffer.alloc(1000, 2);
  const slowA = pausedBody(a1, [a2]);
  const writingA = a.append('r', id, slowA.body);
  await sizeReaches(driver, data, 1000);
  // b starts writing where the stored bytes end now, then a writes on, then b writes into what a wrote; unless b
  // is refused at once, which leaves nothing to interleave.
  const slowB = pausedBody(Buffer.alloc(1, 9), [Buffer.alloc(499, 9)]);
  let refused: unknown;
  const writingB = b.append('r', id, slowB.body).catch((err: unknown) => { refused = err; });
  while (refused === undefined && (await driver.stat(data)).size !== 1001) await new Promise((r) => setTimeout(r, 5));
  slowA.release();
  t.is((await writingA).offset, 2000);
  slowB.release();
  await writingB;
  if (refused !== undefined) t.true(isCode(refused, 'BLOB_UPLOAD_INVALID', 416), String(refused));

  const digest = digestOf(Buffer.concat([a1, a2]));
  const stored = await driver.getContent(data);
  const completed = await a.complete('r', id, digest).catch((err: unknown) => err);
  if (stored.equals(Buffer.concat([a1, a2]))) {
    t.is((completed as { size?: number }).size, 2000, String(completed));
  } else {
    t.true(isCode(completed, 'DIGEST_INVALID'), String(completed));
  }
  const blob = await contentIfExists(driver, layout.blobDataPath(digest));
  if (blob) t.true((await driver.getContent(layout.blobDataPath(digest))).equals(Buffer.concat([a1, a2])));
  t.is(refused !== undefined, true, 'b may not write into a session while a writes to it');
});

async function contentIfExists(driver: StorageDriver, path: string) {
  try {
    return await driver.stat(path);
  } catch {
    return undefined;
  }
}

test('bytes changed after completion hashed them never become the blob: the re-hashed copy is what is committed', async (t) => {
  const inner = createDriver({ driver: 'inmemory' });
  const data = Buffer.alloc(300_000, 5);
  const forged = Buffer.alloc(300_000, 6);
  let name = '';
  let id = '';
  // As a writer of another process that keeps its file open: the data changes as soon as it has been read.
  const driver = Object.assign(Object.create(inner) as StorageDriver, {
    async reader(path: string, offset?: number, length?: number) {
      const stream = await inner.reader(path, offset, length);
      if (path === layout.uploadDataPath(name, id)) stream.once('end', () => void inner.putContent(path, forged));
      return stream;
    },
  });
  const { a, b } = twoProcesses(driver);
  name = 'r';
  ({ id } = await a.start(name));
  await a.append(name, id, chunks([data]));
  // Completed where the running hash is missing (another replica), so the stored bytes are read and hashed.
  const desc = await b.complete(name, id, digestOf(data));
  t.is(desc.size, data.length);
  const blob = await inner.getContent(layout.blobDataPath(digestOf(data)));
  t.true(blob.equals(data), 'the blob holds the bytes that were hashed');
});

test('a blob file already there under the digest is replaced by the pushed bytes, never trusted', async (t) => {
  const driver = createDriver({ driver: 'inmemory' });
  const registry = new LocalRegistry(driver);
  const honest = Buffer.from('the honest content of the blob');
  const digest = digestOf(honest);
  // What a writer that won a race earlier would have left: other bytes of the same length under the digest.
  const planted = Buffer.alloc(honest.length, 'x');
  for (const [label, complete] of [
    ['monolithic', async () => {
      const { id } = await registry.uploads.start('r');
      return registry.uploads.complete('r', id, digest, chunks([honest]));
    }],
    ['re-hashed on another process', async () => {
      const { id } = await registry.uploads.start('r');
      await registry.uploads.append('r', id, chunks([honest]));
      return new LocalRegistry(driver).uploads.complete('r', id, digest);
    }],
  ] as const) {
    await driver.putContent(layout.blobDataPath(digest), planted);
    await complete();
    t.deepEqual(await registry.blobs.getContent(digest), honest, label);
  }
});

test('a request that wrote nothing leaves no claim behind, and a failed completion can be retried', async (t) => {
  const driver = createDriver({ driver: 'inmemory' });
  let failOnce = true;
  const blobs = new BlobStore(driver);
  const uploads = new UploadStore(driver, blobs, {
    beforeBlobLinked() {
      if (failOnce) {
        failOnce = false;
        throw new Error('live set unavailable');
      }
    },
  });
  const data = Buffer.from('some bytes');
  const { id } = await uploads.start('r');
  t.is((await uploads.append('r', id, chunks([]))).offset, 0, 'an empty PATCH');
  t.deepEqual(await driver.list(layout.uploadDir('r', id)), [layout.uploadDataPath('r', id), layout.uploadStartedAtPath('r', id)].sort());
  await uploads.append('r', id, chunks([data]));
  await t.throwsAsync(uploads.complete('r', id, digestOf(data)), { message: 'live set unavailable' });
  t.deepEqual(await driver.list(layout.uploadClaimsDir('r', id)), [layout.uploadClaimPath('r', id, 0)], 'only the claim of the bytes');
  const desc = await uploads.complete('r', id, digestOf(data));
  t.is(desc.size, data.length);
  await t.throwsAsync(driver.stat(layout.uploadDir('r', id)), { message: /not found/ });

  // A completion that wrote a final chunk and then failed leaves the session to be finished from its end.
  failOnce = true;
  const other = await uploads.start('r');
  const more = Buffer.from('other bytes');
  await t.throwsAsync(uploads.complete('r', other.id, digestOf(more), chunks([more])), { message: 'live set unavailable' });
  t.is((await uploads.status('r', other.id)).offset, more.length);
  t.is((await uploads.complete('r', other.id, digestOf(more))).size, more.length);
});

test('a size cached for a planted blob file is forgotten when the pushed bytes replace it', async (t) => {
  const driver = createDriver({ driver: 'inmemory' });
  const registry = new LocalRegistry(driver, { descriptorCacheSize: 10 });
  const honest = Buffer.from('the honest content');
  const digest = digestOf(honest);
  await driver.putContent(layout.blobDataPath(digest), Buffer.from('short'));
  t.is((await registry.blobs.statContent(digest))?.size, 5, 'the planted size is cached');
  const { id } = await registry.uploads.start('r');
  await registry.uploads.complete('r', id, digest, chunks([honest]));
  t.is((await registry.blobs.statContent(digest))?.size, honest.length);
  t.deepEqual(await registry.blobs.getContent(digest), honest);
});

test('bytes a writer left without marking where it ended (it crashed) cannot be continued or completed', async (t) => {
  const driver = createDriver({ driver: 'inmemory' });
  const registry = new LocalRegistry(driver);
  const { id } = await registry.uploads.start('r');
  await registry.uploads.append('r', id, chunks([Buffer.from('first chunk')]));
  // A writer of another process that claimed the end, wrote and died before marking its end.
  const crashed = await driver.writer(layout.uploadDataPath('r', id), true);
  await crashed.write(Buffer.from(' and more'));
  await crashed.commit();
  await driver.putContent(layout.uploadClaimPath('r', id, 11), 'a token of the crashed writer');
  const patch = await t.throwsAsync(registry.uploads.append('r', id, chunks([Buffer.from('!')])));
  t.true(isCode(patch, 'BLOB_UPLOAD_INVALID', 416), String(patch));
  t.is(errorResponse(patch).headers.Range, '0-19');
  const put = await t.throwsAsync(registry.uploads.complete('r', id, digestOf(Buffer.from('first chunk and more'))));
  t.true(isCode(put, 'BLOB_UPLOAD_INVALID', 416), String(put));
  t.deepEqual(await driver.list(layout.uploadClaimsDir('r', id)), [layout.uploadClaimPath('r', id, 0), layout.uploadClaimPath('r', id, 11)]);
});

test('on storage that cannot create files exclusively, uploads work and every completion commits a re-hashed copy', async (t) => {
  const inner = createDriver({ driver: 'inmemory' });
  let reads = 0;
  const driver = Object.assign(Object.create(inner) as StorageDriver, {
    async putContentIfAbsent(): Promise<boolean> {
      throw new UnsupportedOperationError('s3', 'putContentIfAbsent', 'the S3 service ignores If-None-Match on PutObject');
    },
    reader(path: string, offset?: number, length?: number) {
      reads++;
      return inner.reader(path, offset, length);
    },
  });
  const registry = new LocalRegistry(driver);
  const data = Buffer.from('bytes pushed without claims');
  const { id } = await registry.uploads.start('r');
  await registry.uploads.append('r', id, chunks([data.subarray(0, 10)]));
  await registry.uploads.append('r', id, chunks([data.subarray(10)]));
  const desc = await registry.uploads.complete('r', id, digestOf(data));
  t.is(desc.size, data.length);
  t.is(reads, 1, 'the running hash is not trusted: the stored bytes were read once, into the copy');
  t.deepEqual(await registry.blobs.getContent(digestOf(data)), data);
  const wrong = await registry.uploads.start('r');
  await registry.uploads.append('r', wrong.id, chunks([Buffer.from('other bytes')]));
  const refused = await t.throwsAsync(registry.uploads.complete('r', wrong.id, digestOf(data)));
  t.true(isCode(refused, 'DIGEST_INVALID'), String(refused));
});

/**
 * A driver that notes every putContent, putContentIfAbsent, stat and writer path; `exclusive: false` refuses exclusive
 * creates.
 */
function recordingCalls(driver: StorageDriver, exclusive = true): StorageDriver & { calls: string[] } {
  const calls: string[] = [];
  return Object.assign(Object.create(driver) as StorageDriver, {
    calls,
    putContent(path: string, content: Uint8Array | string) {
      calls.push(`putContent ${path}`);
      return driver.putContent(path, content);
    },
    putContentIfAbsent(path: string, content: Uint8Array | string) {
      calls.push(`putContentIfAbsent ${path}`);
      if (!exclusive) return Promise.reject(new UnsupportedOperationError('inmemory', 'putContentIfAbsent', 'test'));
      return driver.putContentIfAbsent(path, content);
    },
    stat(path: string) {
      calls.push(`stat ${path}`);
      return driver.stat(path);
    },
    writer(path: string, append: boolean) {
      calls.push(`writer ${path}`);
      return driver.writer(path, append);
    },
  });
}

test('a session records its start time by an exclusive create, not a flushed putContent; a plain write where storage cannot create exclusively', async (t) => {
  for (const exclusive of [true, false]) {
    const driver = recordingCalls(createDriver({ driver: 'inmemory' }), exclusive);
    const registry = new LocalRegistry(driver);
    const before = Date.now();
    const { id } = await registry.uploads.start('r');
    const path = layout.uploadStartedAtPath('r', id);
    const expected = exclusive ? [`putContentIfAbsent ${path}`] : [`putContentIfAbsent ${path}`, `putContent ${path}`];
    t.deepEqual(driver.calls.filter((c) => c.endsWith('/startedat')), expected);
    const started = new Date((await driver.getContent(path)).toString('utf8')).getTime();
    t.true(started >= before - 1000 && started <= Date.now(), `startedat ${started}`);
  }
});

test("a session's empty data is created without opening a writer (on S3 a writer lists the key's multipart uploads)", async (t) => {
  for (const exclusive of [true, false]) {
    const driver = recordingCalls(createDriver({ driver: 'inmemory' }), exclusive);
    const registry = new LocalRegistry(driver);
    const { id } = await registry.uploads.start('r');
    const data = layout.uploadDataPath('r', id);
    const expected = exclusive ? [`putContentIfAbsent ${data}`] : [`putContentIfAbsent ${data}`, `putContent ${data}`];
    t.deepEqual(driver.calls.filter((c) => c.endsWith(`${id}/data`)), expected);
    t.is((await driver.stat(data)).size, 0);
    t.deepEqual(await registry.uploads.status('r', id), { id, offset: 0 });
    // The session goes on as before: the bytes are appended to that file by a writer.
    await registry.uploads.append('r', id, chunks([Buffer.from('bytes')]));
    t.deepEqual(await registry.uploads.status('r', id), { id, offset: 5 });
  }
});

test('completing an upload moves its bytes into the content store saying a file may be there to replace', async (t) => {
  const inner = createDriver({ driver: 'inmemory' });
  const moves: Array<{ to: string; mayReplace: boolean | undefined }> = [];
  const driver = Object.assign(Object.create(inner) as StorageDriver, {
    move(from: string, to: string, options?: { mayReplace?: boolean }) {
      moves.push({ to, mayReplace: options?.mayReplace });
      return inner.move(from, to, options);
    },
  });
  const registry = new LocalRegistry(driver);
  const data = Buffer.from('a blob pushed again');
  for (let i = 0; i < 2; i++) {
    const { id } = await registry.uploads.start('r');
    await registry.uploads.complete('r', id, digestOf(data), chunks([data]));
  }
  const blob = layout.blobDataPath(digestOf(data));
  t.deepEqual(moves.filter((m) => m.to === blob), [{ to: blob, mayReplace: true }, { to: blob, mayReplace: true }]);
});

test('a session whose data may still be there is deleted saying it may be large; one whose data was committed, not', async (t) => {
  const inner = createDriver({ driver: 'inmemory' });
  const deletes: Array<{ path: string; mayBeLarge: boolean | undefined }> = [];
  const driver = Object.assign(Object.create(inner) as StorageDriver, {
    delete(path: string, options?: { mayBeLarge?: boolean }) {
      deletes.push({ path, mayBeLarge: options?.mayBeLarge });
      return inner.delete(path, options);
    },
  });
  const registry = new LocalRegistry(driver);
  const data = Buffer.from('some bytes');
  const sessionDeletes = (id: string) => deletes.filter((d) => d.path === layout.uploadDir('r', id));

  const cancelled = await registry.uploads.start('r');
  await registry.uploads.append('r', cancelled.id, chunks([data]));
  await registry.uploads.cancel('r', cancelled.id);
  t.deepEqual(sessionDeletes(cancelled.id), [{ path: layout.uploadDir('r', cancelled.id), mayBeLarge: true }]);

  const wrong = await registry.uploads.start('r');
  await t.throwsAsync(registry.uploads.complete('r', wrong.id, digestOf(Buffer.from('other')), chunks([data])), { instanceOf: RegistryError });
  t.deepEqual(sessionDeletes(wrong.id), [{ path: layout.uploadDir('r', wrong.id), mayBeLarge: true }]);

  const completed = await registry.uploads.start('r');
  await registry.uploads.complete('r', completed.id, digestOf(data), chunks([data]));
  t.deepEqual(sessionDeletes(completed.id), [{ path: layout.uploadDir('r', completed.id), mayBeLarge: false }]);
});

test('completing an upload without a descriptor cache does not stat the blob content it replaces', async (t) => {
  const driver = recordingCalls(createDriver({ driver: 'inmemory' }));
  const registry = new LocalRegistry(driver);
  const data = Buffer.from('a layer');
  const digest = digestOf(data);
  const { id } = await registry.uploads.start('r');
  await registry.uploads.complete('r', id, digest, chunks([data]));
  t.false(driver.calls.includes(`stat ${layout.blobDataPath(digest)}`), driver.calls.join('\n'));
  t.true((await registry.blobs.getContent(digest))?.equals(data));
});
