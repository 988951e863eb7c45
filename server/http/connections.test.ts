/** The stall watch keeps only transfers that can still stall: a finished request is forgotten at once. */
import test from 'ava';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import pino from 'pino';
import { guardConnections, httpServerOptions, type ConnectionLimits } from './connections.js';
import { SOCKET_HIGH_WATER_MARK } from '../node-flags.js';
import { TrustedProxies } from './forwarded.js';
import { waitFor } from '../../testing/helpers.js';

const limits: ConnectionLimits = { readHeaderMs: 10_000, stallMs: 600_000, idleMs: 10_000, maxPerAddress: 0 };

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** A server with the registry's options (httpServerOptions) and its connection guard. */
async function serve(
  t: import('ava').ExecutionContext,
  handler: Handler = (_req, res) => res.end('ok'),
): Promise<{ server: Server; port: number; guard: ReturnType<typeof guardConnections> }> {
  const server = createServer(httpServerOptions(limits, 'filesystem'), handler);
  const guard = guardConnections(server, limits, new TrustedProxies([]), pino({ level: 'silent' }));
  // The periodic check is stopped: what empties the watch here can only be the request's own end.
  guard.stop();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  }));
  return { server, port: (server.address() as AddressInfo).port, guard };
}

function get(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

test('requests that are done leave the stall watch when their response finishes', async (t) => {
  const { port, guard } = await serve(t);
  const statuses = await Promise.all(Array.from({ length: 20 }, () => get(port)));
  t.deepEqual(new Set(statuses), new Set([200]));
  await waitFor('the finished requests to be forgotten', async () => (guard.watching === 0 ? true : undefined), 5_000, 10);
  t.is(guard.watching, 0);
});

test('a request whose announced body has not all arrived stays watched after its response', async (t) => {
  const { port, guard } = await serve(t);
  const socket = connect(port, '127.0.0.1');
  t.teardown(() => socket.destroy());
  let answer = '';
  socket.on('data', (chunk: Buffer) => {
    answer += chunk.toString();
  });
  socket.write('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789');
  await waitFor('the response', async () => (answer.includes('ok') ? true : undefined), 5_000, 10);
  t.is(guard.watching, 1, 'a body still owed can stall, so it is watched');
});

test('a request body is read ahead up to the socket buffer before the socket stops reading', async (t) => {
  // With Node's default of 16 KiB the socket stopped after the first 64 KiB chunk, and started again for each chunk
  // the handler took (see SOCKET_HIGH_WATER_MARK).
  const body = SOCKET_HIGH_WATER_MARK - 16 * 1024;
  let received: IncomingMessage | undefined;
  const { port } = await serve(t, (req, res) => {
    received = req;
    t.teardown(() => res.destroy());
  });
  const socket = connect(port, '127.0.0.1');
  t.teardown(() => socket.destroy());
  socket.write(`POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ${body}\r\n\r\n`);
  socket.write(Buffer.alloc(body, 1));
  // The handler never reads: all that arrives waits in the request's buffer.
  await waitFor('the body to be buffered', async () => (received?.readableLength === body ? true : undefined), 5_000, 10);
  t.is(received!.readableHighWaterMark, SOCKET_HIGH_WATER_MARK);
  t.false(received!.socket.isPaused(), 'the socket still reads');
});

test("with S3 storage the sockets keep Node's buffer size", (t) => {
  t.is(httpServerOptions(limits, 's3').highWaterMark, undefined);
  t.is(httpServerOptions(limits, 'filesystem').highWaterMark, SOCKET_HIGH_WATER_MARK);
});
