/**
 * Metadata calls made on the event loop's thread while they are quick: they must give what Node's asynchronous calls
 * give, never wait for the thread pool while quick, and go back to the pool after a slow one.
 */
import test from 'ava';
import { pbkdf2 } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BUSY_MS_PER_SECOND, FIRST_PAUSE_MS, MAX_PAUSE_MS, QuickCalls, SMALL_WRITE_MAX, isLocalFilesystem } from './quick-calls.js';
import { FilesystemDriver } from './filesystem.js';

async function tempDir(t: import('ava').ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-quick-calls-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Run `work` while every thread of libuv's pool is busy (key derivations that take a while each); tells whether it
 * finished before the first of them did. Anything `work` queues on the pool can start only when one of them is done.
 */
async function whileThePoolIsBusy(work: () => Promise<unknown>): Promise<boolean> {
  const threads = Number(process.env.UV_THREADPOOL_SIZE || 4);
  const order: string[] = [];
  const busy = Array.from({ length: threads }, () => new Promise<void>((resolve, reject) => {
    pbkdf2('password', 'salt', 300_000, 32, 'sha256', (err) => (err ? reject(err) : resolve()));
  }));
  const firstDone = Promise.race(busy).then(() => order.push('pool'));
  await work().finally(() => order.push('work'));
  await firstDone;
  await Promise.all(busy);
  return order[0] === 'work';
}

/** Far above any call's time: the tests of the synchronous path must not be paused by a preempted thread. */
const NEVER_SLOW = 60_000;

/** A filesystem driver in a temporary directory whose synchronous calls are never judged slow. */
async function quickDriver(t: import('ava').ExecutionContext): Promise<{ dir: string; driver: FilesystemDriver }> {
  const dir = await tempDir(t);
  return { dir, driver: new FilesystemDriver({ rootDirectory: dir, fsync: false, slowCallMs: NEVER_SLOW }) };
}

test('on a local filesystem the calls never wait for the thread pool', async (t) => {
  const dir = await tempDir(t);
  const calls = new QuickCalls(dir, NEVER_SLOW);
  t.true(await calls.isLocal(), 'the test needs a local temp dir');
  const a = join(dir, 'a');
  const quick = await whileThePoolIsBusy(async () => {
    await calls.mkdir(join(dir, 'sub'));
    await calls.writeFile(a, 'content', false);
    await calls.rename(a, join(dir, 'sub', 'b'));
    t.is((await calls.stat(join(dir, 'sub', 'b'))).size, 7);
    t.is(await calls.statIfExists(a), undefined);
    await calls.unlink(join(dir, 'sub', 'b'));
    await calls.rmdir(join(dir, 'sub'));
  });
  t.true(quick, 'the calls finished while every pool thread was busy');
  t.is(calls.poolCalls, 0);
  t.deepEqual(await readdir(dir), []);
});

test("the filesystem driver's writes, moves and deletes of small files never wait for the thread pool", async (t) => {
  const { dir, driver } = await quickDriver(t);
  await driver.putContent('/warm', 'x'); // the root's filesystem type is read once, through the pool
  const quick = await whileThePoolIsBusy(async () => {
    await driver.putContent('/_uploads/u1/startedat', '2026-12-07T00:00:00Z');
    t.true(await driver.putContentIfAbsent('/_uploads/u1/claims/one', 'me'));
    t.false(await driver.putContentIfAbsent('/_uploads/u1/claims/one', 'you'));
    await driver.move('/_uploads/u1/startedat', '/blobs/sha256/ab/abcd/data');
    t.is((await driver.stat('/blobs/sha256/ab/abcd/data')).size, 20);
    await driver.delete('/blobs/sha256/ab/abcd/data');
    t.true(await driver.removeEmptyDirectory('/blobs/sha256/ab/abcd'));
  });
  t.true(quick, 'the calls finished while every pool thread was busy');
  t.is(driver.calls.poolCalls, 0);
  t.is(await readFile(join(dir, '_uploads/u1/claims/one'), 'utf8'), 'me', 'the losing create left the file as it was');
});

test('a move that may replace a file goes through the thread pool, and replaces it', async (t) => {
  const { driver } = await quickDriver(t);
  await driver.putContent('/blobs/sha256/ab/abcd/data', 'old bytes');
  await driver.putContent('/_uploads/u1/data', 'new bytes');
  await driver.putContent('/_uploads/u2/data', 'a new blob');
  const before = driver.calls.poolCalls;
  // Freeing the replaced file's data can take the kernel long: the call waits for a pool thread rather than hold the
  // event loop's, and so finishes only once one is free.
  const quick = await whileThePoolIsBusy(() => driver.move('/_uploads/u1/data', '/blobs/sha256/ab/abcd/data', { mayReplace: true }));
  t.false(quick, 'the move waited for the thread pool');
  t.is(driver.calls.poolCalls, before + 1);
  t.is((await driver.getContent('/blobs/sha256/ab/abcd/data')).toString(), 'new bytes');
  await t.throwsAsync(driver.stat('/_uploads/u1/data'), { name: 'PathNotFoundError' });
  // Where the destination's folder is missing it is made, as for every move.
  await driver.move('/_uploads/u2/data', '/blobs/sha256/cd/cdef/data', { mayReplace: true });
  t.is((await driver.getContent('/blobs/sha256/cd/cdef/data')).toString(), 'a new blob');
  t.is(driver.calls.poolCalls, before + 3, 'the first rename found no folder, the second moved the file');
});

test('a delete of what may be large unlinks through the thread pool, a file or every file of a tree', async (t) => {
  const { driver } = await quickDriver(t);
  await driver.putContent('/_uploads/u1/data', 'many bytes');
  await driver.putContent('/_uploads/u1/startedat', '2026-12-07T00:00:00Z');
  await driver.putContent('/_uploads/u1/claims/0', 'me');
  await driver.putContent('/_uploads/u2/data', 'more bytes');
  const before = driver.calls.poolCalls;
  const quick = await whileThePoolIsBusy(() => driver.delete('/_uploads/u1', { mayBeLarge: true }));
  t.false(quick, 'the unlinks waited for the thread pool');
  // The first unlink, of the folder itself, found a directory; then its three files.
  t.is(driver.calls.poolCalls, before + 4);
  await t.throwsAsync(driver.stat('/_uploads/u1'), { name: 'PathNotFoundError' });
  await driver.delete('/_uploads/u2/data', { mayBeLarge: true });
  t.is(driver.calls.poolCalls, before + 5);
  await t.throwsAsync(driver.stat('/_uploads/u2/data'), { name: 'PathNotFoundError' });
  // Without the hint a delete stays on the event loop's thread.
  await driver.putContent('/small', 'x');
  await driver.delete('/small');
  t.is(driver.calls.poolCalls, before + 5);
});

/** The answers and errors of every call, whichever way it is made: those of Node's own calls. */
async function answersAndErrors(t: import('ava').ExecutionContext, calls: QuickCalls, dir: string): Promise<void> {
  const file = join(dir, 'sub', 'f');
  await calls.writeFile(file, 'x', true);
  t.is(await readFile(file, 'utf8'), 'x');
  t.is((await calls.stat(file)).size, 1);
  await t.throwsAsync(calls.writeFile(file, 'y', false), { code: 'EEXIST' });
  t.is(await readFile(file, 'utf8'), 'x', 'a losing create changes nothing');
  await t.throwsAsync(calls.rmdir(join(dir, 'sub')), { code: 'ENOTEMPTY' });
  await t.throwsAsync(calls.unlink(join(dir, 'sub')), { code: 'EISDIR' });
  await t.throwsAsync(calls.mkdir(join(dir, 'sub')), { code: 'EEXIST' });
  await t.throwsAsync(calls.mkdir(join(dir, 'none', 'below')), { code: 'ENOENT' });
  await t.throwsAsync(calls.stat(join(dir, 'none')), { code: 'ENOENT' });
  t.is(await calls.statIfExists(join(dir, 'none')), undefined);
  await t.throwsAsync(calls.statIfExists(join(file, 'below')), { code: 'ENOTDIR' });
  await t.throwsAsync(calls.rename(join(dir, 'none'), join(dir, 'other')), { code: 'ENOENT' });
  await t.throwsAsync(calls.writeFile(join(dir, 'none', 'f'), 'x', false), { code: 'ENOENT' });
}

test('synchronous calls give the answers and errors Node gives', async (t) => {
  const dir = await tempDir(t);
  const calls = new QuickCalls(dir, NEVER_SLOW);
  await calls.mkdir(join(dir, 'sub'));
  await answersAndErrors(t, calls, dir);
  t.is(calls.poolCalls, 0);
});

test('after a slow call the calls go through the thread pool, and give the same answers and errors', async (t) => {
  const dir = await tempDir(t);
  // A threshold below zero makes every synchronous call a slow one: the first is synchronous, the rest are not.
  const calls = new QuickCalls(dir, -1);
  await calls.mkdir(join(dir, 'sub'));
  t.is(calls.poolCalls, 0);
  const quick = await whileThePoolIsBusy(() => calls.stat(join(dir, 'sub')));
  t.false(quick, 'the stat waited for the pool');
  t.is(calls.poolCalls, 1);
  await answersAndErrors(t, calls, dir);
  t.true(calls.poolCalls > 10);
});

test('the pause after a slow call doubles while the calls stay slow, up to a minute, and starts again after quick ones', async (t) => {
  const dir = await tempDir(t);
  let clock = 1_000_000;
  // Every synchronous call is slow (threshold below zero); the clock moves only when the test moves it.
  const calls = new QuickCalls(dir, -1, () => clock);
  await calls.stat(dir);
  t.is(calls.pausedFor, FIRST_PAUSE_MS);
  await calls.stat(dir);
  t.is(calls.poolCalls, 1, 'during the pause the call went through the pool');
  t.is(calls.pausedFor, FIRST_PAUSE_MS, 'a call through the pool does not lengthen the pause');

  // Slow again right after each pause: the pause doubles, up to the most.
  const pauses: number[] = [];
  for (let i = 0; i < 8; i++) {
    clock += calls.pausedFor;
    await calls.stat(dir);
    pauses.push(calls.pausedFor);
  }
  t.deepEqual(pauses, [2_000, 4_000, 8_000, 16_000, 32_000, MAX_PAUSE_MS, MAX_PAUSE_MS, MAX_PAUSE_MS]);

  // Quick for a while after the last pause: the next slow call pauses the least again.
  clock += calls.pausedFor + 2 * FIRST_PAUSE_MS;
  await calls.stat(dir);
  t.is(calls.pausedFor, FIRST_PAUSE_MS);
  // Slow once more, but not right after that pause (a preempted thread, a collection): the least again.
  clock += calls.pausedFor + FIRST_PAUSE_MS + 1;
  await calls.stat(dir);
  t.is(calls.pausedFor, FIRST_PAUSE_MS);
});

test('quick calls that add up to too much of a second pause them too', async (t) => {
  const dir = await tempDir(t);
  let clock = 1_000_000;
  let elapsed = 0;
  // Each call takes half a millisecond by this stopwatch: under the slow mark, but they add up.
  const calls = new QuickCalls(dir, 2, () => clock, () => (elapsed += 0.5));
  const within = BUSY_MS_PER_SECOND / 0.5;
  for (let i = 0; i < within; i++) await calls.stat(dir);
  t.is(calls.pausedFor, 0, `${within} calls of half a millisecond are within the budget of a second`);
  await calls.stat(dir);
  t.is(calls.pausedFor, FIRST_PAUSE_MS, 'one more is not');
  t.is(calls.poolCalls, 0);

  // A second later (after the pause) the count starts again: as many calls spread over two seconds pause nothing.
  clock += FIRST_PAUSE_MS + 2_000;
  for (let i = 0; i < within - 1; i++) await calls.stat(dir);
  clock += 1_000;
  for (let i = 0; i < within - 1; i++) await calls.stat(dir);
  t.is(calls.pausedFor, 0);
});

test('a large file is written whole through the pool, and exclusively', async (t) => {
  const dir = await tempDir(t);
  const calls = new QuickCalls(dir, NEVER_SLOW);
  const big = Buffer.alloc(SMALL_WRITE_MAX * 3 + 17, 7);
  const quick = await whileThePoolIsBusy(() => calls.writeFile(join(dir, 'big'), big, true));
  t.false(quick, 'a large write waited for the pool');
  t.deepEqual(await readFile(join(dir, 'big')), big);
  await t.throwsAsync(calls.writeFile(join(dir, 'big'), Buffer.alloc(SMALL_WRITE_MAX + 1), false), { code: 'EEXIST' });
  t.deepEqual(await readFile(join(dir, 'big')), big);
});

test('only local filesystems are trusted with synchronous calls', async (t) => {
  t.true(await isLocalFilesystem(tmpdir()));
  t.true(await isLocalFilesystem(join(tmpdir(), 'does-not-exist', 'below')), 'a missing root is judged by its parent');
  t.false(await isLocalFilesystem('/proc'), 'procfs is not in the list');
  t.false(await new QuickCalls('/proc').isLocal());
});
