/** The stall watch keeps only transfers that can still stall: a finished request is forgotten at once. */
import test from 'ava';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { Agent } from 'node:http';
import { spawn } from 'node:child_process';
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

/**
 * The guarded server of the test below, run in a process of its own with `--expose-gc` (the test talks to it over
 * IPC). It answers `ok`, or holds the requests while told to; `tenure` runs two full collections while the held
 * requests are in flight, so that whatever the watch holds then is in the old generation, and releases them.
 */
const HEAP_SERVER = `
const { createServer } = await import('node:http');
const v8 = await import('node:v8');
const { PerformanceObserver, constants } = await import('node:perf_hooks');
const { guardConnections, httpServerOptions } = await import(process.env.CONNECTIONS_URL);
const { TrustedProxies } = await import(process.env.FORWARDED_URL);
const limits = { readHeaderMs: 10000, stallMs: 600000, idleMs: 10000, maxPerAddress: 0 };
let hold = false;
let held = [];
const server = createServer(httpServerOptions(limits, 'filesystem'), (req, res) => {
  // About what a registry request holds while it runs (Koa's context, headers, the route's state): 10 KB.
  req.state = Array.from({ length: 100 }, (_, i) => ({ i, name: 'entry ' + i }));
  if (!hold) return setImmediate(() => res.end('ok'));
  held.push(res);
  if (held.length === Number(process.env.HOLD)) process.send({ held: held.length });
});
guardConnections(server, limits, new TrustedProxies([]), { info() {}, warn() {} });
let majors = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) majors++;
}).observe({ entryTypes: ['gc'] });
const oldUsed = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'old_space').space_used_size;
// The collector's entries arrive a moment after it ran.
const report = () => setTimeout(() => process.send({ old: oldUsed(), majors }), 100);
process.on('message', (m) => {
  if (m === 'hold') hold = true;
  if (m === 'tenure') {
    globalThis.gc();
    globalThis.gc();
    hold = false;
    for (const res of held) res.end('ok');
    held = [];
    report();
  }
  if (m === 'stats') report();
});
server.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }));
`;

test('the watch keeps no finished request alive through the young generation, whatever it has been through', async (t) => {
  // A Set that gains and loses an entry per request links each table it replaces to the next (V8 does, for the
  // iterators of a Map or Set), so once a table was in the old generation, every later table and the requests it
  // held outlived their young-generation collections and were moved there: 350-500 KB a collection under load.
  const concurrency = 20;
  const child = spawn(process.execPath, ['--expose-gc', '--max-semi-space-size=1', '--initial-old-space-size=512',
    '--no-allocation-site-pretenuring', '--input-type=module', '--eval', HEAP_SERVER], {
    env: {
      ...process.env,
      CONNECTIONS_URL: new URL('./connections.js', import.meta.url).href,
      FORWARDED_URL: new URL('./forwarded.js', import.meta.url).href,
      HOLD: String(concurrency),
    },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  t.teardown(() => child.kill());
  const messages: Array<Record<string, number>> = [];
  child.on('message', (m) => messages.push(m as Record<string, number>));
  const next = (key: string) => waitFor(`the server's ${key}`, async () => {
    const i = messages.findIndex((m) => key in m);
    return i < 0 ? undefined : messages.splice(i, 1)[0]!;
  }, 30_000, 10);
  const { port } = await next('port');
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  t.teardown(() => agent.destroy());
  const one = () => new Promise<number>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: port!, path: '/', agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
  const load = async (count: number) => {
    let left = count;
    const statuses = new Set<number>();
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (left-- > 0) statuses.add(await one());
    }));
    return statuses;
  };
  await load(500);
  // Requests in flight on every connection while everything the watch holds is moved to the old generation.
  child.send('hold');
  const heldRequests = Array.from({ length: concurrency }, () => one());
  await next('held');
  child.send('tenure');
  const before = await next('old');
  t.deepEqual(new Set(await Promise.all(heldRequests)), new Set([200]));
  t.deepEqual(await load(5_000), new Set([200]));
  child.send('stats');
  const after = await next('old');
  t.log(`old generation grew by ${((after.old! - before.old!) / 1048576).toFixed(2)} MB, majors ${before.majors} -> ${after.majors}`);
  t.is(after.majors, before.majors, 'no full collection ran during the load (it would hide what was promoted)');
  // 5,000 requests allocate about 100 MB on the server; what survives them in the old generation must be next to
  // nothing: 0.6-0.8 MB here, 37 MB with the Set.
  t.true(after.old! - before.old! < 4 * 1024 * 1024, `old generation grew by ${((after.old! - before.old!) / 1048576).toFixed(1)} MB`);
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
