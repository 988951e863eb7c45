/**
 * The behaviour suite every storage driver passes (like distribution's driver testsuites).
 *
 * A driver's test file is a few lines: `driverSuite('filesystem', async () => ({ driver, cleanup }))`. Each
 * test gets a fresh driver from the factory and cleans it up afterwards; the suite wraps it with
 * `checkedDriver`, as production code does, so path validation and error normalisation are tested too.
 *
 * It is written for every backend, including object stores: it never relies on an empty directory existing
 * (a directory may exist only because something is stored below it), nor on directory modification times.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { checkedDriver } from '../storage-drivers/checked.js';
import {
  InvalidOffsetError,
  InvalidPathError,
  MAX_COMPONENT_LENGTH,
  MAX_PATH_LENGTH,
  PathNotFoundError,
  StorageDriverError,
  comparePaths,
  type FileInfo,
  type StorageDriver,
  type WalkOptions,
} from '../storage-drivers/driver.js';
import { sha256 } from './helpers.js';

/** A fresh driver and its clean-up; `redirects` says whether it hands out redirect URLs (default: it does not). */
export type DriverFactory = () => Promise<{ driver: StorageDriver; cleanup(): Promise<void>; redirects?: boolean }>;

const MiB = 1 << 20;

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function collect(walk: AsyncIterable<FileInfo>): Promise<FileInfo[]> {
  const out: FileInfo[] = [];
  for await (const info of walk) out.push(info);
  return out;
}

/** Paths that every driver must reject with InvalidPathError. */
export const INVALID_PATHS: readonly string[] = [
  '',
  'a',
  'a/b',
  '/a/',
  '//a',
  '/a//b',
  '/.',
  '/..',
  '/a/./b',
  '/a/../b',
  '/a/..',
  '/../etc/passwd',
  '/a b',
  '/a\\b',
  '/a\0b',
  '/a:b',
  '/a?b',
  '/caf\u00e9',
  '/\u4e2d\u6587',
  '/emoji\u{1F600}',
  '/' + 'a'.repeat(MAX_COMPONENT_LENGTH + 1),
  ('/' + 'a'.repeat(99)).repeat(Math.ceil((MAX_PATH_LENGTH + 1) / 100)),
];

/** Register the whole behaviour suite for one driver. */
export function driverSuite(name: string, factory: DriverFactory): void {
  /** A fresh, checked driver for this test, cleaned up when the test ends. */
  async function open(t: ExecutionContext): Promise<StorageDriver> {
    const { driver, cleanup } = await factory();
    t.teardown(cleanup);
    return checkedDriver(driver);
  }

  async function notFound(t: ExecutionContext, promise: Promise<unknown>, path: string): Promise<void> {
    const err = await t.throwsAsync(promise, { instanceOf: PathNotFoundError });
    t.is(err?.path, path);
  }

  const title = (what: string) => `${name}: ${what}`;

  // ---- paths -------------------------------------------------------------------------------------------------

  test(title('invalid paths are rejected with InvalidPathError by every method'), async (t) => {
    const d = await open(t);
    await d.putContent('/ok', 'x');
    for (const bad of INVALID_PATHS) {
      const label = JSON.stringify(bad);
      const calls: Array<[string, () => Promise<unknown>]> = [
        ['getContent', () => d.getContent(bad)],
        ['getContentWithInfo', () => d.getContentWithInfo!(bad)],
        ['putContent', () => d.putContent(bad, 'x')],
        ['reader', () => d.reader(bad)],
        ['writer', () => d.writer(bad, false)],
        ['stat', () => d.stat(bad)],
        ['list', () => d.list(bad)],
        ['move from', () => d.move(bad, '/dest')],
        ['move to', () => d.move('/ok', bad)],
        ['delete', () => d.delete(bad)],
        ['removeEmptyDirectory', () => d.removeEmptyDirectory!(bad)],
        ['redirectURL', () => d.redirectURL(bad, { method: 'GET' })],
        ['walk', () => collect(d.walk(bad))],
        ['walk startAfter', () => collect(d.walk('/', { startAfter: bad }))],
      ];
      for (const [method, call] of calls) {
        const err = await t.throwsAsync(call(), { instanceOf: InvalidPathError }, `${method} ${label}`);
        t.is(err?.path, bad, `${method} ${label}`);
      }
    }
    // Nothing was written or moved by the rejected calls.
    t.deepEqual(await d.list('/'), ['/ok']);
    t.is((await d.getContent('/ok')).toString(), 'x');
  });

  test(title('unusual but valid names work'), async (t) => {
    const d = await open(t);
    const names = ['.hidden', '..a', 'a..', '-', '_', 'A.B-c_d', '0', 'a'.repeat(MAX_COMPONENT_LENGTH)];
    for (const n of names) await d.putContent(`/names/${n}`, n);
    for (const n of names) t.is((await d.getContent(`/names/${n}`)).toString(), n);
    t.deepEqual(await d.list('/names'), names.map((n) => `/names/${n}`).sort());
  });

  test(title('paths with many components'), async (t) => {
    const d = await open(t);
    const parts = Array.from({ length: 60 }, (_, i) => `c${i}`);
    const deep = '/' + parts.join('/');
    await d.putContent(deep, 'deep');
    t.is((await d.getContent(deep)).toString(), 'deep');
    t.is((await d.stat(deep)).size, 4);
    const parent = '/' + parts.slice(0, -1).join('/');
    t.true((await d.stat(parent)).isDir);
    t.deepEqual(await d.list(parent), [deep]);
    const walked = (await collect(d.walk('/'))).map((i) => i.path);
    t.is(walked.length, parts.length);
    t.is(walked.at(-1), deep);
    await d.delete('/c0');
    await notFound(t, d.stat(deep), deep);
  });

  // ---- getContent / putContent -------------------------------------------------------------------------------

  test(title('putContent and getContent round-trip strings and bytes'), async (t) => {
    const d = await open(t);
    await d.putContent('/a/text', 'hello, world');
    t.is((await d.getContent('/a/text')).toString('utf8'), 'hello, world');
    const bytes = randomBytes(4096);
    await d.putContent('/a/bytes', bytes);
    t.true((await d.getContent('/a/bytes')).equals(bytes));
    await d.putContent('/a/empty', new Uint8Array(0));
    t.is((await d.getContent('/a/empty')).length, 0);
    t.is((await d.stat('/a/empty')).size, 0);
  });

  test(title('putContent replaces, creates parents, and does not alias buffers'), async (t) => {
    const d = await open(t);
    const input = Buffer.from('original');
    await d.putContent('/x/y/z/file', input);
    input.fill(0); // the caller reusing its buffer must not change what was stored
    const got = await d.getContent('/x/y/z/file');
    t.is(got.toString(), 'original');
    got.fill(0); // nor may changing what was returned
    t.is((await d.getContent('/x/y/z/file')).toString(), 'original');
    await d.putContent('/x/y/z/file', 'replaced by a longer value');
    t.is((await d.getContent('/x/y/z/file')).toString(), 'replaced by a longer value');
    await d.putContent('/x/y/z/file', 'short');
    t.is((await d.getContent('/x/y/z/file')).toString(), 'short');
    t.deepEqual(await d.list('/x/y/z'), ['/x/y/z/file']);
  });

  test(title('getContent of a missing path or a directory is PathNotFoundError'), async (t) => {
    const d = await open(t);
    await notFound(t, d.getContent('/missing'), '/missing');
    await d.putContent('/dir/file', 'x');
    await notFound(t, d.getContent('/dir'), '/dir');
    await notFound(t, d.getContent('/dir/file/below'), '/dir/file/below');
    await notFound(t, d.getContent('/'), '/');
  });

  test(title('getContentWithInfo gives the bytes of a file with the info stat gives of them, in one call'), async (t) => {
    const { driver, cleanup } = await factory();
    t.teardown(cleanup);
    t.is(typeof driver.getContentWithInfo, 'function', 'the driver answers it itself, not by getContent and stat');
    const d = checkedDriver(driver);
    await d.putContent('/c/link', 'sha256:one');
    // Three reads: the filesystem reads a file plainly, then keeps it, then may answer from what it kept.
    for (let i = 0; i < 3; i++) {
      const { content, info } = await d.getContentWithInfo!('/c/link');
      t.is(content.toString(), 'sha256:one');
      t.deepEqual(info, { ...(await d.stat('/c/link')), path: '/c/link' }, `read ${i + 1}`);
      t.is(info.size, content.length);
      content.fill(0); // callers own what they are given
    }
    const firstEtag = (await d.getContentWithInfo!('/c/link')).info.etag;
    await d.putContent('/c/link', 'sha256:a longer second value');
    const { content, info } = await d.getContentWithInfo!('/c/link');
    t.is(content.toString(), 'sha256:a longer second value');
    t.deepEqual(info, await d.stat('/c/link'));
    t.false(info.isDir);
    // A driver that names versions names this one anew, and its listing says the same.
    t.is(info.etag === undefined, firstEtag === undefined);
    if (firstEtag !== undefined) t.not(info.etag, firstEtag);
    if (d.listFiles) {
      const listed: FileInfo[] = [];
      for await (const f of d.listFiles('/c')) listed.push(f);
      // A listing may keep finer times than a read's Last-Modified header (RGW's are to the millisecond).
      const second = (f: FileInfo) => ({ ...f, modTime: Math.floor(f.modTime.getTime() / 1000) });
      t.deepEqual(listed.map(second), [second(info)]);
    }
    await notFound(t, d.getContentWithInfo!('/missing'), '/missing');
    await notFound(t, d.getContentWithInfo!('/c'), '/c');
    await notFound(t, d.getContentWithInfo!('/c/link/below'), '/c/link/below');
    await notFound(t, d.getContentWithInfo!('/'), '/');
  });

  test(title('concurrent putContent to one path leaves one value intact; readers never see a mix'), async (t) => {
    const d = await open(t);
    const size = 128 * 1024;
    const values = Array.from({ length: 8 }, (_, i) => Buffer.alloc(size, i + 1));
    const isOneValue = (b: Buffer) => b.length === size && b[0]! >= 1 && b[0]! <= values.length && b.every((x) => x === b[0]);
    await d.putContent('/race/file', values[0]!);
    let writing = true;
    let reads = 0;
    let bad = 0;
    const readLoop = async () => {
      while (writing) {
        if (!isOneValue(await d.getContent('/race/file'))) bad++;
        reads++;
      }
    };
    const readers = [readLoop(), readLoop(), readLoop(), readLoop()];
    // Many rounds of concurrent writers, so reads overlap writes many times.
    for (let round = 0; round < 25; round++) await Promise.all(values.map((v) => d.putContent('/race/file', v)));
    writing = false;
    await Promise.all(readers);
    t.true(reads > 0);
    t.is(bad, 0, `${bad} of ${reads} reads saw a partial or mixed file`);
    t.true(isOneValue(await d.getContent('/race/file')));
    t.deepEqual(await d.list('/race'), ['/race/file']);
  });

  test(title('putContentIfAbsent creates a missing file (with its folders) and never replaces one'), async (t) => {
    const d = await open(t);
    t.true(await d.putContentIfAbsent('/once/deep/file', 'first'));
    t.deepEqual(await d.getContent('/once/deep/file'), Buffer.from('first'));
    t.false(await d.putContentIfAbsent('/once/deep/file', 'second'), 'a file is there');
    t.deepEqual(await d.getContent('/once/deep/file'), Buffer.from('first'), 'and it is left as it was');
    await d.putContent('/once/other', 'replaced by putContent');
    t.false(await d.putContentIfAbsent('/once/other', 'x'));
    await d.delete('/once/deep/file');
    t.true(await d.putContentIfAbsent('/once/deep/file', 'again'), 'a deleted file may be created again');
    t.deepEqual(await d.getContent('/once/deep/file'), Buffer.from('again'));
    t.true(await d.putContentIfAbsent('/once/empty', new Uint8Array(0)));
    t.is((await d.stat('/once/empty')).size, 0);
    await t.throwsAsync(d.putContentIfAbsent('/once/../x', 'x'), { instanceOf: InvalidPathError });
  });

  test(title('of concurrent putContentIfAbsent calls for one path exactly one wins, and its content stays'), async (t) => {
    const d = await open(t);
    for (let round = 0; round < 5; round++) {
      const path = `/claims/${round}`;
      const contents = Array.from({ length: 8 }, (_, i) => `writer-${round}-${i}`);
      const results = await Promise.all(contents.map((c) => d.putContentIfAbsent(path, c)));
      const winners = contents.filter((_, i) => results[i]);
      t.is(winners.length, 1, `round ${round}: ${winners.length} creators were told they won`);
      t.is((await d.getContent(path)).toString('utf8'), winners[0]);
    }
  });

  // ---- reader --------------------------------------------------------------------------------------------------

  test(title('reader honours offset and length'), async (t) => {
    const d = await open(t);
    const data = randomBytes(1000);
    await d.putContent('/r/file', data);
    t.true((await readAll(await d.reader('/r/file'))).equals(data));
    t.true((await readAll(await d.reader('/r/file', 0))).equals(data));
    t.true((await readAll(await d.reader('/r/file', 123))).equals(data.subarray(123)));
    t.true((await readAll(await d.reader('/r/file', 999))).equals(data.subarray(999)));
    t.is((await readAll(await d.reader('/r/file', 1000))).length, 0, 'offset === size is an empty stream');
    t.true((await readAll(await d.reader('/r/file', 100, 50))).equals(data.subarray(100, 150)));
    t.true((await readAll(await d.reader('/r/file', 0, 1000))).equals(data));
    t.true((await readAll(await d.reader('/r/file', 990, 50))).equals(data.subarray(990)), 'length past the end is cut');
    t.is((await readAll(await d.reader('/r/file', 10, 0))).length, 0);
    t.is((await readAll(await d.reader('/r/file', 1000, 0))).length, 0);
  });

  test(title('reader rejects bad offsets and lengths with InvalidOffsetError'), async (t) => {
    const d = await open(t);
    await d.putContent('/r/file', 'twelve bytes');
    for (const offset of [13, 1000, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      await t.throwsAsync(d.reader('/r/file', offset), { instanceOf: InvalidOffsetError }, `offset ${offset}`);
    }
    for (const length of [-1, 0.5, Number.NaN]) {
      await t.throwsAsync(d.reader('/r/file', 0, length), { instanceOf: InvalidOffsetError }, `length ${length}`);
    }
    await d.putContent('/r/empty', '');
    t.is((await readAll(await d.reader('/r/empty'))).length, 0);
    await t.throwsAsync(d.reader('/r/empty', 1), { instanceOf: InvalidOffsetError });
  });

  test(title('reader of a missing path or a directory is PathNotFoundError'), async (t) => {
    const d = await open(t);
    await notFound(t, d.reader('/missing'), '/missing');
    await notFound(t, d.reader('/missing', 10), '/missing');
    await d.putContent('/dir/file', 'x');
    await notFound(t, d.reader('/dir'), '/dir');
  });

  test(title('20 MiB streamed through a writer and back through readers'), async (t) => {
    const d = await open(t);
    const data = randomBytes(20 * MiB);
    const w = await d.writer('/big/data', false);
    // Irregular chunk sizes, from one byte to more than a reader chunk.
    const sizes = [1, 7, 4096, 65536, MiB + 3, 3 * MiB, 100_000];
    let at = 0;
    for (let i = 0; at < data.length; i++) {
      const n = Math.min(sizes[i % sizes.length]!, data.length - at);
      await w.write(data.subarray(at, at + n));
      at += n;
      t.is(w.size, at);
    }
    await w.commit();
    t.is((await d.stat('/big/data')).size, data.length);
    t.is(sha256(await readAll(await d.reader('/big/data'))), sha256(data));
    const from = 5 * MiB + 3;
    const length = 7 * MiB + 11;
    t.is(sha256(await readAll(await d.reader('/big/data', from, length))), sha256(data.subarray(from, from + length)));
    t.is(sha256(await readAll(await d.reader('/big/data', from))), sha256(data.subarray(from)));
    t.is(sha256(await d.getContent('/big/data')), sha256(data));
  });

  test(title('a reader destroyed early releases the file'), async (t) => {
    const d = await open(t);
    await d.putContent('/r/big', randomBytes(8 * MiB));
    const stream = await d.reader('/r/big');
    const closed = new Promise<void>((resolve) => stream.once('close', () => resolve()));
    const first = await new Promise<Buffer>((resolve) => stream.once('data', resolve));
    t.true(first.length > 0);
    stream.destroy();
    await closed;
    await d.delete('/r/big');
    await notFound(t, d.stat('/r/big'), '/r/big');
  });

  // ---- writer --------------------------------------------------------------------------------------------------

  test(title('writer tracks size, creates parents, and commits'), async (t) => {
    const d = await open(t);
    const w = await d.writer('/w/deep/er/file', false);
    t.is(w.size, 0);
    await w.write(Buffer.from('abc'));
    t.is(w.size, 3);
    await w.write(new Uint8Array(0));
    t.is(w.size, 3);
    await w.write(Buffer.from('defgh'));
    t.is(w.size, 8);
    await w.commit();
    t.is((await d.getContent('/w/deep/er/file')).toString(), 'abcdefgh');
    t.is((await d.stat('/w/deep/er/file')).size, 8);
  });

  test(title('writer keeps the order of writes that were not awaited, and copies chunks'), async (t) => {
    const d = await open(t);
    const w = await d.writer('/w/file', false);
    const chunk = Buffer.from('aaaa');
    const pending = [w.write(chunk), w.write(Buffer.from('bbbb')), w.write(Buffer.from('cccc'))];
    await Promise.all(pending);
    chunk.fill(0x7a); // reusing a chunk after its write resolved must not change the file
    t.is(w.size, 12);
    await w.commit();
    t.is((await d.getContent('/w/file')).toString(), 'aaaabbbbcccc');
  });

  test(title('writer closed and reopened in append mode resumes'), async (t) => {
    const d = await open(t);
    const w1 = await d.writer('/w/upload', false);
    await w1.write(Buffer.from('hello '));
    await w1.close();
    await w1.close(); // idempotent
    t.is((await d.stat('/w/upload')).size, 6);
    const w2 = await d.writer('/w/upload', true);
    t.is(w2.size, 6);
    await w2.write(Buffer.from('world'));
    t.is(w2.size, 11);
    await w2.close();
    const w3 = await d.writer('/w/upload', true);
    t.is(w3.size, 11);
    await w3.write(Buffer.from('!'));
    await w3.commit();
    t.is((await d.getContent('/w/upload')).toString(), 'hello world!');
  });

  test(title('writer in truncate mode replaces an existing file'), async (t) => {
    const d = await open(t);
    await d.putContent('/w/file', 'old content that is long');
    const w = await d.writer('/w/file', false);
    t.is(w.size, 0);
    await w.write(Buffer.from('new'));
    await w.commit();
    t.is((await d.getContent('/w/file')).toString(), 'new');
  });

  test(title('appending to a missing file is PathNotFoundError'), async (t) => {
    const d = await open(t);
    await notFound(t, d.writer('/w/missing', true), '/w/missing');
    await notFound(t, d.stat('/w/missing'), '/w/missing');
  });

  test(title('writer cancel discards the file, including bytes from before an append'), async (t) => {
    const d = await open(t);
    const w1 = await d.writer('/w/a', false);
    await w1.write(Buffer.from('data'));
    await w1.cancel();
    await notFound(t, d.stat('/w/a'), '/w/a');

    const w2 = await d.writer('/w/b', false);
    await w2.write(Buffer.from('first part'));
    await w2.close();
    const w3 = await d.writer('/w/b', true);
    await w3.write(Buffer.from(' second part'));
    await w3.cancel();
    await w3.cancel(); // idempotent
    await notFound(t, d.stat('/w/b'), '/w/b');
    await notFound(t, d.getContent('/w/b'), '/w/b');
  });

  test(title('a finished writer refuses further use with a StorageError'), async (t) => {
    const d = await open(t);
    const committed = await d.writer('/w/committed', false);
    await committed.write(Buffer.from('x'));
    await committed.commit();
    await t.throwsAsync(committed.write(Buffer.from('y')), { instanceOf: StorageDriverError });
    await t.throwsAsync(committed.commit(), { instanceOf: StorageDriverError });
    await t.throwsAsync(committed.cancel(), { instanceOf: StorageDriverError });
    t.is((await d.getContent('/w/committed')).toString(), 'x', 'a refused cancel after commit keeps the file');

    const closed = await d.writer('/w/closed', false);
    await closed.close();
    await t.throwsAsync(closed.write(Buffer.from('y')), { instanceOf: StorageDriverError });
    await t.throwsAsync(closed.commit(), { instanceOf: StorageDriverError });

    const cancelled = await d.writer('/w/cancelled', false);
    await cancelled.cancel();
    await t.throwsAsync(cancelled.write(Buffer.from('y')), { instanceOf: StorageDriverError });
    await t.throwsAsync(cancelled.commit(), { instanceOf: StorageDriverError });
  });

  test(title('an empty committed writer leaves an empty file'), async (t) => {
    const d = await open(t);
    const w = await d.writer('/w/empty', false);
    await w.commit();
    t.is((await d.stat('/w/empty')).size, 0);
    t.is((await d.getContent('/w/empty')).length, 0);
  });

  // ---- stat ----------------------------------------------------------------------------------------------------

  test(title('stat of a file, a directory, the root and a missing path'), async (t) => {
    const d = await open(t);
    const before = Date.now();
    await d.putContent('/s/dir/file', 'twelve bytes');
    const file = await d.stat('/s/dir/file');
    t.is(file.path, '/s/dir/file');
    t.is(file.size, 12);
    t.false(file.isDir);
    t.true(file.modTime instanceof Date);
    // Generous bounds: filesystem timestamps can be coarse and clocks skewed a little.
    t.true(Math.abs(file.modTime.getTime() - before) < 60_000, `modTime ${file.modTime.toISOString()}`);

    const dir = await d.stat('/s/dir');
    t.is(dir.path, '/s/dir');
    t.true(dir.isDir);
    t.is(dir.size, 0);
    t.true(dir.modTime instanceof Date);
    t.true((await d.stat('/s')).isDir);
    t.true((await d.stat('/')).isDir);

    await notFound(t, d.stat('/s/missing'), '/s/missing');
    await notFound(t, d.stat('/s/dir/file/below'), '/s/dir/file/below');
    await notFound(t, d.stat('/s/di'), '/s/di'); // a prefix of a directory name is not a directory
  });

  // ---- list ----------------------------------------------------------------------------------------------------

  test(title('list gives direct children as full paths, sorted'), async (t) => {
    const d = await open(t);
    const files = ['/l/b', '/l/a/x', '/l/a/y/z', '/l/B', '/l/a-b', '/l/a.b', '/l/a_b', '/l/c/d', '/l0'];
    for (const f of files) await d.putContent(f, f);
    t.deepEqual(await d.list('/l'), ['/l/B', '/l/a', '/l/a-b', '/l/a.b', '/l/a_b', '/l/b', '/l/c']);
    t.deepEqual(await d.list('/l/a'), ['/l/a/x', '/l/a/y']);
    t.deepEqual(await d.list('/l/a/y'), ['/l/a/y/z']);
    t.deepEqual(await d.list('/'), ['/l', '/l0']);
  });

  test(title('list of the empty root is empty; of a missing path or a file, PathNotFoundError'), async (t) => {
    const d = await open(t);
    t.deepEqual(await d.list('/'), []);
    await notFound(t, d.list('/missing'), '/missing');
    await d.putContent('/file', 'x');
    await notFound(t, d.list('/file'), '/file');
    await d.putContent('/dir/file', 'x');
    await notFound(t, d.list('/di'), '/di');
  });

  // ---- move ----------------------------------------------------------------------------------------------------

  test(title('move renames a file into new directories'), async (t) => {
    const d = await open(t);
    await d.putContent('/m/src', 'moving');
    await d.move('/m/src', '/m/new/dir/dest');
    t.is((await d.getContent('/m/new/dir/dest')).toString(), 'moving');
    await notFound(t, d.stat('/m/src'), '/m/src');
    t.deepEqual(await d.list('/m/new/dir'), ['/m/new/dir/dest']);
  });

  test(title('move replaces an existing file'), async (t) => {
    const d = await open(t);
    await d.putContent('/m/src', 'new');
    await d.putContent('/m/dest', 'old and longer');
    await d.move('/m/src', '/m/dest');
    t.is((await d.getContent('/m/dest')).toString(), 'new');
    t.deepEqual(await d.list('/m'), ['/m/dest']);
  });

  test(title('move of a missing source is PathNotFoundError and changes nothing'), async (t) => {
    const d = await open(t);
    await d.putContent('/m/dest', 'kept');
    await notFound(t, d.move('/m/missing', '/m/dest'), '/m/missing');
    t.is((await d.getContent('/m/dest')).toString(), 'kept');
    await notFound(t, d.move('/m/missing', '/n/dest'), '/m/missing');
    await notFound(t, d.stat('/n/dest'), '/n/dest');
    // Nor does it leave the folders of a missing destination behind, however deep.
    await notFound(t, d.move('/m/missing', '/n/o/p/dest'), '/m/missing');
    t.deepEqual(await d.list('/'), ['/m']);
  });

  test(title('concurrent writers moving to the same destination leave one intact file'), async (t) => {
    const d = await open(t);
    const n = 8;
    const contents = Array.from({ length: n }, (_, i) => Buffer.alloc(300_000 + i, i + 1));
    await Promise.all(
      contents.map(async (content, i) => {
        const w = await d.writer(`/uploads/${i}/data`, false);
        for (let at = 0; at < content.length; at += 65536) await w.write(content.subarray(at, at + 65536));
        await w.commit();
        await d.move(`/uploads/${i}/data`, '/blobs/sha256/ab/abcd/data');
      }),
    );
    const final = await d.getContent('/blobs/sha256/ab/abcd/data');
    t.true(contents.some((c) => c.equals(final)), 'the destination holds exactly one upload');
    t.is((await d.stat('/blobs/sha256/ab/abcd/data')).size, final.length);
    t.deepEqual(await d.list('/blobs/sha256/ab/abcd'), ['/blobs/sha256/ab/abcd/data']);
    for (let i = 0; i < n; i++) await notFound(t, d.stat(`/uploads/${i}/data`), `/uploads/${i}/data`);
  });

  // ---- delete --------------------------------------------------------------------------------------------------

  test(title('delete removes a file and leaves its siblings'), async (t) => {
    const d = await open(t);
    await d.putContent('/d/a', 'a');
    await d.putContent('/d/ab', 'ab');
    await d.delete('/d/a');
    await notFound(t, d.stat('/d/a'), '/d/a');
    t.is((await d.getContent('/d/ab')).toString(), 'ab');
    t.deepEqual(await d.list('/d'), ['/d/ab']);
  });

  test(title('delete removes a whole tree, and only that tree'), async (t) => {
    const d = await open(t);
    const doomed = ['/d/t/x', '/d/t/y/z', '/d/t/y/w/v'];
    const kept = ['/d/t-sibling', '/d/tt/x', '/d/t.x', '/d/u'];
    for (const p of [...doomed, ...kept]) await d.putContent(p, p);
    await d.delete('/d/t');
    for (const p of [...doomed, '/d/t', '/d/t/y']) await notFound(t, d.stat(p), p);
    for (const p of kept) t.is((await d.getContent(p)).toString(), p);
    t.deepEqual(await d.list('/d'), ['/d/t-sibling', '/d/t.x', '/d/tt', '/d/u']);
    const walked = (await collect(d.walk('/d'))).map((i) => i.path);
    t.false(walked.some((p) => p === '/d/t' || p.startsWith('/d/t/')));
  });

  test(title('delete of a missing path is PathNotFoundError'), async (t) => {
    const d = await open(t);
    await notFound(t, d.delete('/missing'), '/missing');
    await d.putContent('/dir/file', 'x');
    await notFound(t, d.delete('/dir/fil'), '/dir/fil');
    await notFound(t, d.delete('/di'), '/di');
    t.is((await d.getContent('/dir/file')).toString(), 'x');
  });

  test(title('delete of the root empties the driver'), async (t) => {
    const d = await open(t);
    await d.putContent('/a/b', 'x');
    await d.putContent('/c', 'y');
    await d.delete('/');
    t.deepEqual(await d.list('/'), []);
    await notFound(t, d.stat('/a/b'), '/a/b');
    await d.putContent('/after', 'z');
    t.deepEqual(await d.list('/'), ['/after']);
  });

  // ---- removeEmptyDirectory ------------------------------------------------------------------------------------

  test(title('removeEmptyDirectory removes only an empty directory'), async (t) => {
    const d = await open(t);
    await d.putContent('/e/full/file', 'x');
    await d.putContent('/e/nested/inner/file', 'y');
    await d.delete('/e/nested/inner/file');
    // Not empty, a file, missing, the root: nothing happens.
    t.false(await d.removeEmptyDirectory!('/e/full'));
    t.false(await d.removeEmptyDirectory!('/e/full/file'));
    t.false(await d.removeEmptyDirectory!('/e/missing'));
    t.false(await d.removeEmptyDirectory!('/'));
    t.is((await d.getContent('/e/full/file')).toString(), 'x');
    // A directory holding only an empty directory is not empty (where empty directories exist at all).
    t.false(await d.removeEmptyDirectory!('/e/nested'));
    // Bottom up, each emptied directory goes (or, on an object store, was never there).
    const removed = [await d.removeEmptyDirectory!('/e/nested/inner'), await d.removeEmptyDirectory!('/e/nested')];
    t.deepEqual(removed[0], removed[1], 'both removed, or neither existed');
    await notFound(t, d.stat('/e/nested'), '/e/nested');
    t.deepEqual(await d.list('/e'), ['/e/full']);
    t.is((await d.getContent('/e/full/file')).toString(), 'x');
  });

  test(title('removeEmptyDirectory never loses a file written into the directory at the same time'), async (t) => {
    const d = await open(t);
    const rounds = 40;
    await Promise.all(Array.from({ length: rounds }, async (_, i) => {
      const dir = `/race/d${i}`;
      // Leave an empty directory behind (where the driver has them), then race a writer and a mover against removal.
      await d.putContent(`${dir}/old`, 'old');
      await d.delete(`${dir}/old`);
      await d.putContent(`/race/src${i}`, `moved ${i}`);
      await Promise.all([
        d.removeEmptyDirectory!(dir),
        d.putContent(`${dir}/put`, `put ${i}`),
        d.removeEmptyDirectory!(dir),
        d.move(`/race/src${i}`, `${dir}/moved`),
        d.removeEmptyDirectory!(dir),
      ]);
    }));
    for (let i = 0; i < rounds; i++) {
      t.is((await d.getContent(`/race/d${i}/put`)).toString(), `put ${i}`);
      t.is((await d.getContent(`/race/d${i}/moved`)).toString(), `moved ${i}`);
    }
  });

  // ---- redirectURL ---------------------------------------------------------------------------------------------

  test(title('redirectURL is an absolute URL serving the bytes, or null for a driver that never redirects'), async (t) => {
    const { driver, cleanup, redirects = false } = await factory();
    t.teardown(cleanup);
    const d = checkedDriver(driver);
    await d.putContent('/blob', 'x');
    for (const method of ['GET', 'HEAD'] as const) {
      const url = await d.redirectURL('/blob', { method, expiresIn: 60 });
      if (!redirects) {
        t.is(url, null);
        continue;
      }
      t.regex(new URL(url!).protocol, /^https?:$/);
      const res = await fetch(url!, { method });
      t.is(res.status, 200);
      if (method === 'GET') t.is(await res.text(), 'x');
      else t.is(res.headers.get('content-length'), '1');
    }
  });

  // ---- walk ----------------------------------------------------------------------------------------------------

  const WALK_FILES = ['/w/a/b/c', '/w/a/b-c', '/w/a/b.d/e', '/w/a/b_/f', '/w/a/B', '/w/a/b/d/e', '/w/x', '/w/a0'];
  /** Depth-first, children sorted: note '/w/a/b/...' before '/w/a/b-c' although '-' < '/' as characters. */
  const WALK_ORDER = [
    '/w/a',
    '/w/a/B',
    '/w/a/b',
    '/w/a/b/c',
    '/w/a/b/d',
    '/w/a/b/d/e',
    '/w/a/b-c',
    '/w/a/b.d',
    '/w/a/b.d/e',
    '/w/a/b_',
    '/w/a/b_/f',
    '/w/a0',
    '/w/x',
  ];

  async function walkFixture(t: ExecutionContext): Promise<StorageDriver> {
    const d = await open(t);
    for (const f of WALK_FILES) await d.putContent(f, `content of ${f}`);
    await d.putContent('/v', 'outside'); // a sibling of the walked directory, never part of its walk
    await d.putContent('/w0/y', 'outside');
    return d;
  }

  const paths = (infos: FileInfo[]) => infos.map((i) => i.path);

  test(title('walk yields everything below, depth-first in path order, with file info'), async (t) => {
    const d = await walkFixture(t);
    const infos = await collect(d.walk('/w'));
    t.deepEqual(paths(infos), WALK_ORDER);
    t.deepEqual([...WALK_ORDER].sort(comparePaths), WALK_ORDER, 'walk order is comparePaths order');
    for (const info of infos) {
      const isFile = WALK_FILES.includes(info.path);
      t.is(info.isDir, !isFile, info.path);
      t.is(info.size, isFile ? Buffer.byteLength(`content of ${info.path}`) : 0, info.path);
      t.true(info.modTime instanceof Date);
    }
    t.deepEqual(paths(await collect(d.walk('/w/a/b'))), ['/w/a/b/c', '/w/a/b/d', '/w/a/b/d/e']);
    t.deepEqual(paths(await collect(d.walk('/'))), ['/v', '/w', ...WALK_ORDER, '/w0', '/w0/y']);
  });

  test(title('walk of a missing path or a file is PathNotFoundError'), async (t) => {
    const d = await walkFixture(t);
    await notFound(t, collect(d.walk('/missing')), '/missing');
    await notFound(t, collect(d.walk('/w/x')), '/w/x');
    await notFound(t, collect(d.walk('/w/a/b-')), '/w/a/b-');
  });

  test(title('walk of the empty root yields nothing'), async (t) => {
    const d = await open(t);
    t.deepEqual(await collect(d.walk('/')), []);
  });

  test(title('walk descend=false yields the directory but not its contents'), async (t) => {
    const d = await walkFixture(t);
    const asked: string[] = [];
    const descend = (dir: FileInfo) => {
      t.true(dir.isDir);
      asked.push(dir.path);
      return dir.path !== '/w/a/b' && dir.path !== '/w/a/b_';
    };
    const skipped = new Set(['/w/a/b/c', '/w/a/b/d', '/w/a/b/d/e', '/w/a/b_/f']);
    t.deepEqual(paths(await collect(d.walk('/w', { descend }))), WALK_ORDER.filter((p) => !skipped.has(p)));
    t.deepEqual(asked, ['/w/a', '/w/a/b', '/w/a/b.d', '/w/a/b_'], 'descend is asked about every directory, once');
    t.deepEqual(paths(await collect(d.walk('/w', { descend: () => false }))), ['/w/a', '/w/a0', '/w/x']);
  });

  test(title('walk startAfter yields exactly the entries after it'), async (t) => {
    const d = await walkFixture(t);
    const starts = [...WALK_ORDER, '/', '/v', '/w', '/w/a/b/a', '/w/a/b/zz', '/w/a/b-', '/w/a/c', '/w/zzz', '/z'];
    for (const startAfter of starts) {
      const expected = WALK_ORDER.filter((p) => comparePaths(p, startAfter) > 0);
      t.deepEqual(paths(await collect(d.walk('/w', { startAfter }))), expected, `startAfter ${startAfter}`);
    }
  });

  test(title('walk pages through a tree with startAfter'), async (t) => {
    const d = await walkFixture(t);
    const seen: string[] = [];
    let startAfter: string | undefined;
    for (;;) {
      const page: string[] = [];
      for await (const info of d.walk('/w', { startAfter })) {
        page.push(info.path);
        if (page.length === 3) break; // stopping early must be fine
      }
      if (page.length === 0) break;
      seen.push(...page);
      startAfter = page.at(-1);
    }
    t.deepEqual(seen, WALK_ORDER);
  });

  test(title('walk combines startAfter and descend'), async (t) => {
    const d = await walkFixture(t);
    const options: WalkOptions = { startAfter: '/w/a/b/c', descend: (dir) => dir.path !== '/w/a/b' };
    const expected = WALK_ORDER.filter((p) => comparePaths(p, '/w/a/b-c') >= 0);
    t.deepEqual(paths(await collect(d.walk('/w', options))), expected);
    const inside: WalkOptions = { startAfter: '/w/a/b/c', descend: (dir) => dir.path !== '/w/a/b/d' };
    t.deepEqual(paths(await collect(d.walk('/w', inside)))[0], '/w/a/b/d');
    t.false(paths(await collect(d.walk('/w', inside))).includes('/w/a/b/d/e'));
  });

  test(title('an exception from descend reaches the caller unchanged'), async (t) => {
    const d = await walkFixture(t);
    class Stop extends Error {}
    const stop = new Stop('stop here');
    const err = await t.throwsAsync(
      collect(
        d.walk('/w', {
          descend: () => {
            throw stop;
          },
        }),
      ),
    );
    t.is(err, stop);
  });
}
