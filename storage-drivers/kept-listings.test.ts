/** Folder listings kept in memory: they must never answer with names the folder no longer holds, or miss one. */
import test, { type ExecutionContext } from 'ava';
import { mkdir, mkdtemp, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KEPT_NAMES, ListingReader } from './kept-listings.js';
import { QuickCalls, isLocalFilesystem } from './quick-calls.js';
import { SETTLE_MS } from './small-files.js';
import { waitFor } from '../testing/helpers.js';

async function setup(t: ExecutionContext) {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-kept-listings-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  t.true(await isLocalFilesystem(dir), 'the test needs a local temp dir');
  const folder = join(dir, 'tags');
  await mkdir(folder);
  return { dir, folder, reader: new ListingReader(new QuickCalls(dir)) };
}

/** Wait until the folder's change time lies far enough in the past for its names to be kept. */
async function settled(folder: string): Promise<void> {
  await waitFor('the folder to settle', async () => (Date.now() - (await stat(folder)).ctimeMs > SETTLE_MS + 20 ? true : undefined), 5_000, 20);
}

/** Read `folder` three times, the last one from memory when it is kept. */
async function readThrice(reader: ListingReader, folder: string): Promise<readonly string[]> {
  await reader.names(folder);
  await reader.names(folder);
  return reader.names(folder);
}

test('a settled folder read again is kept, then answered from memory while it is unchanged', async (t) => {
  const { folder, reader } = await setup(t);
  for (const name of ['b', 'a', 'c']) await mkdir(join(folder, name));
  await settled(folder);
  t.deepEqual(await readThrice(reader, folder), ['a', 'b', 'c']);
  t.deepEqual(await reader.names(folder), ['a', 'b', 'c']);
  t.is(reader.folderReads, 2, 'the first read is plain, the second keeps the names, the rest come from memory');
});

test('an entry made, removed or renamed in a kept folder is seen at the next read, even within one clock tick', async (t) => {
  const { dir, folder, reader } = await setup(t);
  await mkdir(join(folder, 'v1'));
  await settled(folder);
  t.deepEqual(await readThrice(reader, folder), ['v1']);
  const reads = reader.folderReads;
  // Each change right after the one before: the folder's times move with each, and the kept names are dropped.
  await mkdir(join(folder, 'v2'));
  t.deepEqual(await reader.names(folder), ['v1', 'v2']);
  await writeFile(join(dir, 'elsewhere'), 'x');
  await rename(join(dir, 'elsewhere'), join(folder, 'v0'));
  t.deepEqual(await reader.names(folder), ['v0', 'v1', 'v2']);
  await rmdir(join(folder, 'v1'));
  t.deepEqual(await reader.names(folder), ['v0', 'v2']);
  await rename(join(folder, 'v2'), join(folder, 'v3'));
  t.deepEqual(await reader.names(folder), ['v0', 'v3']);
  t.true(reader.folderReads >= reads + 4, 'every change was read from the folder');
});

test('what happens inside a subfolder does not drop the kept names, which it does not change', async (t) => {
  const { folder, reader } = await setup(t);
  await mkdir(join(folder, 'v1', 'current'), { recursive: true });
  await settled(folder);
  t.deepEqual(await readThrice(reader, folder), ['v1']);
  const reads = reader.folderReads;
  await writeFile(join(folder, 'v1', 'current', 'link'), 'sha256:x');
  t.deepEqual(await reader.names(folder), ['v1']);
  t.is(reader.folderReads, reads);
});

test('names of a folder changed within the last moments are not kept', async (t) => {
  const { folder, reader } = await setup(t);
  await mkdir(join(folder, 'fresh'));
  const changed = (await stat(folder)).ctimeMs;
  t.deepEqual(await reader.names(folder), ['fresh']);
  const second = Date.now();
  t.deepEqual(await reader.names(folder), ['fresh']);
  t.deepEqual(await reader.names(folder), ['fresh']);
  // The second read keeps nothing when the change was less than SETTLE_MS before it (always, but on a stalled machine).
  if (second - changed < SETTLE_MS) t.is(reader.folderReads, 3, 'each read went to the folder');
  else t.log('the second read came too late to check this');
});

test('a kept folder removed, or replaced by a file, answers as readdir does', async (t) => {
  const { folder, reader } = await setup(t);
  await mkdir(join(folder, 'a'));
  await settled(folder);
  t.deepEqual(await readThrice(reader, folder), ['a']);
  await rm(folder, { recursive: true });
  await t.throwsAsync(reader.names(folder), { code: 'ENOENT' });
  await writeFile(folder, 'now a file');
  await t.throwsAsync(reader.names(folder), { code: 'ENOTDIR' });
});

test('names kept in all are bounded: the least recently read folders go first', async (t) => {
  const { dir } = await setup(t);
  const reader = new ListingReader(new QuickCalls(dir), 10);
  const folders = [join(dir, 'f1'), join(dir, 'f2')];
  for (const f of folders) {
    await mkdir(f);
    for (const name of ['a', 'b', 'c', 'd', 'e']) await mkdir(join(f, name));
  }
  for (const f of folders) await settled(f);
  await readThrice(reader, folders[0]!);
  await readThrice(reader, folders[1]!); // 6 + 6 names: f1 makes room
  const reads = reader.folderReads;
  await reader.names(folders[1]!);
  t.is(reader.folderReads, reads, 'the folder read last is kept');
  await reader.names(folders[0]!);
  t.is(reader.folderReads, reads + 1, 'the other was dropped');
  t.true(KEPT_NAMES >= 10_000, 'a folder of 10,000 tags fits');
});
