/**
 * Mark: which of one scanned repository's manifests and blobs are live (server/registry/scan.ts reads it).
 *
 * Roots are the tags' manifests, every manifest revision unless `deleteUntagged` (except a referrer whose subject
 * is no longer a revision of the repository: an OCI 1.1 signature or SBOM lives as long as its subject), and every
 * revision younger than the grace period. From each live manifest we follow index children, config and layers, and
 * the referrers of that manifest. A child of an index that the repository does not hold (a sparse index) is followed
 * no further and is not reported missing. Memory: the repository's own links, then only the live digests are kept.
 */
import type { StorageDriver } from '../../storage-drivers/driver.js';
import { parseManifest } from '../registry/manifest-format.js';
import { blobContent, type RepositoryScan } from '../registry/scan.js';

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

  const tagged = new Set(scan.tags.values());
  const queue: string[] = [...tagged];
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
    const content = await blobContent(driver, digest);
    if (!content) {
      // A child an index names but the repository never held (a sparse index: validation.manifests.indexes) is not
      // damage; only a revision or tag of the repository without bytes is.
      if (scan.revisions.has(digest) || tagged.has(digest)) result.missing.push(digest);
      continue;
    }
    try {
      // No depth bound here: the collector serves no requests, and a manifest stored before the bound existed must
      // keep its blobs whatever its nesting.
      const parsed = parseManifest(content, undefined, { maxDepth: Infinity });
      for (const b of parsed.blobs) result.blobs.add(b.value);
      // A foreign layer with URLs need not have been pushed, but when it was its blob is the manifest's too.
      for (const d of parsed.descriptors) result.blobs.add(d.parsed.value);
      for (const m of parsed.manifests) queue.push(m.value);
    } catch {
      // Not a manifest we can read (or a legacy layer link): keep it, follow nothing.
    }
  }
  return result;
}
