/**
 * Sending a blob's bytes: the zero-copy response path.
 *
 * Koa sends a body stream with `stream.pipeline(body, res)`, which pipes the body into the response. When the
 * storage driver can copy its bytes into a Writable itself (COPY_INTO in storage-drivers/driver.ts: the filesystem
 * reads into reused buffers instead of a fresh one per chunk), the body's `pipe` into this response hands the
 * response to the driver; the stream ends when the copy is done, so the pipeline ends the response as usual, and a
 * failed copy destroys the stream, so the pipeline's error handling applies as for any body. A body that is piped
 * anywhere else, or has been read already, streams as usual.
 */
import type { ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { copyIntoOf } from '../../storage-drivers/driver.js';

/** `stream` (a storage driver's reader), made to copy itself into `res` when piped there. Set it as the body. */
export function blobBody(stream: Readable, res: ServerResponse): Readable {
  const copyInto = copyIntoOf(stream);
  if (!copyInto) return stream;
  stream.pipe = function <T extends NodeJS.WritableStream>(this: Readable, dest: T, options?: { end?: boolean }): T {
    if ((dest as unknown) !== res || this.readableFlowing !== null) {
      return Readable.prototype.pipe.call(this, dest, options) as T;
    }
    copyInto(res, (err) => {
      if (!err && options?.end !== false) res.end();
    });
    return dest;
  };
  return stream;
}
