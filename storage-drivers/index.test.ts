/** createDriver builds each configured driver, always wrapped by checkedDriver. */
import test from 'ava';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidPathError, StorageDriverError, createDriver } from './index.js';

test('createDriver filesystem stores under the root directory and validates paths', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-create-driver-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const d = createDriver({ driver: 'filesystem', rootDirectory: dir });
  t.is(d.name, 'filesystem');
  await d.putContent('/a/b', 'x');
  t.is(await readFile(join(dir, 'a', 'b'), 'utf8'), 'x');
  await t.throwsAsync(d.getContent('/a/../../etc/passwd'), { instanceOf: InvalidPathError });
  await t.throwsAsync(d.putContent('/a/b/c', 'y'), { instanceOf: StorageDriverError });
});

test('createDriver inmemory is a working, checked driver', async (t) => {
  const d = createDriver({ driver: 'inmemory' });
  t.is(d.name, 'inmemory');
  await d.putContent('/a', 'x');
  t.is((await d.getContent('/a')).toString(), 'x');
  await t.throwsAsync(d.stat('/a/'), { instanceOf: InvalidPathError });
});

test('createDriver rejects an unknown driver name', (t) => {
  t.throws(() => createDriver({ driver: 's4' } as never), { message: /unknown storage driver: s4/ });
});
