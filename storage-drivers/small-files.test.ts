/** Small-file reads that keep settled bytes in memory: they must never answer with bytes the file no longer holds. */
import test from 'ava';
import { mkdir, mkdtemp, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { openSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KEPT_FILES, SETTLE_MS, SMALL_FILE_MAX, SmallFileReader } from './small-files.js';
import { QuickCalls, isLocalFilesystem } from './quick-calls.js';
import { waitFor } from '../testing/helpers.js';

async function setup(t: import('ava').ExecutionContext) {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-small-files-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const calls = new QuickCalls(dir);
  return { dir, calls, reader: new SmallFileReader(calls) };
}

/** Wait until the file's change time lies far enough in the past for its bytes to be kept. */
async function settled(file: string): Promise<void> {
  await waitFor('the file to settle', async () => (Date.now() - (await stat(file)).ctimeMs > SETTLE_MS + 20 ? true : undefined), 5_000, 20);
}

const A = 'sha256:' + 'a'.repeat(64);
const B = 'sha256:' + 'b'.repeat(64);
const C = 'sha256:' + 'c'.repeat(64);

test('a settled small file read again is kept, then answered from memory while it is unchanged', async (t) => {
  const { dir, reader } = await setup(t);
  t.true(await isLocalFilesystem(dir), 'the test needs a local temp dir');
  const file = join(dir, 'link');
  await writeFile(file, A);
  await settled(file);
  t.is((await reader.read(file)).toString(), A);
  t.is((await reader.read(file)).toString(), A);
  t.is((await reader.read(file)).toString(), A);
  t.is((await reader.read(file)).toString(), A);
  t.is(reader.fileReads, 2, 'the first read is plain, the second keeps the bytes, the rest come from memory');
});

test('the links of a repository of thousands of tags (more than 4,096), read over and over, are all kept', async (t) => {
  const { dir, reader } = await setup(t);
  const files = Array.from({ length: 6_000 }, (_, i) => join(dir, `link-${i}`));
  t.true(files.length <= KEPT_FILES);
  for (const file of files) await writeFile(file, A);
  await settled(files.at(-1)!);
  // A page view reads them in order, again and again: the first two views read every file, the next none.
  let wrong = 0;
  for (let view = 0; view < 3; view++) {
    for (const file of files) if ((await reader.read(file)).toString() !== A) wrong++;
  }
  t.is(wrong, 0);
  t.is(reader.fileReads, 2 * files.length, 'the third view came from memory');
});

test('a kept file is checked on the event loop; after a slow check, through the thread pool, and changes are seen either way', async (t) => {
  const { dir, calls, reader } = await setup(t);
  const file = join(dir, 'link');
  await writeFile(file, A);
  await settled(file);
  for (let i = 0; i < 4; i++) t.is((await reader.read(file)).toString(), A);
  t.is(calls.poolCalls, 0, 'no check of the kept file went through the thread pool');

  // A threshold below zero makes every synchronous call a slow one.
  const slowCalls = new QuickCalls(dir, -1);
  const slow = new SmallFileReader(slowCalls);
  for (let i = 0; i < 5; i++) t.is((await slow.read(file)).toString(), A);
  t.is(slow.fileReads, 2);
  // The third read checked synchronously and found it slow; the fourth and fifth went through the pool.
  t.is(slowCalls.poolCalls, 2);
  const next = join(dir, 'next');
  await writeFile(next, B);
  await rename(next, file);
  t.is((await slow.read(file)).toString(), B, 'a replaced file is read again after a check through the pool');
  await rm(file);
  await t.throwsAsync(slow.read(file), { code: 'ENOENT' });
});

test('a file replaced by rename is read again at once, even with the same size and within one clock tick', async (t) => {
  const { dir, reader } = await setup(t);
  const file = join(dir, 'link');
  await writeFile(file, A);
  await settled(file);
  await reader.read(file);
  await reader.read(file); // kept from here
  // Replace it twice in a row (as a tag moved twice): each read afterwards sees the bytes now there.
  await writeFile(join(dir, 'tmp1'), B);
  await rename(join(dir, 'tmp1'), file);
  t.is((await reader.read(file)).toString(), B);
  await writeFile(join(dir, 'tmp2'), C);
  await rename(join(dir, 'tmp2'), file);
  t.is((await reader.read(file)).toString(), C);
  await settled(file);
  t.is((await reader.read(file)).toString(), C);
  t.is(reader.fileReads, 5);
});

test('a file rewritten in place (same inode, same size) is read again', async (t) => {
  const { dir, reader } = await setup(t);
  const file = join(dir, 'link');
  await writeFile(file, A);
  await settled(file);
  await reader.read(file);
  t.is((await reader.read(file)).toString(), A);
  const fd = openSync(file, 'r+');
  writeSync(fd, Buffer.from(B), 0, B.length, 0);
  closeSync(fd);
  t.is((await reader.read(file)).toString(), B);
});

test('bytes of a file changed within the last moments are not kept', async (t) => {
  const { dir, reader } = await setup(t);
  const file = join(dir, 'link');
  await writeFile(file, A);
  await reader.read(file);
  await reader.read(file);
  t.is(reader.fileReads, 2, 'a file written just now is read every time');
});

test('a removed file is not found, a directory is EISDIR, a large file is read every time', async (t) => {
  const { dir, reader } = await setup(t);
  const file = join(dir, 'link');
  await writeFile(file, A);
  await settled(file);
  await reader.read(file);
  await reader.read(file);
  await rm(file);
  await t.throwsAsync(reader.read(file), { code: 'ENOENT' });
  await mkdir(join(dir, 'sub'));
  await t.throwsAsync(reader.read(join(dir, 'sub')), { code: 'EISDIR' });
  const big = join(dir, 'big');
  await writeFile(big, Buffer.alloc(SMALL_FILE_MAX + 1, 1));
  await settled(big);
  await reader.read(big);
  const before = reader.fileReads;
  t.is((await reader.read(big)).length, SMALL_FILE_MAX + 1);
  t.is(reader.fileReads, before + 1);
});

test('what a caller does to the bytes it was given does not change what the next caller gets', async (t) => {
  const { dir, reader } = await setup(t);
  const file = join(dir, 'link');
  await writeFile(file, A);
  await settled(file);
  (await reader.read(file)).fill(0);
  (await reader.read(file)).fill(0);
  t.is((await reader.read(file)).toString(), A);
});

test('readWithModTime gives the modification time of the version whose bytes it returns, read or kept', async (t) => {
  const { dir, reader } = await setup(t);
  const file = join(dir, 'link');
  const first = new Date('2026-01-02T03:04:05.678Z');
  await writeFile(file, A);
  await utimes(file, first, first);
  await settled(file);
  // Read plain, read and kept, answered from memory: the same bytes and time each way.
  const firstMs = (await stat(file)).mtimeMs;
  t.is(Math.round(firstMs), first.getTime());
  for (let i = 0; i < 3; i++) t.deepEqual(await reader.readWithModTime(file), { content: Buffer.from(A), mtimeMs: firstMs }, `read ${i + 1}`);
  t.is(reader.fileReads, 2, 'the third came from memory');
  // Replaced the way tags are moved (a new file renamed over it): the new bytes with the new file's time.
  const second = new Date('2026-02-03T04:05:06.789Z');
  const temp = join(dir, 'link.tmp');
  await writeFile(temp, B);
  await utimes(temp, second, second);
  await rename(temp, file);
  const got = await reader.readWithModTime(file);
  t.is(got.content.toString(), B);
  t.is(Math.round(got.mtimeMs), second.getTime());
  // And what `read` gives is the same file's bytes.
  t.is((await reader.read(file)).toString(), B);
  await t.throwsAsync(reader.readWithModTime(join(dir, 'missing')), { code: 'ENOENT' });
});
