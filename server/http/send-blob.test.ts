/**
 * The zero-copy response path: a Koa app sends a storage driver's reader as `blobBody`, and the driver copies the
 * bytes into the response itself (COPY_INTO) when it can.
 */
import test, { type ExecutionContext } from 'ava';
import Koa from 'koa';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { createDriver } from '../../storage-drivers/index.js';
import { COPY_INTO, copyIntoOf, type CopyInto, type StorageDriver } from '../../storage-drivers/driver.js';
import { READ_CHUNK } from '../../storage-drivers/filesystem.js';
import { waitFor } from '../../testing/helpers.js';
import { blobBody } from './send-blob.js';

const CONTENT = randomBytes(3 * READ_CHUNK + 12345);

async function filesystemDriver(t: ExecutionContext): Promise<StorageDriver> {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-send-blob-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const driver = createDriver({ driver: 'filesystem', rootDirectory: dir });
  await driver.putContent('/blob', CONTENT);
  return driver;
}

/**
 * A Koa app answering `GET /?range=offset,length` with the reader of `/blob` as `blobBody`; it records each body
 * and counts the copies its driver made.
 */
async function serve(t: ExecutionContext, driver: StorageDriver) {
  const bodies: Readable[] = [];
  let copies = 0;
  const app = new Koa();
  app.silent = true; // a client that hangs up is reported to the app's error listener (here: none wanted)
  app.use(async (ctx) => {
    const [offset, length] = (ctx.query.range as string | undefined ?? '').split(',').map(Number);
    const stream = await driver.reader('/blob', offset || 0, length || undefined);
    const copyInto = copyIntoOf(stream);
    if (copyInto) {
      const counted: CopyInto = (dest, done) => {
        copies++;
        copyInto(dest, done);
      };
      Object.assign(stream, { [COPY_INTO]: counted });
    }
    bodies.push(stream);
    ctx.body = blobBody(stream, ctx.res);
  });
  const server = app.listen(0, '127.0.0.1');
  await new Promise<void>((resolve) => server.once('listening', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, bodies, copies: () => copies };
}

const openFiles = async () => (await readdir('/proc/self/fd')).length;

test('send-blob: the filesystem driver copies a blob into the response, whole or in part, and closes its file', async (t) => {
  const { url, bodies, copies } = await serve(t, await filesystemDriver(t));
  const baseline = await openFiles();
  for (const [query, expected] of [['', CONTENT], ['?range=1000,3000000', CONTENT.subarray(1000, 3_001_000)]] as const) {
    const res = await fetch(url + query);
    t.true(Buffer.from(await res.arrayBuffer()).equals(expected), `body for "${query}"`);
  }
  t.is(copies(), 2, 'both responses took the copy path');
  t.true(bodies.every((body) => body.readableEnded), 'each body ended, so the pipeline ended its response');
  // A client that goes away mid-body: the file is closed all the same.
  const res = await fetch(url);
  const reader = res.body!.getReader();
  await reader.read();
  await reader.cancel();
  await waitFor('the file to be closed', async () => ((await openFiles()) <= baseline ? true : undefined));
  t.true(Buffer.from(await (await fetch(url)).arrayBuffer()).equals(CONTENT), 'later downloads still whole');
});

test('send-blob: a body piped anywhere but its response, or from a driver without COPY_INTO, streams as usual', async (t) => {
  const driver = await filesystemDriver(t);
  const stream = await driver.reader('/blob');
  const elsewhere = new PassThrough();
  blobBody(stream, {} as never).pipe(elsewhere);
  t.true((await buffer(elsewhere)).equals(CONTENT));

  const memory = createDriver({ driver: 'inmemory' });
  await memory.putContent('/blob', CONTENT);
  const { url, copies } = await serve(t, memory);
  t.true(Buffer.from(await (await fetch(url + '?range=5,100')).arrayBuffer()).equals(CONTENT.subarray(5, 105)));
  t.is(copies(), 0);
});
