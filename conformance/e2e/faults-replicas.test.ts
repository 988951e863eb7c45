/**
 * Issue #15, a replica killed: two real `wharf serve` replicas on one filesystem storage (as on NFS), one of them
 * killed with SIGKILL in the middle of a chunked blob upload or of a manifest PUT that moves a tag; and the real
 * `wharf garbage-collect` process killed in the middle of its sweep while both replicas serve. What the client sees
 * afterwards, on the replica left, and what storage holds, is checked over HTTP.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import * as layout from '../../server/registry/layout.js';
import { parseDigest } from '../../server/registry/reference.js';
import { runWharf } from '../../testing/gc-helpers.js';
import { sha256, waitFor } from '../../testing/helpers.js';
import {
  OCI_MANIFEST, getManifest, imageManifest, onDisk, pathOf, pullProblems, pushImage, putManifest, rawRequest,
  sigkill,
} from '../../testing/faults-replicas.js';
import { sharedStorage } from '../../testing/harness.js';
import { pushBlob } from '../../testing/helpers.js';

const CHUNK = 256 * 1024;

/** Start a chunked upload on `base`; returns the upload path (to send to any replica) and its id. */
async function startUpload(base: string, repo: string): Promise<{ path: string; id: string }> {
  const res = await fetch(`${base}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  await res.arrayBuffer();
  if (res.status !== 202) throw new Error(`POST upload answered ${res.status}`);
  const path = pathOf(res.headers.get('location'));
  return { path, id: res.headers.get('docker-upload-uuid')! };
}

async function patch(base: string, path: string, bytes: Buffer, start: number): Promise<Response> {
  return fetch(`${base}${path}`, {
    method: 'PATCH',
    body: bytes,
    headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${start}-${start + bytes.length - 1}` },
  });
}

/** The offset a replica reports for an upload session (GET on the upload URL: 204 with `Range: 0-<offset-1>`). */
async function uploadOffset(base: string, path: string): Promise<{ status: number; offset?: number }> {
  const res = await fetch(`${base}${path}`);
  await res.arrayBuffer();
  if (res.status !== 204) return { status: res.status };
  const m = /^0-(\d+)$/.exec(res.headers.get('range') ?? '');
  if (!m) throw new Error(`status Range header ${res.headers.get('range')}`);
  return { status: 204, offset: Number(m[1]) + 1 };
}

/** Finish an upload: the remaining chunks from `offset` on (PATCH each), then PUT ?digest=; returns the PUT answer. */
async function finishUpload(base: string, path: string, blob: Buffer, offset: number): Promise<Response> {
  let at = offset;
  let next = path;
  while (at < blob.length) {
    const res = await patch(base, next, blob.subarray(at, at + CHUNK), at);
    const text = await res.text();
    if (res.status !== 202) throw new Error(`PATCH at ${at} answered ${res.status}: ${text}`);
    next = pathOf(res.headers.get('location'));
    at = Math.min(at + CHUNK, blob.length);
  }
  const u = new URL(next, 'http://x');
  u.searchParams.set('digest', sha256(blob));
  return fetch(`${base}${u.pathname}${u.search}`, { method: 'PUT' });
}

async function blobPulls(base: string, repo: string, blob: Buffer): Promise<boolean> {
  const res = await fetch(`${base}/v2/${repo}/blobs/${sha256(blob)}`);
  const bytes = Buffer.from(await res.arrayBuffer());
  return res.status === 200 && sha256(bytes) === sha256(blob);
}

test('upload: a replica killed between acknowledged chunks; the session resumes on the other replica from the offset it reports', async (t) => {
  const storage = await sharedStorage(t);
  const [a, b] = [await storage.replica(), await storage.replica()];
  const repo = 'faults/upload-resume';
  const blob = randomBytes(6 * CHUNK + 123);
  const { path } = await startUpload(a.url, repo);
  let next = path;
  for (let at = 0; at < 3 * CHUNK; at += CHUNK) {
    const res = await patch(a.url, next, blob.subarray(at, at + CHUNK), at);
    await res.arrayBuffer();
    t.is(res.status, 202);
    next = pathOf(res.headers.get('location'));
  }
  await sigkill(a);

  const status = await uploadOffset(b.url, next);
  t.deepEqual(status, { status: 204, offset: 3 * CHUNK }, 'B reports every acknowledged byte');
  const done = await finishUpload(b.url, next, blob, status.offset!);
  t.is(done.status, 201, await done.text());
  t.is(done.headers.get('docker-content-digest'), sha256(blob));
  t.true(await blobPulls(b.url, repo, blob), 'the blob pulls from B and hashes to its digest');
  // A replica started again on the storage serves it too.
  const again = await storage.replica();
  t.true(await blobPulls(again.url, repo, blob));
});

test('upload: a replica killed in the middle of a PATCH body; the other replica reports the stored offset, a new upload completes and the stuck session is cancelled', async (t) => {
  const storage = await sharedStorage(t);
  const [a, b] = [await storage.replica(), await storage.replica()];
  const repo = 'faults/upload-midpatch';
  const blob = randomBytes(4 * CHUNK + 7);
  const { path, id } = await startUpload(a.url, repo);
  const first = await patch(a.url, path, blob.subarray(0, CHUNK), 0);
  await first.arrayBuffer();
  t.is(first.status, 202);
  const next = pathOf(first.headers.get('location'));

  // The second chunk's head and half its body reach A; once A has stored some of it, A is killed.
  const chunk = blob.subarray(CHUNK, 2 * CHUNK);
  const raw = await rawRequest(a.url, 'PATCH', next, {
    'Content-Type': 'application/octet-stream', 'Content-Length': chunk.length, 'Content-Range': `${CHUNK}-${2 * CHUNK - 1}`,
  });
  await raw.send(chunk.subarray(0, chunk.length / 2));
  const data = onDisk(storage.root, layout.uploadDataPath(repo, id));
  await waitFor('A to store part of the chunk', async () => ((await stat(data)).size > CHUNK ? true : undefined), 10_000, 5);
  await sigkill(a);
  await raw.response;

  // B reports what storage holds: the first chunk and the part of the second that reached the disk.
  const status = await uploadOffset(b.url, next);
  t.is(status.status, 204);
  t.true(status.offset! > CHUNK && status.offset! <= 2 * CHUNK, `offset ${status.offset}`);

  // What the dead writer left: its claim on the offset it started at, and no mark where its bytes end.
  t.truthy(await stat(onDisk(storage.root, layout.uploadClaimPath(repo, id, CHUNK))).catch(() => undefined), 'the claim at the chunk start is held');
  t.falsy(await stat(onDisk(storage.root, layout.uploadEndPath(repo, id, status.offset!))).catch(() => undefined), 'no write ended at the stored size');

  // Known limit: the dead writer never marked where its bytes end, so the session cannot continue (another
  // replica cannot tell a dead writer from a slow one). Resuming is refused with a clear 416, never accepted into
  // a corrupt blob.
  const resume = await patch(b.url, next, blob.subarray(status.offset!, status.offset! + CHUNK), status.offset!);
  t.is(resume.status, 416);
  t.is(resume.headers.get('range'), `0-${status.offset! - 1}`);
  const body = await resume.json() as { errors: { code: string; message: string }[] };
  t.is(body.errors[0]!.code, 'BLOB_UPLOAD_INVALID');
  // The message tells the client what it can do, since it cannot tell a dead writer from a slow one either.
  t.regex(body.errors[0]!.message, /did not finish.*start a new upload/);
  // Completing it as it is is refused too, and publishes nothing.
  const u = new URL(next, 'http://x');
  u.searchParams.set('digest', sha256(blob.subarray(0, status.offset!)));
  const complete = await fetch(`${b.url}${u.pathname}${u.search}`, { method: 'PUT' });
  await complete.arrayBuffer();
  t.is(complete.status, 416);

  // The client starts again: a new upload on B completes, and the blob hashes to its digest.
  const restart = await startUpload(b.url, repo);
  const done = await finishUpload(b.url, restart.path, blob, 0);
  t.is(done.status, 201, await done.text());
  t.true(await blobPulls(b.url, repo, blob));

  // The stuck session can be cancelled from any replica (and upload purging removes it by age).
  const cancel = await fetch(`${b.url}${next}`, { method: 'DELETE' });
  await cancel.arrayBuffer();
  t.is(cancel.status, 204);
  t.is((await uploadOffset(b.url, next)).status, 404);
  await t.throwsAsync(stat(onDisk(storage.root, layout.uploadDir(repo, id))), { code: 'ENOENT' });
});

test('upload: a stuck session left by a killed writer is purged by the garbage collector', async (t) => {
  const storage = await sharedStorage(t);
  const [a, b] = [await storage.replica(), await storage.replica()];
  const repo = 'faults/upload-purge';
  const { path, id } = await startUpload(a.url, repo);
  const raw = await rawRequest(a.url, 'PATCH', path, { 'Content-Type': 'application/octet-stream', 'Content-Length': 2 * CHUNK });
  await raw.send(randomBytes(CHUNK));
  const data = onDisk(storage.root, layout.uploadDataPath(repo, id));
  await waitFor('A to store part of the body', async () => ((await stat(data)).size > 0 ? true : undefined), 10_000, 5);
  await sigkill(a);
  await raw.response;

  const gc = await runWharf(['garbage-collect', await storage.gcConfig(), '--upload-age=1ms', '--quiet']);
  t.is(gc.code, 0, gc.stderr);
  t.regex(gc.stdout, /upload sessions: 1 purged/);
  t.is((await uploadOffset(b.url, path)).status, 404);
});

/** What the tag and a manifest look like on `base` after a kill: a whole manifest, M1 or M2, or (M2 by digest) none. */
async function assertTagWhole(t: import('ava').ExecutionContext, base: string, repo: string, tag: string, allowed: string[]): Promise<string> {
  const got = await getManifest(base, repo, tag);
  t.is(got.status, 200, `the tag resolves (answered ${got.status})`);
  t.is(got.served, got.actual, 'the manifest bytes hash to the digest served');
  t.true(allowed.includes(got.actual!), `the tag shows ${got.actual}, one of the pushed manifests`);
  for (const d of allowed) {
    const byDigest = await getManifest(base, repo, d);
    t.true(byDigest.status === 200 || byDigest.status === 404, `${d} answered ${byDigest.status}`);
    if (byDigest.status === 200) t.is(byDigest.actual, d);
  }
  const tags = await fetch(`${base}/v2/${repo}/tags/list`);
  t.is(tags.status, 200);
  t.deepEqual(((await tags.json()) as { tags: string[] }).tags, [tag]);
  return got.actual!;
}

test('manifest PUT: a replica killed while the body is arriving leaves the tag on the old manifest', async (t) => {
  const storage = await sharedStorage(t);
  const b = await storage.replica();
  const repo = 'faults/manifest-midbody';
  const m1 = await pushImage(b.url, repo, 'latest');
  const config = Buffer.from('{"architecture":"arm64","os":"linux"}');
  const layer = randomBytes(2048);
  await pushBlob(b.url, repo, config);
  await pushBlob(b.url, repo, layer);
  const m2 = imageManifest(config, [layer]);

  const a = await storage.replica();
  const raw = await rawRequest(a.url, 'PUT', `/v2/${repo}/manifests/latest`, { 'Content-Type': OCI_MANIFEST, 'Content-Length': m2.bytes.length });
  await raw.send(m2.bytes.subarray(0, m2.bytes.length >> 1));
  await sigkill(a);
  t.notRegex(await raw.response, /^HTTP\/1\.1 201/, 'the half-sent manifest was not accepted');

  t.is(await assertTagWhole(t, b.url, repo, 'latest', [m1.digest, m2.digest]), m1.digest);
  t.is((await getManifest(b.url, repo, m2.digest)).status, 404, 'nothing of the half-sent manifest is visible');
  // The push, retried on B, moves the tag.
  await putManifest(b.url, repo, 'latest', m2.bytes);
  t.is(await assertTagWhole(t, b.url, repo, 'latest', [m1.digest, m2.digest]), m2.digest);
});

test('manifest PUT: a replica killed after the body, once the manifest is stored, once the tag history has it, or after its 201, leaves the tag on a whole old or new manifest', async (t) => {
  const storage = await sharedStorage(t);
  const b = await storage.replica();
  const repo = 'faults/manifest-afterbody';
  const m1 = await pushImage(b.url, repo, 'latest');
  const seen: string[] = [];
  for (let round = 0; round < 4; round++) {
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', round }));
    const layer = randomBytes(2048);
    await pushBlob(b.url, repo, config);
    await pushBlob(b.url, repo, layer);
    const m2 = imageManifest(config, [layer]);
    await putManifest(b.url, repo, 'latest', m1.bytes);

    const a = await storage.replica();
    const raw = await rawRequest(a.url, 'PUT', `/v2/${repo}/manifests/latest`, { 'Content-Type': OCI_MANIFEST, 'Content-Length': m2.bytes.length });
    await raw.send(m2.bytes);
    // Where the kill lands: 0 right after the body is sent; 1 once M2's bytes are in the blob store; 2 once the
    // tag's history records M2 (its current link is replaced next); 3 once A has answered 201.
    const landmark = [
      undefined,
      layout.blobDataPath(parseDigest(m2.digest)),
      layout.tagIndexLinkPath(repo, 'latest', parseDigest(m2.digest)),
    ][round];
    if (landmark) {
      const file = onDisk(storage.root, landmark);
      await waitFor(`A to write ${landmark}`, async () => ((await stat(file).catch(() => undefined)) ? true : undefined), 10_000, 1);
    }
    const answer = round === 3 ? await raw.response : undefined;
    await sigkill(a);
    await raw.response;
    const after = await assertTagWhole(t, b.url, repo, 'latest', [m1.digest, m2.digest]);
    if (answer !== undefined) {
      t.regex(answer, /^HTTP\/1\.1 201/);
      t.is(after, m2.digest, 'an acknowledged manifest PUT survives the kill');
    }
    seen.push(`round ${round}: ${after === m1.digest ? 'old' : 'new'}`);
    // Service goes on: B moves the tag to M2 (whatever the killed request left).
    await putManifest(b.url, repo, 'latest', m2.bytes);
    t.is(await assertTagWhole(t, b.url, repo, 'latest', [m1.digest, m2.digest]), m2.digest);
  }
  t.log(`the tag after each kill: ${seen.join('; ')}`);
});

test('garbage-collect killed in the middle of its sweep: the next run finishes, every tagged image pulls, nothing is left in trash', async (t) => {
  const storage = await sharedStorage(t);
  const [a, b] = [await storage.replica(), await storage.replica()];
  const kept: { repo: string; tag: string }[] = [];
  for (let i = 0; i < 4; i++) {
    const repo = `faults/gc-r${i % 2}`;
    const image = await pushImage(i % 2 ? a.url : b.url, repo, `t${i}`);
    kept.push({ repo, tag: `t${i}` });
    // A deleted image: its blobs are garbage.
    const gone = await pushImage(a.url, repo, `gone${i}`);
    const del = await fetch(`${b.url}/v2/${repo}/manifests/${gone.digest}`, { method: 'DELETE' });
    await del.arrayBuffer();
    t.is(del.status, 202);
    t.not(image.digest, gone.digest);
  }
  // Enough unreferenced blobs that the sweep is still going when the kill lands (left-overs as a crashed push leaves).
  const garbage = Array.from({ length: 2000 }, () => randomBytes(64));
  for (let i = 0; i < garbage.length; i += 100) {
    await Promise.all(garbage.slice(i, i + 100).map(async (g) => {
      const file = onDisk(storage.root, layout.blobDataPath(parseDigest(sha256(g))));
      await mkdir(dirname(file), { recursive: true });
      await writeFile(file, g);
    }));
  }
  const config = await storage.gcConfig();
  const trash = onDisk(storage.root, layout.GC_TRASH_ROOT);
  const trashHolds = async () => {
    try {
      for (const run of await readdir(trash)) if ((await readdir(`${trash}/${run}`)).length > 0) return true;
    } catch { /* not there yet */ }
    return false;
  };

  const killed = await runWharf(['garbage-collect', config, '--grace=1ms', '--quiet'], (pid, done) => {
    let exited = false;
    void done.then(() => { exited = true; });
    // The sweep is under way once files have been moved aside into the run's trash.
    void (async () => {
      while (!exited && !(await trashHolds())) await new Promise((r) => setImmediate(r));
      if (!exited) process.kill(pid, 'SIGKILL');
    })();
  });
  t.is(killed.signal, 'SIGKILL', `the collector finished before the kill: ${killed.stdout}`);
  const leftGarbage = async () => (await Promise.all(garbage.map((g) => stat(onDisk(storage.root, layout.blobDataPath(parseDigest(sha256(g))))).then(() => 1, () => 0))))
    .reduce<number>((x, y) => x + y, 0);
  t.true((await leftGarbage()) > 0, 'the sweep was interrupted');
  // Meanwhile the replicas serve every tagged image, and take a push (the dead run's lock is still in storage).
  for (const { repo, tag } of kept) t.deepEqual(await pullProblems(a.url, repo, tag), []);
  await pushImage(b.url, 'faults/gc-r0', 'pushed-meanwhile');
  kept.push({ repo: 'faults/gc-r0', tag: 'pushed-meanwhile' });

  const rerun = await runWharf(['garbage-collect', config, '--grace=1ms']);
  t.is(rerun.code, 0, rerun.stderr);
  t.regex(rerun.stdout, /garbage collection finished/);
  for (const { repo, tag } of kept) {
    t.deepEqual(await pullProblems(a.url, repo, tag), []);
    t.deepEqual(await pullProblems(b.url, repo, tag), []);
  }
  t.is(await leftGarbage(), 0, 'the second run collected what the first left');
  await t.throwsAsync(stat(trash), { code: 'ENOENT' }, 'nothing is left in trash');
  await t.throwsAsync(stat(onDisk(storage.root, layout.GC_LOCK_PATH)), { code: 'ENOENT' }, 'the lock is released');
});
