import test from 'ava';
import { createHash } from 'node:crypto';
import { createDriver } from '../../storage-drivers/index.js';
import type { FileWriter, StorageDriver } from '../../storage-drivers/driver.js';
import { RegistryError } from './errors.js';
import * as layout from './layout.js';
import { parseDigest } from './reference.js';
import { Registry } from './registry.js';
import { BlobStore } from './blobs.js';
import { MIN_WRITE_WINDOW, UploadStore, WRITE_BUDGET, WRITE_WINDOW } from './uploads.js';

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
  const registry = new Registry(driver);
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
  const registry = new Registry(driver);
  const parts = Array.from({ length: 8 }, (_, i) => Buffer.alloc(WRITE_WINDOW / 4, i + 1));
  const { id } = await registry.uploads.start('r');
  await t.throwsAsync(registry.uploads.append('r', id, chunks(parts)), { message: 'disk full' });
  t.is(driver.outstanding(), 0);

  // What storage holds is the truth: finish the session on a healthy replica under the digest of those bytes.
  const stored = await inner.getContent(layout.uploadDataPath('r', id));
  t.true(stored.equals(Buffer.concat(parts.slice(0, 4))));
  const other = new Registry(inner);
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
  const registry = new Registry(driver);
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
  const registry = new Registry(driver);
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

test('the write window is wide for one upload and shares WRITE_BUDGET between many', async (t) => {
  const chunk = 64 * 1024;
  const parts = (n: number) => Array.from({ length: n }, (_, i) => Buffer.alloc(chunk, i));

  const alone = slowWrites(createDriver({ driver: 'inmemory' }));
  const one = new Registry(alone);
  const { id } = await one.uploads.start('r');
  await one.uploads.append('r', id, chunks(parts(40)));
  const single = alone.most.at(-1)!;
  t.true(single > MIN_WRITE_WINDOW + chunk, `one upload kept ${single} bytes in flight`);
  t.true(single <= WRITE_WINDOW + chunk);

  const shared = slowWrites(createDriver({ driver: 'inmemory' }));
  const many = new Registry(shared);
  const count = 16;
  const ids = await Promise.all(Array.from({ length: count }, async () => (await many.uploads.start('r')).id));
  shared.most.length = 0; // only the appends' writers
  shared.together = count;
  await Promise.all(ids.map((i) => many.uploads.append('r', i, chunks(parts(16)))));
  const window = Math.max(MIN_WRITE_WINDOW, WRITE_BUDGET / count);
  t.is(shared.most.length, count);
  for (const most of shared.most) t.true(most <= window + chunk, `an upload among ${count} kept ${most} bytes in flight`);
});
