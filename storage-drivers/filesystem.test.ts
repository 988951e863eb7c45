/** The filesystem driver against the shared behaviour suite, plus what only a real directory tree can show. */
import test from 'ava';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Writable, type Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { checkedDriver } from './checked.js';
import { PathNotFoundError, StorageDriverError, copyIntoOf, type FileInfo } from './driver.js';
import { FilesystemDriver, READ_CHUNK, TEMP_PREFIX, WRITEBACK_EVERY, WritableFile, moveAcrossDevices } from './filesystem.js';
import { driverSuite } from '../testing/storage-suite.js';

async function tempRoot(): Promise<{ dir: string; cleanup(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-fs-driver-'));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

driverSuite('filesystem', async () => {
  const { dir, cleanup } = await tempRoot();
  return { driver: new FilesystemDriver({ rootDirectory: join(dir, 'root') }), cleanup };
});

async function setup(t: import('ava').ExecutionContext) {
  const { dir, cleanup } = await tempRoot();
  t.teardown(cleanup);
  const root = join(dir, 'root');
  return { dir, root, driver: checkedDriver(new FilesystemDriver({ rootDirectory: root })) };
}

async function collect(walk: AsyncIterable<FileInfo>): Promise<string[]> {
  const out: string[] = [];
  for await (const info of walk) out.push(info.path);
  return out;
}

test('filesystem: driver paths map to files under the root directory (registry:2 layout)', async (t) => {
  const { root, driver } = await setup(t);
  await driver.putContent('/docker/registry/v2/repositories/library/alpine/_layers/sha256/abc/link', 'sha256:abc');
  t.is(
    await readFile(join(root, 'docker/registry/v2/repositories/library/alpine/_layers/sha256/abc/link'), 'utf8'),
    'sha256:abc',
  );
});

test('filesystem: a file written by another process is seen', async (t) => {
  const { root, driver } = await setup(t);
  await driver.putContent('/seed', 'x'); // creates the root
  const script = "require('fs').mkdirSync(process.argv[1] + '/other/dir', { recursive: true });" +
    "require('fs').writeFileSync(process.argv[1] + '/other/dir/file', 'from another process')";
  await promisify(execFile)(process.execPath, ['-e', script, root]);
  t.is((await driver.getContent('/other/dir/file')).toString(), 'from another process');
  t.deepEqual(await driver.list('/other/dir'), ['/other/dir/file']);
  t.deepEqual(await collect(driver.walk('/other')), ['/other/dir', '/other/dir/file']);
});

test('filesystem: temporary files are never listed or walked, and none are left behind', async (t) => {
  const { root, driver } = await setup(t);
  await driver.putContent('/d/file', 'x');
  // A leftover from a crash in the middle of putContent.
  await writeFile(join(root, 'd', `${TEMP_PREFIX}0123456789abcdef`), 'partial');
  t.deepEqual(await driver.list('/d'), ['/d/file']);
  t.deepEqual(await collect(driver.walk('/')), ['/d', '/d/file']);

  await rm(join(root, 'd', `${TEMP_PREFIX}0123456789abcdef`));
  await Promise.all(Array.from({ length: 10 }, (_, i) => driver.putContent('/d/file', `value ${i}`)));
  await driver.putContent('/d/other', 'y');
  await driver.move('/d/other', '/d/moved');
  t.deepEqual(await readdir(join(root, 'd')), ['file', 'moved']);
});

test('filesystem: a failed putContent leaves no temporary file', async (t) => {
  const { root, driver } = await setup(t);
  await driver.putContent('/d/dir/inner', 'x');
  // Replacing a non-empty directory with a file is impossible; the error is a StorageDriverError.
  await t.throwsAsync(driver.putContent('/d/dir', 'y'), { instanceOf: StorageDriverError });
  t.deepEqual(await readdir(join(root, 'd')), ['dir']);
  t.is((await driver.getContent('/d/dir/inner')).toString(), 'x');
});

test('filesystem: backend errors become StorageDriverError with the cause kept', async (t) => {
  const { driver } = await setup(t);
  await driver.putContent('/file', 'x');
  // A file where a directory is needed.
  const err = await t.throwsAsync(driver.putContent('/file/below', 'y'), { instanceOf: StorageDriverError });
  t.is(err?.driver, 'filesystem');
  t.truthy((err?.cause as NodeJS.ErrnoException | undefined)?.code);
});

test('filesystem: walk skips subtrees before startAfter without reading them', async (t) => {
  const { root, driver } = await setup(t);
  await driver.putContent('/w/b/file', 'x');
  await driver.putContent('/w/c/file', 'x');
  // '/w/a/loop' is a symlink to itself: stat() of it fails with ELOOP, so reaching it is an error.
  await mkdir(join(root, 'w', 'a'));
  await symlink('loop', join(root, 'w', 'a', 'loop'));
  await t.throwsAsync(collect(driver.walk('/w')), { instanceOf: StorageDriverError });
  // '/w/a' sorts before '/w/a0' and '/w/a0' is not inside it, so nothing below '/w/a' can be yielded.
  t.deepEqual(await collect(driver.walk('/w', { startAfter: '/w/a0' })), ['/w/b', '/w/b/file', '/w/c', '/w/c/file']);
  t.deepEqual(await collect(driver.walk('/w', { startAfter: '/w/b/file' })), ['/w/c', '/w/c/file']);
});

test('filesystem: an open writer resumes across driver instances (another replica)', async (t) => {
  const { root, driver } = await setup(t);
  const w = await driver.writer('/uploads/id/data', false);
  await w.write(Buffer.from('part one, '));
  await w.close();
  const other = checkedDriver(new FilesystemDriver({ rootDirectory: root }));
  const w2 = await other.writer('/uploads/id/data', true);
  t.is(w2.size, 10);
  await w2.write(Buffer.from('part two'));
  await w2.commit();
  t.is((await driver.getContent('/uploads/id/data')).toString(), 'part one, part two');
});

test('filesystem: a write whose folder is a file in the way fails and changes nothing; folders are made as needed', async (t) => {
  const { root, driver } = await setup(t);
  await driver.putContent('/a/file', 'kept');
  await t.throwsAsync(driver.putContent('/a/file/child', 'x'));
  await t.throwsAsync(driver.putContentIfAbsent('/a/file/deeper/child', 'x'));
  await t.throwsAsync(driver.writer('/a/file/data', false));
  t.is((await driver.getContent('/a/file')).toString(), 'kept');
  // An existing folder, a missing one, and several missing levels.
  await driver.putContent('/a/second', 'two');
  t.true(await driver.putContentIfAbsent('/a/b/c/d/claim', 'token'));
  const w = await driver.writer('/x/y/z/data', false);
  await w.write(Buffer.from('bytes'));
  await w.commit();
  t.deepEqual((await readdir(join(root, 'a'))).sort(), ['b', 'file', 'second']);
  t.is((await driver.getContent('/a/b/c/d/claim')).toString(), 'token');
  t.is((await driver.getContent('/x/y/z/data')).toString(), 'bytes');
});

test('filesystem: chunks written in the same turn go out in one system call, later ones in the next', async (t) => {
  const { driver } = await setup(t);
  const writer = await driver.writer('/uploads/batch/data', false);
  // Every writer's file shares this prototype; only the calls carrying this test's chunks are counted (the file's other
  // tests run at the same time in this process).
  const proto = WritableFile.prototype;
  const original = proto.writev;
  const calls: number[] = [];
  const parts = [Buffer.from('one '), Buffer.from('two '), Buffer.from('three ')];
  const last = Buffer.from('four');
  const ours = new Set<unknown>([...parts, last]);
  proto.writev = function (this: WritableFile, buffers: Uint8Array[], position: number) {
    if (buffers.some((b) => ours.has(b))) calls.push(buffers.length);
    return original.call(this, buffers, position);
  };
  try {
    await Promise.all(parts.map((part) => writer.write(part)));
    await writer.write(last);
    await writer.commit();
  } finally {
    proto.writev = original;
  }
  t.deepEqual(calls, [3, 1]);
  t.is((await driver.getContent('/uploads/batch/data')).toString(), 'one two three four');
});

test('filesystem: after a failed write every later write fails at once, none waits for ever, and close ends', async (t) => {
  const { root, driver } = await setup(t);
  await driver.putContent('/full/seed', '');
  // Every write to /dev/full fails with ENOSPC, as on a full disk.
  await symlink('/dev/full', join(root, 'full/data'));
  const writer = await driver.writer('/full/data', true);
  const settled = async (p: Promise<void>, what: string) => {
    let timer: NodeJS.Timeout | undefined;
    const never = new Promise<string>((resolve) => { timer = setTimeout(() => resolve(`${what} never settled`), 10_000); });
    try {
      return await Promise.race([p.then(() => `${what} succeeded`, (err: Error) => err.message), never]);
    } finally {
      clearTimeout(timer);
    }
  };
  const chunk = Buffer.alloc(64 * 1024, 1);
  // Queued without waiting, as an upload does; then more once the failure is known.
  const first = [writer.write(chunk), writer.write(chunk), writer.write(chunk)];
  for (const [i, p] of first.entries()) t.regex(await settled(p, `write ${i}`), /ENOSPC|an earlier write failed/);
  for (const i of [3, 4, 5]) t.regex(await settled(writer.write(chunk), `write ${i}`), /an earlier write failed/);
  t.is(await settled(writer.close(), 'close'), 'close succeeded');
});

test('filesystem: cancel does not delete a file that replaced the writer\'s file', async (t) => {
  const { driver } = await setup(t);
  const w = await driver.writer('/f', false);
  await w.write(Buffer.from('abandoned'));
  await driver.putContent('/f', 'newer');
  await w.cancel();
  t.is((await driver.getContent('/f')).toString(), 'newer');
});

test('filesystem: moveAcrossDevices copies, replaces the destination atomically, and removes the source', async (t) => {
  const a = await tempRoot();
  t.teardown(a.cleanup);
  // /dev/shm is usually another filesystem (tmpfs); the function is correct on one filesystem too.
  const shm = await stat('/dev/shm').then(() => mkdtemp('/dev/shm/wharf-fs-driver-'), () => mkdtemp(join(tmpdir(), 'x-')));
  t.teardown(() => rm(shm, { recursive: true, force: true }));
  const source = join(shm, 'source');
  const dest = join(a.dir, 'dest');
  await writeFile(source, 'moved bytes');
  await writeFile(dest, 'old');
  await moveAcrossDevices(source, dest);
  t.is(await readFile(dest, 'utf8'), 'moved bytes');
  await t.throwsAsync(stat(source), { code: 'ENOENT' });
  t.deepEqual(await readdir(a.dir), ['dest']);
  await t.throwsAsync(moveAcrossDevices(join(shm, 'missing'), dest), { code: 'ENOENT' });
  t.is(await readFile(dest, 'utf8'), 'moved bytes');
  t.deepEqual(await readdir(a.dir), ['dest']);
});

test('filesystem: delete of a tree removes links without following them, wide folders, and races with another delete', async (t) => {
  const { root, driver } = await setup(t);
  const outside = await mkdtemp(join(tmpdir(), 'wharf-outside-'));
  t.teardown(() => rm(outside, { recursive: true, force: true }));
  await writeFile(join(outside, 'kept'), 'not ours');
  await driver.putContent('/t/a/deep/file', 'x');
  for (let i = 0; i < 150; i++) await driver.putContent(`/t/wide/f${i}`, String(i));
  await symlink(outside, join(root, 't', 'a', 'link'));
  await writeFile(join(root, 't', 'a', '.tmp-left-behind'), 'temp');
  await driver.putContent('/u/kept', 'sibling');
  await Promise.all([driver.delete('/t'), driver.delete('/t/wide'), driver.delete('/t/a/deep/file')].map((p) => p.catch((err: unknown) => {
    // A delete that finds its path already gone says so; nothing else may fail.
    if (!(err instanceof PathNotFoundError)) throw err;
  })));
  await t.throwsAsync(stat(join(root, 't')), { code: 'ENOENT' });
  t.is(await readFile(join(outside, 'kept'), 'utf8'), 'not ours', 'the link was removed, not followed');
  t.is((await driver.getContent('/u/kept')).toString(), 'sibling');
});

test('filesystem: countDirectories reads the subdirectories from the link count, and leaves the rest to a listing', async (t) => {
  // /dev/shm is tmpfs, whose link counts of directories are exact (so are ext4's and XFS's).
  const dir = await mkdtemp('/dev/shm/wharf-count-');
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const driver = checkedDriver(new FilesystemDriver({ rootDirectory: join(dir, 'root') }));
  const count = (path: string) => driver.countDirectories!(path);
  t.is(await count('/a'), undefined, 'before the root exists, the filesystem is not known yet');
  await driver.putContent('/a/x/data', '1');
  await driver.putContent('/a/y/data', '2');
  await driver.putContent('/a/file', '3');
  t.is(await count('/a'), 2, 'directories count, files do not');
  t.is(await count('/missing'), 0);
  t.is(await count('/a/file'), undefined, 'a file has no count');
  t.is(await count('/a/file/below'), undefined, 'a path through a file is left to the listing');
  await driver.delete('/a/x');
  t.is(await count('/a'), 1);
  // A directory of another filesystem below the root (here through a link to the OS temp directory) is not trusted.
  const elsewhere = await mkdtemp(join(tmpdir(), 'wharf-count-other-'));
  t.teardown(() => rm(elsewhere, { recursive: true, force: true }));
  await mkdir(join(elsewhere, 'sub'));
  await symlink(elsewhere, join(dir, 'root', 'other'));
  if ((await stat(elsewhere)).dev !== (await stat(dir)).dev) t.is(await count('/other'), undefined);
  t.deepEqual(await driver.list('/a'), ['/a/file', '/a/y']);
});

test('filesystem: the root exists (empty) before its directory is created by the first write', async (t) => {
  const { root, driver } = await setup(t);
  await t.throwsAsync(stat(root), { code: 'ENOENT' });
  t.true((await driver.stat('/')).isDir);
  t.deepEqual(await driver.list('/'), []);
  t.deepEqual(await collect(driver.walk('/')), []);
  await driver.delete('/');
  await t.throwsAsync(driver.getContent('/x'), { instanceOf: PathNotFoundError });
  await driver.putContent('/x', 'y');
  t.true((await stat(root)).isDirectory());
  t.true((await driver.stat('/')).isDir);
});

/** Copy `body` into a Writable through its COPY_INTO; what arrived, and the memory each chunk came in. */
async function copyOut(body: Readable, options: { goneAfter?: number } = {}) {
  const copyInto = copyIntoOf(body);
  if (!copyInto) throw new Error('the stream offers no COPY_INTO');
  const chunks: Buffer[] = [];
  const memory = new Set<ArrayBufferLike>();
  const dest = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(Buffer.from(chunk));
      memory.add(chunk.buffer);
      callback();
      // The consumer goes away (as a client that hangs up closes its response).
      if (chunks.length === options.goneAfter) dest.destroy();
    },
  });
  const error = await new Promise<unknown>((resolve) => copyInto(dest, resolve));
  return { error, bytes: Buffer.concat(chunks), memory, dest };
}

const openFiles = async () => (await readdir('/proc/self/fd')).length;

test('filesystem: a reader copies exactly its bytes into a Writable through reused buffers, ends, and closes its file', async (t) => {
  const { driver } = await setup(t);
  const content = randomBytes(5 * READ_CHUNK + 12345);
  await driver.putContent('/big', content);
  const baseline = await openFiles();
  const seen: Set<ArrayBufferLike>[] = [];
  for (const [offset, length] of [[0, undefined], [1000, 3_000_000]] as const) {
    const body = await driver.reader('/big', offset, length);
    const { error, bytes, memory } = await copyOut(body);
    t.is(error, undefined);
    t.true(bytes.equals(content.subarray(offset, length === undefined ? undefined : offset + length)), `bytes from ${offset}`);
    // The checked driver's stream ends once the copy is done (a pipeline waiting on it ends the response).
    await finished(body);
    t.true(body.readableEnded, 'ended');
    seen.push(memory);
  }
  t.true([...seen[1]!].some((m) => seen[0]!.has(m)), 'the second copy reused buffers of the first');
  // A consumer that goes away mid-copy: no error, and the file is closed all the same.
  const cut = await copyOut(await driver.reader('/big'), { goneAfter: 1 });
  t.is(cut.error, undefined);
  t.true(cut.bytes.length < content.length);
  await waitForCondition(async () => (await openFiles()) <= baseline);
  t.true((await openFiles()) <= baseline, 'no file left open');
  t.true((await copyOut(await driver.reader('/big'))).bytes.equals(content), 'later copies still whole');
});

async function waitForCondition(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
}

test.serial('filesystem: a long write is flushed to disk in the background, one flush at a time, and a failed flush fails the commit', async (t) => {
  const { root } = await setup(t);
  const driver = new FilesystemDriver({ rootDirectory: root });
  // Serial: every writer's datasync goes through this wrapper for the length of the test; it counts the flushes,
  // holds them until `release`, and fails them once `fail` is set.
  const proto = WritableFile.prototype;
  const original = proto.datasync;
  let calls = 0;
  let running = 0;
  let most = 0;
  let fail = false;
  let release!: () => void;
  const held = new Promise<void>((resolve) => { release = resolve; });
  proto.datasync = async function datasync(this: WritableFile) {
    calls++;
    most = Math.max(most, ++running);
    try {
      await held;
      if (fail) throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
      return await original.call(this);
    } finally {
      running--;
    }
  };
  t.teardown(() => { proto.datasync = original; });

  const chunk = randomBytes(1 << 20);
  const count = WRITEBACK_EVERY / chunk.length + 2;
  const a = await driver.writer('/a', false);
  const b = await driver.writer('/b', false);
  for (let i = 0; i < count; i++) {
    await a.write(chunk);
    await b.write(chunk);
  }
  t.is(calls, 1, 'the first writer past the mark started a flush; the second found the process at its limit');
  t.is(running, 1);
  release();
  await a.commit();
  await b.commit();
  t.is(most, 1);
  const expected = Buffer.concat(Array.from({ length: count }, () => chunk));
  t.true((await readFile(join(root, 'a'))).equals(expected));
  t.true((await readFile(join(root, 'b'))).equals(expected));

  fail = true;
  const c = await driver.writer('/c', false);
  for (let i = 0; i < count; i++) await c.write(chunk);
  const error = await t.throwsAsync(c.commit(), { instanceOf: StorageDriverError });
  t.regex(error!.message, /flushing .* failed/);
  t.is((error!.cause as NodeJS.ErrnoException).code, 'EIO');
});
