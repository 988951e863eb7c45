/** A body's chunks handed over one at a time: never joined, bounded while unread, and ending as Node's iterator does. */
import test from 'ava';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PassThrough, Readable } from 'node:stream';
import { chunksOf } from './chunks.js';
import { waitFor } from '../../testing/helpers.js';

const CHUNK = 64 * 1024;

function chunk(fill: number): Buffer {
  return Buffer.alloc(CHUNK, fill);
}

test('chunks buffered before they are asked for come one at a time, the same buffers, not joined', async (t) => {
  const stream = new PassThrough({ highWaterMark: 256 * 1024 });
  const written = [chunk(1), chunk(2), chunk(3)];
  for (const c of written) stream.write(c);
  stream.end();
  await new Promise((resolve) => setImmediate(resolve));
  t.true(stream.readableLength >= 3 * CHUNK, 'all three wait in the stream');
  const got: Buffer[] = [];
  for await (const c of chunksOf(stream)) got.push(c);
  t.is(got.length, 3);
  t.deepEqual(got.map((c) => c[0]), [1, 2, 3]);
  t.true(got.every((c) => c.byteLength === CHUNK));
});

test('a consumer that does not take chunks makes the stream stop after about a buffer', async (t) => {
  let produced = 0;
  const stream = new Readable({
    highWaterMark: 4 * CHUNK,
    read() {
      produced++;
      this.push(chunk(produced % 256));
    },
  });
  const iterator = chunksOf(stream)[Symbol.asyncIterator]();
  await iterator.next(); // starts the flow
  await waitFor('the stream to stop', async () => (stream.isPaused() ? true : undefined), 5_000, 5);
  const before = produced;
  t.true(before <= 10, `at most a buffer queued and a buffer in the stream, not ${before} chunks`);
  // Taking the queued chunks lets it flow again.
  for (let i = 0; i < 10; i++) await iterator.next();
  await waitFor('more chunks', async () => (produced > before ? true : undefined), 5_000, 5);
  await iterator.return!();
  t.true(stream.destroyed, 'stopping early destroys a stream that has not ended');
});

test("the stream's error ends the chunks with that error; a close before the end with a premature close", async (t) => {
  const failing = new PassThrough();
  failing.write(chunk(1));
  setTimeout(() => failing.destroy(Object.assign(new Error('aborted'), { code: 'ECONNRESET' })), 10);
  await t.throwsAsync(async () => {
    for await (const c of chunksOf(failing)) void c;
  }, { code: 'ECONNRESET' });

  const closed = new PassThrough();
  closed.write(chunk(1));
  setTimeout(() => closed.destroy(), 10);
  await t.throwsAsync(async () => {
    for await (const c of chunksOf(closed)) void c;
  }, { code: 'ERR_STREAM_PREMATURE_CLOSE' });
});

test('a stream paused before it is read still gives its chunks', async (t) => {
  const stream = new PassThrough();
  stream.pause();
  stream.end(chunk(9));
  const got: Buffer[] = [];
  for await (const c of chunksOf(stream)) got.push(c);
  t.deepEqual(got.map((c) => c[0]), [9]);
});

test('every byte comes, in order, and an empty body gives no chunk', async (t) => {
  const stream = new PassThrough();
  const written = Array.from({ length: 40 }, (_, i) => chunk(i));
  (async () => {
    for (const c of written) if (!stream.write(c)) await new Promise((resolve) => stream.once('drain', resolve));
    stream.end();
  })().catch(() => {});
  const got: Buffer[] = [];
  for await (const c of chunksOf(stream)) got.push(c);
  t.true(Buffer.concat(got).equals(Buffer.concat(written)));

  const empty = new PassThrough();
  empty.end();
  const none: Buffer[] = [];
  for await (const c of chunksOf(empty)) none.push(c);
  t.deepEqual(none, []);
});

test("a server's request given up early still gets its answer, and the rest of its body is discarded", async (t) => {
  // A handler that stops after the first chunk (a push whose storage failed) answers with an error: the connection
  // must stay up for it, as with Node's own iterator, rather than be reset under the client.
  const server = createServer(async (req, res) => {
    for await (const c of chunksOf(req)) {
      void c;
      break;
    }
    res.writeHead(507, { 'Content-Type': 'text/plain' }).end('no room');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  }));
  const { port } = server.address() as AddressInfo;
  const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: 'PUT', path: '/', headers: { 'Content-Length': 4 * 1024 * 1024 } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end(Buffer.alloc(4 * 1024 * 1024, 1));
  });
  t.deepEqual(answer, { status: 507, body: 'no room' });
});
