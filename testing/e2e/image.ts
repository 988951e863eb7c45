/**
 * Test-image generation for the real-client end-to-end tests. Nothing is downloaded: every image is made here from
 * random bytes, in the three shapes the clients read.
 *
 * - An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/<hex>`), which `skopeo copy oci:<dir>:<tag>`
 *   reads. Single-arch images and a multi-arch image index (linux/amd64 + linux/arm64) can live in the same layout.
 * - A `docker save`-style tarball (`manifest.json`, the config JSON, one uncompressed `layer.tar` per layer), which
 *   `docker load` reads.
 *
 * A layer is a gzip'd tar of a few random files. The config's `rootfs.diff_ids` are the SHA-256 of the UNCOMPRESSED
 * tar, the manifest's layer digests are the SHA-256 of the gzip'd bytes, exactly as real images are built.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { sha256 } from '../helpers.js';

export const MediaType = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const;

/** Content-addressed bytes: what a registry stores as a blob (or a manifest). */
export interface Blob {
  mediaType: string;
  digest: string;
  size: number;
  bytes: Buffer;
}

export function blobOf(mediaType: string, bytes: Buffer): Blob {
  return { mediaType, digest: sha256(bytes), size: bytes.length, bytes };
}

/** The descriptor JSON that points at a blob. */
export function descriptor(blob: Blob, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { mediaType: blob.mediaType, digest: blob.digest, size: blob.size, ...extra };
}

// ---------------------------------------------------------------------------------------------------------------
// A minimal POSIX ustar writer: regular files and directories, which is all an image layer needs here.

export interface TarEntry {
  /** Path inside the archive, relative, `/`-separated; directories may end with `/`. */
  name: string;
  /** File content; omit for a directory. */
  data?: Buffer;
  mode?: number;
}

/** Fixed timestamp, so the same entries always produce the same archive bytes. */
const TAR_MTIME = 1_700_000_000;

/** Writes `value` as zero-padded octal into a numeric header field of `width` bytes (last byte NUL). */
function octal(header: Buffer, offset: number, width: number, value: number): void {
  header.write(value.toString(8).padStart(width - 1, '0') + '\0', offset, width, 'ascii');
}

function tarHeader(entry: TarEntry): Buffer {
  const isDir = entry.data === undefined;
  let name = entry.name;
  if (isDir && !name.endsWith('/')) name += '/';
  // Names over 100 bytes would need the ustar prefix field; the generator never makes such names.
  if (Buffer.byteLength(name) > 100) throw new Error(`tar entry name too long: ${name}`);

  const header = Buffer.alloc(512);
  header.write(name, 0, 100, 'utf8');
  octal(header, 100, 8, entry.mode ?? (isDir ? 0o755 : 0o644));
  octal(header, 108, 8, 0); // uid
  octal(header, 116, 8, 0); // gid
  octal(header, 124, 12, isDir ? 0 : entry.data!.length);
  octal(header, 136, 12, TAR_MTIME);
  header.write(isDir ? '5' : '0', 156, 1, 'ascii'); // typeflag
  header.write('ustar\0', 257, 6, 'ascii'); // magic
  header.write('00', 263, 2, 'ascii'); // version
  header.write('root', 265, 32, 'ascii'); // uname
  header.write('root', 297, 32, 'ascii'); // gname
  // The checksum is the byte sum of the header with the checksum field itself read as eight spaces; it is stored
  // as six octal digits, a NUL and a space.
  header.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii');
  return header;
}

/** Builds a tar archive of `entries`, terminated by the two zero blocks the format requires. */
export function tar(entries: TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const entry of entries) {
    parts.push(tarHeader(entry));
    if (entry.data !== undefined && entry.data.length > 0) {
      parts.push(entry.data);
      const padding = (512 - (entry.data.length % 512)) % 512;
      if (padding) parts.push(Buffer.alloc(padding));
    }
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------------------------------------------
// Layers, configs, manifests.

export interface Layer {
  /** The uncompressed tar; its digest is the config's diff_id and `docker save`'s layer. */
  tar: Buffer;
  diffId: string;
  /** The gzip'd tar, as pushed to a registry. */
  blob: Blob;
}

/**
 * A layer of `fileCount` random files under a directory unique to this layer. `largestFile` bytes is the size of
 * the first file; the others are small, so a layer can be made big enough to exercise a client's streaming without
 * making every layer slow.
 */
export function randomLayer(fileCount = 3, largestFile = 64 * 1024, mediaType: string = MediaType.ociLayerGzip): Layer {
  const dir = `e2e-${randomBytes(6).toString('hex')}`;
  const entries: TarEntry[] = [{ name: dir }];
  for (let i = 0; i < fileCount; i++) {
    const size = i === 0 ? largestFile : 1 + Math.floor(Math.random() * 4096);
    entries.push({ name: `${dir}/file-${i}.bin`, data: randomBytes(size) });
  }
  // One compressible text file, so the gzip'd blob really differs in size from the tar.
  entries.push({ name: `${dir}/README.txt`, data: Buffer.from(`generated layer ${dir}\n`.repeat(200)) });
  const layerTar = tar(entries);
  return { tar: layerTar, diffId: sha256(layerTar), blob: blobOf(mediaType, gzipSync(layerTar)) };
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** The Go-style architecture name (`amd64`, `arm64`, ...) of the machine running the tests. */
export function hostPlatform(): Platform {
  const byNode: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', s390x: 's390x', ppc64: 'ppc64le' };
  return { os: 'linux', architecture: byNode[process.arch] ?? process.arch };
}

export interface Image {
  platform: Platform;
  layers: Layer[];
  config: Blob;
  manifest: Blob;
  /** Every blob the manifest references (config first, then layers), excluding the manifest itself. */
  blobs: Blob[];
}

export interface ImageOptions {
  platform?: Platform;
  /** Number of layers (default 2). */
  layerCount?: number;
  /** Size of the biggest file of the first layer (default 1 MiB), to make one layer of a realistic size. */
  firstLayerBytes?: number;
}

/** Generates a single-platform image with OCI media types. */
export function generateImage(options: ImageOptions = {}): Image {
  const platform = options.platform ?? hostPlatform();
  const layers: Layer[] = [];
  for (let i = 0; i < (options.layerCount ?? 2); i++) {
    layers.push(randomLayer(3, i === 0 ? (options.firstLayerBytes ?? 1024 * 1024) : 16 * 1024));
  }
  const configJson = {
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    created: new Date(TAR_MTIME * 1000).toISOString(),
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: layers.map((_, i) => ({ created: new Date(TAR_MTIME * 1000).toISOString(), created_by: `e2e layer ${i}` })),
  };
  const config = blobOf(MediaType.ociConfig, Buffer.from(JSON.stringify(configJson)));
  const manifestJson = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: descriptor(config),
    layers: layers.map((l) => descriptor(l.blob)),
    annotations: { 'org.opencontainers.image.title': 'wharf e2e' },
  };
  const manifest = blobOf(MediaType.ociManifest, Buffer.from(JSON.stringify(manifestJson, null, 2)));
  return { platform, layers, config, manifest, blobs: [config, ...layers.map((l) => l.blob)] };
}

export interface MultiArchImage {
  index: Blob;
  images: Image[];
}

/** Generates an OCI image index over one image per platform (linux/amd64 and linux/arm64 by default). */
export function generateMultiArch(
  platforms: Platform[] = [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64', variant: 'v8' }],
): MultiArchImage {
  const images = platforms.map((platform) => generateImage({ platform, firstLayerBytes: 128 * 1024 }));
  const indexJson = {
    schemaVersion: 2,
    mediaType: MediaType.ociIndex,
    manifests: images.map((img) => descriptor(img.manifest, { platform: img.platform })),
  };
  return { index: blobOf(MediaType.ociIndex, Buffer.from(JSON.stringify(indexJson, null, 2))), images };
}

// ---------------------------------------------------------------------------------------------------------------
// Writers.

export interface LayoutRef {
  /** The tag, stored as the `org.opencontainers.image.ref.name` annotation; `oci:<dir>:<tag>` selects it. */
  tag: string;
  /** The manifest or index the tag names. */
  target: Blob;
}

/**
 * Writes an OCI image layout at `dir`: every blob under `blobs/sha256/`, and an `index.json` naming each ref.
 * `blobs` must include everything reachable from the refs (manifests, configs, layers, child manifests).
 */
export async function writeOciLayout(dir: string, refs: LayoutRef[], blobs: Blob[]): Promise<void> {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const seen = new Set<string>();
  for (const blob of [...refs.map((r) => r.target), ...blobs]) {
    if (seen.has(blob.digest)) continue;
    seen.add(blob.digest);
    await writeFile(join(dir, 'blobs', 'sha256', blob.digest.slice('sha256:'.length)), blob.bytes);
  }
  const index = {
    schemaVersion: 2,
    mediaType: MediaType.ociIndex,
    manifests: refs.map((r) => descriptor(r.target, { annotations: { 'org.opencontainers.image.ref.name': r.tag } })),
  };
  await writeFile(join(dir, 'index.json'), JSON.stringify(index));
}

/** Every blob (manifests included) that an image or a multi-arch image consists of. */
export function allBlobs(image: Image | MultiArchImage): Blob[] {
  if ('index' in image) return [image.index, ...image.images.flatMap((img) => [img.manifest, ...img.blobs])];
  return [image.manifest, ...image.blobs];
}

/**
 * Writes a `docker save`-style tarball for `docker load`: `manifest.json` naming the config file, the repo tags and
 * one uncompressed `layer.tar` per layer (in a directory named after its diff_id), plus the config JSON itself.
 * The image ID docker reports after loading is the config's digest.
 */
export async function writeDockerSave(path: string, image: Image, repoTags: string[]): Promise<void> {
  const hex = (d: string) => d.slice('sha256:'.length);
  const configName = `${hex(image.config.digest)}.json`;
  const entries: TarEntry[] = [{ name: configName, data: image.config.bytes }];
  for (const layer of image.layers) {
    entries.push({ name: hex(layer.diffId) });
    entries.push({ name: `${hex(layer.diffId)}/layer.tar`, data: layer.tar });
  }
  const manifest = [{ Config: configName, RepoTags: repoTags, Layers: image.layers.map((l) => `${hex(l.diffId)}/layer.tar`) }];
  entries.push({ name: 'manifest.json', data: Buffer.from(JSON.stringify(manifest)) });
  await writeFile(path, tar(entries));
}

