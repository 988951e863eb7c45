import test from 'ava';
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

test('an empty registry has nothing to purge', async (t) => {
  const driver = createDriver({ driver: 'inmemory' });
  t.deepEqual(await purgeUploads(driver, { olderThanMs: 0 }), { purged: [], examined: 0 });
});
