/**
 * Real-client end-to-end tests with skopeo (containers/image): push generated images from an OCI layout, pull them
 * back out, and check that every byte survived. One registry is shared by the tests of this file; each test uses
 * its own repositories, so they can run concurrently.
 */
import test from 'ava';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { RunningWharf } from '../../testing/harness.js';
import {
  MediaType, allBlobs, generateImage, generateMultiArch, writeOciLayout, type Image, type MultiArchImage,
} from '../../testing/e2e/image.js';
import { assertLayoutHasBlobs, dirBlob, layoutBlob, layoutRef } from '../../testing/e2e/layout.js';
import { sha256 } from '../../testing/helpers.js';
import { run, runOk, startRegistry, tempDir, type RunResult } from '../../testing/e2e/target.js';

let registry: RunningWharf;
let work: { path: string; remove: () => Promise<void> };
let single: Image;
let multi: MultiArchImage;
/** The generated OCI layout: ref `single` is a one-platform image, ref `multi` an amd64+arm64 index. */
let source: string;

test.before(async () => {
  registry = await startRegistry();
  work = await tempDir('wharf-e2e-skopeo-');
  single = generateImage();
  multi = generateMultiArch();
  source = join(work.path, 'source');
  await writeOciLayout(
    source,
    [{ tag: 'single', target: single.manifest }, { tag: 'multi', target: multi.index }],
    [...allBlobs(single), ...allBlobs(multi)],
  );
});

test.after.always(async () => {
  await registry?.stop();
  await work?.remove();
});

/** Runs skopeo (signature policy off, so no system policy file is needed); on failure, adds the server's log. */
async function skopeo(...args: string[]): Promise<RunResult> {
  try {
    return await runOk('skopeo', ['--insecure-policy', ...args]);
  } catch (error) {
    (error as Error).message += `\n--- registry output (tail) ---\n${registry.output().slice(-4000)}`;
    throw error;
  }
}

const ref = (repoAndTag: string) => `docker://${registry.host}/${repoAndTag}`;
const out = (name: string) => join(work.path, name);

/** Pushes ref `tag` of the generated layout to `repoAndTag`. */
async function push(tag: 'single' | 'multi', repoAndTag: string, ...flags: string[]): Promise<RunResult> {
  return skopeo('copy', '--dest-tls-verify=false', ...flags, `oci:${source}:${tag}`, ref(repoAndTag));
}

/** GETs a manifest straight from the registry, to compare the bytes it serves with what the client reported. */
async function getManifest(repo: string, reference: string): Promise<{ status: number; digest: string | null; contentType: string | null; bytes: Buffer }> {
  const res = await fetch(`${registry.url}/v2/${repo}/manifests/${reference}`, {
    headers: { Accept: [MediaType.ociManifest, MediaType.ociIndex, MediaType.dockerManifest, MediaType.dockerManifestList].join(', ') },
  });
  return {
    status: res.status,
    digest: res.headers.get('docker-content-digest'),
    contentType: res.headers.get('content-type'),
    bytes: Buffer.from(await res.arrayBuffer()),
  };
}

for (const [title, flags] of [['as is', []], ['with --format oci', ['--format', 'oci']]] as const) {
  test(`single-arch OCI image pushed ${title} comes back byte-identical`, async (t) => {
    const repo = flags.length ? 'e2e/app-oci' : 'e2e/app';
    await push('single', `${repo}:1`, ...flags);

    const served = await getManifest(repo, '1');
    t.is(served.status, 200);
    t.is(served.digest, single.manifest.digest);
    t.is(served.contentType, MediaType.ociManifest);
    t.true(served.bytes.equals(single.manifest.bytes), 'registry serves the pushed manifest bytes');

    const dir = out(`pull-${repo.replace('/', '-')}`);
    await skopeo('copy', '--src-tls-verify=false', ref(`${repo}:1`), `oci:${dir}:1`);
    const pulled = await layoutRef(dir, '1');
    t.is(pulled.digest, single.manifest.digest);
    t.is(pulled.mediaType, MediaType.ociManifest);
    t.true((await layoutBlob(dir, pulled.digest)).equals(single.manifest.bytes));
    await t.notThrowsAsync(assertLayoutHasBlobs(dir, single.blobs), 'config and layers are byte-identical');
  });
}

test('single-arch image pushed with --format v2s2 is stored as Docker schema 2 and its blobs come back intact', async (t) => {
  await push('single', 'e2e/app-v2s2:1', '--format', 'v2s2');

  const raw = (await skopeo('inspect', '--raw', '--tls-verify=false', ref('e2e/app-v2s2:1'))).stdout;
  const manifest = JSON.parse(raw);
  t.is(manifest.mediaType, MediaType.dockerManifest);
  t.is(manifest.config.mediaType, MediaType.dockerConfig);
  t.is(manifest.config.digest, single.config.digest, 'conversion keeps the config bytes');
  t.deepEqual(manifest.layers.map((l: any) => l.mediaType), single.layers.map(() => MediaType.dockerLayerGzip));
  t.deepEqual(manifest.layers.map((l: any) => l.digest), single.layers.map((l) => l.blob.digest), 'no recompression');

  const served = await getManifest('e2e/app-v2s2', '1');
  t.is(served.contentType, MediaType.dockerManifest);
  t.is(served.digest, sha256(served.bytes));
  const inspected = JSON.parse((await skopeo('inspect', '--tls-verify=false', ref('e2e/app-v2s2:1'))).stdout);
  t.is(inspected.Digest, served.digest);

  // dir: keeps the manifest exactly as served.
  const dir = out('pull-v2s2-dir');
  await skopeo('copy', '--src-tls-verify=false', ref('e2e/app-v2s2:1'), `dir:${dir}`);
  const dirManifest = await readFile(join(dir, 'manifest.json'));
  t.true(dirManifest.equals(served.bytes), 'dir: manifest is byte-identical to the stored one');
  for (const blob of single.blobs) t.true((await dirBlob(dir, blob.digest)).equals(blob.bytes), `blob ${blob.digest}`);

  // And back to OCI: the manifest and config are converted again (containers/image rewrites the config JSON on
  // that conversion), the layers are not touched.
  const oci = out('pull-v2s2-oci');
  await skopeo('copy', '--src-tls-verify=false', '--format', 'oci', ref('e2e/app-v2s2:1'), `oci:${oci}:1`);
  const converted = await layoutRef(oci, '1');
  t.is(converted.mediaType, MediaType.ociManifest);
  const ociManifest = JSON.parse((await layoutBlob(oci, converted.digest)).toString('utf8'));
  const ociConfig = JSON.parse((await layoutBlob(oci, ociManifest.config.digest)).toString('utf8'));
  t.deepEqual(ociConfig.rootfs.diff_ids, single.layers.map((l) => l.diffId));
  await t.notThrowsAsync(assertLayoutHasBlobs(oci, single.layers.map((l) => l.blob)));
});

test('multi-arch index copied with --all in and out keeps its digest and every child', async (t) => {
  await push('multi', 'e2e/multi:1', '--all');

  const raw = await getManifest('e2e/multi', '1');
  t.is(raw.status, 200);
  t.is(raw.contentType, MediaType.ociIndex);
  t.is(raw.digest, multi.index.digest);
  t.true(raw.bytes.equals(multi.index.bytes));
  for (const image of multi.images) {
    const child = await getManifest('e2e/multi', image.manifest.digest);
    t.is(child.status, 200, `child ${image.platform.architecture} by digest`);
    t.true(child.bytes.equals(image.manifest.bytes));
  }

  const dir = out('pull-multi');
  await skopeo('copy', '--all', '--src-tls-verify=false', ref('e2e/multi:1'), `oci:${dir}:1`);
  const pulled = await layoutRef(dir, '1');
  t.is(pulled.digest, multi.index.digest);
  t.is(pulled.mediaType, MediaType.ociIndex);
  await t.notThrowsAsync(assertLayoutHasBlobs(dir, allBlobs(multi)));

  // Without --all the client resolves the index to one platform and fetches that manifest by digest.
  const arm = multi.images.find((i) => i.platform.architecture === 'arm64')!;
  const armDir = out('pull-multi-arm64');
  await skopeo('--override-arch', 'arm64', '--override-variant', 'v8', 'copy', '--src-tls-verify=false', ref('e2e/multi:1'), `oci:${armDir}:1`);
  t.is((await layoutRef(armDir, '1')).digest, arm.manifest.digest);
  await t.notThrowsAsync(assertLayoutHasBlobs(armDir, [arm.manifest, ...arm.blobs]));
});

test('skopeo inspect reports the pushed manifest, config and layers', async (t) => {
  await push('single', 'e2e/inspect:1');
  const raw = await skopeo('inspect', '--raw', '--tls-verify=false', ref('e2e/inspect:1'));
  t.is(raw.stdout, single.manifest.bytes.toString('utf8'));
  const config = await skopeo('inspect', '--config', '--raw', '--tls-verify=false', ref('e2e/inspect:1'));
  t.is(config.stdout, single.config.bytes.toString('utf8'));
  const info = JSON.parse((await skopeo('inspect', '--tls-verify=false', ref('e2e/inspect:1'))).stdout);
  t.is(info.Digest, single.manifest.digest);
  t.is(info.Architecture, single.platform.architecture);
  t.is(info.Os, 'linux');
  t.deepEqual(info.Layers, single.layers.map((l) => l.blob.digest));
});

test('skopeo list-tags lists every tag of a repository', async (t) => {
  await push('single', 'e2e/tags:1');
  // Registry-to-registry copies within one repository: only a manifest PUT under a new tag each.
  await skopeo('copy', '--src-tls-verify=false', '--dest-tls-verify=false', ref('e2e/tags:1'), ref('e2e/tags:2'));
  await skopeo('copy', '--src-tls-verify=false', '--dest-tls-verify=false', ref('e2e/tags:1'), ref('e2e/tags:latest'));
  const listed = JSON.parse((await skopeo('list-tags', '--tls-verify=false', `docker://${registry.host}/e2e/tags`)).stdout);
  t.is(listed.Repository, `${registry.host}/e2e/tags`);
  t.deepEqual([...listed.Tags].sort(), ['1', '2', 'latest']);
});

test('copy between two repositories mounts the layers instead of uploading them again', async (t) => {
  // An image of its own: skopeo picks the mount source from its blob-info cache, most recent location first, so
  // layers shared with the concurrently running tests could be mounted from one of their repositories instead.
  const image = generateImage({ firstLayerBytes: 256 * 1024 });
  const layout = out('mount-layout');
  await writeOciLayout(layout, [{ tag: 'mount', target: image.manifest }], allBlobs(image));
  await skopeo('copy', '--dest-tls-verify=false', `oci:${layout}:mount`, ref('e2e/mount-src:1'));
  const copy = await skopeo('--debug', 'copy', '--src-tls-verify=false', '--dest-tls-verify=false', ref('e2e/mount-src:1'), ref('e2e/mount-dst:1'));
  // containers/image logs "Trying to mount <path>" before the POST ?mount=&from= and "... mount OK" when the
  // registry answered 201 Created (rather than starting an upload session as a fallback).
  for (const layer of image.layers) {
    const mountPath = `/v2/e2e/mount-dst/blobs/uploads/?from=e2e%2Fmount-src&mount=${encodeURIComponent(layer.blob.digest)}`;
    t.true(copy.stderr.includes(`Trying to mount ${mountPath}`), `skopeo tried to mount ${layer.blob.digest}`);
  }
  t.is(copy.stderr.match(/\.\.\. mount OK/g)?.length ?? 0, image.layers.length, 'every layer mount answered 201');

  // The mounted blobs are linked into the destination repository (registry:2 storage layout) and served from it.
  for (const layer of image.layers) {
    const hex = layer.blob.digest.slice('sha256:'.length);
    const link = join(registry.rootDirectory, 'docker/registry/v2/repositories/e2e/mount-dst/_layers/sha256', hex, 'link');
    t.is(await readFile(link, 'utf8'), layer.blob.digest);
  }
  const dir = out('pull-mount-dst');
  await skopeo('copy', '--src-tls-verify=false', ref('e2e/mount-dst:1'), `oci:${dir}:1`);
  t.is((await layoutRef(dir, '1')).digest, image.manifest.digest);
  await t.notThrowsAsync(assertLayoutHasBlobs(dir, image.blobs));
});

test('skopeo delete removes the manifest', async (t) => {
  await push('single', 'e2e/del:1');
  t.is((await getManifest('e2e/del', single.manifest.digest)).status, 200);

  await skopeo('delete', '--tls-verify=false', ref('e2e/del:1'));

  t.is((await getManifest('e2e/del', single.manifest.digest)).status, 404, 'manifest by digest is gone');
  t.is((await getManifest('e2e/del', '1')).status, 404, 'the tag that pointed at it is gone');
  const inspect = await run('skopeo', ['--insecure-policy', 'inspect', '--tls-verify=false', ref('e2e/del:1')]);
  t.not(inspect.code, 0);
  t.regex(inspect.stderr, /manifest unknown/i);
});
