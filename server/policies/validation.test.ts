import test from 'ava';
import { randomBytes } from 'node:crypto';
import { createDriver } from '../../storage-drivers/index.js';
import { parseConfig } from '../config/index.js';
import { markRepository } from '../gc/mark.js';
import { errorResponse } from '../http/errors.js';
import { RegistryError } from '../registry/errors.js';
import { MediaType, parseManifest } from '../registry/manifest-format.js';
import { digestOf, parseDigest, parseReference } from '../registry/reference.js';
import { LocalRegistry } from '../registry/registry.js';
import { scanRepository } from '../registry/scan.js';
import { Policies } from './rules.js';
import { platformListed, urlProblem, validateManifest } from './validation.js';

const OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';
const OCI_FOREIGN = 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip';
const DOCKER_FOREIGN = 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip';

function policies(validation: string): Policies {
  return new Policies(parseConfig(`version: 0.1\nstorage:\n  inmemory:\n${validation}`).config);
}

const allowExample = `validation:
  manifests:
    urls:
      allow: ['^https?://([^/]+\\.)*example\\.com/']
      deny: ['^https?://internal\\.example\\.com/']
`;

function desc(mediaType: string, urls?: string[]) {
  const data = randomBytes(64);
  return { mediaType, digest: digestOf(data), size: data.length, ...(urls ? { urls } : {}) };
}

function image(layers: ReturnType<typeof desc>[], mediaType: string = MediaType.OCI_MANIFEST) {
  const config = desc(mediaType === MediaType.OCI_MANIFEST ? 'application/vnd.oci.image.config.v1+json' : 'application/vnd.docker.container.image.v1+json');
  return parseManifest(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType, config, layers })), mediaType);
}

function refusal(t: any, fn: () => unknown, code: string): RegistryError {
  const err = t.throws(fn, { instanceOf: RegistryError }) as RegistryError;
  t.is(err.code, code);
  return err;
}

test('layer URLs: absolute http(s) without a fragment, matching allow and not deny', (t) => {
  const urls = policies(allowExample).rules.manifests.urls;
  t.is(urlProblem('https://cdn.example.com/layer.tar', urls), undefined);
  t.is(urlProblem('http://example.com/x', urls), undefined);
  t.regex(urlProblem('https://internal.example.com/x', urls)!, /denied by .*deny expression/);
  t.regex(urlProblem('https://example.org/x', urls)!, /matches no validation\.manifests\.urls\.allow/);
  t.regex(urlProblem('ftp://cdn.example.com/x', urls)!, /scheme ftp/);
  t.regex(urlProblem('https://cdn.example.com/x#frag', urls)!, /fragment/);
  t.regex(urlProblem('/relative/path', urls)!, /not an absolute URL/);
  // registry:2: with no allow list nothing is accepted, whatever deny says.
  t.regex(urlProblem('https://cdn.example.com/x', policies('').rules.manifests.urls)!, /allow is empty/);
  // validation.disabled: no lists, but the syntax still counts.
  const disabled = policies('validation:\n  disabled: true\n').rules.manifests.urls;
  t.is(disabled, undefined);
  t.is(urlProblem('https://anything.example.net/x', disabled), undefined);
  t.regex(urlProblem('file:///etc/passwd', disabled)!, /scheme file/);
});

test('a foreign layer with allowed URLs need not exist; a regular layer with URLs must, and its URLs are checked', (t) => {
  const rules = policies(allowExample).rules.manifests;
  const foreign = desc(OCI_FOREIGN, ['https://cdn.example.com/f.tar.gz']);
  const regular = desc(OCI_LAYER, ['https://cdn.example.com/r.tar.gz']);
  const parsed = image([foreign, regular]);
  const required = validateManifest(parsed, rules);
  t.deepEqual(required.blobs.map((b) => b.value), [parsed.descriptors[0]!.digest, regular.digest]);

  // A non-distributable layer without URLs must have been pushed (registry:2).
  const noUrls = desc(OCI_FOREIGN);
  t.true(validateManifest(image([noUrls]), rules).blobs.some((b) => b.value === noUrls.digest));

  const err = refusal(t, () => validateManifest(image([desc(OCI_LAYER, ['https://example.org/x'])]), rules), 'MANIFEST_INVALID');
  t.regex(err.message, /layers\[0\]: URL "https:\/\/example\.org\/x" is not allowed/);
  t.like(err.detail as object, { url: 'https://example.org/x', descriptor: 'layers[0]' });
  t.is(errorResponse(err).status, 400);
  const denied = refusal(t, () => validateManifest(image([desc(OCI_FOREIGN, ['https://cdn.example.com/a', 'https://internal.example.com/b'])]), rules), 'MANIFEST_INVALID');
  t.like(denied.detail as object, { url: 'https://internal.example.com/b' });
});

test('Docker schema 2: a foreign layer must carry URLs, which are checked like OCI ones', (t) => {
  const rules = policies(allowExample).rules.manifests;
  const ok = desc(DOCKER_FOREIGN, ['https://go.example.com/windows.tar.gz']);
  const parsed = image([ok], MediaType.DOCKER_MANIFEST);
  t.false(validateManifest(parsed, rules).blobs.some((b) => b.value === ok.digest));
  const err = refusal(t, () => validateManifest(image([desc(DOCKER_FOREIGN)], MediaType.DOCKER_MANIFEST), rules), 'MANIFEST_INVALID');
  t.regex(err.message, /foreign layer .* must carry urls/);
  refusal(t, () => validateManifest(image([desc(DOCKER_FOREIGN, ['https://elsewhere.test/x'])], MediaType.DOCKER_MANIFEST), rules), 'MANIFEST_INVALID');
});

function index(children: { platform?: unknown }[], mediaType: string = MediaType.OCI_INDEX) {
  const manifests = children.map((c) => ({ ...desc(mediaType === MediaType.OCI_INDEX ? MediaType.OCI_MANIFEST : MediaType.DOCKER_MANIFEST), ...c }));
  return parseManifest(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType, manifests })), mediaType);
}

test('indexes: all requires every child, none no child, list the children of listed platforms', (t) => {
  const parsed = index([
    { platform: { os: 'linux', architecture: 'amd64' } },
    { platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
    { platform: { os: 'linux', architecture: 'arm', variant: 'v7' } },
    {},
  ]);
  const digests = parsed.children.map((c) => c.digest);
  t.deepEqual(validateManifest(parsed, policies('').rules.manifests).manifests.map((d) => d.value), digests);
  t.deepEqual(validateManifest(parsed, undefined).manifests.map((d) => d.value), digests);
  t.deepEqual(validateManifest(parsed, policies('validation:\n  manifests:\n    indexes:\n      platforms: none\n').rules.manifests).manifests, []);
  const list = policies(`validation:
  manifests:
    indexes:
      platforms: list
      platformlist: [{os: linux, architecture: amd64}, {os: linux, architecture: arm, variant: v6}, {os: linux, architecture: arm64}]
`).rules.manifests;
  // amd64 (exact), arm64 (no variant in the entry: any variant); arm v7 is not arm v6; no platform: not listed.
  t.deepEqual(validateManifest(parsed, list).manifests.map((d) => d.value), [digests[0], digests[1]]);
  const docker = index([{ platform: { os: 'linux', architecture: 'amd64' } }, { platform: { os: 'windows', architecture: 'amd64' } }], MediaType.DOCKER_MANIFEST_LIST);
  t.deepEqual(validateManifest(docker, list).manifests.map((d) => d.value), [docker.children[0]!.digest]);
  t.false(platformListed(undefined, [{ os: 'linux', architecture: 'amd64' }]));
  t.false(platformListed('linux/amd64', [{ os: 'linux', architecture: 'amd64' }]));
});

// ---- through the registry (in-memory storage) ----

async function pushBlob(registry: LocalRegistry, name: string, data: Buffer): Promise<string> {
  const digest = parseDigest(digestOf(data));
  const { id } = await registry.uploads.start(name);
  await registry.uploads.complete(name, id, digest, (async function* () { yield data; })());
  return digest.value;
}

async function pushImage(registry: LocalRegistry, name: string) {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', n: randomBytes(4).toString('hex') }));
  const layer = randomBytes(500);
  const body = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: MediaType.OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: await pushBlob(registry, name, config), size: config.length },
    layers: [{ mediaType: OCI_LAYER, digest: await pushBlob(registry, name, layer), size: layer.length }],
  }));
  const { digest } = await registry.manifests.put(name, parseReference(digestOf(body)), body, MediaType.OCI_MANIFEST);
  return { digest, size: body.length, layer: digestOf(layer) };
}

function sparseIndex(present: { digest: string; size: number }) {
  const absent = digestOf(randomBytes(32));
  const body = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: MediaType.OCI_INDEX,
    manifests: [
      { mediaType: MediaType.OCI_MANIFEST, digest: present.digest, size: present.size, platform: { os: 'linux', architecture: 'amd64' } },
      { mediaType: MediaType.OCI_MANIFEST, digest: absent, size: 1234, platform: { os: 'linux', architecture: 'arm64' } },
    ],
  }));
  return { body, digest: digestOf(body), absent };
}

test('a sparse index is refused under all, accepted under none and list, and the rules in force decide each push', async (t) => {
  const p = policies('');
  const driver = createDriver({ driver: 'inmemory' });
  const registry = new LocalRegistry(driver, { policies: p });
  const present = await pushImage(registry, 'multi/app');
  const sparse = sparseIndex(present);
  const err = await t.throwsAsync(registry.manifests.put('multi/app', parseReference('v1'), sparse.body, MediaType.OCI_INDEX), { instanceOf: RegistryError });
  t.is(err!.code, 'MANIFEST_BLOB_UNKNOWN');
  t.deepEqual((err as RegistryError).detail, { missing: [sparse.absent] });

  // SIGHUP: a reload changes what the next push gets.
  p.reload(parseConfig('version: 0.1\nstorage:\n  inmemory:\nvalidation:\n  manifests:\n    indexes:\n      platforms: list\n      platformlist: [{os: linux, architecture: amd64}]\n').config);
  await registry.manifests.put('multi/app', parseReference('v1'), sparse.body, MediaType.OCI_INDEX);
  // Under list, the listed platform's child must still be there.
  const other = sparseIndex({ digest: digestOf(randomBytes(8)), size: 10 });
  const listed = await t.throwsAsync(registry.manifests.put('multi/app', parseReference('v2'), other.body, MediaType.OCI_INDEX), { instanceOf: RegistryError });
  t.is(listed!.code, 'MANIFEST_BLOB_UNKNOWN');
  p.reload(parseConfig('version: 0.1\nstorage:\n  inmemory:\nvalidation:\n  manifests:\n    indexes:\n      platforms: none\n').config);
  await registry.manifests.put('multi/app', parseReference('v2'), other.body, MediaType.OCI_INDEX);

  // Pull by tag and digest: the bytes as pushed.
  t.deepEqual((await registry.manifests.get('multi/app', parseReference('v1'))).content, sparse.body);
  t.deepEqual((await registry.manifests.get('multi/app', parseReference(sparse.digest))).content, sparse.body);
  const missing = await t.throwsAsync(registry.manifests.get('multi/app', parseReference(sparse.absent)), { instanceOf: RegistryError });
  t.is(missing!.code, 'MANIFEST_UNKNOWN');

  // The garbage collector's mark: the present child and its blobs are live, the absent one is no damage.
  const marked = await markRepository(driver, await scanRepository(driver, 'multi/app'), { deleteUntagged: true, cutoff: Infinity });
  t.true(marked.manifests.has(present.digest));
  t.true(marked.blobs.has(present.layer));
  t.deepEqual(marked.missing, []);

  // DELETE of the sparse index by digest: its tag goes, the present child stays.
  await registry.manifests.delete('multi/app', parseReference(sparse.digest));
  await t.throwsAsync(registry.manifests.get('multi/app', parseReference('v1')), { instanceOf: RegistryError });
  t.truthy(await registry.manifests.get('multi/app', parseReference(present.digest)));
});

test('a URL the rules refuse is refused on push, before anything is stored; validation.disabled lets it through', async (t) => {
  const p = policies(allowExample);
  const driver = createDriver({ driver: 'inmemory' });
  const registry = new LocalRegistry(driver, { policies: p });
  const config = Buffer.from('{"os":"linux","architecture":"amd64"}');
  const configDigest = await pushBlob(registry, 'win/app', config);
  const body = (url: string) => Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: MediaType.OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
    layers: [{ mediaType: OCI_FOREIGN, digest: digestOf(randomBytes(16)), size: 100, urls: [url] }],
  }));
  const refused = body('https://mirror.example.org/base.tar.gz');
  const err = await t.throwsAsync(registry.manifests.put('win/app', parseReference('bad'), refused, MediaType.OCI_MANIFEST), { instanceOf: RegistryError });
  t.is(err!.code, 'MANIFEST_INVALID');
  t.like((err as RegistryError).detail as object, { url: 'https://mirror.example.org/base.tar.gz' });
  t.is(await registry.manifests.resolveTag('win/app', 'bad'), undefined);
  t.false(await registry.manifests.hasRevision('win/app', parseDigest(digestOf(refused))));

  // Allowed: the foreign layer's blob was never pushed and is not needed.
  await registry.manifests.put('win/app', parseReference('good'), body('https://cdn.example.com/base.tar.gz'), MediaType.OCI_MANIFEST);

  p.reload(parseConfig(`version: 0.1\nstorage:\n  inmemory:\n${allowExample.replace('validation:\n', 'validation:\n  disabled: true\n')}`).config);
  await registry.manifests.put('win/app', parseReference('bad'), refused, MediaType.OCI_MANIFEST);
  const ftp = await t.throwsAsync(registry.manifests.put('win/app', parseReference('ftp'), body('ftp://cdn.example.com/base.tar.gz'), MediaType.OCI_MANIFEST), { instanceOf: RegistryError });
  t.is(ftp!.code, 'MANIFEST_INVALID');
});
