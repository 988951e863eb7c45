/**
 * Test content and the push/pull steps the checks share: digests, random blobs, manifests of every media type the
 * suite exercises, and helpers that push them the plainest spec-conforming way (POST then PUT).
 *
 * Content is random per call, so runs never collide with each other or with leftovers of an earlier run.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { RegistryClient, Reply } from './client.js';
import { expectHeader, expectStatus, fail } from './expect.js';

export type Algorithm = 'sha256' | 'sha512';

export const MediaType = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const;

export function digestOf(data: Uint8Array | string, algorithm: Algorithm = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(data).digest('hex')}`;
}

/** A digest of content nobody has pushed. */
export function unknownDigest(algorithm: Algorithm = 'sha256'): string {
  return digestOf(randomBytes(32), algorithm);
}

export function randomBlob(size = 1024): Buffer {
  return randomBytes(size);
}

/** A short random lowercase token, valid in repository names and tags. */
export function randomToken(length = 10): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  return Array.from(randomBytes(length), (b) => alphabet[b % alphabet.length]).join('');
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  urls?: string[];
  platform?: { architecture: string; os: string };
}

/** A manifest ready to push: its exact bytes, its media type and the digest of those bytes. */
export interface BuiltManifest {
  body: Buffer;
  mediaType: string;
  digest: string;
  json: Record<string, unknown>;
  descriptor: Descriptor;
}

export function buildManifest(json: Record<string, unknown>, mediaType = json.mediaType as string): BuiltManifest {
  // Indented JSON on purpose: a registry that re-serialises the document would change its bytes and digest.
  const body = Buffer.from(JSON.stringify(json, null, 3));
  const digest = digestOf(body);
  return { body, mediaType, digest, json, descriptor: { mediaType, digest, size: body.length } };
}

/** The empty descriptor of image-spec 1.1: media type application/vnd.oci.empty.v1+json, content `{}`. */
export const EMPTY_JSON = Buffer.from('{}');
export const emptyDescriptor: Descriptor = {
  mediaType: MediaType.ociEmpty,
  digest: digestOf(EMPTY_JSON),
  size: EMPTY_JSON.length,
};

export function ociConfigBlob(): Buffer {
  return Buffer.from(JSON.stringify({
    architecture: 'amd64',
    os: 'linux',
    rootfs: { type: 'layers', diff_ids: [] },
    config: { Labels: { 'conformance.nonce': randomToken() } },
  }));
}

export interface ImageParts {
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  artifactType?: string;
  annotations?: Record<string, string>;
  mediaType?: string;
}

export function imageManifest(parts: ImageParts): BuiltManifest {
  const mediaType = parts.mediaType ?? MediaType.ociManifest;
  return buildManifest({
    schemaVersion: 2,
    mediaType,
    ...(parts.artifactType ? { artifactType: parts.artifactType } : {}),
    config: parts.config,
    layers: parts.layers,
    ...(parts.subject ? { subject: parts.subject } : {}),
    ...(parts.annotations ? { annotations: parts.annotations } : {}),
  }, mediaType);
}

export function indexManifest(
  manifests: Descriptor[],
  extra: { subject?: Descriptor; artifactType?: string; annotations?: Record<string, string>; mediaType?: string } = {},
): BuiltManifest {
  const mediaType = extra.mediaType ?? MediaType.ociIndex;
  return buildManifest({
    schemaVersion: 2,
    mediaType,
    ...(extra.artifactType ? { artifactType: extra.artifactType } : {}),
    manifests,
    ...(extra.subject ? { subject: extra.subject } : {}),
    ...(extra.annotations ? { annotations: extra.annotations } : {}),
  }, mediaType);
}

// ---------------------------------------------------------------------------------------------------------------
// Push steps. They assert only what every later check relies on; the checks of the push area assert the details.

/** Starts an upload session (POST /v2/<name>/blobs/uploads/) and returns the session URL. */
export async function startUpload(client: RegistryClient, repo: string, query?: Record<string, string>): Promise<URL> {
  const res = await client.request('POST', `/v2/${repo}/blobs/uploads/`, { query });
  expectStatus(res, 202);
  return client.resolve(expectHeader(res, 'location'));
}

/** The session URL with `digest=` added, keeping whatever (possibly critical) query parameters it already has. */
export function withDigest(location: URL, digest: string): URL {
  const url = new URL(location);
  url.searchParams.set('digest', digest);
  return url;
}

/** Pushes a blob with POST then PUT (the one upload method every registry must support) and returns its descriptor. */
export async function pushBlob(
  client: RegistryClient,
  repo: string,
  data: Uint8Array,
  options: { algorithm?: Algorithm; mediaType?: string } = {},
): Promise<Descriptor> {
  const digest = digestOf(data, options.algorithm ?? 'sha256');
  const location = await startUpload(client, repo);
  const res = await client.request('PUT', withDigest(location, digest), {
    headers: { 'content-type': 'application/octet-stream' },
    body: data,
  });
  expectStatus(res, 201);
  return { mediaType: options.mediaType ?? 'application/octet-stream', digest, size: data.length };
}

export async function putManifest(client: RegistryClient, repo: string, reference: string, manifest: BuiltManifest,
  contentType = manifest.mediaType): Promise<Reply> {
  return client.request('PUT', `/v2/${repo}/manifests/${reference}`, {
    headers: { 'content-type': contentType },
    body: manifest.body,
  });
}

/** Pushes a manifest and requires 201 Created. */
export async function pushManifest(client: RegistryClient, repo: string, reference: string,
  manifest: BuiltManifest): Promise<Reply> {
  const res = await putManifest(client, repo, reference, manifest);
  if (res.status !== 201) {
    fail(`${res.describe()}: pushing a ${manifest.mediaType} manifest failed: expected 201, got ${res.status} ${res.snippet()}`);
  }
  return res;
}

export interface PushedImage {
  manifest: BuiltManifest;
  config: Descriptor;
  layers: Descriptor[];
  layerData: Buffer[];
}

/** Pushes a small OCI image (one config, `layerCount` random layers) and its manifest under `reference`. */
export async function pushImage(client: RegistryClient, repo: string, reference?: string,
  options: { layerCount?: number; subject?: Descriptor; artifactType?: string;
    annotations?: Record<string, string> } = {}): Promise<PushedImage> {
  const config = await pushBlob(client, repo, ociConfigBlob(), { mediaType: MediaType.ociConfig });
  const layerData: Buffer[] = [];
  const layers: Descriptor[] = [];
  for (let i = 0; i < (options.layerCount ?? 1); i++) {
    const data = randomBlob(512 + i);
    layerData.push(data);
    layers.push(await pushBlob(client, repo, data, { mediaType: MediaType.ociLayer }));
  }
  const manifest = imageManifest({ config, layers, subject: options.subject, artifactType: options.artifactType,
    annotations: options.annotations });
  await pushManifest(client, repo, reference ?? manifest.digest, manifest);
  return { manifest, config, layers, layerData };
}

/**
 * Pushes an artifact in the image-spec 1.1 style: `artifactType` set, the empty config, one layer, optionally a
 * subject and annotations. Pushed by digest.
 */
export async function pushArtifact(client: RegistryClient, repo: string, options: {
  artifactType?: string; subject?: Descriptor; annotations?: Record<string, string>; config?: Descriptor;
} = {}): Promise<BuiltManifest> {
  const config = options.config ?? await pushBlob(client, repo, EMPTY_JSON, { mediaType: MediaType.ociEmpty });
  const payload = await pushBlob(client, repo, randomBlob(64), { mediaType: 'application/vnd.conformance.payload' });
  const manifest = imageManifest({
    artifactType: options.artifactType,
    config: { ...config, mediaType: options.config?.mediaType ?? MediaType.ociEmpty },
    layers: [payload],
    subject: options.subject,
    annotations: options.annotations,
  });
  await pushManifest(client, repo, manifest.digest, manifest);
  return manifest;
}
