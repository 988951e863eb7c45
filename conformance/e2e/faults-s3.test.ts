/**
 * S3 failing under Wharf (issue #15): real `wharf serve` processes on a real S3 (a throw-away Ceph RADOS Gateway,
 * testing/s3-test-server.ts), with a fault-injecting proxy between them (testing/faults-s3.ts) that the tests switch
 * at run time: 500 and 503 SlowDown answers, connections reset before or in the middle of request and response
 * bodies, responses cut short, added latency, a stalled gateway and a gateway that is down for a while.
 *
 * Everything is checked through Wharf's HTTP API with real pushes and pulls: transient faults are retried by the
 * driver and invisible to the client; lasting ones end in a clean 5xx OCI error within a bounded time, never a hang
 * and never a 200 with wrong bytes; nothing half-written is ever visible under a digest; `/readyz` reports an outage
 * and recovers; sockets and memory return to their level once the fault is gone.
 *
 * One gateway for the file; each test has its own proxy and its own Wharf (its own rootdirectory in the one
 * bucket), so the SDK's retry budget (per process) of one test does not leak into another.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { startS3TestServer, type S3TestServer } from '../../testing/s3-test-server.js';
import { startWharf, type RunningWharf } from '../../testing/harness.js';
import { sha256, waitFor } from '../../testing/helpers.js';
import { residentBytes } from '../../testing/e2e/transfer.js';
import {
  S3FaultProxy,
  firstAttempt,
  hasBody,
  isBlobDataGet,
  isPutObject,
  isUploadPart,
  openSockets,
  type S3Request,
} from '../../testing/faults-s3.js';

const MiB = 1024 * 1024;
/** storage.s3.stalltimeout for these tests: a request to S3 standing still this long is abandoned (and retried). */
const STALL_MS = 2500;
/** No request of these tests may take longer than this (a hang is a failure, not a slow pass). */
const CLIENT_BOUND_MS = 60_000;

let s3: S3TestServer;
test.before(async (t) => {
  t.timeout(120_000);
  s3 = await startS3TestServer({ memoryBytes: 2 * 1024 * MiB });
});
test.after.always(async () => {
  await s3?.stop();
});

interface Rig {
  proxy: S3FaultProxy;
  wharf: RunningWharf;
  pid: number;
}

let rigs = 0;
/** A proxy in front of the gateway and a Wharf behind it (5 MiB parts, multipart copies above 5 MiB). */
async function rig(t: ExecutionContext): Promise<Rig> {
  const proxy = await S3FaultProxy.start(s3.endpoint);
  t.teardown(() => proxy.close());
  const wharf = await startWharf({
    startTimeoutMs: 120_000,
    config: {
      log: { level: 'error' },
      storage: {
        s3: s3.storageConfig({
          rootdirectory: `/faults-${process.pid}-${rigs++}`,
          regionendpoint: proxy.url,
          chunksize: 5 * MiB,
          multipartcopythresholdsize: 5 * MiB,
          multipartcopychunksize: 5 * MiB,
          stalltimeout: `${STALL_MS}ms`,
        }),
        redirect: { disable: true },
      },
    },
  });
  t.teardown(() => wharf.stop());
  return { proxy, wharf, pid: wharf.process.pid! };
}

// ---- the client side ------------------------------------------------------------------------------------------------

interface Answer {
  status: number;
  body: Buffer;
  headers: Headers;
}

/** A request through Wharf's API; fails the test (throws) when no answer comes within CLIENT_BOUND_MS. */
async function call(url: string, init: RequestInit = {}): Promise<Answer> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(CLIENT_BOUND_MS) });
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()), headers: res.headers };
}

/** The errors of an OCI error body (throws unless the body is one). */
function ociErrors(a: Answer): Array<{ code: string; message: string }> {
  const parsed = JSON.parse(a.body.toString('utf8')) as { errors?: Array<{ code: string; message: string }> };
  if (!Array.isArray(parsed.errors) || parsed.errors.length === 0) throw new Error(`not an OCI error body: ${a.body.toString('utf8')}`);
  return parsed.errors;
}

/** A monolithic upload (POST ?digest=). */
function postBlob(w: RunningWharf, repo: string, bytes: Buffer): Promise<Answer> {
  return call(`${w.url}/v2/${repo}/blobs/uploads/?digest=${sha256(bytes)}`, {
    method: 'POST',
    body: bytes,
    headers: { 'Content-Type': 'application/octet-stream' },
  });
}

/** Start a chunked upload; its Location. */
async function startUpload(w: RunningWharf, repo: string): Promise<string> {
  const a = await call(`${w.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  if (a.status !== 202) throw new Error(`upload start answered ${a.status}: ${a.body.toString()}`);
  return new URL(a.headers.get('location')!, w.url).toString();
}

function patch(location: string, bytes: Buffer, offset: number): Promise<Answer> {
  return call(location, {
    method: 'PATCH',
    body: bytes,
    headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${offset}-${offset + bytes.length - 1}` },
  });
}

function complete(location: string, digest: string): Promise<Answer> {
  const url = new URL(location);
  url.searchParams.set('digest', digest);
  return call(url.toString(), { method: 'PUT' });
}

/** A chunked push (PATCHes of `chunk` bytes, then PUT); throws on any answer but the expected ones. */
async function chunkedPush(w: RunningWharf, repo: string, bytes: Buffer, chunk: number): Promise<string> {
  let location = await startUpload(w, repo);
  for (let at = 0; at < bytes.length; at += chunk) {
    const a = await patch(location, bytes.subarray(at, at + chunk), at);
    if (a.status !== 202) throw new Error(`PATCH at ${at} answered ${a.status}: ${a.body.toString()}`);
    location = new URL(a.headers.get('location')!, w.url).toString();
  }
  const done = await complete(location, sha256(bytes));
  if (done.status !== 201) throw new Error(`PUT answered ${done.status}: ${done.body.toString()}`);
  return sha256(bytes);
}

interface PushedImage {
  repo: string;
  tag: string;
  manifest: Buffer;
  blobs: Buffer[];
}

const MANIFEST_TYPE = 'application/vnd.oci.image.manifest.v1+json';

/** An image of a config and `layers` (sizes), pushed: small blobs monolithic, large ones in 2 MiB PATCHes. */
async function pushImage(w: RunningWharf, repo: string, tag: string, layers: number[]): Promise<PushedImage> {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, n: Math.random() }));
  const blobs = [config, ...layers.map((size) => randomBytes(size))];
  for (const b of blobs) {
    if (b.length > 2 * MiB) await chunkedPush(w, repo, b, 2 * MiB);
    else {
      const a = await postBlob(w, repo, b);
      if (a.status !== 201) throw new Error(`blob push answered ${a.status}: ${a.body.toString()}`);
    }
  }
  const descriptor = (mediaType: string, b: Buffer) => ({ mediaType, digest: sha256(b), size: b.length });
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MANIFEST_TYPE,
    config: descriptor('application/vnd.oci.image.config.v1+json', config),
    layers: blobs.slice(1).map((b) => descriptor('application/vnd.oci.image.layer.v1.tar', b)),
  }));
  const put = await call(`${w.url}/v2/${repo}/manifests/${tag}`, { method: 'PUT', body: manifest, headers: { 'Content-Type': MANIFEST_TYPE } });
  if (put.status !== 201) throw new Error(`manifest push answered ${put.status}: ${put.body.toString()}`);
  return { repo, tag, manifest, blobs };
}

/** Pull an image by tag and every blob of it; true when every byte is what was pushed. */
async function pullsWhole(w: RunningWharf, image: PushedImage): Promise<boolean> {
  const m = await call(`${w.url}/v2/${image.repo}/manifests/${image.tag}`, { headers: { Accept: MANIFEST_TYPE } });
  if (m.status !== 200 || sha256(m.body) !== sha256(image.manifest)) return false;
  for (const b of image.blobs) {
    const got = await call(`${w.url}/v2/${image.repo}/blobs/${sha256(b)}`);
    if (got.status !== 200 || sha256(got.body) !== sha256(b)) return false;
  }
  return true;
}

/**
 * What is visible under each digest: HEAD and GET of the blob (and the manifest by digest) answer 200 only with bytes
 * that hash to the digest; anything else must be a 404 (or, during a fault, a 5xx). Returns the digests visible.
 */
async function visibleAndIntact(t: ExecutionContext, w: RunningWharf, repo: string, digests: string[], kind: 'blobs' | 'manifests' = 'blobs'): Promise<string[]> {
  const visible: string[] = [];
  for (const digest of digests) {
    const url = `${w.url}/v2/${repo}/${kind}/${digest}`;
    const head = await call(url, { method: 'HEAD', headers: { Accept: MANIFEST_TYPE } });
    const get = await readFully(url);
    if (head.status === 200 || get.status === 200) {
      t.is(get.status, 200, `${digest}: HEAD ${head.status} but GET ${get.status}`);
      t.is(get.digest, digest, `${digest}: a 200 must carry bytes that hash to the digest`);
      t.false(get.broken, `${digest}: the GET broke off`);
      visible.push(digest);
    } else {
      t.true(head.status === 404 || head.status >= 500, `${digest}: HEAD answered ${head.status}`);
    }
  }
  return visible;
}

interface Read {
  status: number;
  /** The response ended before its Content-Length (the connection broke). */
  broken: boolean;
  bytes: number;
  digest: string;
  contentLength: number;
}

/** GET with node:http, telling a response that completed from one whose connection ended early. */
function readFully(url: string): Promise<Read> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { headers: { Accept: MANIFEST_TYPE }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let settled = false;
      const done = (broken: boolean) => {
        if (settled) return;
        settled = true;
        const body = Buffer.concat(chunks);
        resolve({ status: res.statusCode ?? 0, broken, bytes: body.length, digest: sha256(body), contentLength: Number(res.headers['content-length'] ?? -1) });
      };
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => done(!res.complete));
      res.on('error', () => done(true));
      res.on('aborted', () => done(true));
      res.on('close', () => done(!res.complete));
    });
    req.setTimeout(CLIENT_BOUND_MS, () => req.destroy(new Error(`no answer from ${url} within ${CLIENT_BOUND_MS} ms`)));
    req.on('error', reject);
    req.end();
  });
}

async function readyz(w: RunningWharf): Promise<{ status: number; body: any }> {
  const a = await call(`${w.url}/readyz`);
  return { status: a.status, body: JSON.parse(a.body.toString('utf8') || '{}') };
}

// ---- 500 / 503 -----------------------------------------------------------------------------------------------------

test('500 and 503 SlowDown bursts are retried with backoff: pushes and pulls succeed, the client sees nothing', async (t) => {
  const { proxy, wharf } = await rig(t);
  // Every request's first attempt is answered 503 SlowDown and its second 500 InternalError (for the first 25
  // requests each): the third attempt goes through.
  proxy.set(
    { fault: { kind: 'status', status: 503 }, match: firstAttempt, times: 25, label: '503 SlowDown' },
    { fault: { kind: 'status', status: 500 }, match: (r) => r.attempt === 2, times: 25, label: '500' },
  );
  const image = await pushImage(wharf, 'burst/app', 'v1', [300_000, 7 * MiB]);
  t.true(await pullsWhole(wharf, image));
  t.true(proxy.spent(), `every fault dealt: ${proxy.faults.length}`);
  t.is(proxy.faults.filter((f) => f.endsWith('503 SlowDown')).length, 25);
  t.is(proxy.faults.filter((f) => f.endsWith('500')).length, 25);
  // And while pulling.
  proxy.set({ fault: { kind: 'status', status: 503 }, match: firstAttempt, times: 10 });
  t.true(await pullsWhole(wharf, image));
  t.true(proxy.spent());
});

// ---- resets in request bodies ----------------------------------------------------------------------------------------

test('connections reset before and in the middle of request bodies (parts, whole objects) are retried; the push succeeds', async (t) => {
  const { proxy, wharf } = await rig(t);
  proxy.set(
    { fault: { kind: 'reset-before-body' }, match: (r) => firstAttempt(r) && isUploadPart(r), times: 2, label: 'reset before a part' },
    { fault: { kind: 'reset-in-request-body', after: 1 * MiB }, match: (r) => r.attempt === 2 && isUploadPart(r), times: 1, label: 'reset in a part' },
    { fault: { kind: 'reset-in-request-body', after: 64 * 1024 }, match: (r) => firstAttempt(r) && isPutObject(r) && Number(r.headers['content-length']) > 128 * 1024, times: 3, label: 'reset in a PutObject' },
    { fault: { kind: 'reset-before-body' }, match: (r) => firstAttempt(r) && r.method === 'POST' && r.query.has('uploadId'), times: 1, label: 'reset before complete' },
    // S3 completed the upload, but its answer is lost: the retry finds the upload gone.
    { fault: { kind: 'reset-in-response-body', after: 0 }, match: (r) => r.attempt === 2 && r.method === 'POST' && r.query.has('uploadId'), times: 1, label: 'reset in the answer to complete' },
  );
  const image = await pushImage(wharf, 'resets/app', 'v1', [400_000, 12 * MiB]);
  t.true(proxy.spent(), `faults dealt: ${proxy.faults.join(', ')}`);
  proxy.clear();
  t.true(await pullsWhole(wharf, image));
});

// ---- resets and cuts in response bodies --------------------------------------------------------------------------------

test('a blob GET whose S3 body is reset or cut short ends the client connection early, never a 200 with wrong bytes', async (t) => {
  const { proxy, wharf } = await rig(t);
  const blob = randomBytes(8 * MiB + 123);
  const digest = await chunkedPush(wharf, 'cut/app', blob, 4 * MiB);
  const url = `${wharf.url}/v2/cut/app/blobs/${digest}`;

  for (const fault of [{ kind: 'cut-response', after: 1 * MiB }, { kind: 'reset-in-response-body', after: 3 * MiB }] as const) {
    proxy.set({ fault, match: isBlobDataGet, times: 1 });
    const read = await readFully(url);
    t.true(proxy.spent(), fault.kind);
    t.is(read.status, 200, fault.kind);
    t.is(read.contentLength, blob.length, 'the headers announced the whole blob');
    t.true(read.broken, `${fault.kind}: the client connection must end early`);
    t.true(read.bytes < blob.length, `${fault.kind}: got ${read.bytes} bytes`);
    // Right after, the blob is served whole.
    const again = await readFully(url);
    t.deepEqual([again.status, again.broken, again.digest], [200, false, digest]);
  }
});

test('small objects read whole (links, manifests) whose S3 answer is reset or cut short are read again: the pull succeeds', async (t) => {
  const { proxy, wharf } = await rig(t);
  const image = await pushImage(wharf, 'cutsmall/app', 'v1', [50_000]);
  // A manifest GET reads the tag's link and then the manifest, each a small object the driver reads whole: their
  // answers break off in the body, once cut short and once reset (each after the SDK has taken the answer's headers).
  for (const fault of [{ kind: 'cut-response', after: 20 }, { kind: 'reset-in-response-body', after: 10 }] as const) {
    proxy.set({ fault, match: (r) => r.method === 'GET' && !isBlobDataGet(r), times: 2 });
    const m = await call(`${wharf.url}/v2/${image.repo}/manifests/${image.tag}`, { headers: { Accept: MANIFEST_TYPE } });
    t.is(m.status, 200, `${fault.kind}: ${m.body.toString()}`);
    t.is(sha256(m.body), sha256(image.manifest));
    t.true(proxy.spent(), `${fault.kind}: both faults dealt`);
  }
  proxy.clear();
  t.true(await pullsWhole(wharf, image));
});

// ---- latency and stalls ------------------------------------------------------------------------------------------------

test('seconds of added latency: requests complete; a gateway that stalls fails them cleanly within the timeout', async (t) => {
  const { proxy, wharf } = await rig(t);
  const image = await pushImage(wharf, 'slow/app', 'v1', [100_000]);
  // Well under the stall timeout: slower, but everything completes.
  proxy.set({ fault: { kind: 'latency', ms: 1000 }, times: 8 });
  const second = await pushImage(wharf, 'slow/app', 'v2', [100_000]);
  t.true(proxy.spent());
  t.true(await pullsWhole(wharf, image));
  t.true(await pullsWhole(wharf, second));

  // A gateway that accepts and never answers: every attempt is abandoned after the stall timeout, then a 503.
  proxy.set({ fault: { kind: 'stall' } });
  const stat = await call(`${wharf.url}/v2/${image.repo}/blobs/${sha256(image.blobs[1]!)}`);
  t.true(stat.status >= 500, `status ${stat.status}`);
  t.truthy(ociErrors(stat));
  const push = await postBlob(wharf, 'slow/app', randomBytes(10_000));
  t.true(push.status >= 500, `push answered ${push.status}`);
  t.truthy(ociErrors(push));
  proxy.clear();
  t.true(await pullsWhole(wharf, image));
});

test('a blob GET whose S3 body stalls in the middle ends the client connection early', async (t) => {
  const { proxy, wharf } = await rig(t);
  const blob = randomBytes(6 * MiB);
  const digest = await chunkedPush(wharf, 'stallbody/app', blob, 3 * MiB);
  // S3 sends the headers and 1 MiB of the body, then nothing, the connection left open.
  proxy.set({ fault: { kind: 'stall-body', after: 1 * MiB }, match: isBlobDataGet, times: 1 });
  const read = await readFully(`${wharf.url}/v2/stallbody/app/blobs/${digest}`);
  t.true(read.broken || read.status >= 500, `status ${read.status}, ${read.bytes} bytes`);
  proxy.clear();
  const again = await readFully(`${wharf.url}/v2/stallbody/app/blobs/${digest}`);
  t.deepEqual([again.status, again.broken, again.digest], [200, false, digest]);
});

// ---- the gateway down ------------------------------------------------------------------------------------------------

test('gateway down: pushes fail with a clean 5xx OCI error, /readyz reports it and recovers, then the push succeeds', async (t) => {
  const { proxy, wharf } = await rig(t);
  t.is((await readyz(wharf)).status, 200);
  const chunk1 = randomBytes(3 * MiB);
  const chunk2 = randomBytes(3 * MiB);
  const whole = Buffer.concat([chunk1, chunk2]);
  let location = await startUpload(wharf, 'down/app');
  const first = await patch(location, chunk1, 0);
  t.is(first.status, 202);
  location = new URL(first.headers.get('location')!, wharf.url).toString();

  proxy.down();
  const small = randomBytes(20_000);
  const push = await postBlob(wharf, 'down/app', small);
  t.is(push.status, 503, `push answered ${push.status}`);
  t.truthy(ociErrors(push));
  const second = await patch(location, chunk2, chunk1.length);
  t.true(second.status >= 500, `PATCH answered ${second.status}`);
  t.truthy(ociErrors(second));
  const ready = await readyz(wharf);
  t.is(ready.status, 503);
  t.is(ready.body.checks?.storagedriver_s3, 'unavailable');

  proxy.up();
  await waitFor('/readyz to recover', async () => ((await readyz(wharf)).status === 200 ? true : undefined), 30_000, 200);
  // The failed push left nothing visible.
  t.deepEqual(await visibleAndIntact(t, wharf, 'down/app', [sha256(small), sha256(whole)]), []);
  // The push retried from scratch succeeds.
  t.is((await postBlob(wharf, 'down/app', small)).status, 201);
  // The chunked upload resumes: its status says how much is stored, and the client sends the rest from there.
  const status = await call(location, { method: 'GET' });
  t.is(status.status, 204);
  const stored = Number(/^0-(\d+)$/.exec(status.headers.get('range') ?? '')?.[1] ?? -2) + 1;
  t.is(stored, chunk1.length, `range ${status.headers.get('range')}`);
  const resumed = await patch(new URL(status.headers.get('location') ?? location, wharf.url).toString(), whole.subarray(stored), stored);
  t.is(resumed.status, 202, resumed.body.toString());
  const done = await complete(new URL(resumed.headers.get('location')!, wharf.url).toString(), sha256(whole));
  t.is(done.status, 201, done.body.toString());
  t.deepEqual(await visibleAndIntact(t, wharf, 'down/app', [sha256(small), sha256(whole)]), [sha256(small), sha256(whole)]);
});

// ---- nothing half-written --------------------------------------------------------------------------------------------

test('pushes whose writes to S3 keep failing fail cleanly and leave nothing visible under their digests', async (t) => {
  const { proxy, wharf } = await rig(t);
  const failing: string[] = [];
  const breakEvery = (what: (r: S3Request) => boolean, fault: Parameters<S3FaultProxy['set']>[0]['fault']) => proxy.set({ fault, match: what });

  // A monolithic push whose PutObject body is reset every time.
  breakEvery((r) => isPutObject(r) && Number(r.headers['content-length']) > 100_000, { kind: 'reset-in-request-body', after: 50_000 });
  const mono = randomBytes(300_000);
  failing.push(sha256(mono));
  const a = await postBlob(wharf, 'half/app', mono);
  t.true(a.status >= 500, `monolithic push answered ${a.status}`);
  t.truthy(ociErrors(a));

  // A chunked push whose parts fail every time (503), and one whose completion fails (500).
  breakEvery((r) => isUploadPart(r), { kind: 'status', status: 503 });
  const parts = randomBytes(11 * MiB);
  failing.push(sha256(parts));
  await t.throwsAsync(chunkedPush(wharf, 'half/app', parts, 6 * MiB), { message: /answered 5\d\d/ });
  breakEvery((r) => r.method === 'POST' && r.query.has('uploadId') && hasBody(r), { kind: 'status', status: 500 });
  const completing = randomBytes(11 * MiB);
  failing.push(sha256(completing));
  await t.throwsAsync(chunkedPush(wharf, 'half/app', completing, 6 * MiB), { message: /answered 5\d\d/ });

  // A manifest whose PutObject fails.
  const config = randomBytes(100);
  t.is((await postBlob(wharf, 'half/app', config)).status, 201);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MANIFEST_TYPE,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
    layers: [],
  }));
  breakEvery((r) => isPutObject(r) && hasBody(r), { kind: 'reset-in-request-body', after: 10 });
  const m = await call(`${wharf.url}/v2/half/app/manifests/v1`, { method: 'PUT', body: manifest, headers: { 'Content-Type': MANIFEST_TYPE } });
  t.true(m.status >= 500, `manifest push answered ${m.status}`);
  t.truthy(ociErrors(m));

  proxy.clear();
  t.deepEqual(await visibleAndIntact(t, wharf, 'half/app', failing), []);
  // The manifest's first write failed: neither the tag nor the digest shows it.
  t.is((await call(`${wharf.url}/v2/half/app/manifests/v1`, { method: 'HEAD', headers: { Accept: MANIFEST_TYPE } })).status, 404);
  t.deepEqual(await visibleAndIntact(t, wharf, 'half/app', [sha256(manifest)], 'manifests'), []);
  // And with S3 back, the same pushes succeed and show exactly their bytes.
  t.is((await postBlob(wharf, 'half/app', mono)).status, 201);
  t.is(await chunkedPush(wharf, 'half/app', parts, 6 * MiB), sha256(parts));
  t.is((await call(`${wharf.url}/v2/half/app/manifests/v1`, { method: 'PUT', body: manifest, headers: { 'Content-Type': MANIFEST_TYPE } })).status, 201);
  t.deepEqual(await visibleAndIntact(t, wharf, 'half/app', [sha256(mono), sha256(parts)]), [sha256(mono), sha256(parts)]);
  t.deepEqual(await visibleAndIntact(t, wharf, 'half/app', [sha256(manifest)], 'manifests'), [sha256(manifest)]);
});

// ---- resources -----------------------------------------------------------------------------------------------------

test('open sockets and memory return to their level after rounds of faults', async (t) => {
  const { proxy, wharf, pid } = await rig(t);
  const image = await pushImage(wharf, 'res/app', 'v1', [2 * MiB, 6 * MiB]);
  const pulls = () => Promise.all(Array.from({ length: 4 }, () => pullsWhole(wharf, image).catch(() => false)));

  // The level: after the same concurrent pulls without faults, once the process has settled.
  t.true((await pulls()).every(Boolean));
  let previous = -1;
  const level = await waitFor('the socket count to settle', async () => {
    const n = openSockets(pid);
    const settled = n === previous;
    previous = n;
    return settled ? n : undefined;
  }, 10_000, 250);
  const rss: number[] = [await residentBytes(pid)];

  for (let round = 0; round < 3; round++) {
    proxy.set(
      { fault: { kind: 'stall' }, match: (r) => r.method === 'HEAD', times: 3 },
      { fault: { kind: 'reset-in-response-body', after: 100_000 }, match: isBlobDataGet, times: 2 },
      { fault: { kind: 'cut-response', after: 500_000 }, match: isBlobDataGet, times: 2 },
      { fault: { kind: 'status', status: 503 }, match: firstAttempt, times: 10 },
    );
    await pulls();
    proxy.down();
    await pulls();
    await postBlob(wharf, 'res/app', randomBytes(100_000));
    proxy.up();
    proxy.clear();
    t.true((await pulls()).every(Boolean), `round ${round}: pulls succeed again`);
    const sockets = await waitFor(`the socket count to return to ${level} (+4)`, async () => {
      const n = openSockets(pid);
      return n <= level + 4 ? n : undefined;
    }, 30_000, 200).catch((err: Error) => {
      t.fail(`${err.message}; now ${openSockets(pid)}`);
      return -1;
    });
    t.log(`round ${round}: sockets ${sockets} (level ${level}), rss ${Math.round((await residentBytes(pid)) / MiB)} MiB`);
    rss.push(await residentBytes(pid));
  }
  // Loosely: no growth without bound across the rounds.
  t.true(rss[rss.length - 1]! < rss[0]! + 96 * MiB, `rss ${rss.map((b) => Math.round(b / MiB)).join(' → ')} MiB`);
});
