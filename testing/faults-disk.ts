/**
 * Helpers for the disk fault tests (conformance/e2e/faults-disk.test.ts): a small tmpfs to use as the filesystem
 * driver's storage root, filling it up to a chosen free space, remounting it read-only, and checking what the
 * storage holds (every blob's bytes against its digest, the upload sessions left). Test-only.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { mkdtemp, open, readdir, rm, rmdir, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { sha256 } from './helpers.js';

const run = promisify(execFile);

export interface Tmpfs {
  dir: string;
  /** `mount -o remount,ro|rw`. */
  remount(mode: 'ro' | 'rw'): Promise<void>;
  /** Unmount and remove the mount point (only what this helper mounted). */
  unmount(): Promise<void>;
}

/** Mount a fresh tmpfs of `sizeMiB`; the reason as a string when mounting is not allowed here. */
export async function mountTmpfs(sizeMiB: number): Promise<Tmpfs | string> {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-tmpfs-'));
  try {
    await run('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m`, 'tmpfs', dir]);
  } catch (err) {
    await rmdir(dir).catch(() => {});
    return `cannot mount a tmpfs: ${(err as Error).message.trim()}`;
  }
  let mounted = true;
  return {
    dir,
    remount: async (mode) => { await run('mount', ['-o', `remount,${mode}`, dir]); },
    unmount: async () => {
      if (!mounted) return;
      mounted = false;
      await run('umount', [dir]);
      await rmdir(dir);
    },
  };
}

/** Bytes free on the filesystem holding `dir`, as an unprivileged writer sees them. */
export async function freeBytes(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}

/**
 * Write a filler file into `dir` until at most `leave` bytes stay free (0: until the filesystem answers ENOSPC).
 * Returns its path; deleting it frees the space again.
 */
export async function fill(dir: string, leave = 0): Promise<string> {
  const path = join(dir, 'filler');
  const handle = await open(path, 'w');
  const chunk = Buffer.alloc(1 << 20, 0x5a);
  try {
    for (;;) {
      const room = (await freeBytes(dir)) - leave;
      if (room <= 0) break;
      try {
        await handle.write(chunk, 0, Math.min(chunk.length, room));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOSPC') break;
        throw err;
      }
    }
  } finally {
    await handle.close();
  }
  return path;
}

/** Delete a filler file written by `fill`. */
export async function unfill(path: string): Promise<void> {
  await rm(path, { force: true });
}

async function* files(dir: string): AsyncGenerator<string> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* files(p);
    else yield p;
  }
}

function hashFile(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(path).on('data', (d) => hash.update(d)).on('error', reject).on('end', () => resolve(`sha256:${hash.digest('hex')}`));
  });
}

/**
 * Every blob file under the storage root whose bytes do not hash to the digest its path names (empty when the
 * content store is sound), and how many blob files there are.
 */
export async function corruptBlobs(rootDirectory: string): Promise<{ bad: string[]; count: number }> {
  const bad: string[] = [];
  let count = 0;
  const base = join(rootDirectory, 'docker/registry/v2/blobs/sha256');
  for await (const file of files(base)) {
    const m = /\/([0-9a-f]{64})\/data$/.exec(file);
    if (!m) continue;
    count++;
    if ((await hashFile(file)) !== `sha256:${m[1]}`) bad.push(file);
  }
  return { bad, count };
}

/** The ids of the upload sessions stored for `repo`. */
export async function uploadSessions(rootDirectory: string, repo: string): Promise<string[]> {
  const dir = join(rootDirectory, 'docker/registry/v2/repositories', repo, '_uploads');
  if (!existsSync(dir)) return [];
  return (await readdir(dir)).sort();
}

/** Files left under a repository's upload sessions (paths relative to `_uploads`), for messages. */
export async function uploadFiles(rootDirectory: string, repo: string): Promise<string[]> {
  const dir = join(rootDirectory, 'docker/registry/v2/repositories', repo, '_uploads');
  const out: string[] = [];
  for await (const f of files(dir)) out.push(f.slice(dir.length + 1));
  return out.sort();
}

/** A small image: a config blob, one layer of `layerBytes` random-ish bytes, and its manifest. */
export interface TestImage {
  config: Buffer;
  layer: Buffer;
  manifest: Buffer;
  digests: { config: string; layer: string; manifest: string };
}

export function makeImage(seed: string, layerBytes: number): TestImage {
  const layer = Buffer.alloc(layerBytes);
  let block = createHash('sha256').update(seed).digest();
  for (let i = 0; i < layerBytes; i += block.length) {
    block.copy(layer, i);
    block = createHash('sha256').update(block).digest();
  }
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', seed, rootfs: { type: 'layers', diff_ids: [] } }));
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha256(layer), size: layer.length }],
  }));
  return { config, layer, manifest, digests: { config: sha256(config), layer: sha256(layer), manifest: sha256(manifest) } };
}

export function putManifest(base: string, repo: string, tag: string, manifest: Buffer): Promise<Response> {
  return fetch(`${base}/v2/${repo}/manifests/${tag}`, {
    method: 'PUT',
    body: manifest,
    headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
  });
}

/**
 * Pull `repo:tag` and check every byte: the manifest is the expected one and each blob hashes to its digest.
 * Throws with what differed.
 */
export async function pullAndVerify(base: string, repo: string, tag: string, image: TestImage): Promise<void> {
  const res = await fetch(`${base}/v2/${repo}/manifests/${tag}`, { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
  const manifest = Buffer.from(await res.arrayBuffer());
  if (res.status !== 200) throw new Error(`manifest GET ${repo}:${tag} answered ${res.status}: ${manifest.toString()}`);
  if (sha256(manifest) !== image.digests.manifest) throw new Error(`manifest of ${repo}:${tag} is not the pushed one`);
  for (const digest of [image.digests.config, image.digests.layer]) {
    const blob = await fetch(`${base}/v2/${repo}/blobs/${digest}`);
    const bytes = Buffer.from(await blob.arrayBuffer());
    if (blob.status !== 200) throw new Error(`blob GET ${digest} answered ${blob.status}: ${bytes.toString()}`);
    if (sha256(bytes) !== digest) throw new Error(`blob ${digest} came back with other bytes`);
  }
}
