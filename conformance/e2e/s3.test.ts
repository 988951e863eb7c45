/**
 * Wharf on S3, end to end: real `wharf serve` processes whose storage is a real S3 (a throw-away Ceph RADOS Gateway
 * on loopback, testing/s3-test-server.ts).
 *
 *   - the whole conformance suite (--strict) against Wharf on S3, and the delete-refusal checks against a second
 *     one with deletes disabled. Both have redirects off: the suite follows a blob GET's redirect and then expects
 *     Docker-Content-Digest on the storage service's answer, which only Wharf sends (it is on the 307 itself);
 *   - blob GET redirects (307 to a presigned URL, HEAD never) and a skopeo round trip, on a third Wharf with
 *     redirects on (registry:2's default for S3);
 *   - a 1 GiB blob uploaded and downloaded through Wharf (the bytes stream through it) while the server's resident
 *     memory is sampled; it runs first and alone, so the other tests do not compete with it;
 *   - the startup check (missing bucket, wrong secret) and `REGISTRY_STORAGE=s3` environment configuration.
 *
 * One gateway for the file; each Wharf gets its own rootdirectory in the one bucket.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { HeadObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { stringify } from 'yaml';
import { startS3TestServer, type S3TestServer } from '../../testing/s3-test-server.js';
import { CLI_PATH, startWharf, type RunningWharf } from '../../testing/harness.js';
import { checks, createContext, runCheck, skipReason, type SuiteOptions } from '../suite.js';
import type { Context } from '../check.js';
import { generateImage, writeOciLayout, allBlobs, type Image } from '../../testing/e2e/image.js';
import { pushBlob } from '../../testing/helpers.js';
import { assertLayoutHasBlobs, layoutRef } from '../../testing/e2e/layout.js';
import { GiB, MiB, PseudoRandomStream, RssSampler, hashingGet, residentBytes, simpleRequest, streamRequest } from '../../testing/e2e/transfer.js';
import { runOk, tempDir } from '../../testing/e2e/target.js';

const BIG = Number(process.env.WHARF_E2E_S3_BYTES ?? GiB);
const MEMORY_BOUND = 100 * MiB;

let s3: S3TestServer;
let wharf: RunningWharf;
let noDelete: RunningWharf;
let redirecting: RunningWharf;
let ctx: Context;
let noDeleteCtx: Context;

function s3Config(rootdirectory: string, extra: Record<string, unknown> = {}) {
  return s3.storageConfig({ rootdirectory, ...extra });
}

/** Starting Wharf includes a request to S3 (the startup check); allow for a busy machine. */
const START = { startTimeoutMs: 120_000 };

test.before(async (t) => {
  t.timeout(15 * 60_000);
  // memstore holds the data in RAM: room for the 1 GiB blob, its upload copy and the rest.
  s3 = await startS3TestServer({ memoryBytes: 4 * GiB });
  // One after another: on a busy machine three starting at once can outlast the harness's start timeout.
  wharf = await startWharf({ ...START, config: { storage: { s3: s3Config('/conformance'), redirect: { disable: true } } } });
  noDelete = await startWharf({ ...START, config: { storage: { s3: s3Config('/nodelete'), delete: { enabled: false }, redirect: { disable: true } } } });
  redirecting = await startWharf({ ...START, config: { storage: { s3: s3Config('/redirecting') } } });
  ctx = createContext({ url: wharf.url });
  noDeleteCtx = createContext({ url: noDelete.url });
});

test.after.always(async () => {
  await Promise.all([wharf?.stop(), noDelete?.stop(), redirecting?.stop()]);
  await s3?.stop();
});

const tail = (output: string, lines = 15) => output.trimEnd().split('\n').slice(-lines).join('\n') || '(nothing)';

// ---- conformance -------------------------------------------------------------------------------------------------

/** At most this many checks at once: every registry operation is several S3 requests to one small gateway. */
let slots = 4;
const waiting: Array<() => void> = [];
async function limited<T>(fn: () => Promise<T>): Promise<T> {
  while (slots === 0) await new Promise<void>((r) => waiting.push(r));
  slots--;
  try {
    return await fn();
  } finally {
    slots++;
    waiting.shift()?.();
  }
}

const full: SuiteOptions = { url: '', strict: true };
const deleteDisabled: SuiteOptions = { url: '', strict: true, skipFeatures: ['delete'] };
for (const check of checks) {
  const title = `s3 conformance › ${check.area} › ${check.name} (${check.level})`;
  const [options, context, server] = !skipReason(check, full)
    ? [full, () => ctx, () => wharf]
    : !skipReason(check, deleteDisabled)
      ? [deleteDisabled, () => noDeleteCtx, () => noDelete]
      : [undefined, undefined, undefined];
  if (!options) continue;
  test(`${title}${options === deleteDisabled ? ' [delete disabled]' : ''}`, async (t) => {
    const result = await limited(() => runCheck(check, context!()));
    if (result.status === 'fail') t.fail(`${check.spec}\n${result.message}\n\nserver output:\n${tail(server!().output())}`);
    else t.pass();
  });
}

// ---- redirects ---------------------------------------------------------------------------------------------------

test('s3: blob GET answers 307 to a presigned URL that serves the bytes; HEAD does not redirect', async (t) => {
  const bytes = randomBytes(50_000);
  const digest = await pushBlob(redirecting.url, 'redirect/test', bytes);
  const get = await fetch(`${redirecting.url}/v2/redirect/test/blobs/${digest}`, { redirect: 'manual' });
  t.is(get.status, 307);
  const location = get.headers.get('location')!;
  t.true(location.startsWith(`${s3.endpoint}/${s3.bucket}/redirecting/docker/registry/v2/blobs/sha256/`), location);
  t.regex(location, /X-Amz-Signature=/);
  const fetched = await fetch(location);
  t.is(fetched.status, 200);
  t.true(Buffer.from(await fetched.arrayBuffer()).equals(bytes));

  const head = await fetch(`${redirecting.url}/v2/redirect/test/blobs/${digest}`, { method: 'HEAD', redirect: 'manual' });
  t.is(head.status, 200);
  t.is(head.headers.get('content-length'), String(bytes.length));

  // With redirects disabled the bytes come from Wharf itself.
  const direct = await pushBlob(wharf.url, 'redirect/test', bytes);
  const streamed = await fetch(`${wharf.url}/v2/redirect/test/blobs/${direct}`, { redirect: 'manual' });
  t.is(streamed.status, 200);
  t.true(Buffer.from(await streamed.arrayBuffer()).equals(bytes));
});

// ---- skopeo --------------------------------------------------------------------------------------------------------

test('s3: skopeo pushes an image to Wharf on S3 and pulls it back byte-identical', async (t) => {
  const work = await tempDir('wharf-e2e-s3-skopeo-');
  t.teardown(work.remove);
  const image: Image = generateImage();
  const source = join(work.path, 'source');
  await writeOciLayout(source, [{ tag: 'v1', target: image.manifest }], allBlobs(image));
  const ref = `docker://${redirecting.host}/s3/app:v1`;
  await runOk('skopeo', ['--insecure-policy', 'copy', '--dest-tls-verify=false', `oci:${source}:v1`, ref]);

  const dest = join(work.path, 'pulled');
  await runOk('skopeo', ['--insecure-policy', 'copy', '--src-tls-verify=false', ref, `oci:${dest}:v1`]);
  const pulled = await layoutRef(dest, 'v1');
  t.is(pulled.digest, image.manifest.digest);
  await t.notThrowsAsync(assertLayoutHasBlobs(dest, image.blobs));

  // The layers are where registry:2 keeps them, in the bucket.
  const client = s3.client();
  t.teardown(() => client.destroy());
  for (const blob of image.blobs) {
    const hex = blob.digest.slice('sha256:'.length);
    const head = await client.send(new HeadObjectCommand({
      Bucket: s3.bucket, Key: `redirecting/docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`,
    }));
    t.is(head.ContentLength, blob.bytes.length);
  }
});

// ---- 1 GiB through Wharf -------------------------------------------------------------------------------------------

test.serial('s3: a 1 GiB blob streams in and out through Wharf on S3 with bounded server memory', async (t) => {
  // Minutes on a loaded machine; this also keeps ava's inactivity timeout from ending the run meanwhile.
  t.timeout(30 * 60_000);
  const repo = 'big/blob';
  const pid = wharf.process.pid!;
  // Warm-up (module loading, first buffers), so the baseline is steady-state.
  await pushBlob(wharf.url, repo, randomBytes(MiB));

  const baseline = await residentBytes(pid);
  const sampler = new RssSampler(pid).start();
  let digest: string;
  let download: Awaited<ReturnType<typeof hashingGet>>;
  try {
    const stream = new PseudoRandomStream(BIG, 7);
    const start = await simpleRequest('POST', `${wharf.url}/v2/${repo}/blobs/uploads/`);
    t.is(start.status, 202);
    const session = new URL(start.headers.location!, wharf.url).href;
    const patch = await streamRequest('PATCH', session, stream, { 'Content-Type': 'application/octet-stream' });
    t.is(patch.status, 202, patch.body);
    t.is(patch.headers.range, `0-${BIG - 1}`);
    digest = stream.digest;
    const finish = new URL(patch.headers.location!, wharf.url);
    finish.searchParams.set('digest', digest);
    const put = await simpleRequest('PUT', finish.href);
    t.is(put.status, 201, put.body);
    download = await hashingGet(`${wharf.url}/v2/${repo}/blobs/${digest}`);
  } finally {
    await sampler.stop();
  }
  t.is(download.status, 200);
  t.is(download.bytes, BIG);
  t.is(download.digest, digest);
  const growth = sampler.peak - baseline;
  t.log(`server RSS baseline ${(baseline / MiB).toFixed(1)} MiB, peak +${(growth / MiB).toFixed(1)} MiB over ${sampler.samples} samples`);
  t.true(sampler.samples >= 10);
  t.true(growth < MEMORY_BOUND, `server RSS grew by ${(growth / MiB).toFixed(1)} MiB`);

  // Committed by a server-side multipart copy, and no multipart upload is left open.
  const client = s3.client();
  t.teardown(() => client.destroy());
  const hex = digest.slice('sha256:'.length);
  const head = await client.send(new HeadObjectCommand({
    Bucket: s3.bucket, Key: `conformance/docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`,
  }));
  t.is(head.ContentLength, BIG);
  t.regex(head.ETag ?? '', /-\d+"?$/);
  const open = await client.send(new ListMultipartUploadsCommand({ Bucket: s3.bucket, Prefix: 'conformance/' }));
  t.deepEqual(open.Uploads ?? [], []);
});

// ---- startup and configuration ---------------------------------------------------------------------------------------

async function serveFails(config: Record<string, unknown>): Promise<{ code: number | null; stderr: string }> {
  const work = await tempDir('wharf-e2e-s3-start-');
  try {
    const path = join(work.path, 'config.yml');
    await writeFile(path, stringify({ version: '0.1', log: { level: 'error' }, http: { addr: '127.0.0.1:0' }, storage: config }));
    try {
      await promisify(execFile)(process.execPath, [CLI_PATH, 'serve', path], { timeout: 60_000 });
      return { code: 0, stderr: '' };
    } catch (err) {
      const e = err as { code?: number | null; stderr?: string };
      return { code: e.code ?? null, stderr: e.stderr ?? '' };
    }
  } finally {
    await work.remove();
  }
}

test('s3: wharf serve fails at startup, saying why, for a missing bucket and for a wrong secret', async (t) => {
  const missing = await serveFails({ s3: s3Config('/x', { bucket: 'no-such-bucket' }) });
  t.is(missing.code, 1);
  t.regex(missing.stderr, /bucket "no-such-bucket" does not exist/);
  const wrong = await serveFails({ s3: s3Config('/x', { secretkey: 'not-the-secret' }) });
  t.is(wrong.code, 1);
  t.regex(wrong.stderr, /secret key is wrong/);
  t.notRegex(wrong.stderr, /not-the-secret/, 'the secret is never printed');
});

test('s3: wharf config check needs no network', async (t) => {
  const work = await tempDir('wharf-e2e-s3-check-');
  t.teardown(work.remove);
  const path = join(work.path, 'config.yml');
  // An endpoint nothing listens on: the check must not try it.
  await writeFile(path, stringify({ version: '0.1', storage: { s3: { ...s3Config('/x'), regionendpoint: 'http://127.0.0.1:9' } } }));
  const out = await promisify(execFile)(process.execPath, [CLI_PATH, 'config', 'check', path], { timeout: 30_000 });
  t.regex(out.stderr, /configuration OK/);
});

test('s3: REGISTRY_STORAGE=s3 with REGISTRY_STORAGE_S3_* overrides selects and configures the driver', async (t) => {
  const server = await startWharf({
    ...START,
    env: {
      REGISTRY_STORAGE: 's3',
      REGISTRY_STORAGE_S3_REGION: s3.region,
      REGISTRY_STORAGE_S3_BUCKET: s3.bucket,
      REGISTRY_STORAGE_S3_REGIONENDPOINT: s3.endpoint,
      REGISTRY_STORAGE_S3_FORCEPATHSTYLE: 'true',
      REGISTRY_STORAGE_S3_ACCESSKEY: s3.accessKey,
      REGISTRY_STORAGE_S3_SECRETKEY: s3.secretKey,
      REGISTRY_STORAGE_S3_ROOTDIRECTORY: '/fromenv',
      REGISTRY_STORAGE_REDIRECT_DISABLE: 'true',
    },
  });
  t.teardown(() => server.stop());
  const digest = await pushBlob(server.url, 'env/repo', Buffer.from('configured by the environment'));
  const client = s3.client();
  t.teardown(() => client.destroy());
  const listed = await client.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: 'fromenv/docker/registry/v2/blobs/' }));
  t.deepEqual(listed.Contents?.map((o) => o.Key), [
    `fromenv/docker/registry/v2/blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}/data`,
  ]);
  const get = await fetch(`${server.url}/v2/env/repo/blobs/${digest}`, { redirect: 'manual' });
  t.is(get.status, 200, 'storage.redirect.disable from the environment');
  t.is(await get.text(), 'configured by the environment');
});
