/**
 * Storage-layout compatibility with registry:2 (CNCF distribution), in both directions:
 *
 * 1. a tree laid out by hand exactly as registry:2 lays it out is served by Wharf unchanged;
 * 2. what Wharf writes for an HTTP push is exactly registry:2's tree, and the real registry:2 serves it;
 * 3. what the real registry:2 writes for a skopeo push is served by Wharf to skopeo and to plain HTTP.
 *
 * The real registry:2 is Debian's `docker-registry` package. Without it, tests 2 and 3 fail (with a message saying
 * what to install); they never skip.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startWharf, type RunningWharf } from '../../testing/harness.js';
import {
  MediaType, allBlobs, blobOf, descriptor, generateImage, generateMultiArch, randomLayer, writeOciLayout, type Blob,
} from '../../testing/e2e/image.js';
import { assertLayoutHasBlobs, layoutRef } from '../../testing/e2e/layout.js';
import { runOk, targetName } from '../../testing/e2e/target.js';
import {
  entriesBelow, readTree, registry2Files, repoPath, requireRegistry2, requireSkopeo, startRegistry2, treeDiff,
  writeTree, type RepoContent, type RunningRegistry2,
} from '../../testing/compat-fixtures.js';

const ACCEPT_MANIFESTS = [
  MediaType.ociManifest, MediaType.ociIndex, MediaType.dockerManifest, MediaType.dockerManifestList,
].join(', ');

// ---------------------------------------------------------------------------------------------------------------
// Resources, released in test.after.always whatever happened.

const cleanups: (() => Promise<unknown>)[] = [];

async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function wharfOn(rootDirectory: string): Promise<RunningWharf> {
  const wharf = await startWharf({ rootDirectory });
  cleanups.push(() => wharf.stop());
  return wharf;
}

async function registry2On(rootDirectory: string): Promise<RunningRegistry2> {
  const registry = await startRegistry2(rootDirectory);
  cleanups.push(() => registry.stop());
  return registry;
}

test.after.always(async () => {
  // Processes first (they hold the directories), newest first.
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

// ---------------------------------------------------------------------------------------------------------------
// HTTP.

interface Reply {
  status: number;
  headers: Headers;
  bytes: Buffer;
  text(): string;
}

async function request(url: string, init: RequestInit = {}): Promise<Reply> {
  const res = await fetch(url, { redirect: 'manual', ...init });
  const bytes = Buffer.from(await res.arrayBuffer());
  return { status: res.status, headers: res.headers, bytes, text: () => bytes.toString('utf8').slice(0, 500) };
}

function what(method: string, url: string, res: Reply): string {
  return `${method} ${new URL(url).pathname} -> ${res.status} ${res.text()}`;
}

/** GET and HEAD a manifest; both must answer with its digest, media type and length, GET with its exact bytes. */
async function assertServesManifest(t: ExecutionContext, base: string, repo: string, reference: string, manifest: Blob): Promise<void> {
  const url = `${base}/v2/${repo}/manifests/${reference}`;
  const get = await request(url, { headers: { accept: ACCEPT_MANIFESTS } });
  t.is(get.status, 200, what('GET', url, get));
  t.true(get.bytes.equals(manifest.bytes), `GET ${repo}:${reference}: the bytes differ from the stored manifest`);
  t.is(get.headers.get('docker-content-digest'), manifest.digest, `GET ${repo}:${reference} Docker-Content-Digest`);
  t.is(get.headers.get('content-type'), manifest.mediaType, `GET ${repo}:${reference} Content-Type`);
  t.is(get.headers.get('content-length'), String(manifest.size), `GET ${repo}:${reference} Content-Length`);

  const head = await request(url, { method: 'HEAD', headers: { accept: ACCEPT_MANIFESTS } });
  t.is(head.status, 200, what('HEAD', url, head));
  t.is(head.bytes.length, 0, `HEAD ${repo}:${reference} has no body`);
  t.is(head.headers.get('docker-content-digest'), manifest.digest, `HEAD ${repo}:${reference} Docker-Content-Digest`);
  t.is(head.headers.get('content-type'), manifest.mediaType, `HEAD ${repo}:${reference} Content-Type`);
  t.is(head.headers.get('content-length'), String(manifest.size), `HEAD ${repo}:${reference} Content-Length`);
}

/** GET and HEAD a blob: its bytes, length and digest. */
async function assertServesBlob(t: ExecutionContext, base: string, repo: string, blob: Blob): Promise<void> {
  const url = `${base}/v2/${repo}/blobs/${blob.digest}`;
  const get = await request(url);
  t.is(get.status, 200, what('GET', url, get));
  t.true(get.bytes.equals(blob.bytes), `GET blob ${blob.digest} in ${repo}: bytes differ`);
  t.is(get.headers.get('docker-content-digest'), blob.digest, `GET blob ${blob.digest} in ${repo}: Docker-Content-Digest`);
  const head = await request(url, { method: 'HEAD' });
  t.is(head.status, 200, what('HEAD', url, head));
  t.is(head.headers.get('content-length'), String(blob.size), `HEAD blob ${blob.digest} in ${repo}: Content-Length`);
  t.is(head.headers.get('docker-content-digest'), blob.digest, `HEAD blob ${blob.digest} in ${repo}: Docker-Content-Digest`);
}

async function assertNotFound(t: ExecutionContext, url: string, code: string): Promise<void> {
  const get = await request(url, { headers: { accept: ACCEPT_MANIFESTS } });
  t.is(get.status, 404, what('GET', url, get));
  if (get.status === 404) {
    const body = JSON.parse(get.bytes.toString('utf8')) as { errors?: { code?: string }[] };
    t.is(body.errors?.[0]?.code, code, what('GET', url, get));
  }
  const head = await request(url, { method: 'HEAD', headers: { accept: ACCEPT_MANIFESTS } });
  t.is(head.status, 404, what('HEAD', url, head));
}

/**
 * GET tags/list. Wharf must list tags in lexical order (as the spec asks); registry:2 2.8 answers in directory order,
 * so its list is compared sorted.
 */
async function assertTags(t: ExecutionContext, base: string, repo: string, expected: string[], ordered: boolean): Promise<void> {
  const url = `${base}/v2/${repo}/tags/list`;
  const res = await request(url);
  t.is(res.status, 200, what('GET', url, res));
  if (res.status !== 200) return;
  const body = JSON.parse(res.bytes.toString('utf8')) as { name: string; tags: string[] };
  t.is(body.name, repo, `GET ${new URL(url).pathname}: name`);
  t.deepEqual(ordered ? body.tags : [...body.tags].sort(), expected, `GET ${new URL(url).pathname}: tags`);
}

async function assertJson(t: ExecutionContext, url: string, expected: unknown): Promise<void> {
  const res = await request(url);
  t.is(res.status, 200, what('GET', url, res));
  if (res.status === 200) t.deepEqual(JSON.parse(res.bytes.toString('utf8')), expected, `GET ${new URL(url).pathname}`);
}

/** POST then PUT with the whole body (the monolithic upload). */
async function pushMonolithic(base: string, repo: string, blob: Blob): Promise<void> {
  const post = await request(`${base}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  if (post.status !== 202) throw new Error(what('POST', `${base}/v2/${repo}/blobs/uploads/`, post));
  const location = new URL(post.headers.get('location')!, base);
  location.searchParams.set('digest', blob.digest);
  const put = await request(location.href, {
    method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: blob.bytes,
  });
  if (put.status !== 201) throw new Error(what('PUT', location.href, put));
}

/** POST, two PATCH chunks, then PUT with no body (the chunked upload). */
async function pushChunked(base: string, repo: string, blob: Blob): Promise<void> {
  const post = await request(`${base}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  if (post.status !== 202) throw new Error(what('POST', `${base}/v2/${repo}/blobs/uploads/`, post));
  let location = new URL(post.headers.get('location')!, base);
  const half = Math.floor(blob.size / 2);
  for (const [start, end] of [[0, half], [half, blob.size]] as const) {
    const patch = await request(location.href, {
      method: 'PATCH',
      headers: { 'content-type': 'application/octet-stream', 'content-range': `${start}-${end - 1}` },
      body: blob.bytes.subarray(start, end),
    });
    if (patch.status !== 202) throw new Error(what('PATCH', location.href, patch));
    location = new URL(patch.headers.get('location')!, base);
  }
  location.searchParams.set('digest', blob.digest);
  const put = await request(location.href, { method: 'PUT' });
  if (put.status !== 201) throw new Error(what('PUT', location.href, put));
}

async function pushManifest(base: string, repo: string, reference: string, manifest: Blob): Promise<void> {
  const url = `${base}/v2/${repo}/manifests/${reference}`;
  const put = await request(url, { method: 'PUT', headers: { 'content-type': manifest.mediaType }, body: manifest.bytes });
  if (put.status !== 201) throw new Error(what('PUT', url, put));
}

// ---------------------------------------------------------------------------------------------------------------
// Content.

interface SmallImage {
  config: Blob;
  layers: Blob[];
  manifest: Blob;
}

/** An image of a config and two small gzip'd tar layers, with Docker schema 2 or OCI media types. */
function smallImage(kind: 'docker' | 'oci'): SmallImage {
  const docker = kind === 'docker';
  const layers = [0, 1].map(() => randomLayer(2, 4096, docker ? MediaType.dockerLayerGzip : MediaType.ociLayerGzip).blob);
  const config = blobOf(docker ? MediaType.dockerConfig : MediaType.ociConfig, Buffer.from(JSON.stringify({
    architecture: 'amd64', os: 'linux', config: { Labels: { nonce: randomBytes(8).toString('hex') } },
    rootfs: { type: 'layers', diff_ids: [] },
  })));
  const mediaType = docker ? MediaType.dockerManifest : MediaType.ociManifest;
  // Indented on purpose: a server that re-serialised the JSON would change bytes and digest.
  const manifest = blobOf(mediaType, Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType, config: descriptor(config), layers: layers.map((l) => descriptor(l)),
  }, null, 3)));
  return { config, layers, manifest };
}

// ---------------------------------------------------------------------------------------------------------------

test(`a registry:2 tree built by hand is served unchanged by ${targetName()}`, async (t) => {
  const root = await tempDir('wharf-compat-handmade-');

  // team/app: tag v1 and latest name a Docker schema 2 image; latest used to name an OCI image of the same blobs.
  const app = smallImage('docker');
  const older = blobOf(MediaType.ociManifest, Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: MediaType.ociManifest,
    config: descriptor({ ...app.config, mediaType: MediaType.ociConfig }),
    layers: app.layers.map((l) => descriptor({ ...l, mediaType: MediaType.ociLayerGzip })),
  }, null, 1)));
  // platform/base/multi: an OCI index over two single-platform images.
  const multi = generateMultiArch();
  const children = multi.images;
  // In blobs/ but linked into no repository.
  const orphan = blobOf('application/octet-stream', randomBytes(777));

  const repos: RepoContent[] = [
    {
      name: 'team/app',
      blobs: [app.config, ...app.layers],
      manifests: [app.manifest, older],
      tags: { v1: { current: app.manifest.digest }, latest: { current: app.manifest.digest, previous: [older.digest] } },
    },
    {
      name: 'platform/base/multi',
      blobs: children.flatMap((img) => img.blobs),
      manifests: [multi.index, ...children.map((img) => img.manifest)],
      tags: { v2: { current: multi.index.digest } },
    },
  ];
  await writeTree(root, registry2Files(repos, [orphan]));
  const before = await readTree(root);

  // WHARF_E2E_TARGET=registry2 runs these checks against the real registry:2 instead: that is how they were
  // validated, and how to tell "Wharf differs from registry:2" from "the test is wrong".
  const server = targetName();
  const running = server === 'registry2' ? await registry2On(root) : await wharfOn(root);
  const base = running.url;

  await assertServesManifest(t, base, 'team/app', 'v1', app.manifest);
  await assertServesManifest(t, base, 'team/app', 'latest', app.manifest);
  await assertServesManifest(t, base, 'team/app', app.manifest.digest, app.manifest);
  await assertServesManifest(t, base, 'team/app', older.digest, older);
  for (const blob of [app.config, ...app.layers]) await assertServesBlob(t, base, 'team/app', blob);

  await assertServesManifest(t, base, 'platform/base/multi', 'v2', multi.index);
  await assertServesManifest(t, base, 'platform/base/multi', multi.index.digest, multi.index);
  for (const img of children) {
    await assertServesManifest(t, base, 'platform/base/multi', img.manifest.digest, img.manifest);
    for (const blob of img.blobs) await assertServesBlob(t, base, 'platform/base/multi', blob);
  }

  await assertTags(t, base, 'team/app', ['latest', 'v1'], server === 'wharf');
  await assertTags(t, base, 'platform/base/multi', ['v2'], server === 'wharf');
  await assertJson(t, `${base}/v2/_catalog`, { repositories: ['platform/base/multi', 'team/app'] });

  // registry:2's rule: a repository serves only what is linked into it, whatever blobs/ holds.
  await assertNotFound(t, `${base}/v2/team/app/blobs/${orphan.digest}`, 'BLOB_UNKNOWN');
  await assertNotFound(t, `${base}/v2/team/app/blobs/${children[0]!.layers[0]!.blob.digest}`, 'BLOB_UNKNOWN');
  await assertNotFound(t, `${base}/v2/team/app/manifests/${multi.index.digest}`, 'MANIFEST_UNKNOWN');
  await assertNotFound(t, `${base}/v2/platform/base/multi/manifests/v1`, 'MANIFEST_UNKNOWN');
  // Not asserted: GET /v2/team/app/blobs/<manifest digest>. registry:2 answers 404 (a manifest has no _layers
  // link), Wharf deliberately serves manifests through the blobs endpoint too (see ./blobs.ts).

  await running.stop();
  // Serving must not have changed the tree.
  t.is(treeDiff(await readTree(root), before), '', `${server} changed the registry:2 tree while only serving reads`);
});

test(`a manifest linked into _layers the registry 2.1.0 way is served by ${targetName()}`, async (t) => {
  // registry 2.1.0 linked manifests into _layers instead of _manifests/revisions, and registry:2 still looks for a
  // manifest in both places (manifestLinkPathFns in distribution's registry/storage/registry.go), so data
  // directories from that time serve their tags to this day.
  const root = await tempDir('wharf-compat-legacy-');
  const legacy = smallImage('docker');
  await writeTree(root, registry2Files([{
    name: 'legacy/app',
    blobs: [legacy.config, ...legacy.layers, legacy.manifest],
    manifests: [],
    tags: { old: { current: legacy.manifest.digest } },
  }]));
  const server = targetName();
  const running = server === 'registry2' ? await registry2On(root) : await wharfOn(root);
  const base = running.url;
  await assertTags(t, base, 'legacy/app', ['old'], server === 'wharf');
  for (const blob of [legacy.config, ...legacy.layers]) await assertServesBlob(t, base, 'legacy/app', blob);
  await assertServesManifest(t, base, 'legacy/app', 'old', legacy.manifest);
  await assertServesManifest(t, base, 'legacy/app', legacy.manifest.digest, legacy.manifest);
  await running.stop();
});

test('what Wharf writes for an HTTP push is registry:2\'s tree, and registry:2 serves it', async (t) => {
  const root = await tempDir('wharf-compat-written-');
  const repo = 'team/pushed';
  const image = smallImage('oci');

  const wharf = await wharfOn(root);
  try {
    await pushMonolithic(wharf.url, repo, image.config);
    await pushChunked(wharf.url, repo, image.layers[0]!);
    await pushMonolithic(wharf.url, repo, image.layers[1]!);
    await pushManifest(wharf.url, repo, 'v1', image.manifest);
    await pushManifest(wharf.url, repo, 'stable', image.manifest);
  } catch (error) {
    (error as Error).message += `\n--- wharf output ---\n${wharf.output().slice(-4000)}`;
    throw error;
  }
  await wharf.stop();

  const expected = registry2Files([{
    name: repo,
    blobs: [image.config, ...image.layers],
    manifests: [image.manifest],
    tags: { v1: { current: image.manifest.digest }, stable: { current: image.manifest.digest } },
  }]);
  t.is(treeDiff(await readTree(root), expected), '', 'the files Wharf wrote differ from registry:2\'s tree');
  t.deepEqual(await entriesBelow(join(root, repoPath(repo), '_uploads')), [],
    'completed uploads left something under _uploads');

  // Now the real registry:2 on the same directory.
  const registry = await registry2On(root);
  const base = registry.url;
  await assertServesManifest(t, base, repo, 'v1', image.manifest);
  await assertServesManifest(t, base, repo, 'stable', image.manifest);
  await assertServesManifest(t, base, repo, image.manifest.digest, image.manifest);
  for (const blob of [image.config, ...image.layers]) await assertServesBlob(t, base, repo, blob);
  await assertTags(t, base, repo, ['stable', 'v1'], false);
  await assertJson(t, `${base}/v2/_catalog`, { repositories: [repo] });
  await registry.stop();
});

test('what registry:2 writes for a skopeo push is served by Wharf', async (t) => {
  await requireRegistry2();
  await requireSkopeo();
  const work = await tempDir('wharf-compat-skopeo-');
  const root = join(work, 'data');
  const source = join(work, 'source');
  const image = generateImage({ firstLayerBytes: 256 * 1024 });
  const multi = generateMultiArch();
  await writeOciLayout(source, [{ tag: 'single', target: image.manifest }, { tag: 'multi', target: multi.index }],
    [...allBlobs(image), ...allBlobs(multi)]);
  const skopeo = (...args: string[]) => runOk('skopeo', ['--insecure-policy', ...args], { timeoutMs: 60_000 });

  const registry = await registry2On(root);
  await skopeo('copy', '--dest-tls-verify=false', `oci:${source}:single`, `docker://${registry.host}/compat/app:v1`);
  await skopeo('copy', '--all', '--dest-tls-verify=false', `oci:${source}:multi`, `docker://${registry.host}/compat/multi:v1`);
  await registry.stop();

  // The model the hand-made tree of the first test is built from is what registry:2 really writes.
  const written = registry2Files([
    { name: 'compat/app', blobs: image.blobs, manifests: [image.manifest], tags: { v1: { current: image.manifest.digest } } },
    {
      name: 'compat/multi',
      blobs: multi.images.flatMap((img) => img.blobs),
      manifests: [multi.index, ...multi.images.map((img) => img.manifest)],
      tags: { v1: { current: multi.index.digest } },
    },
  ]);
  t.is(treeDiff(await readTree(root), written), '', 'registry:2 wrote a tree other than the modelled one');

  const wharf = await wharfOn(root);
  const pulledSingle = join(work, 'pulled-single');
  const pulledMulti = join(work, 'pulled-multi');
  try {
    await skopeo('copy', '--src-tls-verify=false', `docker://${wharf.host}/compat/app:v1`, `oci:${pulledSingle}:v1`);
    await skopeo('copy', '--all', '--src-tls-verify=false', `docker://${wharf.host}/compat/multi:v1`, `oci:${pulledMulti}:v1`);
  } catch (error) {
    (error as Error).message += `\n--- wharf output ---\n${wharf.output().slice(-4000)}`;
    throw error;
  }
  t.is((await layoutRef(pulledSingle, 'v1')).digest, image.manifest.digest, 'pulled single-arch manifest digest');
  await t.notThrowsAsync(assertLayoutHasBlobs(pulledSingle, allBlobs(image)));
  t.is((await layoutRef(pulledMulti, 'v1')).digest, multi.index.digest, 'pulled index digest');
  await t.notThrowsAsync(assertLayoutHasBlobs(pulledMulti, allBlobs(multi)));

  await assertServesManifest(t, wharf.url, 'compat/app', 'v1', image.manifest);
  await assertServesManifest(t, wharf.url, 'compat/app', image.manifest.digest, image.manifest);
  for (const blob of image.blobs) await assertServesBlob(t, wharf.url, 'compat/app', blob);
  await assertServesManifest(t, wharf.url, 'compat/multi', 'v1', multi.index);
  await assertJson(t, `${wharf.url}/v2/_catalog`, { repositories: ['compat/app', 'compat/multi'] });
  await assertTags(t, wharf.url, 'compat/multi', ['v1'], true);
});
