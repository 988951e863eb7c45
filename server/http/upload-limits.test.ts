import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { checkedDriver } from '../../storage-drivers/checked.js';
import { FilesystemDriver } from '../../storage-drivers/filesystem.js';
import type { StorageDriver } from '../../storage-drivers/driver.js';
import { BlobStore } from '../registry/blobs.js';
import { UploadStore } from '../registry/uploads.js';
import { UploadLimits } from './upload-limits.js';

/** A driver on tmpfs (exact directory link counts) whose listings are counted. */
async function countingDriver(t: import('ava').ExecutionContext) {
  const dir = await mkdtemp('/dev/shm/wharf-limits-');
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const inner = checkedDriver(new FilesystemDriver({ rootDirectory: dir }));
  const seen = { lists: 0 };
  const driver = new Proxy(inner, {
    get(target, prop, receiver) {
      if (prop === 'list') return (path: string) => { seen.lists++; return target.list(path); };
      const value = Reflect.get(target, prop, receiver) as unknown;
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  }) as StorageDriver;
  return { driver, seen };
}

test('upload limits: below the limit a start costs no listing where the driver counts directories; at it, the listing decides', async (t) => {
  const { driver, seen } = await countingDriver(t);
  const uploads = new UploadStore(driver, new BlobStore(driver));
  const limits = new UploadLimits(driver, { perRepository: 3, perUser: 0, maxAgeMs: 3600_000 });
  const start = () => limits.start('count/repo', 'user:a', () => uploads.start('count/repo'));
  const listsBefore = seen.lists;
  for (let i = 0; i < 3; i++) await start();
  t.is(seen.lists, listsBefore, 'three starts below the limit listed nothing');
  await t.throwsAsync(start(), { message: /too many open upload sessions in this repository/ });
  t.true(seen.lists > listsBefore, 'the start at the limit listed the sessions');
  t.is((await driver.list('/docker/registry/v2/repositories/count/repo/_uploads')).length, 3, 'no fourth session was made');
  // Racing starts share the last slots through the count of starts in progress, as with a listing.
  const other = () => limits.start('count/other', 'user:b', () => uploads.start('count/other'));
  const raced = await Promise.allSettled(Array.from({ length: 8 }, other));
  t.is(raced.filter((r) => r.status === 'fulfilled').length, 3);
  t.is((await driver.list('/docker/registry/v2/repositories/count/other/_uploads')).length, 3);
});
