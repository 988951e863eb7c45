/**
 * A request body's chunks, one at a time, as they came from the socket.
 *
 * Node's own async iterator of a stream reads with `read()`, which joins everything buffered into one new buffer. With
 * the sockets' 256 KiB buffer (SOCKET_HIGH_WATER_MARK in ../node-flags.ts) a pushed body often has several chunks
 * buffered when the handler asks for more, so most of it was copied once more, and its garbage doubled: 20 concurrent
 * 10 MB pushes peaked at 161 MB instead of 134. Here the stream flows and hands each chunk over as it is; the stream
 * is paused while a buffer's worth waits to be taken, and resumed as it is taken.
 *
 * It ends as Node's iterator does: at the end of the body; with the stream's error (a client that went away:
 * ECONNRESET, or ERR_STREAM_PREMATURE_CLOSE when the stream closed before its end); and, when the caller stops early
 * (a `break` or a throw in its loop), by giving up a stream that has not ended (see abandon).
 */
import { IncomingMessage } from 'node:http';
import { finished, type Readable } from 'node:stream';

/**
 * Stop reading a stream that has not ended, as Node's iterator does: a server's request is detached from its socket
 * before it is destroyed, so that the answer can still be written (an error for a push whose storage failed) and
 * Node reads and discards the rest of the body (bounded by the app's DISCARD_LIMIT); any other stream is destroyed.
 */
function abandon(stream: Readable): void {
  if (stream.destroyed) return;
  if (stream instanceof IncomingMessage && (stream as { req?: unknown }).req === undefined) {
    (stream as { socket: unknown }).socket = null;
  }
  stream.destroy();
}

export async function* chunksOf(stream: Readable): AsyncGenerator<Buffer, void, undefined> {
  const queue: Buffer[] = [];
  let queuedBytes = 0;
  const limit = stream.readableHighWaterMark;
  let ended = false;
  let failure: { error: unknown } | undefined;
  let wake: (() => void) | undefined;
  const onData = (chunk: Buffer) => {
    queue.push(chunk);
    queuedBytes += chunk.byteLength;
    if (queuedBytes >= limit) stream.pause();
    wake?.();
  };
  stream.on('data', onData);
  // A listener starts the flow unless the stream was paused before; read it anyway, as Node's iterator would.
  if (stream.isPaused()) stream.resume();
  const stopWatching = finished(stream, { writable: false }, (err) => {
    if (err) failure ??= { error: err };
    else ended = true;
    wake?.();
  });
  try {
    for (;;) {
      // As Node's iterator: a failed stream's buffered chunks are not handed over.
      if (failure) throw failure.error;
      const chunk = queue.shift();
      if (chunk !== undefined) {
        queuedBytes -= chunk.byteLength;
        if (queuedBytes < limit && stream.isPaused()) stream.resume();
        yield chunk;
        continue;
      }
      if (ended) return;
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
      wake = undefined;
    }
  } finally {
    stream.off('data', onData);
    stopWatching();
    if (!ended) abandon(stream);
  }
}
