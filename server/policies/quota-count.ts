/**
 * Quota usage as a set of links (docs/policies.md#quotas): for one rule, every `_layers` link and manifest revision
 * link in a repository the rule matches, each digest's size counted once however many of those links name it.
 * `LinkCount` is that figure in memory (the storage ledger's per-process count, the recount's result); `recount`
 * builds it from storage for a set of rules in one walk of the repositories.
 */
import type { LRUCache } from 'lru-cache';
import { lruOfEntries } from '../lru.js';
import { ifExists, PathNotFoundError, type StorageDriver } from '../../storage-drivers/driver.js';
import * as layout from '../registry/layout.js';
import { listRepositories } from '../registry/scan.js';
import { tryParseDigest } from '../registry/reference.js';
import type { QuotaRule } from './rules.js';

/** Which kind of link: a layer/config blob link (`_layers`) or a manifest revision link. */
export type LinkKind = 'layer' | 'manifest';

/** One link, as the ledgers key it: `l|<repo>|<digest>` or `m|<repo>|<digest>` (`|` is in no name or digest). */
export function linkKey(repository: string, kind: LinkKind, digest: string): string {
  return `${kind === 'layer' ? 'l' : 'm'}|${repository}|${digest}`;
}

/** One rule's links, the number of them naming each digest, each digest's size, and their total. */
export class LinkCount {
  readonly links = new Set<string>();
  /** digest → links naming it */
  readonly refs = new Map<string, number>();
  /** digest → size (counted once) */
  readonly sizes = new Map<string, number>();
  usage = 0;

  /** The bytes adding this link would add to the usage (0 when the link or its digest is already counted). */
  cost(link: string, digest: string, size: number): number {
    return this.links.has(link) || this.refs.has(digest) ? 0 : size;
  }

  /** Add a link; true when it was new. */
  add(link: string, digest: string, size: number): boolean {
    if (this.links.has(link)) return false;
    this.links.add(link);
    const refs = this.refs.get(digest) ?? 0;
    this.refs.set(digest, refs + 1);
    if (refs === 0) {
      this.sizes.set(digest, size);
      this.usage += size;
    }
    return true;
  }

  /** Remove a link; true when it was counted. */
  remove(link: string, digest: string): boolean {
    if (!this.links.delete(link)) return false;
    const refs = (this.refs.get(digest) ?? 1) - 1;
    if (refs > 0) {
      this.refs.set(digest, refs);
    } else {
      this.refs.delete(digest);
      this.usage -= this.sizes.get(digest) ?? 0;
      this.sizes.delete(digest);
    }
    return true;
  }

  /** Repositories with at least one link counted. */
  repositories(): number {
    return new Set([...this.links].map((l) => l.split('|')[1])).size;
  }
}

/**
 * Sizes of blobs by digest. Content is immutable, so a size once read is right for as long as the digest exists;
 * bounded (the least recently used go first), a forgotten one is read again with one stat.
 */
export class BlobSizes {
  private readonly sizes: LRUCache<string, number>;
  constructor(private readonly driver: StorageDriver, max = 200_000) {
    this.sizes = lruOfEntries(max);
  }

  remember(digest: string, size: number): void {
    this.sizes.set(digest, size);
  }

  /** The blob's size; 0 when its bytes are absent (a link to nothing adds nothing). */
  async of(digest: string): Promise<number> {
    const known = this.sizes.get(digest);
    if (known !== undefined) return known;
    const d = tryParseDigest(digest);
    const info = d ? await ifExists(this.driver.stat(layout.blobDataPath(d))) : undefined;
    if (!info || info.isDir) return 0;
    this.remember(digest, info.size);
    return info.size;
  }
}

/** The links of one repository: `[kind, digest]` for every layer link and manifest revision link. */
export async function repositoryLinks(driver: StorageDriver, name: string): Promise<Array<[LinkKind, string]>> {
  const out: Array<[LinkKind, string]> = [];
  const walkLinks = async (root: string, kind: LinkKind) => {
    try {
      for await (const info of driver.walk(root)) {
        if (info.isDir || !info.path.endsWith('/link')) continue;
        const parts = info.path.slice(root.length + 1).split('/');
        if (parts.length !== 3) continue;
        const d = tryParseDigest(`${parts[0]}:${parts[1]}`);
        if (d) out.push([kind, d.value]);
      }
    } catch (err) {
      if (!(err instanceof PathNotFoundError)) throw err;
    }
  };
  await walkLinks(layout.layersPath(name), 'layer');
  await walkLinks(layout.revisionsPath(name), 'manifest');
  return out;
}

/**
 * Count `rules` from storage: one walk of the repositories, the links of each repository some rule matches (and
 * that is not `excluded`, a mirrored one), each digest's size from `sizes`.
 */
export async function recount(
  driver: StorageDriver,
  rules: readonly QuotaRule[],
  sizes: BlobSizes,
  excluded: (repository: string) => boolean = () => false,
): Promise<Map<string, LinkCount>> {
  const counts = new Map<string, LinkCount>(rules.map((r) => [r.id, new LinkCount()]));
  if (rules.length === 0) return counts;
  for await (const name of listRepositories(driver)) {
    const matching = rules.filter((r) => r.matches(name));
    if (matching.length === 0 || excluded(name)) continue;
    for (const [kind, digest] of await repositoryLinks(driver, name)) {
      const size = await sizes.of(digest);
      for (const r of matching) counts.get(r.id)!.add(linkKey(name, kind, digest), digest, size);
    }
  }
  return counts;
}
