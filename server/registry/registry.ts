/**
 * The registry domain: one object giving the HTTP layer (and later the garbage collector and the pull-through
 * cache) everything it needs over a storage driver. It knows OCI and the storage layout, nothing of HTTP.
 */
import { PathNotFoundError, comparePaths, isBelow, type StorageDriver } from '../../storage-drivers/driver.js';
import { GatedDescriptorCache, InMemoryDescriptorCache, type BlobDescriptorCache } from '../cache/index.js';
import { BlobStore, type BlobDescriptor, type DescriptorCache } from './blobs.js';
import { RegistryError } from './errors.js';
import * as layout from './layout.js';
import { ManifestStore } from './manifests.js';
import { isValidRepositoryName, type Digest } from './reference.js';
import { UploadStore } from './uploads.js';

export interface CatalogPage {
  repositories: string[];
  /** Set when more repositories follow: the last name of this page. */
  next?: string;
}

export interface RegistryOptions {
  /**
   * Decides whether a mount without `from` may use a blob found in the content store. Given the repositories that
   * could be asked about, it answers whether the caller may read the blob at all. Default: allowed (no access
   * rules in force).
   */
  mayMountWithoutFrom?: (digest: Digest) => Promise<boolean> | boolean;
  /** The blob-descriptor cache (`storage.cache.blobdescriptor`, see server/cache/); none when absent. */
  descriptorCache?: BlobDescriptorCache;
  /** Shorthand for an in-memory `descriptorCache` of at most this many digests (0: no limit). */
  descriptorCacheSize?: number;
  /**
   * Told about every digest about to be linked, mounted or referenced by a pushed manifest, before the link is
   * written (the garbage collector's live set, see server/gc/recorder.ts).
   */
  recorder?: { record(name: string, digests: string[]): Promise<void> };
  /** Told when stored manifest bytes do not hash to their digest (they are answered as unknown, never served). */
  onCorruptContent?: (digest: string) => void;
}

export class Registry {
  readonly blobs: BlobStore;
  readonly uploads: UploadStore;
  readonly manifests: ManifestStore;
  /** The in-memory blob-descriptor cache, when configured. */
  readonly descriptorCache?: DescriptorCache;

  constructor(readonly driver: StorageDriver, private readonly options: RegistryOptions = {}) {
    const inner =
      options.descriptorCache ??
      (options.descriptorCacheSize === undefined ? undefined : new InMemoryDescriptorCache({ maxEntries: options.descriptorCacheSize }));
    const cache = inner && new GatedDescriptorCache(inner);
    this.descriptorCache = cache;
    this.blobs = new BlobStore(driver, cache);
    const recorder = options.recorder;
    this.uploads = new UploadStore(driver, this.blobs, recorder ? { beforeBlobLinked: (name, d) => recorder.record(name, [d]) } : {});
    this.manifests = new ManifestStore(driver, this.blobs, {
      ...(recorder ? { onReferenced: (name: string, ds: string[]) => recorder.record(name, ds) } : {}),
      ...(options.onCorruptContent ? { onCorrupt: options.onCorruptContent } : {}),
    });
  }

  /** Tell the garbage collector's live set about digests about to be linked by other means (the mirror). */
  async recordReferences(name: string, digests: string[]): Promise<void> {
    await this.options.recorder?.record(name, digests);
  }

  /**
   * Cross-repository mount: link a blob that `from` serves into `name` without moving bytes. Without `from`, a blob
   * present in the content store is mounted when `mayMountWithoutFrom` allows it. Returns undefined when the blob
   * cannot be mounted (the caller then starts a normal upload, as the spec asks).
   */
  async mount(name: string, digest: Digest, from?: string): Promise<BlobDescriptor | undefined> {
    let desc: BlobDescriptor | undefined;
    if (from !== undefined) {
      desc = (await this.blobs.isLinked(from, digest)) ? await this.blobs.statContent(digest) : undefined;
    } else {
      desc = await this.blobs.statContent(digest);
      if (desc && !(await (this.options.mayMountWithoutFrom?.(digest) ?? true))) desc = undefined;
    }
    if (!desc) return undefined;
    await this.options.recorder?.record(name, [digest.value]);
    // Checked again after recording: a collection may have removed the bytes since the first look.
    if (this.options.recorder && !(await this.blobs.statContent(digest))) return undefined;
    await this.blobs.link(name, digest);
    return desc;
  }

  /**
   * Repository names in path order (component by component, so `a` < `a/b` < `a-c`: the order registry:2 lists them
   * in), the first `n` after `last`. A repository is a directory holding `_layers` (registry:2's rule) or
   * `_manifests`.
   *
   * A page is read, not the whole tree: directories that lie wholly before `last` are not read, and the walk stops
   * once it has found `n` names and knows whether more follow. Each directory costs one listing and nothing else:
   * its entries say whether it is a repository and where to go next (see `repositoryDirs`).
   */
  async catalog(n?: number, last?: string, include?: (name: string) => boolean): Promise<CatalogPage> {
    if (last !== undefined && !isValidRepositoryName(last)) {
      throw new RegistryError('NAME_INVALID', 'last must be a repository name', { detail: { last } });
    }
    const prefix = `${layout.REPOSITORIES_ROOT}/`;
    const repositories: string[] = [];
    try {
      const top = await this.driver.list(layout.REPOSITORIES_ROOT);
      for await (const dir of this.repositoryDirs(top, last === undefined ? undefined : `${prefix}${last}`)) {
        const name = dir.slice(prefix.length);
        if (include && !include(name)) continue;
        if (n !== undefined && repositories.length === n) return { repositories, next: repositories.at(-1) };
        repositories.push(name);
      }
    } catch (err) {
      if (!(err instanceof PathNotFoundError)) throw err;
    }
    return { repositories };
  }

  /**
   * The repository directories among `entries` (sorted paths of one directory's entries) and below them, in path
   * order, skipping those up to `startAfter`. Entries named `_…` are never entered. Every other entry is listed
   * once: its listing both tells whether it is a repository (it holds `_layers` or `_manifests`) and gives the next
   * level; an entry that is a file has no listing and is passed over.
   */
  private async *repositoryDirs(entries: string[], startAfter: string | undefined): AsyncGenerator<string> {
    for (const path of entries) {
      if (layout.baseName(path).startsWith('_')) continue;
      const after = startAfter === undefined || comparePaths(path, startAfter) > 0;
      // Before startAfter and not holding it: the whole subtree comes before it.
      if (!after && !isBelow(startAfter!, path) && path !== startAfter) continue;
      let children: string[];
      try {
        children = await this.driver.list(path);
      } catch (err) {
        if (err instanceof PathNotFoundError) continue; // a file, or deleted meanwhile
        throw err;
      }
      const names = new Set(children.map((c) => layout.baseName(c)));
      if (after && (names.has('_layers') || names.has('_manifests'))) yield path;
      yield* this.repositoryDirs(children, after ? undefined : startAfter);
    }
  }
}
