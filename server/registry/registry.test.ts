import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { createDriver } from '../../storage-drivers/index.js';
import type { StorageDriver } from '../../storage-drivers/driver.js';
import { errorResponse } from '../http/errors.js';
import { RegistryError } from './errors.js';
import * as layout from './layout.js';
import { EMPTY_JSON_DIGEST, MediaType } from './manifest-format.js';
import { digestOf, parseDigest, parseReference } from './reference.js';
import { LocalRegistry } from './registry.js';

function fresh(): { driver: StorageDriver; registry: LocalRegistry } {
  const driver = createDriver({ driver: 'inmemory' });
  return { driver, registry: new LocalRegistry(driver) };
}

async function* chunks(...parts: Buffer[]): AsyncIterable<Uint8Array> {
  for (const p of parts) yield p;
}

async function pushBlob(registry: LocalRegistry, name: string, data: Buffer): Promise<string> {
  const digest = parseDigest(digestOf(data));
  const { id } = await registry.uploads.start(name);
  await registry.uploads.complete(name, id, digest, chunks(data));
  return digest.value;
}

async function pushImage(registry: LocalRegistry, name: string, tag?: string, extra: Record<string, unknown> = {}) {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', n: randomBytes(4).toString('hex') }));
  const layer = randomBytes(1000);
  const configDigest = await pushBlob(registry, name, config);
  const layerDigest = await pushBlob(registry, name, layer);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layerDigest, size: layer.length }],
    ...extra,
  }));
  const ref = parseReference(tag ?? digestOf(manifest));
  const result = await registry.manifests.put(name, ref, manifest, MediaType.OCI_MANIFEST);
  return { manifest, digest: result.digest, configDigest, layerDigest, result };
}

async function rejects(t: any, p: Promise<unknown>, code: string, status?: number) {
  const err = await t.throwsAsync(p, { instanceOf: RegistryError });
  t.is(err.code, code);
  if (status !== undefined) t.is(errorResponse(err).status, status);
}

test('a chunked upload resumes on another replica and commits under its digest', async (t) => {
  const { driver, registry } = fresh();
  const data = randomBytes(300_000);
  const a = data.subarray(0, 100_000);
  const b = data.subarray(100_000);
  const { id } = await registry.uploads.start('r/one');
  const after = await registry.uploads.append('r/one', id, chunks(a), { range: { start: 0, end: a.length - 1 }, length: a.length });
  t.is(after.offset, a.length);

  // A second process over the same storage has no running hash: it must rebuild it from the stored bytes.
  const replica = new LocalRegistry(driver);
  t.is((await replica.uploads.status('r/one', id)).offset, a.length);
  const digest = parseDigest(digestOf(data));
  const desc = await replica.uploads.complete('r/one', id, digest, chunks(b), { range: { start: a.length, end: data.length - 1 } });
  t.deepEqual(desc, { digest: digest.value, size: data.length });
  t.deepEqual(await registry.blobs.stat('r/one', digest), desc);
  t.deepEqual(await driver.getContent(layout.blobDataPath(digest)), data);
  // The session is gone once committed.
  await rejects(t, registry.uploads.status('r/one', id), 'BLOB_UPLOAD_UNKNOWN', 404);
});

test('an out-of-order chunk is refused with 416 and the current range', async (t) => {
  const { registry } = fresh();
  const { id } = await registry.uploads.start('r');
  await registry.uploads.append('r', id, chunks(Buffer.alloc(10)), { range: { start: 0, end: 9 } });
  const err = await t.throwsAsync(
    registry.uploads.append('r', id, chunks(Buffer.alloc(10)), { range: { start: 20, end: 29 } }),
    { instanceOf: RegistryError },
  );
  t.deepEqual(err!.reason, { kind: 'upload-out-of-order', uuid: id, offset: 10 });
  t.is(errorResponse(err).status, 416);
  t.is(errorResponse(err).headers.Range, '0-9');
  t.is((await registry.uploads.status('r', id)).offset, 10);
});

test('a chunk whose length disagrees with its range is SIZE_INVALID', async (t) => {
  const { registry } = fresh();
  const { id } = await registry.uploads.start('r');
  await rejects(t, registry.uploads.append('r', id, chunks(Buffer.alloc(5)), { range: { start: 0, end: 9 } }), 'SIZE_INVALID', 400);
});

test('a digest mismatch discards the session and leaves no blob visible', async (t) => {
  const { driver, registry } = fresh();
  const data = Buffer.from('the real bytes');
  const wrong = parseDigest(digestOf('other bytes'));
  const { id } = await registry.uploads.start('r');
  await rejects(t, registry.uploads.complete('r', id, wrong, chunks(data)), 'DIGEST_INVALID', 400);
  await rejects(t, registry.blobs.stat('r', wrong), 'BLOB_UNKNOWN', 404);
  t.is(await registry.blobs.statContent(wrong), undefined);
  await rejects(t, registry.uploads.status('r', id), 'BLOB_UPLOAD_UNKNOWN');
  await t.throwsAsync(driver.stat(layout.uploadDir('r', id)));
});

test('sha512 uploads commit under the sha512 digest', async (t) => {
  const { registry } = fresh();
  const data = randomBytes(5000);
  const digest = parseDigest(`sha512:${createHash('sha512').update(data).digest('hex')}`);
  const { id } = await registry.uploads.start('r', 'sha512');
  await registry.uploads.append('r', id, chunks(data));
  const desc = await registry.uploads.complete('r', id, digest);
  t.is(desc.digest, digest.value);
  t.is((await registry.blobs.stat('r', digest)).size, data.length);
});

test('concurrent uploads of the same blob both succeed', async (t) => {
  const { registry } = fresh();
  const data = randomBytes(200_000);
  const results = await Promise.all([pushBlob(registry, 'a', data), pushBlob(registry, 'b', data)]);
  t.is(results[0], results[1]);
  const digest = parseDigest(results[0]!);
  t.is((await registry.blobs.stat('a', digest)).size, data.length);
  t.is((await registry.blobs.stat('b', digest)).size, data.length);
});

test('blobs are only served by repositories that link them; mount links without copying', async (t) => {
  const { registry } = fresh();
  const digest = parseDigest(await pushBlob(registry, 'src', Buffer.from('shared layer')));
  await rejects(t, registry.blobs.stat('dst', digest), 'BLOB_UNKNOWN');
  t.is(await registry.mount('dst', digest, 'elsewhere'), undefined);
  t.truthy(await registry.mount('dst', digest, 'src'));
  t.is((await registry.blobs.stat('dst', digest)).size, 12);
  // Without `from`, the content store is consulted.
  t.truthy(await registry.mount('third', digest));
  const unknown = parseDigest(digestOf('never pushed'));
  t.is(await registry.mount('third', unknown), undefined);
});

test('manifests: exact bytes back, by tag and digest; tags move; delete by tag keeps the revision', async (t) => {
  const { registry } = fresh();
  const first = await pushImage(registry, 'app', 'latest');
  const byTag = await registry.manifests.get('app', parseReference('latest'));
  t.deepEqual(byTag.content, first.manifest);
  t.is(byTag.digest, digestOf(first.manifest));
  t.is(byTag.mediaType, MediaType.OCI_MANIFEST);
  const second = await pushImage(registry, 'app', 'latest');
  t.is((await registry.manifests.get('app', parseReference('latest'))).digest, second.digest);
  t.deepEqual((await registry.manifests.get('app', parseReference(first.digest))).content, first.manifest);

  await registry.manifests.delete('app', parseReference('latest'));
  await rejects(t, registry.manifests.get('app', parseReference('latest')), 'MANIFEST_UNKNOWN', 404);
  t.truthy(await registry.manifests.get('app', parseReference(second.digest)));
});

test('delete by digest removes the revision and every tag pointing at it', async (t) => {
  const { registry } = fresh();
  const img = await pushImage(registry, 'app', 'v1');
  await registry.manifests.tag('app', 'v1-alias', parseDigest(img.digest));
  const other = await pushImage(registry, 'app', 'v2');
  await registry.manifests.delete('app', parseReference(img.digest));
  await rejects(t, registry.manifests.get('app', parseReference(img.digest)), 'MANIFEST_UNKNOWN');
  await rejects(t, registry.manifests.get('app', parseReference('v1')), 'MANIFEST_UNKNOWN');
  await rejects(t, registry.manifests.get('app', parseReference('v1-alias')), 'MANIFEST_UNKNOWN');
  t.is((await registry.manifests.get('app', parseReference('v2'))).digest, other.digest);
  t.deepEqual((await registry.manifests.listTags('app')).tags, ['v2']);
  await rejects(t, registry.manifests.delete('app', parseReference(img.digest)), 'MANIFEST_UNKNOWN', 404);
});

test('manifest validation: missing blobs, bad JSON, media type mismatch, digest mismatch', async (t) => {
  const { registry } = fresh();
  const missing = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: digestOf('nope'), size: 4 },
    layers: [],
  }));
  await rejects(t, registry.manifests.put('r', parseReference('t'), missing, MediaType.OCI_MANIFEST), 'MANIFEST_BLOB_UNKNOWN', 400);
  await rejects(t, registry.manifests.put('r', parseReference('t'), Buffer.from('{not json'), MediaType.OCI_MANIFEST), 'MANIFEST_INVALID');
  await rejects(t, registry.manifests.put('r', parseReference('t'), missing, MediaType.DOCKER_MANIFEST), 'MANIFEST_INVALID');
  await rejects(t, registry.manifests.put('r', parseReference(digestOf('x')), missing, MediaType.OCI_MANIFEST), 'DIGEST_INVALID');
  const schema1 = Buffer.from(JSON.stringify({ schemaVersion: 1, name: 'r', tag: 't', fsLayers: [] }));
  await rejects(t, registry.manifests.put('r', parseReference('t'), schema1, MediaType.DOCKER_SCHEMA1), 'MANIFEST_INVALID');
  // Nothing was stored by any of the rejected pushes.
  await rejects(t, registry.manifests.listTags('r'), 'NAME_UNKNOWN', 404);
});

test('non-distributable layers need not be present', async (t) => {
  const { registry } = fresh();
  const config = Buffer.from('{}');
  const configDigest = await pushBlob(registry, 'win', config);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.DOCKER_MANIFEST,
    config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: configDigest, size: 2 },
    layers: [{
      mediaType: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
      digest: digestOf('foreign'),
      size: 7,
      urls: ['https://example.invalid/layer'],
    }],
  }));
  const result = await registry.manifests.put('win', parseReference('ltsc'), manifest, MediaType.DOCKER_MANIFEST);
  t.is(result.digest, digestOf(manifest));
});

test('an index needs its children in the repository', async (t) => {
  const { registry } = fresh();
  const child = await pushImage(registry, 'multi');
  const index = (digests: string[]) => Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.OCI_INDEX,
    manifests: digests.map((d) => ({ mediaType: MediaType.OCI_MANIFEST, digest: d, size: 100, platform: { os: 'linux', architecture: 'amd64' } })),
  }));
  await rejects(t, registry.manifests.put('multi', parseReference('all'), index([digestOf('absent')]), MediaType.OCI_INDEX), 'MANIFEST_BLOB_UNKNOWN');
  const ok = await registry.manifests.put('multi', parseReference('all'), index([child.digest]), MediaType.OCI_INDEX);
  t.is((await registry.manifests.get('multi', parseReference('all'))).digest, ok.digest);
});

test('referrers: subject recorded, artifactType and annotations described, filter, deletion', async (t) => {
  const { registry } = fresh();
  const subject = await pushImage(registry, 'art', 'v1');
  // An artifact with the empty config, which the registry supplies itself when it was not pushed.
  const sbom = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.OCI_MANIFEST,
    artifactType: 'application/vnd.example.sbom',
    config: { mediaType: MediaType.OCI_EMPTY, digest: EMPTY_JSON_DIGEST, size: 2 },
    layers: [],
    subject: { mediaType: MediaType.OCI_MANIFEST, digest: subject.digest, size: subject.manifest.length },
    annotations: { 'org.example.kind': 'sbom' },
  }));
  const put = await registry.manifests.put('art', parseReference(digestOf(sbom)), sbom, MediaType.OCI_MANIFEST);
  t.is(put.subject, subject.digest);
  const sig = await pushImage(registry, 'art', undefined, {
    subject: { mediaType: MediaType.OCI_MANIFEST, digest: subject.digest, size: subject.manifest.length },
  });

  const all = await registry.manifests.referrers('art', parseDigest(subject.digest));
  t.is(all.length, 2);
  const sbomDesc = all.find((d) => d.digest === digestOf(sbom))!;
  t.deepEqual(sbomDesc, {
    mediaType: MediaType.OCI_MANIFEST,
    digest: digestOf(sbom),
    size: sbom.length,
    artifactType: 'application/vnd.example.sbom',
    annotations: { 'org.example.kind': 'sbom' },
  });
  // Without artifactType, the config's media type stands in.
  t.is(all.find((d) => d.digest === sig.digest)!.artifactType, 'application/vnd.oci.image.config.v1+json');

  const filtered = await registry.manifests.referrers('art', parseDigest(subject.digest), 'application/vnd.example.sbom');
  t.deepEqual(filtered.map((d) => d.digest), [digestOf(sbom)]);
  t.deepEqual(await registry.manifests.referrers('art', parseDigest(digestOf('nothing refers here'))), []);

  await registry.manifests.delete('art', parseReference(digestOf(sbom)));
  t.deepEqual((await registry.manifests.referrers('art', parseDigest(subject.digest))).map((d) => d.digest), [sig.digest]);
});

test('tags list pages in ASCII order with n and last', async (t) => {
  const { registry } = fresh();
  const img = await pushImage(registry, 'paged', 'B');
  for (const tag of ['a', 'c', '1', 'b', 'A']) await registry.manifests.tag('paged', tag, parseDigest(img.digest));
  t.deepEqual((await registry.manifests.listTags('paged')).tags, ['1', 'A', 'B', 'a', 'b', 'c']);
  t.deepEqual(await registry.manifests.listTags('paged', 2), { tags: ['1', 'A'], next: 'A' });
  t.deepEqual(await registry.manifests.listTags('paged', 2, 'A'), { tags: ['B', 'a'], next: 'a' });
  t.deepEqual(await registry.manifests.listTags('paged', undefined, 'b'), { tags: ['c'] });
  t.deepEqual(await registry.manifests.listTags('paged', 10, 'c'), { tags: [] });
});

test('catalog lists repositories with blobs or manifests, in path order, paged', async (t) => {
  const { registry } = fresh();
  // `a/1x` sorts before a's own `_layers` folder in a directory listing; the catalog still lists `a` first.
  for (const name of ['b', 'a/b', 'a-c', 'a', 'a/1x', 'z/y/x']) await pushImage(registry, name, 'v1');
  await pushBlob(registry, 'blobs-only', Buffer.from('x'));
  await registry.uploads.start('uploads-only');
  const all = ['a', 'a/1x', 'a/b', 'a-c', 'b', 'blobs-only', 'z/y/x'];
  t.deepEqual((await registry.catalog()).repositories, all);
  t.deepEqual(await registry.catalog(2), { repositories: ['a', 'a/1x'], next: 'a/1x' });
  t.deepEqual(await registry.catalog(2, 'a/1x'), { repositories: ['a/b', 'a-c'], next: 'a-c' });
  t.deepEqual(await registry.catalog(2, 'a-c'), { repositories: ['b', 'blobs-only'], next: 'blobs-only' });
  t.deepEqual(await registry.catalog(5, 'blobs-only'), { repositories: ['z/y/x'] });
  t.deepEqual(await registry.catalog(1, 'z/y/x'), { repositories: [] });
  // `last` need not be a repository (a namespace, say); the page starts after it.
  t.deepEqual(await registry.catalog(10, 'z'), { repositories: ['z/y/x'] });
  // Walking page by page gives every name once.
  const paged: string[] = [];
  let last: string | undefined;
  for (;;) {
    const page = await registry.catalog(3, last);
    paged.push(...page.repositories);
    if (!page.next) break;
    last = page.next;
  }
  t.deepEqual(paged, all);
  await t.throwsAsync(registry.catalog(1, '../x'), { instanceOf: RegistryError });
});

test('a catalog page reads only as far as it needs', async (t) => {
  const driver = createDriver({ driver: 'inmemory' });
  const registry = new LocalRegistry(driver);
  for (let i = 0; i < 200; i++) await driver.putContent(`${layout.REPOSITORIES_ROOT}/r${String(i).padStart(3, '0')}/_layers/sha256/x/link`, 'x');
  const calls: string[] = [];
  const counting = new LocalRegistry(new Proxy(driver, {
    get(target, prop) {
      const value = Reflect.get(target, prop) as unknown;
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        calls.push(`${String(prop)} ${String(args[0])}`);
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  }));
  t.deepEqual(await counting.catalog(2, 'r100'), { repositories: ['r101', 'r102'], next: 'r102' });
  // The top listing, then `last` (repositories nested in it come after it) and one listing per repository up to
  // the one that shows more follow.
  t.deepEqual(calls, [
    `list ${layout.REPOSITORIES_ROOT}`,
    ...['r100', 'r101', 'r102', 'r103'].map((r) => `list ${layout.REPOSITORIES_ROOT}/${r}`),
  ]);
  t.is((await registry.catalog(1000)).repositories.length, 200);
});

test('concurrent PUTs to one tag leave one consistent tag', async (t) => {
  const { registry } = fresh();
  const images = await Promise.all([1, 2, 3, 4].map(() => pushImage(registry, 'race')));
  await Promise.all(images.map((img) => registry.manifests.put('race', parseReference('hot'), img.manifest, MediaType.OCI_MANIFEST)));
  const current = await registry.manifests.get('race', parseReference('hot'));
  t.true(images.some((img) => img.digest === current.digest));
  t.deepEqual(current.content, images.find((img) => img.digest === current.digest)!.manifest);
});

test('the blob-descriptor cache answers from memory and forgets a blob whose bytes are gone', async (t) => {
  const driver = createDriver({ driver: 'inmemory' });
  const registry = new LocalRegistry(driver, { descriptorCacheSize: 2 });
  const data = Buffer.from('cached blob');
  const digest = parseDigest(await pushBlob(registry, 'c', data));
  t.is((await registry.blobs.statContent(digest))?.size, data.length);
  // The bytes vanish behind the registry's back (as when a garbage collector in another process removes them).
  await driver.delete(layout.blobDir(digest));
  t.is((await registry.blobs.statContent(digest))?.size, data.length, 'answered from the cache');
  await rejects(t, registry.blobs.open(digest, 0, data.length), 'BLOB_UNKNOWN');
  t.is(await registry.blobs.statContent(digest), undefined, 'forgotten after the failed read');
});

test('a layer digest is not a manifest, even though legacy data links manifests under _layers', async (t) => {
  const { registry } = fresh();
  const layer = await pushBlob(registry, 'legacy', Buffer.from('not json at all'));
  await rejects(t, registry.manifests.get('legacy', parseReference(layer)), 'MANIFEST_UNKNOWN', 404);
});
