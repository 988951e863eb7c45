/**
 * The wrapper every driver is used through (like distribution's `base` driver).
 *
 * It enforces the parts of the contract that are the same for every driver, so each driver can trust its
 * arguments and the rest of the code can trust the errors:
 *   - every path (and `walk`'s `startAfter`) is checked with `validatePath`; a bad one is `InvalidPathError`
 *     and the inner driver never sees it;
 *   - `offset` and `length` of `reader` must be non-negative safe integers, else `InvalidOffsetError`
 *     (a bad length is as much a bad range as a bad offset; "offset beyond the size" is the inner driver's
 *     check, since only it knows the size);
 *   - whatever the inner driver throws, rejects with, or emits on a reader stream is a `StorageError`:
 *     `StorageError`s pass through unchanged, anything else becomes `StorageDriverError(name, …)` with the
 *     original as `cause`. Exceptions thrown by the caller's own `descend` callback are passed back unchanged.
 */
import { Readable, finished } from 'node:stream';
import {
  InvalidOffsetError,
  StorageDriverError,
  StorageError,
  contentWithInfo,
  validatePath,
  type ContentWithInfo,
  type FileInfo,
  type DeleteOptions,
  type FileWriter,
  type MoveOptions,
  type RedirectOptions,
  type StorageDriver,
  type WalkOptions,
  COPY_INTO,
  copyIntoOf,
  type CopyInto,
} from './driver.js';

const CHECKED = Symbol('wharf.checkedDriver');

/** Wrap `driver` so that it validates its arguments and normalises its errors. Wrapping twice is a no-op. */
export function checkedDriver(driver: StorageDriver): StorageDriver {
  if ((driver as { [CHECKED]?: boolean })[CHECKED]) return driver;
  return new CheckedDriver(driver);
}

/** Turn anything thrown by a driver into a StorageError. */
export function normaliseError(driverName: string, err: unknown): StorageError {
  if (err instanceof StorageError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new StorageDriverError(driverName, message, err);
}

function checkRange(path: string, value: number | undefined): void {
  if (value === undefined) return;
  if (!Number.isSafeInteger(value) || value < 0) throw new InvalidOffsetError(path, value);
}

class CheckedDriver implements StorageDriver {
  readonly [CHECKED] = true;

  /** Present when the inner driver has it (callers fall back to `walk`/`stat` and `delete` otherwise). */
  readonly listFiles?: (path: string) => AsyncIterable<FileInfo>;
  readonly deleteFiles?: (paths: string[]) => Promise<void>;
  readonly countDirectories?: (path: string) => Promise<number | undefined>;

  constructor(private readonly inner: StorageDriver) {
    if (inner.listFiles) {
      const listFiles = inner.listFiles.bind(inner);
      const name = () => this.name;
      this.listFiles = async function* checkedListFiles(path: string): AsyncIterable<FileInfo> {
        try {
          validatePath(path);
          yield* listFiles(path);
        } catch (err) {
          throw normaliseError(name(), err);
        }
      };
    }
    if (inner.countDirectories) {
      const countDirectories = inner.countDirectories.bind(inner);
      this.countDirectories = (path) => this.call(() => {
        validatePath(path);
        return countDirectories(path);
      });
    }
    if (inner.deleteFiles) {
      const deleteFiles = inner.deleteFiles.bind(inner);
      this.deleteFiles = (paths) => this.call(() => {
        for (const path of paths) validatePath(path);
        return deleteFiles(paths);
      });
    }
  }

  get name(): string {
    return this.inner.name;
  }

  /** Run `fn`, turning whatever it throws into a StorageError. */
  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw normaliseError(this.name, err);
    }
  }

  getContent(path: string): Promise<Buffer> {
    return this.call(() => {
      validatePath(path);
      return this.inner.getContent(path);
    });
  }

  getContentWithInfo(path: string): Promise<ContentWithInfo> {
    return this.call(() => {
      validatePath(path);
      return contentWithInfo(this.inner, path);
    });
  }

  putContent(path: string, content: Uint8Array | string): Promise<void> {
    return this.call(() => {
      validatePath(path);
      return this.inner.putContent(path, content);
    });
  }

  putContentIfAbsent(path: string, content: Uint8Array | string): Promise<boolean> {
    return this.call(() => {
      validatePath(path);
      return this.inner.putContentIfAbsent(path, content);
    });
  }

  reader(path: string, offset = 0, length?: number): Promise<Readable> {
    return this.call(async () => {
      validatePath(path);
      checkRange(path, offset);
      checkRange(path, length);
      return normalisingStream(await this.inner.reader(path, offset, length), this.name);
    });
  }

  writer(path: string, append: boolean): Promise<FileWriter> {
    return this.call(async () => {
      validatePath(path);
      return new CheckedWriter(await this.inner.writer(path, append), this.name);
    });
  }

  stat(path: string): Promise<FileInfo> {
    return this.call(() => {
      validatePath(path);
      return this.inner.stat(path);
    });
  }

  list(path: string): Promise<string[]> {
    return this.call(() => {
      validatePath(path);
      return this.inner.list(path);
    });
  }

  move(sourcePath: string, destPath: string, options?: MoveOptions): Promise<void> {
    return this.call(() => {
      validatePath(sourcePath);
      validatePath(destPath);
      return this.inner.move(sourcePath, destPath, options);
    });
  }

  delete(path: string, options?: DeleteOptions): Promise<void> {
    return this.call(() => {
      validatePath(path);
      return this.inner.delete(path, options);
    });
  }

  removeEmptyDirectory(path: string): Promise<boolean> {
    return this.call(async () => {
      validatePath(path);
      return this.inner.removeEmptyDirectory ? this.inner.removeEmptyDirectory(path) : false;
    });
  }

  redirectURL(path: string, options: RedirectOptions): Promise<string | null> {
    return this.call(() => {
      validatePath(path);
      return this.inner.redirectURL(path, options);
    });
  }

  async *walk(path: string, options: WalkOptions = {}): AsyncIterable<FileInfo> {
    // Validation happens on the first next(), like any async generator; that is when the caller can catch it.
    try {
      validatePath(path);
      if (options.startAfter !== undefined) validatePath(options.startAfter);
    } catch (err) {
      throw normaliseError(this.name, err);
    }
    // Remember exceptions thrown by the caller's descend callback so they are not mistaken for driver errors.
    const callerErrors = new WeakSet<object>();
    let callerError: { error: unknown } | undefined;
    const descend = options.descend;
    const inner: WalkOptions = { startAfter: options.startAfter };
    if (descend) {
      inner.descend = (dir) => {
        try {
          return descend(dir);
        } catch (error) {
          if (error !== null && typeof error === 'object') callerErrors.add(error);
          else callerError = { error };
          throw error;
        }
      };
    }
    try {
      yield* this.inner.walk(path, inner);
    } catch (err) {
      if (err !== null && typeof err === 'object' && callerErrors.has(err)) throw err;
      if (callerError && callerError.error === err) throw err;
      throw normaliseError(this.name, err);
    }
  }
}

/** A FileWriter whose every failure is a StorageError. */
class CheckedWriter implements FileWriter {
  constructor(private readonly inner: FileWriter, private readonly driverName: string) {}

  get size(): number {
    return this.inner.size;
  }

  get joinsWrites(): boolean | undefined {
    return this.inner.joinsWrites;
  }

  /**
   * Run `fn`, turning whatever it throws or rejects with into a StorageError. One derived promise rather than an
   * async function's: write() runs it for every chunk of a push.
   */
  private call(fn: () => Promise<void>): Promise<void> {
    let done: Promise<void>;
    try {
      done = fn();
    } catch (err) {
      return Promise.reject(normaliseError(this.driverName, err));
    }
    return done.catch((err: unknown) => {
      throw normaliseError(this.driverName, err);
    });
  }

  write(chunk: Uint8Array): Promise<void> {
    return this.call(() => this.inner.write(chunk));
  }
  commit(): Promise<void> {
    return this.call(() => this.inner.commit());
  }
  close(): Promise<void> {
    return this.call(() => this.inner.close());
  }
  cancel(): Promise<void> {
    return this.call(() => this.inner.cancel());
  }
  expect(bytes: number): void {
    this.inner.expect?.(bytes);
  }
}

/**
 * A stream that carries `source`'s bytes and emits its errors as StorageErrors.
 *
 * It holds no buffer of its own (highWaterMark 0): it pauses the source after each chunk until its consumer
 * asks for more, so backpressure reaches the source and the source's own (large) buffer is the only one.
 * Destroying it destroys the source (a client that hangs up releases the file). A source that closes without
 * ending or erroring is reported as a premature close, so a consumer never mistakes a cut stream for a whole one.
 */
function normalisingStream(source: Readable, driverName: string): Readable {
  const out = new Readable({
    highWaterMark: 0,
    read() {
      source.resume();
    },
    destroy(err, callback) {
      source.destroy();
      callback(err);
    },
  });
  source.pause();
  const onData = (chunk: Buffer) => {
    if (!out.push(chunk)) source.pause();
  };
  source.on('data', onData);
  source.once('end', () => out.push(null));
  /** Set once the driver copies its bytes itself (COPY_INTO): the source is then never read, only closed. */
  let delegated = false;
  finished(source, { writable: false }, (err) => {
    if (err && !delegated) out.destroy(normaliseError(driverName, err));
  });
  // `out` forwards the source's COPY_INTO, and ends when the copy is done (or fails with a StorageError), so that
  // whoever waits on `out` (Koa's pipeline into the response) finishes as if the bytes had flowed through it.
  const copyInto = copyIntoOf(source);
  if (copyInto) {
    const forward: CopyInto = (dest, done) => {
      delegated = true;
      // The driver's copy may read the source itself (S3's does): its bytes must not also come here.
      source.off('data', onData);
      copyInto(dest, (err) => {
        if (err) {
          const error = normaliseError(driverName, err);
          out.destroy(error);
          done(error);
          return;
        }
        out.push(null);
        out.resume();
        done();
      });
    };
    Object.assign(out, { [COPY_INTO]: forward });
  }
  return out;
}
