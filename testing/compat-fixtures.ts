/**
 * Helpers for the registry:2 storage-layout compatibility tests (./compat.test.ts).
 *
 * The registry:2 tree is spelled out here independently of ./layout.ts on purpose: if layout.ts drifted from
 * registry:2, a test that built its expectations with layout.ts would drift with it. The model below was checked
 * against trees the real registry:2 writes (compat.test.ts compares one with it).
 *
 *   docker/registry/v2/blobs/sha256/<hex[0:2]>/<hex>/data                   every blob and manifest, once
 *   docker/registry/v2/repositories/<name>/_layers/sha256/<hex>/link       config and layer blobs of the repo
 *   .../_manifests/revisions/sha256/<hex>/link                             every manifest of the repo
 *   .../_manifests/tags/<tag>/current/link                                 the tag's manifest
 *   .../_manifests/tags/<tag>/index/sha256/<hex>/link                      every manifest the tag ever named
 *
 * A link file holds the digest string, `sha256:<hex>`, with no trailing newline.
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Blob } from './e2e/image.js';
import { REGISTRY2_BIN, startRegistry2 as startHarnessRegistry2, type RunningWharf } from './harness.js';

export const V2 = 'docker/registry/v2';

export function hexOf(digest: string): string {
  if (!/^sha256:[0-9a-f]{64}$/.test(digest)) throw new Error(`not a sha256 digest: ${digest}`);
  return digest.slice('sha256:'.length);
}

export function blobDataPath(digest: string): string {
  const hex = hexOf(digest);
  return `${V2}/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`;
}

export function repoPath(name: string): string {
  return `${V2}/repositories/${name}`;
}

export function layerLinkPath(name: string, digest: string): string {
  return `${repoPath(name)}/_layers/sha256/${hexOf(digest)}/link`;
}

export function revisionLinkPath(name: string, digest: string): string {
  return `${repoPath(name)}/_manifests/revisions/sha256/${hexOf(digest)}/link`;
}

export function tagCurrentLinkPath(name: string, tag: string): string {
  return `${repoPath(name)}/_manifests/tags/${tag}/current/link`;
}

export function tagIndexLinkPath(name: string, tag: string, digest: string): string {
  return `${repoPath(name)}/_manifests/tags/${tag}/index/sha256/${hexOf(digest)}/link`;
}

/** What one repository holds, in registry:2 terms. */
export interface RepoContent {
  name: string;
  /** Config and layer blobs linked into `_layers` (manifests are NOT linked there). */
  blobs: Blob[];
  /** Manifests (images, indexes, index children) with a revision link. */
  manifests: Blob[];
  /** tag -> the digest it names now, and every digest it named before (history, without the current one). */
  tags: Record<string, { current: string; previous?: string[] }>;
}

/**
 * Every file registry:2 has in its tree for these repositories: relative path -> exact content.
 * `unlinkedBlobs` are stored under blobs/ without any repository linking them.
 */
export function registry2Files(repos: RepoContent[], unlinkedBlobs: Blob[] = []): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  const link = (digest: string) => Buffer.from(digest, 'utf8');
  for (const blob of unlinkedBlobs) files.set(blobDataPath(blob.digest), blob.bytes);
  for (const repo of repos) {
    for (const blob of repo.blobs) {
      files.set(blobDataPath(blob.digest), blob.bytes);
      files.set(layerLinkPath(repo.name, blob.digest), link(blob.digest));
    }
    for (const manifest of repo.manifests) {
      files.set(blobDataPath(manifest.digest), manifest.bytes);
      files.set(revisionLinkPath(repo.name, manifest.digest), link(manifest.digest));
    }
    for (const [tag, { current, previous = [] }] of Object.entries(repo.tags)) {
      files.set(tagCurrentLinkPath(repo.name, tag), link(current));
      for (const digest of [current, ...previous]) files.set(tagIndexLinkPath(repo.name, tag, digest), link(digest));
    }
  }
  return files;
}

/** Writes `files` (relative path -> content) under `root`. */
export async function writeTree(root: string, files: Map<string, Buffer>): Promise<void> {
  for (const [path, content] of files) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await writeFile(join(root, path), content);
  }
}

/** Every regular file under `root`, as relative `/`-separated path -> content. Missing root: empty map. */
export async function readTree(root: string): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  let entries;
  try {
    entries = await readdir(root, { recursive: true, withFileTypes: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return files;
    throw error;
  }
  for (const entry of entries) {
    if (!entry.isFile()) continue;
    const full = join(entry.parentPath, entry.name);
    files.set(full.slice(root.length + 1).split('\\').join('/'), await readFile(full));
  }
  return files;
}

/** Every entry (file or directory) below `dir`, relative; empty when `dir` does not exist. */
export async function entriesBelow(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir, { recursive: true })).map(String).sort();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
}

/** A readable description of how two trees differ (empty string when they are equal). */
export function treeDiff(actual: Map<string, Buffer>, expected: Map<string, Buffer>): string {
  const lines: string[] = [];
  for (const [path, content] of expected) {
    const got = actual.get(path);
    if (!got) lines.push(`missing:    ${path}`);
    else if (!got.equals(content)) {
      const show = (b: Buffer) => (b.length <= 80 ? JSON.stringify(b.toString('utf8')) : `${b.length} bytes`);
      lines.push(`different:  ${path}: expected ${show(content)}, got ${show(got)}`);
    }
  }
  for (const path of actual.keys()) if (!expected.has(path)) lines.push(`unexpected: ${path}`);
  return lines.sort().join('\n');
}

// ---------------------------------------------------------------------------------------------------------------
// The real registry:2 (CNCF distribution), as packaged by Debian.


/** Throws a message saying what to install unless the registry:2 binary is there. Never skips. */
export async function requireRegistry2(): Promise<string> {
  try {
    await access(REGISTRY2_BIN, constants.X_OK);
  } catch {
    throw new Error(
      `registry:2 is needed for the storage-compatibility tests but ${REGISTRY2_BIN} is not an executable: install the `
      + 'Debian package `docker-registry` (apt-get install docker-registry; CI installs it), or point '
      + 'WHARF_E2E_REGISTRY2_BIN at a registry:2 binary',
    );
  }
  return REGISTRY2_BIN;
}

/** Throws a message saying what to install unless skopeo is on PATH. */
export async function requireSkopeo(): Promise<void> {
  const found = await new Promise<boolean>((resolve) => {
    const child = spawn('skopeo', ['--version'], { stdio: 'ignore' });
    child.once('error', () => resolve(false));
    child.once('exit', (code) => resolve(code === 0));
  });
  if (!found) throw new Error('skopeo is needed for the registry:2 -> Wharf test: install the Debian package `skopeo`');
}

/** The real registry:2 serving `rootDirectory` (delete enabled, no access log), from the shared harness. */
export type RunningRegistry2 = RunningWharf;

/** Starts `docker-registry serve` on `rootDirectory` and waits until `GET /v2/` answers 200. */
export async function startRegistry2(rootDirectory: string): Promise<RunningRegistry2> {
  await requireRegistry2();
  return startHarnessRegistry2({ rootDirectory, config: { log: { accesslog: { disabled: true } } } });
}
