import test from 'ava';
import { createHash } from 'node:crypto';
import { createDriver } from '../../storage-drivers/index.js';
import type { FileWriter, StorageDriver } from '../../storage-drivers/driver.js';
import { RegistryError } from './errors.js';
import * as layout from './layout.js';
import { parseDigest } from './reference.js';
import { Registry } from './registry.js';
import { WRITE_WINDOW } from './uploads.js';

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
