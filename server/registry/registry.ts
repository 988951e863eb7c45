/**
 * The registry's operations (`Registry`): everything a request handler does to a registry, in domain terms (names,
 * digests, references, byte streams; nothing of HTTP). Two implementations: `LocalRegistry` below, over a storage
 * driver, and the pull-through cache (server/proxy/mirror.ts), which wraps a local one and fills it from upstream.
 * A new operation is declared here; the compiler then asks for it in both (the mirror passes a local repository's
 * calls through, fills mirrored ones on reads and refuses their writes).
 */
import type { Readable } from 'node:stream';
import { PathNotFoundError, comparePaths, isBelow, type StorageDriver } from '../../storage-drivers/driver.js';
import { GatedDescriptorCache, InMemoryDescriptorCache, type DescriptorCache } from '../cache/index.js';
import { BlobStore, type BlobDescriptor } from './blobs.js';
import { RegistryError } from './errors.js';
import * as layout from './layout.js';
import type { Descriptor } from './manifest-format.js';
import { ManifestStore, type PutManifestResult, type StoredManifest, type TagPage } from './manifests.js';
import { isValidRepositoryName, type Digest, type DigestAlgorithm, type Reference } from './reference.js';
import { UploadStore, type AppendOptions, type UploadStatus } from './uploads.js';
import type { Policies } from '../policies/rules.js';
import type { Quotas } from '../policies/quota.js';

/** Every operation a handler performs on a registry (see the top of this file). */
export interface Registry {
  getManifest(name: string, ref: Reference): Promise<Manifest>;
  putManifest(name: string, ref: Reference, content: Buffer, contentType: string | undefined, tags: string[]): Promise<PutManifestResult>;
  deleteManifest(name: string, ref: Reference): Promise<void>;
  listTags(name: string, n?: number, last?: string): Promise<TagPage>;
  referrers(name: string, subject: Digest, artifactType?: string): Promise<Descriptor[]>;
  catalog(n?: number, last?: string, include?: (name: string) => boolean): Promise<CatalogPage>;

  /** The blob as `name` serves it (BLOB_UNKNOWN when it does not); `want` says what the caller will read. */
  statBlob(name: string, digest: Digest, want?: BlobWant): Promise<BlobAnswer>;
  /** `length` bytes from `offset` of a blob `statBlob` answered `stored` for. */
  readBlob(name: string, digest: Digest, offset: number, length: number): Promise<Readable>;
  /** A URL the client may fetch a stored blob from directly, when the storage offers one. */
  blobURL(name: string, digest: Digest): Promise<string | null>;
  deleteBlob(name: string, digest: Digest): Promise<void>;
  /** Link a blob `from` (or, without it, the content store) serves into `name`; undefined when it cannot be. */
  mount(name: string, digest: Digest, from?: string): Promise<BlobDescriptor | undefined>;

  /** `intent`: what the request already says of the blob (a monolithic POST's digest and length), for quotas. */
  startUpload(name: string, algorithm: DigestAlgorithm, intent?: UploadIntent): Promise<UploadStatus>;
  appendUpload(name: string, id: string, body: AsyncIterable<Uint8Array>, options?: AppendOptions): Promise<UploadStatus>;
  /** Append the optional last chunk, verify the digest, and make the blob visible in `name`. */
  completeUpload(name: string, id: string, digest: Digest, body?: AsyncIterable<Uint8Array>, options?: AppendOptions): Promise<BlobDescriptor>;
  uploadStatus(name: string, id: string): Promise<UploadStatus>;
  cancelUpload(name: string, id: string): Promise<void>;
}

/** What an upload's first request says of the blob it will carry, before its body is read. */
export interface UploadIntent {
  digest?: Digest;
  /** The body's `Content-Length`. */
  length?: number;
}

/** A manifest as served; `warning` is set when a mirror served its cached copy because the upstream failed. */
export interface Manifest extends StoredManifest {
  warning?: string;
}

/** What a blob read will want: only its size (`head`), or part of its bytes (`range`). */
export interface BlobWant {
  head?: boolean;
  range?: boolean;
}

export type BlobAnswer =
  /** In storage for the repository: read with `readBlob` or `blobURL`. */
  | { kind: 'stored'; digest: string; size: number }
  /**
   * A mirror's blob not yet stored: the bytes as they arrive from the upstream while they are stored (no body for a
   * `head`), and the size when the upstream said. Never for a `range`: that is fetched first and answered `stored`.
   */
  | { kind: 'upstream'; size?: number; body?: Readable };

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
  descriptorCache?: DescriptorCache;
  /** Shorthand for an in-memory `descriptorCache` of at most this many digests (0: no limit). */
  descriptorCacheSize?: number;
  /**
   * Told about every digest about to be linked, mounted or referenced by a pushed manifest, before the link is
   * written (the garbage collector's live set, see server/gc/recorder.ts).
   */
  recorder?: { record(name: string, digests: string[]): Promise<void> };
  /** Told when stored manifest bytes do not hash to their digest (they are answered as unknown, never served). */
  onCorruptContent?: (digest: string) => void;
  /**
   * The content policies and manifest validation in force (server/policies/rules.ts; read at each decision, so a
   * SIGHUP reload applies to the next request). Absent: no policies, registry:2's default validation.
   */
  policies?: Policies;
  /** Told about every manifest served (GET or HEAD), for retention's last-pulled times (server/policies/pulls.ts). */
  pulls?: { record(name: string, ref: Reference, digest: string): void };
  /** Quota enforcement (server/policies/quota.ts): charged before links are written, released after they go. */
  quotas?: Quotas;
}

/**
 * The registry over a storage driver, in registry:2's layout: the HTTP layer's `Registry` when no mirror is
 * configured. Its stores (`blobs`, `uploads`, `manifests`) are what the operations are made of; the pull-through cache
 * fills them directly.
 */
export class LocalRegistry implements Registry {
  readonly blobs: BlobStore;
  readonly uploads: UploadStore;
  readonly manifests: ManifestStore;
  /** The blob-descriptor cache behind the collector's gate, when configured. */
  readonly descriptorCache?: GatedDescriptorCache;
  /** The content policies in force, when configured (server/policies/rules.ts). */
  readonly policies?: Policies;
  /** Quota enforcement, when quotas are configured. */
  readonly quotas?: Quotas;

  constructor(readonly driver: StorageDriver, private readonly options: RegistryOptions = {}) {
    const inner =
      options.descriptorCache ??
      (options.descriptorCacheSize === undefined ? undefined : new InMemoryDescriptorCache({ maxEntries: options.descriptorCacheSize }));
    const cache = inner && new GatedDescriptorCache(inner);
    this.descriptorCache = cache;
    this.blobs = new BlobStore(driver, cache);
    const recorder = options.recorder;
    this.uploads = new UploadStore(driver, this.blobs, {
      ...(recorder ? { beforeBlobLinked: (name: string, d: string) => recorder.record(name, [d]) } : {}),
      ...(options.quotas ? { quotas: options.quotas } : {}),
    });
    this.manifests = new ManifestStore(driver, this.blobs, {
      ...(recorder ? { onReferenced: (name: string, ds: string[]) => recorder.record(name, ds) } : {}),
      ...(options.onCorruptContent ? { onCorrupt: options.onCorruptContent } : {}),
      ...(options.policies ? { policies: options.policies } : {}),
      ...(options.quotas ? { quotas: options.quotas } : {}),
    });
    this.policies = options.policies;
    this.quotas = options.quotas;
  }

  // The Registry operations, each done by one of the stores.
  getManifest: Registry['getManifest'] = async (name, ref) => {
    const manifest = await this.manifests.get(name, ref);
    this.options.pulls?.record(name, ref, manifest.digest);
    return manifest;
  };
  putManifest: Registry['putManifest'] = (...args) => this.manifests.put(...args);
  deleteManifest: Registry['deleteManifest'] = (...args) => this.manifests.delete(...args);
  listTags: Registry['listTags'] = (...args) => this.manifests.listTags(...args);
  referrers: Registry['referrers'] = (...args) => this.manifests.referrers(...args);
  statBlob: Registry['statBlob'] = async (name, digest) => ({ kind: 'stored', ...(await this.blobs.stat(name, digest)) });
  readBlob: Registry['readBlob'] = (_name, digest, offset, length) => this.blobs.open(digest, offset, length);
  blobURL: Registry['blobURL'] = (_name, digest) => this.blobs.redirectURL(digest);
  deleteBlob: Registry['deleteBlob'] = async (name, digest) => {
    await this.blobs.unlink(name, digest);
    await this.quotas?.release(name, 'layer', digest.value);
  };
  startUpload: Registry['startUpload'] = async (name, algorithm, intent) => {
    // Refused before a session exists (and before a monolithic body is read) when the blob cannot fit.
    await this.quotas?.room(name, intent?.length ?? 0, intent?.digest?.value);
    return this.uploads.start(name, algorithm);
  };
  appendUpload: Registry['appendUpload'] = (...args) => this.uploads.append(...args);
  completeUpload: Registry['completeUpload'] = (...args) => this.uploads.complete(...args);
  uploadStatus: Registry['uploadStatus'] = (...args) => this.uploads.status(...args);
  cancelUpload: Registry['cancelUpload'] = (...args) => this.uploads.cancel(...args);

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
    // A refusal is DENIED, not a fallback upload: the upload would be refused too, after its bytes.
    const undo = await this.quotas?.charge(name, 'layer', digest.value, desc.size);
    try {
      await this.blobs.link(name, digest);
    } catch (err) {
      await undo?.().catch(() => {});
      throw err;
    }
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
      if (layout.isUnderscored(path)) continue;
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
      // A folder of 10,000 repositories is listed by every catalog page: no string or Set per entry to find these.
      if (after && children.some((c) => layout.isNamed(c, '_layers') || layout.isNamed(c, '_manifests'))) yield path;
      yield* this.repositoryDirs(children, after ? undefined : startAfter);
    }
  }
}
