/**
 * Disk faults, end to end: a real Wharf whose filesystem storage root is a small tmpfs (16 MiB) that the test fills
 * up (a filler file written next to the data) or remounts read-only while the server runs.
 *
 * Full disk: a monolithic POST, a chunked PATCH and a manifest PUT that hit ENOSPC each get a 503 with the OCI
 * error envelope naming the full storage; the server stays up; no blob file holds bytes other than its digest's; a
 * session that can no longer continue (the monolithic POST's, whose URL the client never learnt, and a chunked one
 * whose end could not be recorded) is removed, one that got no byte in stays resumable; pulls of an earlier image
 * work during the outage; once the filler is deleted the same pushes succeed.
 *
 * Read-only: the same for a filesystem remounted read-only under the server.
 *
 * `wharf garbage-collect` on a full disk: refuses cleanly (it cannot record its lock) and deletes nothing; once a
 * little space is back it runs and frees the space of what nothing references.
 *
 * Needs root (mount); without it the tests are reported as skipped, with the reason on stderr.
 */
import test, { type ExecutionContext } from 'ava';
import { request } from 'node:http';
import { join } from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { startWharf, type RunningWharf } from '../../testing/harness.js';
import { postBlob, sha256 } from '../../testing/helpers.js';
import { runWharf, writeGcConfig } from '../../testing/gc-helpers.js';
import {
  corruptBlobs, fill, freeBytes, makeImage, mountTmpfs, pullAndVerify, putManifest, unfill, uploadFiles, uploadSessions,
  type TestImage, type Tmpfs,
} from '../../testing/faults-disk.js';

const REPO = 'faults/disk';
const KiB = 1024;
const MiB = 1024 * KiB;

// Whether this machine lets the tests mount a tmpfs; decided once, when the file loads.
const probe = await mountTmpfs(1);
if (typeof probe === 'string') process.stderr.write(`conformance/e2e/faults-disk.test.ts: skipped: ${probe}\n`);
else await probe.unmount();
const diskTest = typeof probe === 'string' ? test.serial.skip : test.serial;

/** A tmpfs with a Wharf on it, both removed at the end of the test (the server first: it keeps the mount busy). */
async function setUp(t: ExecutionContext): Promise<{ fs: Tmpfs; wharf: RunningWharf }> {
  t.timeout(120_000);
  const fs = await mountTmpfs(16);
  if (typeof fs === 'string') throw new Error(fs);
  let wharf: RunningWharf | undefined;
  t.teardown(async () => {
    if (!t.passed && wharf) t.log(`server output:\n${wharf.output()}`);
    await wharf?.stop();
    await fs.remount('rw').catch(() => {});
    await fs.unmount();
  });
  wharf = await startWharf({ rootDirectory: join(fs.dir, 'data') });
  return { fs, wharf };
}

async function pushBlobs(base: string, image: TestImage): Promise<void> {
  for (const blob of [image.config, image.layer]) {
    const res = await postBlob(base, REPO, blob);
    if (res.status !== 201) throw new Error(`blob push answered ${res.status}: ${await res.text()}`);
  }
}

async function pushImage(base: string, tag: string, image: TestImage): Promise<void> {
  await pushBlobs(base, image);
  const res = await putManifest(base, REPO, tag, image.manifest);
  if (res.status !== 201) throw new Error(`manifest PUT answered ${res.status}: ${await res.text()}`);
}

/** Start a chunked upload session; its Location. */
async function startSession(base: string): Promise<string> {
  const res = await fetch(`${base}/v2/${REPO}/blobs/uploads/`, { method: 'POST' });
  await res.arrayBuffer();
  if (res.status !== 202) throw new Error(`upload start answered ${res.status}`);
  return new URL(res.headers.get('location')!, base).toString();
}

async function patch(location: string, bytes: Buffer, start: number): Promise<Response> {
  return send(location, 'PATCH', bytes, { 'Content-Type': 'application/octet-stream', 'Content-Range': `${start}-${start + bytes.length - 1}` });
}

/**
 * A request on a connection of its own, answered as a fetch Response. The requests that hit the
 * fault use it, so that each answer is read from a connection that saw nothing else.
 */
function send(url: string, method: string, body: Buffer, headers: Record<string, string>): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, agent: false, headers: { ...headers, 'Content-Length': String(body.length) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c)).on('error', reject).on('end', () => {
        const h = new Headers();
        for (const [k, v] of Object.entries(res.headers)) if (typeof v === 'string') h.set(k, v);
        resolve(new Response(res.statusCode === 204 ? null : Buffer.concat(chunks), { status: res.statusCode!, headers: h }));
      });
    });
    // The server may answer and stop reading before the whole body is sent; the answer is what counts.
    req.on('error', reject);
    req.end(body);
  });
}

function withDigest(location: URL, digest: string): string {
  location.searchParams.set('digest', digest);
  return location.toString();
}

/** Asserts `res` is the clean storage-fault answer: 503, the OCI envelope, a message saying what is wrong. */
async function assertStorageFault(t: ExecutionContext, res: Response, what: string, message: RegExp): Promise<void> {
  t.log(`${what}: ${res.status}`);
  const text = await res.text();
  t.is(res.status, 503, `${what}: ${text}`);
  let body: { errors?: Array<{ code?: string; message?: string }> } = {};
  try {
    body = JSON.parse(text);
  } catch {
    t.fail(`${what}: the body is not JSON: ${text}`);
  }
  t.is(body.errors?.length, 1, `${what}: ${text}`);
  t.is(body.errors?.[0]?.code, 'UNKNOWN', `${what}: ${text}`);
  t.regex(body.errors?.[0]?.message ?? '', message, `${what}: ${text}`);
}

async function assertSound(t: ExecutionContext, wharf: RunningWharf, images: Array<[string, TestImage]>): Promise<void> {
  const ping = await fetch(`${wharf.url}/v2/`);
  await ping.arrayBuffer();
  t.is(ping.status, 200, 'the server is up');
  t.is(wharf.process.exitCode, null, 'the server process is still running');
  const { bad, count } = await corruptBlobs(wharf.rootDirectory);
  t.deepEqual(bad, [], 'every blob file hashes to its digest');
  t.true(count > 0);
  for (const [tag, image] of images) await t.notThrowsAsync(pullAndVerify(wharf.url, REPO, tag, image), `pull ${tag}`);
}

const FULL = /no space left on the storage/;
const READ_ONLY = /the storage is read-only/;

const sessionId = (location: string): string => new URL(location).pathname.split('/').pop()!;

async function sessionStatus(location: string): Promise<{ status: number; range: string | null; body: string }> {
  const res = await fetch(location);
  return { status: res.status, range: res.headers.get('range'), body: await res.text() };
}

/** Finish the session at `location` with `bytes` as its (only) chunk; throws unless both requests succeed. */
async function finishChunked(base: string, location: string, bytes: Buffer, digest: string): Promise<void> {
  const res = await patch(location, bytes, 0);
  if (res.status !== 202) throw new Error(`PATCH answered ${res.status}: ${await res.text()}`);
  const done = await fetch(withDigest(new URL(res.headers.get('location') ?? location, base), digest), { method: 'PUT' });
  if (done.status !== 201) throw new Error(`PUT answered ${done.status}: ${await done.text()}`);
}

diskTest('a full disk: pushes fail cleanly, nothing half-written stays, pulls go on, pushes work once space is freed', async (t) => {
  const { fs, wharf } = await setUp(t);
  const before = makeImage('before', 256 * KiB);
  await pushImage(wharf.url, 'before', before);
  // Opened while there is room; their PATCHes come once the disk is (nearly) full.
  const resumable = await startSession(wharf.url);
  const cutShort = await startSession(wharf.url);

  // Room for part of a blob: the monolithic push writes some bytes, then gets ENOSPC.
  let filler = await fill(fs.dir, 512 * KiB);
  const big = makeImage('after', 2 * MiB);
  const mono = await send(`${wharf.url}/v2/${REPO}/blobs/uploads/?digest=${big.digests.layer}`, 'POST', big.layer, { 'Content-Type': 'application/octet-stream' });
  await assertStorageFault(t, mono, 'monolithic POST on a full disk', FULL);
  t.deepEqual(await uploadSessions(wharf.rootDirectory, REPO), [sessionId(resumable), sessionId(cutShort)].sort(),
    `the failed monolithic upload left no session: ${(await uploadFiles(wharf.rootDirectory, REPO)).join(', ')}`);

  // A chunk that fills the disk half-way: its end cannot be recorded, so the session could never go on; it is
  // removed (with its bytes), and the client learns that the upload is unknown.
  const room = await freeBytes(fs.dir);
  const cut = await patch(cutShort, big.layer, 0);
  await assertStorageFault(t, cut, 'chunked PATCH filling the disk', FULL);
  t.is((await sessionStatus(cutShort)).status, 404, 'the session that cannot continue is gone');
  t.deepEqual(await uploadSessions(wharf.rootDirectory, REPO), [sessionId(resumable)]);
  t.true((await freeBytes(fs.dir)) >= room, 'its bytes were freed');

  // Nothing left: a chunk cannot start (the session stays where it was) and a manifest cannot be written.
  await unfill(filler);
  filler = await fill(fs.dir, 0);
  const refused = await patch(resumable, big.layer, 0);
  await assertStorageFault(t, refused, 'chunked PATCH on a full disk', FULL);
  const kept = await sessionStatus(resumable);
  t.is(kept.status, 204, `the session is still there: ${kept.body}`);
  t.is(kept.range, '0-0', 'with no byte in it');
  const other = Buffer.from(JSON.stringify({ ...JSON.parse(before.manifest.toString()), annotations: { tag: 'after' } }));
  const manifest = await send(`${wharf.url}/v2/${REPO}/manifests/other`, 'PUT', other, { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' });
  await assertStorageFault(t, manifest, 'manifest PUT on a full disk', FULL);
  const tagged = await fetch(`${wharf.url}/v2/${REPO}/manifests/other`, { method: 'HEAD' });
  t.is(tagged.status, 404, 'the failed manifest PUT left no tag');

  await assertSound(t, wharf, [['before', before]]);

  // Space back: the same pushes succeed, the chunked one resumed in the session that was refused.
  await unfill(filler);
  await pushBlobs(wharf.url, big);
  await finishChunked(wharf.url, resumable, big.layer, big.digests.layer);
  t.is((await putManifest(wharf.url, REPO, 'after', big.manifest)).status, 201);
  t.is((await putManifest(wharf.url, REPO, 'other', other)).status, 201);
  await assertSound(t, wharf, [['before', before], ['after', big]]);
  const pulled = await fetch(`${wharf.url}/v2/${REPO}/manifests/other`);
  t.is(sha256(Buffer.from(await pulled.arrayBuffer())), sha256(other));
  t.deepEqual(await uploadSessions(wharf.rootDirectory, REPO), [], 'no session is left behind');
});

diskTest('a read-only filesystem: pushes fail cleanly saying so, pulls go on, pushes work once it is writable again', async (t) => {
  const { fs, wharf } = await setUp(t);
  const before = makeImage('before', 256 * KiB);
  await pushImage(wharf.url, 'before', before);
  const session = await startSession(wharf.url);
  const after = makeImage('after', 1 * MiB);

  await fs.remount('ro');
  const mono = await send(`${wharf.url}/v2/${REPO}/blobs/uploads/?digest=${after.digests.layer}`, 'POST', after.layer, { 'Content-Type': 'application/octet-stream' });
  await assertStorageFault(t, mono, 'monolithic POST', READ_ONLY);
  const start = await send(`${wharf.url}/v2/${REPO}/blobs/uploads/`, 'POST', Buffer.alloc(0), {});
  await assertStorageFault(t, start, 'upload start', READ_ONLY);
  const chunk = await patch(session, after.layer, 0);
  await assertStorageFault(t, chunk, 'chunked PATCH', READ_ONLY);
  // Its blobs are stored (the earlier image's): only the write of the manifest itself can fail.
  const other = Buffer.from(JSON.stringify({ ...JSON.parse(before.manifest.toString()), annotations: { tag: 'other' } }));
  const manifest = await send(`${wharf.url}/v2/${REPO}/manifests/other`, 'PUT', other, { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' });
  await assertStorageFault(t, manifest, 'manifest PUT', READ_ONLY);
  const removal = await fetch(`${wharf.url}/v2/${REPO}/manifests/${before.digests.manifest}`, { method: 'DELETE' });
  await assertStorageFault(t, removal, 'manifest DELETE', READ_ONLY);
  const kept = await sessionStatus(session);
  t.is(kept.status, 204, `the open session is still there: ${kept.body}`);
  t.is(kept.range, '0-0');
  await assertSound(t, wharf, [['before', before]]);

  await fs.remount('rw');
  await finishChunked(wharf.url, session, after.layer, after.digests.layer);
  await pushBlobs(wharf.url, after);
  t.is((await putManifest(wharf.url, REPO, 'after', after.manifest)).status, 201);
  await assertSound(t, wharf, [['before', before], ['after', after]]);
  t.deepEqual(await uploadSessions(wharf.rootDirectory, REPO), [], 'no session is left behind');
});

diskTest('wharf garbage-collect on a full disk refuses cleanly and deletes nothing; with a little room it frees space', async (t) => {
  const { fs, wharf } = await setUp(t);
  const kept = makeImage('kept', 256 * KiB);
  await pushImage(wharf.url, 'kept', kept);
  // Referenced by no manifest: the collection's to remove.
  const orphan = makeImage('orphan', 2 * MiB).layer;
  t.is((await postBlob(wharf.url, REPO, orphan)).status, 201);
  // Next to the tmpfs, not on it: the collection's configuration must be readable when the disk is full.
  const dir = await mkdtemp(join(tmpdir(), 'wharf-gc-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const config = await writeGcConfig(dir, wharf.rootDirectory);
  const orphanStored = () => fetch(`${wharf.url}/v2/${REPO}/blobs/${sha256(orphan)}`, { method: 'HEAD' }).then((r) => r.status);

  let filler = await fill(fs.dir, 0);
  const refused = await runWharf(['garbage-collect', config, '--grace', '0s']);
  t.is(refused.code, 1, refused.stdout + refused.stderr);
  t.regex(refused.stderr, /garbage collection failed: the storage is full \(.*no space left on device.*\), in phase lock; stopped/, 'it says why');
  t.notRegex(refused.stderr, /\n\s+at /, 'a plain message, no stack trace');
  t.is(await orphanStored(), 200, 'nothing was deleted');
  await assertSound(t, wharf, [['kept', kept]]);

  // A little room (less than the orphan's size): enough for the collection's own records.
  await unfill(filler);
  filler = await fill(fs.dir, 256 * KiB);
  const room = await freeBytes(fs.dir);
  const ran = await runWharf(['garbage-collect', config, '--grace', '0s']);
  t.is(ran.code, 0, ran.stdout + ran.stderr);
  t.is(await orphanStored(), 404, 'the orphan is gone');
  t.true((await freeBytes(fs.dir)) >= room + 2 * MiB - 64 * KiB, 'its space is free again');
  await assertSound(t, wharf, [['kept', kept]]);
  await pushImage(wharf.url, 'again', makeImage('again', 1 * MiB));
  await unfill(filler);
});
