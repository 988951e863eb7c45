/**
 * Helpers for the garbage-collector tests: push content through the real registry domain over a real filesystem
 * driver, age files on disk (the grace rule reads modification times), and check what storage holds.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { CLI_PATH } from './harness.js';
import { createDriver } from '../storage-drivers/index.js';
import type { StorageDriver } from '../storage-drivers/driver.js';
import * as layout from '../server/registry/layout.js';
import { parseDigest, parseReference } from '../server/registry/reference.js';
import { LocalRegistry, type RegistryOptions } from '../server/registry/registry.js';
import type { GcFixture } from './gc-scenarios.js';
import { sha256 } from './helpers.js';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';

export interface Fixture {
  root: string;
  driver: StorageDriver;
  registry: LocalRegistry;
  remove(): Promise<void>;
}

export async function fixture(options: RegistryOptions = {}): Promise<Fixture> {
  const root = await mkdtemp(join(tmpdir(), 'wharf-gc-'));
  const driver = createDriver({ driver: 'filesystem', rootDirectory: root });
  return { root, driver, registry: new LocalRegistry(driver, options), remove: () => rm(root, { recursive: true, force: true }) };
}

export interface BlobRef {
  digest: string;
  size: number;
  mediaType: string;
}

export async function pushBlob(registry: LocalRegistry, repo: string, bytes: Buffer, mediaType = OCI_LAYER): Promise<BlobRef> {
  const digest = sha256(bytes);
  const session = await registry.uploads.start(repo);
  await registry.uploads.complete(repo, session.id, parseDigest(digest), (async function* () { yield bytes; })());
  return { digest, size: bytes.byteLength, mediaType };
}

export function randomBlob(size = 256): Buffer {
  return randomBytes(size);
}

export interface PushedImage {
  manifest: BlobRef;
  config: BlobRef;
  layers: BlobRef[];
}

/** Push a config, the given layers (existing BlobRefs are linked by mounting from `sharedFrom`) and a manifest. */
export async function pushImage(
  registry: LocalRegistry,
  repo: string,
  tag: string | undefined,
  layers: (Buffer | BlobRef)[],
  extra: { subject?: BlobRef; artifactType?: string } = {},
): Promise<PushedImage> {
  const config = await pushBlob(registry, repo, Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', nonce: randomBytes(8).toString('hex') })), OCI_CONFIG);
  const pushed: BlobRef[] = [];
  for (const layer of layers) {
    if (Buffer.isBuffer(layer)) pushed.push(await pushBlob(registry, repo, layer));
    else {
      await registry.mount(repo, parseDigest(layer.digest));
      pushed.push(layer);
    }
  }
  const doc: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: OCI_CONFIG, digest: config.digest, size: config.size },
    layers: pushed.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
  };
  if (extra.artifactType) doc.artifactType = extra.artifactType;
  if (extra.subject) doc.subject = { mediaType: extra.subject.mediaType, digest: extra.subject.digest, size: extra.subject.size };
  const bytes = Buffer.from(JSON.stringify(doc));
  const digest = sha256(bytes);
  await registry.manifests.put(repo, parseReference(tag ?? digest), bytes, OCI_MANIFEST);
  return { manifest: { digest, size: bytes.byteLength, mediaType: OCI_MANIFEST }, config, layers: pushed };
}

export async function pushIndex(registry: LocalRegistry, repo: string, tag: string | undefined, children: BlobRef[]): Promise<BlobRef> {
  const bytes = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: children.map((c, i) => ({ mediaType: c.mediaType, digest: c.digest, size: c.size, platform: { os: 'linux', architecture: `arch${i}` } })),
  }));
  const digest = sha256(bytes);
  await registry.manifests.put(repo, parseReference(tag ?? digest), bytes, OCI_INDEX);
  return { digest, size: bytes.byteLength, mediaType: OCI_INDEX };
}

/** Set every file's and folder's modification time under `root` back by `ms`. */
export async function ageAll(root: string, ms: number): Promise<void> {
  const when = new Date(Date.now() - ms);
  const visit = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const full = join(dir, entry.name);
      if (entry.isDirectory()) await visit(full);
      await utimes(full, when, when);
    }
  };
  await visit(root);
}

/** Whether the content store holds the blob's bytes. */
export async function hasBlob(root: string, digest: string): Promise<boolean> {
  const d = parseDigest(digest);
  return stat(join(root, layout.blobDataPath(d))).then(() => true, () => false);
}

/** Every digest whose bytes the content store holds. */
export async function storedBlobs(driver: StorageDriver): Promise<Set<string>> {
  const out = new Set<string>();
  try {
    for await (const info of driver.walk(layout.BLOBS_ROOT)) {
      if (info.isDir || !info.path.endsWith('/data')) continue;
      const parts = info.path.split('/');
      out.add(`${parts.at(-4)}:${parts.at(-2)}`);
    }
  } catch {
    // no blobs folder yet
  }
  return out;
}

/** Every path of an image (manifest, config, layers) that a pull needs, checked through the registry domain. */
export async function pullsCompletely(registry: LocalRegistry, repo: string, tag: string): Promise<boolean> {
  try {
    const m = await registry.manifests.get(repo, parseReference(tag));
    const doc = JSON.parse(m.content.toString('utf8')) as { config?: { digest: string }; layers?: { digest: string }[]; manifests?: { digest: string }[] };
    for (const child of doc.manifests ?? []) if (!(await pullsCompletely(registry, repo, child.digest))) return false;
    for (const b of [...(doc.config ? [doc.config] : []), ...(doc.layers ?? [])]) {
      const d = parseDigest(b.digest);
      await registry.blobs.stat(repo, d);
      const content = await registry.blobs.getContent(d);
      if (!content || sha256(content) !== b.digest) return false;
    }
    return true;
  } catch {
    return false;
  }
}

/** A GcFixture (./scenarios.ts) over a fresh filesystem tree: ageing sets modification times back. */
export async function filesystemGcFixture(): Promise<GcFixture> {
  const f = await fixture();
  return {
    driver: f.driver,
    registry: f.registry,
    age: (ms) => ageAll(f.root, ms),
    grace: (ms) => ms,
    configFile: () => configFileFor({ filesystem: { rootdirectory: f.root } }, join(f.root, 'config.yml')),
    remove: f.remove,
  };
}

/** Write a Wharf configuration with this `storage` section to `path`. */
export async function configFileFor(storage: Record<string, unknown>, path: string): Promise<string> {
  await writeFile(path, stringify({ version: '0.1', storage }));
  return path;
}

/** A configuration for `wharf garbage-collect` on the filesystem storage at `rootDirectory`, written into `dir`. */
export function writeGcConfig(dir: string, rootDirectory: string): Promise<string> {
  return configFileFor({ filesystem: { rootdirectory: rootDirectory }, delete: { enabled: true } }, join(dir, 'gc.yml'));
}

export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Run the compiled CLI in its own process; `onSpawn` may kill it. */
export function runWharf(args: string[], onSpawn?: (pid: number, done: Promise<unknown>) => void): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_PATH, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const done = new Promise((r) => child.once('exit', r));
    child.once('error', reject);
    child.once('exit', (code, signal) => resolve({ code, signal, stdout, stderr }));
    onSpawn?.(child.pid!, done);
  });
}

export { sha256 };
