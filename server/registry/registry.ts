/**
 * The registry domain: one object giving the HTTP layer (and later the garbage collector and the pull-through
 * cache) everything it needs over a storage driver. It knows OCI and the storage layout, nothing of HTTP.
 */
import { PathNotFoundError, type StorageDriver } from '../../storage-drivers/driver.js';
import { GatedDescriptorCache, InMemoryDescriptorCache, type BlobDescriptorCache } from '../cache/index.js';
import { BlobStore, type BlobDescriptor, type DescriptorCache } from './blobs.js';
import * as layout from './layout.js';
import { ManifestStore } from './manifests.js';
import type { Digest } from './reference.js';
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
    this.manifests = new ManifestStore(driver, this.blobs, recorder ? { onReferenced: (name, ds) => recorder.record(name, ds) } : {});
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
   * Repository names in ASCII order, `n` after `last`. A repository is a directory holding `_layers` (registry:2's
   * rule) or `_manifests`; the walk never descends into `_layers`, `_manifests`, `_uploads` or other `_` folders.
   */
  async catalog(n?: number, last?: string, include?: (name: string) => boolean): Promise<CatalogPage> {
    const names: string[] = [];
    const prefix = `${layout.REPOSITORIES_ROOT}/`;
    try {
      for await (const info of this.driver.walk(layout.REPOSITORIES_ROOT, {
        descend: (dir) => !layout.baseName(dir.path).startsWith('_'),
      })) {
        const base = layout.baseName(info.path);
        if (info.isDir && (base === '_manifests' || base === '_layers')) {
          names.push(info.path.slice(prefix.length, -(base.length + 1)));
        }
      }
    } catch (err) {
      if (!(err instanceof PathNotFoundError)) throw err;
    }
    let repositories = [...new Set(names)].sort();
    if (include) repositories = repositories.filter(include);
    if (last !== undefined) repositories = repositories.filter((r) => r > last);
    if (n === undefined || repositories.length <= n) return { repositories };
    const page = repositories.slice(0, n);
    return { repositories: page, next: page.at(-1) };
  }
}
