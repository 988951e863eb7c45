import test from 'ava';
import { mkdtemp, rm, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDriver } from '../../storage-drivers/index.js';
import * as layout from './layout.js';
import { purgeUploads } from './purge.js';
import { LocalRegistry } from './registry.js';

const HOUR = 60 * 60 * 1000;

test('sessions older than the age are purged, younger ones and finished blobs stay', async (t) => {
  const driver = createDriver({ driver: 'inmemory' });
  const registry = new LocalRegistry(driver);
  const old = await registry.uploads.start('team/app');
  const fresh = await registry.uploads.start('team/app');
  const other = await registry.uploads.start('solo');
  // Backdate two sessions as if they had been started two days ago.
  const twoDaysAgo = new Date(Date.now() - 48 * HOUR).toISOString();
  await driver.putContent(layout.uploadStartedAtPath('team/app', old.id), twoDaysAgo);
  await driver.putContent(layout.uploadStartedAtPath('solo', other.id), twoDaysAgo);

  const dry = await purgeUploads(driver, { olderThanMs: 24 * HOUR, dryRun: true });
  t.deepEqual(dry.purged.sort(), [`solo/${other.id}`, `team/app/${old.id}`]);
  t.is(dry.examined, 3);
  t.is((await registry.uploads.status('solo', other.id)).offset, 0, 'a dry run deletes nothing');

  const real = await purgeUploads(driver, { olderThanMs: 24 * HOUR });
  t.is(real.purged.length, 2);
  await t.throwsAsync(registry.uploads.status('team/app', old.id), { message: /upload unknown/ });
  await t.throwsAsync(registry.uploads.status('solo', other.id), { message: /upload unknown/ });
  t.is((await registry.uploads.status('team/app', fresh.id)).offset, 0);
});

test('a purged session is deleted saying it may be large (its data is still there)', async (t) => {
  const inner = createDriver({ driver: 'inmemory' });
  const deletes: Array<{ path: string; mayBeLarge: boolean | undefined }> = [];
  const driver = Object.assign(Object.create(inner) as typeof inner, {
    delete(path: string, options?: { mayBeLarge?: boolean }) {
      deletes.push({ path, mayBeLarge: options?.mayBeLarge });
      return inner.delete(path, options);
    },
  });
  const registry = new LocalRegistry(driver);
  const old = await registry.uploads.start('r');
  await driver.putContent(layout.uploadStartedAtPath('r', old.id), new Date(Date.now() - 48 * HOUR).toISOString());
  t.is((await purgeUploads(driver, { olderThanMs: 24 * HOUR })).purged.length, 1);
  t.deepEqual(deletes, [{ path: layout.uploadDir('r', old.id), mayBeLarge: true }]);
});

test('an empty registry has nothing to purge', async (t) => {
  const driver = createDriver({ driver: 'inmemory' });
  t.deepEqual(await purgeUploads(driver, { olderThanMs: 0 }), { purged: [], examined: 0 });
});

test('a session whose start time a crash lost (startedat absent or empty) is aged by its data', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-purge-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const driver = createDriver({ driver: 'filesystem', rootDirectory: dir });
  const registry = new LocalRegistry(driver);
  const lost = await registry.uploads.start('r');
  const empty = await registry.uploads.start('r');
  const fresh = await registry.uploads.start('r');
  await driver.delete(layout.uploadStartedAtPath('r', lost.id));
  await driver.putContent(layout.uploadStartedAtPath('r', empty.id), '');
  await driver.putContent(layout.uploadStartedAtPath('r', fresh.id), '');
  const twoDaysAgo = new Date(Date.now() - 48 * HOUR);
  for (const id of [lost.id, empty.id]) await utimes(join(dir, layout.uploadDataPath('r', id)), twoDaysAgo, twoDaysAgo);

  const result = await purgeUploads(driver, { olderThanMs: 24 * HOUR });
  t.deepEqual(result.purged.sort(), [`r/${lost.id}`, `r/${empty.id}`].sort());
  t.is((await registry.uploads.status('r', fresh.id)).offset, 0, 'a young session without a start time stays');
});
