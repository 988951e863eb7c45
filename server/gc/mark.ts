/**
 * Mark: what one repository holds, and which of its manifests and blobs are live.
 *
 * Roots are the tags' manifests, every manifest revision unless `deleteUntagged` (except a referrer whose subject
 * is no longer a revision of the repository: an OCI 1.1 signature or SBOM lives as long as its subject), and every
 * revision younger than the grace period. From each live manifest we follow index children, config and layers, and
 * the referrers of that manifest. Memory: the repository's own links, then only the live digests are kept.
 */
import { PathNotFoundError, type StorageDriver } from '../../storage-drivers/driver.js';
import { orUndefined } from '../registry/blobs.js';
import * as layout from '../registry/layout.js';
import { parseManifest } from '../registry/manifest-format.js';
import { tryParseDigest } from '../registry/reference.js';

export interface LinkEntry {
  path: string;
  /** Last modification (ms since the epoch). */
  mtime: number;
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

/** Every repository name (a folder holding `_layers` or `_manifests`), in walk order. */
export async function* listRepositories(driver: StorageDriver): AsyncGenerator<string> {
  const prefix = `${layout.REPOSITORIES_ROOT}/`;
  let last: string | undefined;
  try {
    for await (const info of driver.walk(layout.REPOSITORIES_ROOT, {
      descend: (dir) => !layout.baseName(dir.path).startsWith('_'),
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

/** Read one repository's links (not its nested repositories). */
export async function scanRepository(driver: StorageDriver, name: string): Promise<RepositoryScan> {
  const root = layout.repositoryPath(name);
  const scan: RepositoryScan = { name, tags: new Map(), revisions: new Map(), layers: new Map(), referrers: new Map(), uploads: 0 };
  const currentLinks: [string, string][] = [];
  try {
    for await (const info of driver.walk(root, {
      descend: (dir) => {
        const first = dir.path.slice(root.length + 1).split('/')[0]!;
        return first.startsWith('_') && first !== '_uploads';
      },
    })) {
      const parts = info.path.slice(root.length + 1).split('/');
      if (parts[0] === '_uploads') {
        if (parts.length === 1) scan.uploads = ((await orUndefined(driver.list(info.path))) ?? []).length;
        continue;
      }
      if (info.isDir || parts.at(-1) !== 'link') continue;
      const entry = { path: info.path, mtime: info.modTime.getTime() };
      if (parts[0] === '_layers' && parts.length === 4) {
        const d = digestFrom(parts[1], parts[2]);
        if (d) scan.layers.set(d, entry);
      } else if (parts[0] === '_manifests' && parts[1] === 'revisions' && parts.length === 5) {
        const d = digestFrom(parts[2], parts[3]);
        if (d) scan.revisions.set(d, entry);
      } else if (parts[0] === '_manifests' && parts[1] === 'tags' && parts[3] === 'current' && parts.length === 5) {
        currentLinks.push([parts[2]!, info.path]);
      } else if (parts[0] === '_referrers' && parts.length === 6) {
        const subject = digestFrom(parts[1], parts[2]);
        const referrer = digestFrom(parts[3], parts[4]);
        if (subject && referrer) {
          let m = scan.referrers.get(subject);
          if (!m) scan.referrers.set(subject, (m = new Map()));
          m.set(referrer, entry);
        }
      }
    }
  } catch (err) {
    if (!(err instanceof PathNotFoundError)) throw err;
  }
  for (const [tag, path] of currentLinks) {
    const raw = await orUndefined(driver.getContent(path));
    const d = raw ? tryParseDigest(raw.toString('utf8').trim()) : undefined;
    if (d) scan.tags.set(tag, d.value);
  }
  return scan;
}

export interface MarkOptions {
  deleteUntagged: boolean;
  /** Links modified at or after this time (ms) are young: kept, and what they name is live. */
  cutoff: number;
}

export interface MarkResult {
  /** Manifests live in this repository. */
  manifests: Set<string>;
  /** Config and layer blobs live in this repository (including those of young layer links). */
  blobs: Set<string>;
  /** Live manifests whose bytes are missing from the content store. */
  missing: string[];
}

/** The live manifests and blobs of one scanned repository. */
export async function markRepository(driver: StorageDriver, scan: RepositoryScan, options: MarkOptions): Promise<MarkResult> {
  const result: MarkResult = { manifests: new Set(), blobs: new Set(), missing: [] };
  const subjectOf = new Map<string, string>();
  for (const [subject, refs] of scan.referrers) for (const r of refs.keys()) subjectOf.set(r, subject);

  const queue: string[] = [...scan.tags.values()];
  for (const [digest, link] of scan.revisions) {
    const young = link.mtime >= options.cutoff;
    const subject = subjectOf.get(digest);
    const orphanReferrer = subject !== undefined && !scan.revisions.has(subject);
    if (young || (!options.deleteUntagged && !orphanReferrer)) queue.push(digest);
  }
  for (const refs of scan.referrers.values()) {
    for (const [digest, link] of refs) if (link.mtime >= options.cutoff) queue.push(digest);
  }
  for (const [digest, link] of scan.layers) if (link.mtime >= options.cutoff) result.blobs.add(digest);

  while (queue.length > 0) {
    const digest = queue.pop()!;
    if (result.manifests.has(digest)) continue;
    result.manifests.add(digest);
    for (const r of scan.referrers.get(digest)?.keys() ?? []) queue.push(r);
    const d = tryParseDigest(digest);
    const content = d ? await orUndefined(driver.getContent(layout.blobDataPath(d))) : undefined;
    if (!content) {
      result.missing.push(digest);
      continue;
    }
    try {
      // No depth bound here: the collector serves no requests, and a manifest stored before the bound existed must
      // keep its blobs whatever its nesting.
      const parsed = parseManifest(content, undefined, { maxDepth: Infinity });
      for (const b of parsed.blobs) result.blobs.add(b.value);
      for (const m of parsed.manifests) queue.push(m.value);
    } catch {
      // Not a manifest we can read (or a legacy layer link): keep it, follow nothing.
    }
  }
  return result;
}
