/**
 * What checkedDriver adds on top of any driver. The inner driver here is the real in-memory driver, extended
 * to record the paths it receives and, where a test asks for it, to fail the way a misbehaving backend does
 * (throwing plain errors, breaking its streams) so the normalisation can be observed.
 */
import test from 'ava';
import { PassThrough, Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { checkedDriver, normaliseError } from './checked.js';
import {
  InvalidOffsetError,
  InvalidPathError,
  PathNotFoundError,
  StorageDriverError,
  StorageError,
  COPY_INTO,
  copyIntoOf,
  type CopyInto,
  type FileInfo,
  type FileWriter,
  type WalkOptions,
} from './driver.js';
import { InMemoryDriver } from './inmemory.js';

class RecordingDriver extends InMemoryDriver {
  readonly seen: string[] = [];
  /** When set, every call throws this instead of doing its work. */
  failWith: unknown = undefined;
  /** When set, reader streams emit this error after their first chunk. */
  streamError: Error | undefined = undefined;
  /** When true, reader streams are destroyed without an error after their first chunk. */
  streamCut = false;

  private enter(...paths: string[]): void {
    this.seen.push(...paths);
    if (this.failWith !== undefined) throw this.failWith;
  }

  override async getContent(path: string): Promise<Buffer> {
    this.enter(path);
    return super.getContent(path);
  }
  override async putContent(path: string, content: Uint8Array | string): Promise<void> {
    this.enter(path);
    return super.putContent(path, content);
  }
  override async reader(path: string, offset?: number, length?: number): Promise<Readable> {
    this.enter(path);
    const inner = await super.reader(path, offset, length);
    if (!this.streamError && !this.streamCut) return inner;
    const error = this.streamError;
    const cut = new Readable({
      read() {
        const chunk = inner.read();
        if (chunk === null) {
          inner.once('readable', () => this.read(0));
          return;
        }
        this.push(chunk);
        if (error) this.destroy(error);
        else this.destroy();
      },
    });
    return cut;
  }
  override async writer(path: string, append: boolean): Promise<FileWriter> {
    this.enter(path);
    return super.writer(path, append);
  }
  override async stat(path: string): Promise<FileInfo> {
    this.enter(path);
    return super.stat(path);
  }
  override async list(path: string): Promise<string[]> {
    this.enter(path);
    return super.list(path);
  }
  override async move(sourcePath: string, destPath: string): Promise<void> {
    this.enter(sourcePath, destPath);
    return super.move(sourcePath, destPath);
  }
  override async delete(path: string): Promise<void> {
    this.enter(path);
    return super.delete(path);
  }
  override async *walk(path: string, options?: WalkOptions): AsyncIterable<FileInfo> {
    this.enter(path);
    yield* super.walk(path, options);
  }
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function drain(walk: AsyncIterable<FileInfo>): Promise<void> {
  for await (const _ of walk);
}

test('invalid paths never reach the inner driver', async (t) => {
  const inner = new RecordingDriver();
  const d = checkedDriver(inner);
  await t.throwsAsync(d.getContent('/a/../b'), { instanceOf: InvalidPathError });
  await t.throwsAsync(d.putContent('/a/./b', 'x'), { instanceOf: InvalidPathError });
  await t.throwsAsync(d.move('/ok', '/a//b'), { instanceOf: InvalidPathError });
  await t.throwsAsync(drain(d.walk('/ok', { startAfter: 'relative' })), { instanceOf: InvalidPathError });
  await t.throwsAsync(d.reader('/ok', -5), { instanceOf: InvalidOffsetError });
  await t.throwsAsync(d.reader('/ok', 0, -1), { instanceOf: InvalidOffsetError });
  t.deepEqual(inner.seen, []);
  await d.putContent('/ok', 'x');
  t.deepEqual(inner.seen, ['/ok']);
});

test('plain errors from the inner driver become StorageDriverError with the cause', async (t) => {
  const inner = new RecordingDriver();
  const d = checkedDriver(inner);
  const boom = Object.assign(new Error('connection reset'), { code: 'ECONNRESET' });
  inner.failWith = boom;
  for (const call of [
    () => d.getContent('/a'),
    () => d.putContent('/a', 'x'),
    () => d.reader('/a'),
    () => d.writer('/a', false),
    () => d.stat('/a'),
    () => d.list('/a'),
    () => d.move('/a', '/b'),
    () => d.delete('/a'),
    () => drain(d.walk('/')),
  ]) {
    const err = await t.throwsAsync(call(), { instanceOf: StorageDriverError });
    t.is(err?.driver, 'inmemory');
    t.is(err?.cause, boom);
    t.regex(err!.message, /connection reset/);
  }
  inner.failWith = 'a string, not an Error';
  const err = await t.throwsAsync(d.stat('/a'), { instanceOf: StorageDriverError });
  t.regex(err!.message, /a string, not an Error/);
});

test('StorageErrors from the inner driver pass through unchanged', async (t) => {
  const inner = new RecordingDriver();
  const d = checkedDriver(inner);
  const notFound = new PathNotFoundError('/x', 'inmemory');
  inner.failWith = notFound;
  t.is(await t.throwsAsync(d.stat('/x')), notFound);
  const offset = new InvalidOffsetError('/x', 9);
  inner.failWith = offset;
  t.is(await t.throwsAsync(d.reader('/x')), offset);
  inner.failWith = undefined;
  await d.putContent('/x', 'abc');
  const err = await t.throwsAsync(d.reader('/x', 4), { instanceOf: InvalidOffsetError });
  t.is(err?.offset, 4);
});

test('errors emitted by a reader stream become StorageDriverError', async (t) => {
  const inner = new RecordingDriver();
  const d = checkedDriver(inner);
  await d.putContent('/x', Buffer.alloc(3 << 20, 1));
  inner.streamError = new Error('socket hang up');
  const err = await t.throwsAsync(readAll(await d.reader('/x')), { instanceOf: StorageDriverError });
  t.is((err?.cause as Error).message, 'socket hang up');
});

test('a reader stream cut short without an error is reported, not taken for the whole file', async (t) => {
  const inner = new RecordingDriver();
  const d = checkedDriver(inner);
  await d.putContent('/x', Buffer.alloc(3 << 20, 1));
  inner.streamCut = true;
  const err = await t.throwsAsync(readAll(await d.reader('/x')), { instanceOf: StorageError });
  t.regex(err!.message, /premature close/i);
});

test('reader streams keep their bytes through the wrapper, which adds no buffer of its own', async (t) => {
  const d = checkedDriver(new InMemoryDriver());
  const data = Buffer.alloc(8 << 20);
  for (let i = 0; i < data.length; i++) data[i] = i % 251;
  await d.putContent('/x', data);
  const stream = await d.reader('/x');
  t.is(stream.readableHighWaterMark, 0, 'the wrapper buffers nothing itself');
  t.true((await readAll(stream)).equals(data));
});

/** An in-memory driver whose reader streams offer a COPY_INTO that writes `sent` into `dest`, then fails with `error` if given. */
class CopyingDriver extends InMemoryDriver {
  constructor(private readonly sent: string, private readonly error?: Error) {
    super();
  }
  override async reader(path: string, offset?: number, length?: number): Promise<Readable> {
    const stream = await super.reader(path, offset, length);
    const copyInto: CopyInto = (dest, done) => {
      dest.write(this.sent, () => {
        stream.destroy();
        done(this.error);
      });
    };
    return Object.assign(stream, { [COPY_INTO]: copyInto });
  }
}

test('the wrapper forwards a reader\'s COPY_INTO: its stream ends when the copy is done, or fails with a StorageError', async (t) => {
  const d = checkedDriver(new CopyingDriver('copied'));
  await d.putContent('/x', 'stored');
  const stream = await d.reader('/x');
  const dest = new PassThrough();
  t.is(await new Promise<unknown>((resolve) => copyIntoOf(stream)!(dest, resolve)), undefined);
  await finished(stream);
  t.true(stream.readableEnded, 'the stream ended without being read');
  t.is(dest.read()?.toString(), 'copied');

  const failing = checkedDriver(new CopyingDriver('partial', new Error('disk gone')));
  await failing.putContent('/x', 'stored');
  const broken = await failing.reader('/x');
  const ended = finished(broken);
  const error = await new Promise<unknown>((resolve) => copyIntoOf(broken)!(new PassThrough(), resolve));
  t.true(error instanceof StorageDriverError);
  t.is(((error as Error).cause as Error).message, 'disk gone');
  const emitted = await t.throwsAsync(ended);
  t.is(emitted, error as Error, 'the stream failed with the same StorageError');
});

test('writer errors are normalised, and a finished writer says so', async (t) => {
  const d = checkedDriver(new InMemoryDriver());
  const w = await d.writer('/w', false);
  await w.commit();
  const err = await t.throwsAsync(w.write(Buffer.from('late')), { instanceOf: StorageDriverError });
  t.regex(err!.message, /committed/);
});

test('exceptions thrown by descend, even non-objects, reach the caller unchanged', async (t) => {
  const d = checkedDriver(new InMemoryDriver());
  await d.putContent('/a/b', 'x');
  const thrown = await t.throwsAsync(
    drain(
      d.walk('/', {
        descend: () => {
          throw new RangeError('caller bug');
        },
      }),
    ),
    { instanceOf: RangeError },
  );
  t.is(thrown?.message, 'caller bug');
  try {
    await drain(
      d.walk('/', {
        descend: () => {
          throw 42; // eslint-disable-line no-throw-literal
        },
      }),
    );
    t.fail('walk should have thrown');
  } catch (err) {
    t.is(err, 42);
  }
});

test('wrapping twice is the same as wrapping once', (t) => {
  const once = checkedDriver(new InMemoryDriver());
  t.is(checkedDriver(once), once);
  t.is(once.name, 'inmemory');
});

test('normaliseError keeps StorageErrors and wraps the rest', (t) => {
  const e = new PathNotFoundError('/p');
  t.is(normaliseError('s3', e), e);
  const wrapped = normaliseError('s3', new TypeError('bad'));
  t.true(wrapped instanceof StorageDriverError);
  t.is(wrapped.message, 's3: bad');
});
