/**
 * The floor server's `s3` mode (bench/run.ts's workload 3 with --s3): a monolithic push streamed into one
 * PutObject, answered 201 only for the digest of the bytes received, against a real S3 (Ceph RGW). Starts
 * processes: not in the unit set.
 */
import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { request } from 'node:http';
import { GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { startServer, type BenchServer } from './servers.js';
import { pushMonolithic, sha256 } from './client.js';
import { startS3TestServer, type S3TestServer } from '../testing/s3-test-server.js';

let s3: S3TestServer;
let server: BenchServer;
let work: string;
test.before(async () => {
  work = await mkdtemp(join(tmpdir(), 'floor-s3-test-'));
  s3 = await startS3TestServer();
  server = await startServer('floor', { tmp: work, s3: s3.storageConfig() });
});
test.after.always(async () => {
  await server?.stop();
  await s3?.stop();
  await rm(work, { recursive: true, force: true });
});

function send(method: string, url: string, body?: Buffer, headers: Record<string, string> = {}): Promise<{ status: number; location?: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, location: res.headers.location }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function startUpload(repo: string): Promise<string> {
  const posted = await send('POST', `${server.url}/v2/${repo}/blobs/uploads/`);
  if (posted.status !== 202 || !posted.location) throw new Error(`POST: ${posted.status}`);
  return new URL(posted.location, server.url).href;
}

/** The objects the floor stored, under its own root in the bucket. */
async function stored(): Promise<Buffer[]> {
  const prefix = `${basename(dirname(server.rootDirectory))}/floor/`;
  const listed = await s3.client().send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: prefix }));
  return Promise.all((listed.Contents ?? []).map(async (o) => {
    const got = await s3.client().send(new GetObjectCommand({ Bucket: s3.bucket, Key: o.Key! }));
    return Buffer.from(await got.Body!.transformToByteArray());
  }));
}

test.serial('a monolithic push is streamed into S3 and answered 201 for its digest; a wrong digest gets 400', async (t) => {
  const content = Buffer.alloc(3_000_000, 7);
  const path = join(work, 'blob.bin');
  await writeFile(path, content);
  await t.notThrowsAsync(pushMonolithic(server.url, 'floor/mono', path, content.length, sha256(content)));
  const objects = await stored();
  t.is(objects.length, 1);
  t.true(objects[0]!.equals(content), 'the object holds the pushed bytes');

  const wrong = await startUpload('floor/wrong');
  const answer = await send('PUT', `${wrong}?digest=${sha256(Buffer.from('other'))}`, Buffer.from('these bytes'));
  t.is(answer.status, 400);
});

test.serial('the s3 floor refuses what it does not do: PATCH (501), and a PUT without Content-Length (411)', async (t) => {
  const location = await startUpload('floor/patch');
  t.is((await send('PATCH', location, Buffer.from('chunk'))).status, 501);
  const chunked = await startUpload('floor/chunked');
  const body = Buffer.from('no length');
  t.is((await send('PUT', `${chunked}?digest=${sha256(body)}`, body, { 'Transfer-Encoding': 'chunked' })).status, 411);
});
