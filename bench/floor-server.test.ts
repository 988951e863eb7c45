/**
 * The durable floor server speaks enough of the blob-upload API for the benchmark's push clients (bench/run.ts's
 * workloads 2, 3 and 9), and, like a registry, answers 201 only for the digest of the bytes it received; and serves
 * back what workload 10 reads of it (blobs by digest, manifests by tag and digest).
 * Starts a process (the floor server): not in the unit set.
 */
import test from 'ava';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { request } from 'node:http';
import { join } from 'node:path';
import { startServer, type BenchServer } from './servers.js';
import { pushMonolithic, pushStreamed, sha256 } from './client.js';

interface Answer { status: number; headers: Record<string, string | string[] | undefined>; body: string }

/** A request whose body (if any) goes out chunked, without Content-Length, as docker sends a PATCH. */
function send(method: string, url: string, chunks: Buffer[] = []): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    if (chunks.length > 0) for (const c of chunks) req.write(c);
    req.end();
  });
}

let server: BenchServer;
let work: string;
test.before(async () => {
  work = await mkdtemp(join(tmpdir(), 'floor-test-'));
  server = await startServer('floor', { tmp: work });
});
test.after.always(async () => {
  await server?.stop();
  await rm(work, { recursive: true, force: true });
});

async function startUpload(repo: string): Promise<string> {
  const posted = await send('POST', `${server.url}/v2/${repo}/blobs/uploads/`);
  if (posted.status !== 202 || typeof posted.headers.location !== 'string') throw new Error(`POST: ${posted.status}`);
  return new URL(posted.headers.location, server.url).href;
}

test('POST, chunked PATCHes and an empty PUT with the right digest store the bytes durably and answer 201', async (t) => {
  const parts = [Buffer.alloc(300_000, 1), Buffer.alloc(5, 2), Buffer.from('end')];
  const whole = Buffer.concat(parts);
  const location = await startUpload('floor/a');
  const first = await send('PATCH', location, parts.slice(0, 2));
  t.is(first.status, 202);
  t.is(first.headers.range, `0-${300_005 - 1}`);
  const second = await send('PATCH', new URL(first.headers.location as string, server.url).href, parts.slice(2));
  t.is(second.status, 202);
  t.is(second.headers.range, `0-${whole.length - 1}`);
  const put = await send('PUT', `${location}?digest=${sha256(whole)}`);
  t.is(put.status, 201);
  t.is(put.headers['docker-content-digest'], sha256(whole));
  const uuid = location.split('/').at(-1)!;
  t.true((await readdir(server.rootDirectory)).includes(`upload-${uuid}`));
  t.deepEqual(await readFile(join(server.rootDirectory, `upload-${uuid}`)), whole);
});

test('a PUT whose digest is not that of the bytes received is refused with 400', async (t) => {
  const location = await startUpload('floor/b');
  t.is((await send('PATCH', location, [Buffer.from('some bytes')])).status, 202);
  const put = await send('PUT', `${location}?digest=${sha256(Buffer.from('other bytes'))}`);
  t.is(put.status, 400);
  t.is((await send('PUT', `${location}?digest=${sha256(Buffer.from('some bytes'))}`)).status, 404, 'the session is gone');
});

test('the benchmark clients push through it: monolithic PUT and streamed PATCH with curl', async (t) => {
  const content = Buffer.alloc(2_000_000, 9);
  const path = join(work, 'blob.bin');
  await writeFile(path, content);
  await t.notThrowsAsync(pushMonolithic(server.url, 'floor/mono', path, content.length, sha256(content)));
  await t.notThrowsAsync(pushStreamed(server.url, 'floor/streamed', path, sha256(content)));
  await t.throwsAsync(pushStreamed(server.url, 'floor/wrong', path, sha256(Buffer.from('x'))), { message: /PUT blob: 400/ });
});

test('an unknown upload session is 404', async (t) => {
  t.is((await send('PATCH', `${server.url}/v2/floor/c/blobs/uploads/00000000-0000-0000-0000-000000000000`, [Buffer.from('x')])).status, 404);
});

test('a pushed blob is read back by digest, and a manifest put by tag is read back by tag and by digest', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'floor-read-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const bytes = Buffer.alloc(1_000_000, 9);
  const path = join(dir, 'blob');
  await writeFile(path, bytes);
  const digest = sha256(bytes);
  t.is((await fetch(`${server.url}/v2/floor/read/blobs/${digest}`)).status, 404, 'nothing before the push');
  await pushMonolithic(server.url, 'floor/read', path, bytes.length, digest);
  const got = await fetch(`${server.url}/v2/floor/read/blobs/${digest}`);
  t.is(got.status, 200);
  t.true(Buffer.from(await got.arrayBuffer()).equals(bytes));
  const head = await fetch(`${server.url}/v2/floor/read/blobs/${digest}`, { method: 'HEAD' });
  t.is(head.headers.get('content-length'), String(bytes.length));

  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, layers: [{ digest, size: bytes.length }] }));
  const type = 'application/vnd.oci.image.manifest.v1+json';
  const put = await fetch(`${server.url}/v2/floor/read/manifests/v1`, { method: 'PUT', headers: { 'Content-Type': type }, body: manifest });
  t.is(put.status, 201);
  t.is(put.headers.get('docker-content-digest'), sha256(manifest));
  for (const reference of ['v1', sha256(manifest)]) {
    const read = await fetch(`${server.url}/v2/floor/read/manifests/${reference}`);
    t.is(read.status, 200, reference);
    t.is(read.headers.get('content-type'), type);
    t.true(Buffer.from(await read.arrayBuffer()).equals(manifest));
  }
  t.is((await fetch(`${server.url}/v2/floor/read/manifests/v2`)).status, 404);
});
