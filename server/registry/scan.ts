/**
 * The garbage collector's reads and tidying of the stored tree (./layout.ts), as operations, so server/gc/ builds
 * no storage path: repositories and their links, the content store a page at a time, the mirror's last-pull records,
 * and removing the folders a deletion left empty (rmdir-style: a file written meanwhile is never lost).
 */
import pLimit from 'p-limit';
import { PathNotFoundError, type FileInfo, type StorageDriver, ifExists } from '../../storage-drivers/driver.js';
import * as layout from './layout.js';
import { tryParseDigest } from './reference.js';

export interface LinkEntry {
  path: string;
  /** Last modification (ms since the epoch). */
  mtime: number;
  /**
   * The repository's `_layers`, `_manifests` or `_referrers` folder holding the link: removing the link removes
   * the folders it leaves empty up to this one (which stays).
   */
  keep: string;
}

export interface RepositoryScan {
  name: string;
  /** tag → current manifest digest */
  tags: Map<string, string>;
  /** manifest digest → its revision link */
  revisions: Map<string, LinkEntry>;
  /** blob digest → its `_layers` link */
  layers: Map<string, LinkEntry>;
  /** subject digest → referrer digest → its `_referrers` link */
  referrers: Map<string, Map<string, LinkEntry>>;
  /** Upload sessions present. */
  uploads: number;
}

/** A blob's data file in the content store. */
export interface BlobFile {
  path: string;
  digest: string;
  size: number;
  modTime: Date;
  /** Its `blobs/<alg>/<xx>` folder: removing the data removes its `<hex>` folder up to this one (which stays). */
  keep: string;
}

/** Blobs per page of listBlobs (and most stats in flight for one page). */
export const BLOB_PAGE = 256;

/**
 * `fn` over `items`, at most `concurrency` at a time (p-limit). After a failure no further item starts, and the
 * first error is thrown once the running ones have ended: nothing of the call goes on behind its caller's back.
 */
export async function forEachLimited<T>(items: readonly T[], concurrency: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  const limit = pLimit({ concurrency, rejectOnClear: true });
  let failure: { error: unknown } | undefined;
  await Promise.allSettled(items.map((item) => limit(async () => {
    try {
      await fn(item);
    } catch (error) {
      failure ??= { error };
      limit.clearQueue();
    }
  })));
  if (failure) throw failure.error;
}

/** Every repository name (a folder holding `_layers` or `_manifests`), in walk order. */
export async function* listRepositories(driver: StorageDriver): AsyncGenerator<string> {
  const prefix = `${layout.REPOSITORIES_ROOT}/`;
  let last: string | undefined;
  try {
    for await (const info of driver.walk(layout.REPOSITORIES_ROOT, {
      descend: (dir) => !layout.isUnderscored(dir.path),
    })) {
      const base = layout.baseName(info.path);
      if (info.isDir && (base === '_manifests' || base === '_layers')) {
        const name = info.path.slice(prefix.length, -(base.length + 1));
        if (name !== last) yield name;
        last = name;
      }
    }
  } catch (err) {
    if (!(err instanceof PathNotFoundError)) throw err;
  }
}

function digestFrom(alg: string | undefined, hex: string | undefined): string | undefined {
  return alg && hex ? tryParseDigest(`${alg}:${hex}`)?.value : undefined;
}

/**
 * Read one repository's links (not its nested repositories). A driver with `listFiles` (S3) lists each of
 * `_layers`, `_manifests` and `_referrers` as one prefix (a request per 1,000 keys) instead of walking folder by
 * folder (a request per folder: several per link).
 */
export async function scanRepository(driver: StorageDriver, name: string): Promise<RepositoryScan> {
  const root = layout.repositoryPath(name);
  // One string per folder, shared by all its links.
  const keep = { layers: layout.layersPath(name), manifests: layout.manifestsPath(name), referrers: layout.referrersRoot(name) };
  const scan: RepositoryScan = { name, tags: new Map(), revisions: new Map(), layers: new Map(), referrers: new Map(), uploads: 0 };
  const currentLinks: [string, string][] = [];
  /** One file of the repository, `parts` its path below the repository's folder. */
  const take = (info: FileInfo, parts: string[]) => {
    if (info.isDir || parts.at(-1) !== 'link') return;
    const mtime = info.modTime.getTime();
    if (parts[0] === '_layers' && parts.length === 4) {
      const d = digestFrom(parts[1], parts[2]);
      if (d) scan.layers.set(d, { path: info.path, mtime, keep: keep.layers });
    } else if (parts[0] === '_manifests' && parts[1] === 'revisions' && parts.length === 5) {
      const d = digestFrom(parts[2], parts[3]);
      if (d) scan.revisions.set(d, { path: info.path, mtime, keep: keep.manifests });
    } else if (parts[0] === '_manifests' && parts[1] === 'tags' && parts[3] === 'current' && parts.length === 5) {
      currentLinks.push([parts[2]!, info.path]);
    } else if (parts[0] === '_referrers' && parts.length === 6) {
      const subject = digestFrom(parts[1], parts[2]);
      const referrer = digestFrom(parts[3], parts[4]);
      if (subject && referrer) {
        let m = scan.referrers.get(subject);
        if (!m) scan.referrers.set(subject, (m = new Map()));
        m.set(referrer, { path: info.path, mtime, keep: keep.referrers });
      }
    }
  };
  if (driver.listFiles) {
    for (const folder of [keep.layers, keep.manifests, keep.referrers]) {
      for await (const info of driver.listFiles(folder)) take(info, info.path.slice(root.length + 1).split('/'));
    }
    scan.uploads = ((await ifExists(driver.list(layout.uploadsPath(name)))) ?? []).length;
  } else {
    try {
      for await (const info of driver.walk(root, {
        descend: (dir) => {
          const first = dir.path.slice(root.length + 1).split('/')[0]!;
          return first.startsWith('_') && first !== '_uploads';
        },
      })) {
        const parts = info.path.slice(root.length + 1).split('/');
        if (parts[0] === '_uploads') {
          if (parts.length === 1) scan.uploads = ((await ifExists(driver.list(info.path))) ?? []).length;
          continue;
        }
        take(info, parts);
      }
    } catch (err) {
      if (!(err instanceof PathNotFoundError)) throw err;
    }
  }
  for (const [tag, path] of currentLinks) {
    const raw = await ifExists(driver.getContent(path));
    const d = raw ? tryParseDigest(raw.toString('utf8').trim()) : undefined;
    if (d) scan.tags.set(tag, d.value);
  }
  return scan;
}

/** A path of the repository's, relative to its folder (`_layers/sha256/<hex>/link`), for messages. */
export function repositoryRelativePath(name: string, path: string): string {
  return path.slice(layout.repositoryPath(name).length + 1);
}

/** The tag's current link, or undefined when it has none. */
export async function tagLink(driver: StorageDriver, name: string, tag: string): Promise<LinkEntry | undefined> {
  const path = layout.tagCurrentLinkPath(name, tag);
  const info = await ifExists(driver.stat(path));
  return info && { path, mtime: info.modTime.getTime(), keep: layout.manifestsPath(name) };
}

/** Delete the tag's folder (what is left of its current link, its index, its mirror origin). */
export async function removeTag(driver: StorageDriver, name: string, tag: string): Promise<void> {
  await ifExists(driver.delete(layout.tagPath(name, tag)));
}

/** Whether the repository links `digest` as a manifest revision or a layer. */
export async function isLinked(driver: StorageDriver, name: string, digest: string): Promise<boolean> {
  const d = tryParseDigest(digest);
  if (!d) return false;
  return ((await ifExists(driver.stat(layout.revisionLinkPath(name, d)))) ?? (await ifExists(driver.stat(layout.layerLinkPath(name, d))))) !== undefined;
}

/**
 * Remove what is left of a repository that holds no links, tags or upload sessions any more: its `_layers`,
 * `_manifests` and `_referrers` folders (and `_uploads` when no session is in it), each deleted outright when a
 * file is left in it, then its own folder and the namespace folders above it when they are empty. `mayRemove` is
 * asked first (false: nothing is removed, and neither is the answer).
 */
export async function removeEmptyRepository(driver: StorageDriver, name: string, mayRemove: () => Promise<boolean>): Promise<boolean> {
  const root = layout.repositoryPath(name);
  const parts = [layout.layersPath(name), layout.manifestsPath(name), layout.referrersRoot(name)];
  if (((await ifExists(driver.list(layout.uploadsPath(name)))) ?? []).length === 0) parts.push(layout.uploadsPath(name));
  if (!(await mayRemove())) return false;
  for (const path of parts) {
    if (!(await removeEmptyTree(driver, path))) await ifExists(driver.delete(path));
  }
  if (await driver.removeEmptyDirectory?.(root)) await removeEmptyParents(driver, root, layout.REPOSITORIES_ROOT);
  return true;
}

/** The stored bytes of `digest`, or undefined when the content store has none. */
export async function blobContent(driver: StorageDriver, digest: string): Promise<Buffer | undefined> {
  const d = tryParseDigest(digest);
  return d ? ifExists(driver.getContent(layout.blobDataPath(d))) : undefined;
}

/**
 * Every `blobs/<alg>/<xx>/<hex>/data`, a page (at most BLOB_PAGE) at a time: one listing per `<xx>` folder and one
 * stat per blob (`concurrency` at a time), rather than a walk that also stats and lists every `<hex>` folder.
 * Memory: one `<xx>` folder's names. A `<hex>` folder without data (left by a run that died before removing it) is
 * passed to `noData`. A driver with `listFiles` (S3) is asked for each `blobs/<alg>` prefix at once instead: sizes
 * and times come with the listing (one request per 1,000 blobs instead of one per blob); memory: one page.
 */
export async function* listBlobs(driver: StorageDriver, concurrency: number, noData?: (folder: string) => Promise<unknown>): AsyncGenerator<BlobFile[]> {
  if (driver.listFiles) {
    yield* listBlobsFlat(driver, driver.listFiles.bind(driver));
    return;
  }
  for (const alg of (await ifExists(driver.list(layout.BLOBS_ROOT))) ?? []) {
    for (const prefix of (await ifExists(driver.list(alg))) ?? []) {
      const folders = (await ifExists(driver.list(prefix))) ?? [];
      for (let i = 0; i < folders.length; i += BLOB_PAGE) {
        const page: BlobFile[] = [];
        await forEachLimited(folders.slice(i, i + BLOB_PAGE), concurrency, async (folder) => {
          const digest = tryParseDigest(`${layout.baseName(alg)}:${layout.baseName(folder)}`)?.value;
          const info = digest ? await ifExists(driver.stat(`${folder}/data`)) : undefined;
          if (digest && info && !info.isDir) page.push({ path: info.path, digest, size: info.size, modTime: info.modTime, keep: prefix });
          else if (digest && !info) await noData?.(folder);
        });
        if (page.length > 0) yield page;
      }
    }
  }
}

/** listBlobs over a driver's `listFiles`: the keys `<xx>/<hex>/data` below each `blobs/<alg>`, in pages. */
async function* listBlobsFlat(driver: StorageDriver, listFiles: (path: string) => AsyncIterable<FileInfo>): AsyncGenerator<BlobFile[]> {
  for (const alg of (await ifExists(driver.list(layout.BLOBS_ROOT))) ?? []) {
    const algorithm = layout.baseName(alg);
    let page: BlobFile[] = [];
    for await (const info of listFiles(alg)) {
      // <xx>/<hex>/data, with <xx> the first two characters of <hex>: anything else is not a blob of the layout.
      const parts = info.path.slice(alg.length + 1).split('/');
      if (parts.length !== 3 || parts[2] !== 'data' || parts[1]!.slice(0, 2) !== parts[0]) continue;
      const digest = tryParseDigest(`${algorithm}:${parts[1]}`)?.value;
      if (!digest) continue;
      page.push({ path: info.path, digest, size: info.size, modTime: info.modTime, keep: `${alg}/${parts[0]}` });
      if (page.length >= BLOB_PAGE) {
        yield page;
        page = [];
      }
    }
    if (page.length > 0) yield page;
  }
}

/** Remove the `blobs/<alg>/<xx>` folders that are empty (`blobs/<alg>` itself stays, as registry:2 has it). */
export async function removeEmptyBlobFolders(driver: StorageDriver, concurrency: number): Promise<void> {
  if (!driver.removeEmptyDirectory) return;
  for (const alg of (await ifExists(driver.list(layout.BLOBS_ROOT))) ?? []) {
    await forEachLimited((await ifExists(driver.list(alg))) ?? [], concurrency, (prefix) => driver.removeEmptyDirectory!(prefix));
  }
}

const LAST_PULL_ALGORITHMS = ['sha256', 'sha512'];

/** digest → path of the mirror's last-pull records of `name` (not those of nested repositories). */
export async function lastPullRecords(driver: StorageDriver, name: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const alg of LAST_PULL_ALGORITHMS) {
    for (const path of (await ifExists(driver.list(`${layout.lastPullDir(name)}/${alg}`))) ?? []) {
      const digest = tryParseDigest(`${alg}:${layout.baseName(path)}`);
      if (digest) out.set(digest.value, path);
    }
  }
  return out;
}

/** Delete `name`'s last-pull folders left empty (the filesystem keeps them; object stores have none). */
export async function removeEmptyLastPullFolders(driver: StorageDriver, name: string): Promise<void> {
  const root = layout.lastPullDir(name);
  for (const dir of [...LAST_PULL_ALGORITHMS.map((alg) => `${root}/${alg}`), root]) {
    const left = await ifExists(driver.list(dir));
    if (left && left.length === 0) await ifExists(driver.delete(dir));
  }
}

/**
 * Remove the folders above `path` that are empty, nearest first, up to but not including `keep` (an ancestor of
 * `path`); stops at the first that is not empty.
 */
export async function removeEmptyParents(driver: StorageDriver, path: string, keep: string): Promise<void> {
  if (!driver.removeEmptyDirectory) return;
  for (let dir = layout.parentOf(path); dir.length > keep.length && dir.startsWith(`${keep}/`); dir = layout.parentOf(dir)) {
    if (!(await driver.removeEmptyDirectory(dir))) return;
  }
}

/**
 * Remove `path` and every folder below it, deepest first, when none holds a file. True when `path` is gone (or
 * was never there); false when something is left in it.
 */
export async function removeEmptyTree(driver: StorageDriver, path: string): Promise<boolean> {
  const dirs: string[] = [];
  try {
    for await (const info of driver.walk(path)) {
      if (!info.isDir) return false;
      dirs.push(info.path);
    }
  } catch (err) {
    if (err instanceof PathNotFoundError) return true;
    throw err;
  }
  // Walk order puts a folder before its contents, so the reverse puts every folder after its contents.
  for (const dir of dirs.reverse()) await driver.removeEmptyDirectory?.(dir);
  return (await driver.removeEmptyDirectory?.(path)) || (await ifExists(driver.stat(path))) === undefined;
}
