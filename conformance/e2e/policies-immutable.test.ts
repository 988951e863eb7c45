/**
 * Immutable tags (`policies.immutabletags`, docs/policies.md) end to end, against real Wharf processes:
 *  - two replicas over one storage, filesystem and S3 (one shared Ceph RGW for the file): pushes of different
 *    manifests racing to a new immutable tag (one wins, the other is DENIED, both replicas serve the winner), and a
 *    delete by digest racing a push that sets an immutable tag to that digest (the tag always names a manifest
 *    that exists);
 *  - skopeo: copying another image onto an existing immutable tag fails with the DENIED message, copying the same
 *    image again succeeds; the web UI API does not offer the deletes that would be refused;
 *  - SIGHUP: a rule added to the configuration file applies to the next push of a running server;
 *  - the mirror (upstream: a Wharf with token auth) keeps serving a cached immutable tag that upstream moved, and
 *    `wharf garbage-collect` with a TTL does not expire it.
 */
import test, { type ExecutionContext } from 'ava';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { parse, stringify } from 'yaml';
import { ageAll, runWharf, type CliRun } from '../../testing/gc-helpers.js';
import { startWharf, type RunningWharf } from '../../testing/harness.js';
import { allBlobs, generateImage, writeOciLayout, type Image } from '../../testing/e2e/image.js';
import { tempDir } from '../../testing/e2e/target.js';
import { waitFor, waitForOutput } from '../../testing/helpers.js';
import { UPSTREAM_USERS, pushUpstream, skopeo, startTokenUpstream } from '../../testing/e2e/upstream.js';
import { startS3TestServer, type S3TestServer } from '../../testing/s3-test-server.js';
import { call, OCI_MANIFEST, pushImage } from '../../testing/ui-fixtures.js';

const RULES = { immutabletags: [{ repositories: ['release/**'], tags: ['v*'] }] };
const RULE_NAME = 'policies.immutabletags[0] (release/**; tags v*)';
const DAY = 24 * 3_600_000;

let work: { path: string; remove: () => Promise<void> };
let s3: S3TestServer;

test.before(async () => {
  work = await tempDir('wharf-e2e-immutable-');
  s3 = await startS3TestServer();
});

test.after.always(async () => {
  await s3?.stop();
  await work?.remove();
});

/** Two replicas over one storage (a filesystem root or the RGW bucket), with the immutable-tag rule. */
async function replicas(t: ExecutionContext, backend: 'filesystem' | 's3'): Promise<[RunningWharf, RunningWharf]> {
  // A root of its own: the tests of this file run at once, and two starting in the same millisecond shared one.
  const id = randomUUID();
  const config = { policies: RULES, ...(backend === 's3' ? { storage: { s3: s3.storageConfig({ rootdirectory: `/imm-${id}` }) } } : {}) };
  const root = join(work.path, `shared-${id}`);
  const a = await startWharf({ config, ...(backend === 'filesystem' ? { rootDirectory: root } : {}) });
  const b = await startWharf({ config, ...(backend === 'filesystem' ? { rootDirectory: root } : {}) }).catch(async (err) => { await a.stop(); throw err; });
  t.teardown(async () => { await Promise.all([a.stop(), b.stop()]); });
  return [a, b];
}

/** Manifest bytes referencing blobs pushed to `repo` of `base` (pushed by digest, untagged); its digest. */
async function untagged(base: string, repo: string): Promise<{ digest: string; bytes: Buffer }> {
  const pushed = await pushImage(base, repo, undefined, { layers: [300] });
  const res = await fetch(`${base}/v2/${repo}/manifests/${pushed.digest}`, { headers: { Accept: OCI_MANIFEST } });
  return { digest: pushed.digest, bytes: Buffer.from(await res.arrayBuffer()) };
}

function put(base: string, repo: string, ref: string, body: Buffer) {
  return fetch(`${base}/v2/${repo}/manifests/${ref}`, { method: 'PUT', body, headers: { 'Content-Type': OCI_MANIFEST } });
}

async function served(base: string, repo: string, ref: string): Promise<string | undefined> {
  const res = await fetch(`${base}/v2/${repo}/manifests/${ref}`, { headers: { Accept: OCI_MANIFEST } });
  await res.arrayBuffer();
  return res.status === 200 ? res.headers.get('docker-content-digest') ?? undefined : undefined;
}

const raceToNewTag = test.macro({
  title: (_: string | undefined, backend: string) => `${backend}: two replicas racing to a new immutable tag: one wins, both serve it`,
  exec: async (t, backend: 'filesystem' | 's3') => {
  const [a, b] = await replicas(t, backend);
  for (let round = 0; round < 6; round++) {
    const one = await untagged(a.url, 'release/app');
    const two = await untagged(b.url, 'release/app');
    const tag = `v${round}`;
    const [ra, rb] = await Promise.all([put(a.url, 'release/app', tag, one.bytes), put(b.url, 'release/app', tag, two.bytes)]);
    const statuses = [ra.status, rb.status].sort();
    const [ta, tb] = [await ra.text(), await rb.text()];
    t.deepEqual(statuses, [201, 403], `round ${round}: one push wins, the other is refused (A ${one.digest}: ${ra.status} ${ta}; B ${two.digest}: ${rb.status} ${tb})`);
    const body = JSON.parse(ra.status === 403 ? ta : tb) as { errors: { code: string; message: string; detail: Record<string, string> }[] };
    t.is(body.errors[0]!.code, 'DENIED');
    t.true(body.errors[0]!.message.includes(RULE_NAME));
    const winner = ra.status === 201 ? one.digest : two.digest;
    t.is(body.errors[0]!.detail.current, winner);
    t.is(await served(a.url, 'release/app', tag), winner);
    t.is(await served(b.url, 'release/app', tag), winner);
  }
}});
test(raceToNewTag, 'filesystem');
test(raceToNewTag, 's3');

const deleteRacesPush = test.macro({
  title: (_: string | undefined, backend: string) => `${backend}: a delete by digest racing a push of an immutable tag never leaves the tag without its manifest`,
  exec: async (t, backend: 'filesystem' | 's3') => {
  const [a, b] = await replicas(t, backend);
  let refused = 0;
  for (let round = 0; round < 8; round++) {
    const m = await untagged(a.url, 'release/app');
    const tag = `v${round}`;
    const [del, push] = await Promise.all([
      fetch(`${a.url}/v2/release/app/manifests/${m.digest}`, { method: 'DELETE' }),
      put(b.url, 'release/app', tag, m.bytes),
    ]);
    const text = await del.text();
    await push.arrayBuffer();
    t.is(push.status, 201, `round ${round}: the push succeeds`);
    t.true(del.status === 202 || del.status === 403, `round ${round}: the delete went through or was refused (${del.status} ${text})`);
    if (del.status === 403) refused++;
    // Whatever the order: the immutable tag is there, and the manifest it names can be pulled from both replicas.
    t.is(await served(a.url, 'release/app', tag), m.digest, `round ${round}`);
    t.is(await served(b.url, 'release/app', m.digest), m.digest, `round ${round}`);
  }
  t.log(`${refused} of 8 deletes refused`);
  // Once the tag is set, a delete by digest is refused and removes nothing.
  const m = await untagged(a.url, 'release/app');
  t.is((await put(a.url, 'release/app', 'v-last', m.bytes)).status, 201);
  const del = await fetch(`${b.url}/v2/release/app/manifests/${m.digest}`, { method: 'DELETE' });
  t.is(del.status, 403);
  t.true(((await del.json()) as { errors: { message: string }[] }).errors[0]!.message.includes('v-last'));
  const byTag = await fetch(`${b.url}/v2/release/app/manifests/v-last`, { method: 'DELETE' });
  t.is(byTag.status, 403);
  await byTag.arrayBuffer();
  t.is(await served(a.url, 'release/app', 'v-last'), m.digest);
}});
test(deleteRacesPush, 'filesystem');
test(deleteRacesPush, 's3');

async function layoutOf(image: Image, name: string): Promise<string> {
  const dir = join(work.path, `layout-${name}`);
  await writeOciLayout(dir, [{ tag: 'img', target: image.manifest }], allBlobs(image));
  return dir;
}

test('skopeo: another image onto an immutable tag fails with DENIED, the same image again succeeds; the UI offers no refused delete', async (t) => {
  const w = await startWharf({ config: { policies: RULES } });
  t.teardown(() => w.stop());
  const first = await layoutOf(generateImage({ layerCount: 1, firstLayerBytes: 32 * 1024 }), 'sk-first');
  const second = await layoutOf(generateImage({ layerCount: 1, firstLayerBytes: 32 * 1024 }), 'sk-second');
  const copy = (dir: string, ref: string) => skopeo('copy', '--dest-tls-verify=false', `oci:${dir}:img`, `docker://${w.host}/${ref}`);

  const pushed = await copy(first, 'release/app:v1');
  t.is(pushed.code, 0, pushed.stderr);
  const digest = await served(w.url, 'release/app', 'v1');
  const moved = await copy(second, 'release/app:v1');
  t.not(moved.code, 0);
  t.regex(moved.stderr, /denied/i);
  t.true(moved.stderr.includes('is immutable under policies.immutabletags[0]'), moved.stderr);
  t.is(await served(w.url, 'release/app', 'v1'), digest, 'the tag did not move');
  const again = await copy(first, 'release/app:v1');
  t.is(again.code, 0, again.stderr);
  const mutable = await copy(second, 'release/app:latest');
  t.is(mutable.code, 0, mutable.stderr);

  // The web UI API: the immutable tag is marked and its manifest not offered for deletion; the other tag's is.
  const tags = await call(w.url, '/ui/api/repositories/release/app/tags');
  t.is(tags.status, 200, tags.text);
  const item = (tag: string) => (tags.json.items as { tag: string; immutable: string | null; manifestImmutable: string | null }[]).find((i) => i.tag === tag)!;
  t.is(item('v1').immutable, RULE_NAME);
  t.regex(item('v1').manifestImmutable ?? '', /immutable tag v1/);
  t.is(item('latest').immutable, null);
  t.is(item('latest').manifestImmutable, null);
  const manifest = await call(w.url, `/ui/api/repositories/release/app/manifests/${digest}`);
  t.false(manifest.json.canDelete);
  t.deepEqual(manifest.json.immutableTags, [{ tag: 'v1', rule: RULE_NAME }]);
  const other = await call(w.url, '/ui/api/repositories/release/app/manifests/latest');
  t.true(other.json.canDelete);
});

test('SIGHUP: a rule added to the configuration file applies to the next push of a running server', async (t) => {
  const w = await startWharf({ config: { log: { level: 'info' } } });
  t.teardown(() => w.stop());
  await pushImage(w.url, 'release/app', 'v1', { layers: [200] });
  const other = await untagged(w.url, 'release/app');
  const configPath = join(dirname(w.rootDirectory), 'config.yml');
  const config = parse(await readFile(configPath, 'utf8')) as Record<string, unknown>;
  await writeFile(configPath, stringify({ ...config, policies: RULES }));
  w.process.kill('SIGHUP');
  await waitFor('the reload', async () => (/"immutabletags":1[^\n]*policies: configuration reloaded/.test(w.output()) ? true : undefined));
  const res = await put(w.url, 'release/app', 'v1', other.bytes);
  t.is(res.status, 403);
  t.true(((await res.json()) as { errors: { message: string }[] }).errors[0]!.message.includes(RULE_NAME));
});

function garbageCollect(configPath: string): Promise<CliRun> {
  return runWharf(['garbage-collect', configPath]);
}

test('the mirror keeps a cached immutable tag that upstream moved, and the GC does not expire it', async (t) => {
  const upstream = await startTokenUpstream(work.path);
  t.teardown(() => upstream.stop());
  const proxy = { remoteurl: upstream.url, username: 'puller', password: UPSTREAM_USERS.puller, ttl: '24h' };
  const mirror = await startWharf({ config: { proxy, policies: RULES } });
  t.teardown(() => mirror.stop());
  const pull = (ref: string) => skopeo('copy', '--src-tls-verify=false', `docker://${mirror.host}/${ref}`, `oci:${join(work.path, `pulled-${Date.now()}-${Math.random()}`)}:x`);

  const first = generateImage({ layerCount: 1, firstLayerBytes: 16 * 1024 });
  const second = generateImage({ layerCount: 1, firstLayerBytes: 16 * 1024 });
  await pushUpstream(upstream, await layoutOf(first, 'm-first'), 'img', 'release/app:v1');
  await pushUpstream(upstream, await layoutOf(first, 'm-first'), 'img', 'release/app:latest');
  for (const ref of ['release/app:v1', 'release/app:latest']) {
    const r = await pull(ref);
    t.is(r.code, 0, r.stderr);
  }
  t.is(await served(mirror.url, 'release/app', 'v1'), first.manifest.digest);

  // Upstream moves both tags: the mutable one follows, the immutable one keeps its cached manifest (warned once).
  await pushUpstream(upstream, await layoutOf(second, 'm-second'), 'img', 'release/app:v1');
  await pushUpstream(upstream, await layoutOf(second, 'm-second'), 'img', 'release/app:latest');
  for (let i = 0; i < 2; i++) t.is(await served(mirror.url, 'release/app', 'v1'), first.manifest.digest);
  t.is(await served(mirror.url, 'release/app', 'latest'), second.manifest.digest);
  t.is(await waitForOutput(mirror, 'upstream moved an immutable tag'), 1, 'one warning');

  // Two days pass without a pull; the GC with a 24h TTL expires the mutable tag but not the immutable one.
  await ageAll(mirror.rootDirectory, 2 * DAY);
  const v2 = join(mirror.rootDirectory, 'docker/registry/v2');
  const then = new Date(Date.now() - 2 * DAY).toISOString();
  for (const image of [first, second]) {
    for (const d of [image.manifest.digest, image.config.digest, ...image.layers.map((l) => l.blob.digest)]) {
      const record = join(v2, '_wharf/proxy/lastpull/release/app/sha256', d.slice(7));
      if (existsSync(record)) await writeFile(record, then);
    }
  }
  const gcConfig = join(work.path, 'gc-mirror.yml');
  await writeFile(gcConfig, stringify({ version: '0.1', storage: { filesystem: { rootdirectory: mirror.rootDirectory } }, proxy, policies: RULES }));
  const run = await garbageCollect(gcConfig);
  t.is(run.code, 0, run.stderr);
  t.regex(run.stdout, /mirror TTL: 1 tags/);
  t.true(existsSync(join(v2, 'repositories/release/app/_manifests/tags/v1/current/link')), 'the immutable tag stays');
  t.false(existsSync(join(v2, 'repositories/release/app/_manifests/tags/latest')), 'the mutable tag expired');
  for (const d of [first.manifest.digest, first.config.digest, ...first.layers.map((l) => l.blob.digest)]) {
    t.true(existsSync(join(v2, 'blobs/sha256', d.slice(7, 9), d.slice(7), 'data')), `${d} kept`);
  }
  const again = await pull('release/app:v1');
  t.is(again.code, 0, again.stderr);
  t.is(await served(mirror.url, 'release/app', 'v1'), first.manifest.digest);
});
