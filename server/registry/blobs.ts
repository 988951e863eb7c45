/**
 * Blobs as a repository sees them: a blob is served by a repository only when the repository links it
 * (`_layers/<alg>/<hex>/link`, or a manifest revision link for manifests fetched through the blobs endpoint) and
 * its bytes exist in the shared content store (`blobs/<alg>/<xx>/<hex>/data`).
 */
import type { Readable } from 'node:stream';
import { PathNotFoundError, ifExists, type StorageDriver } from '../../storage-drivers/driver.js';
import { RegistryError } from './errors.js';
import * as layout from './layout.js';
import type { Digest } from './reference.js';
import { CacheUnavailableError, type GatedDescriptorCache } from '../cache/index.js';

export interface BlobDescriptor {
  digest: string;
  size: number;
}

export class BlobStore {
  constructor(private readonly driver: StorageDriver, private readonly cache?: GatedDescriptorCache) {}

  /** Size of the blob in the shared content store, or undefined when its bytes are absent. */
  async statContent(digest: Digest): Promise<BlobDescriptor | undefined> {
    const ticket = this.cache?.ticket();
    const cached = await this.cache?.stat(digest.value);
    if (cached !== undefined) return { digest: digest.value, size: cached.size };
    const info = await ifExists(this.driver.stat(layout.blobDataPath(digest)));
    if (!info || info.isDir) return undefined;
    await this.cache?.set(digest.value, { size: info.size }, ticket);
    return { digest: digest.value, size: info.size };
  }

  /** True when the repository links the blob as a layer/config blob (the cache may know; else storage says). */
  async isLinked(name: string, digest: Digest): Promise<boolean> {
    const ticket = this.cache?.ticket();
    if (await this.cache?.isLinked(name, digest.value)) return true;
    const linked = await this.isLinkedInStorage(name, digest);
    if (linked) await this.cache?.setLinked(name, digest.value, ticket);
    return linked;
  }

  private async isLinkedInStorage(name: string, digest: Digest): Promise<boolean> {
    const link = await ifExists(this.driver.getContent(layout.layerLinkPath(name, digest)));
    return link !== undefined && link.toString('utf8').trim() === digest.value;
  }

  /**
   * Run a cache invalidation. When it cannot reach a shared cache, the cache has already switched itself off (and
   * logged it), so this process serves nothing stale; the storage change stands either way.
   */
  private async invalidate(run: (cache: GatedDescriptorCache) => Promise<void>): Promise<void> {
    if (!this.cache) return;
    try {
      await run(this.cache);
    } catch (err) {
      if (!(err instanceof CacheUnavailableError)) throw err;
    }
  }

  private async isManifestRevision(name: string, digest: Digest): Promise<boolean> {
    const link = await ifExists(this.driver.getContent(layout.revisionLinkPath(name, digest)));
    return link !== undefined && link.toString('utf8').trim() === digest.value;
  }

  /**
   * The blob as served by repository `name`: BLOB_UNKNOWN unless the repository links it and its bytes exist.
   * Manifests pushed to the repository are blobs of it too, as in registry:2.
   */
  async stat(name: string, digest: Digest): Promise<BlobDescriptor> {
    const linked = (await this.isLinked(name, digest)) || (await this.isManifestRevision(name, digest));
    const desc = linked ? await this.statContent(digest) : undefined;
    if (!desc) throw new RegistryError('BLOB_UNKNOWN', undefined, { detail: { digest: digest.value } });
    return desc;
  }

  /** A stream of `length` bytes from `offset` of the blob's content (the caller has checked with `stat`). */
  async open(digest: Digest, offset: number, length: number): Promise<Readable> {
    try {
      return await this.driver.reader(layout.blobDataPath(digest), offset, length);
    } catch (err) {
      if (err instanceof PathNotFoundError) {
        await this.invalidate((cache) => cache.forget(digest.value));
        throw new RegistryError('BLOB_UNKNOWN', undefined, { detail: { digest: digest.value } });
      }
      throw err;
    }
  }

  /** A URL the client may GET the content from directly, when the driver offers one (a HEAD is answered here). */
  redirectURL(digest: Digest): Promise<string | null> {
    return this.driver.redirectURL(layout.blobDataPath(digest), { method: 'GET', expiresIn: 20 * 60 });
  }

  /**
   * What `contentReplaced` needs to know before the blob's bytes are replaced: `statContent`, or undefined without a
   * cache (there is nothing to invalidate then, and the stat is saved: one system call per push).
   */
  async cachedContent(digest: Digest): Promise<BlobDescriptor | undefined> {
    return this.cache ? this.statContent(digest) : undefined;
  }

  /**
   * The blob's bytes were just written, replacing any file there: when `before` (what `statContent` said just
   * before) gave another size, that cached size described the bytes replaced, and is forgotten.
   */
  async contentReplaced(digest: Digest, before: BlobDescriptor | undefined, size: number): Promise<void> {
    if (before && before.size !== size) await this.invalidate((cache) => cache.forget(digest.value));
  }

  /** Let repository `name` serve the blob (its bytes must already be in the content store). */
  async link(name: string, digest: Digest): Promise<void> {
    const ticket = this.cache?.ticket();
    await this.driver.putContent(layout.layerLinkPath(name, digest), digest.value);
    await this.cache?.setLinked(name, digest.value, ticket);
  }

  /**
   * Remove the repository's link to the blob (the bytes stay until the garbage collector finds them unreferenced,
   * as in registry:2). BLOB_UNKNOWN when the repository does not link it.
   */
  async unlink(name: string, digest: Digest): Promise<void> {
    // Storage decides, not the cache; the cache is told afterwards (its tombstone stops a racing reader re-adding it).
    if (!(await this.isLinkedInStorage(name, digest))) {
      throw new RegistryError('BLOB_UNKNOWN', undefined, { detail: { digest: digest.value } });
    }
    await ifExists(this.driver.delete(`${layout.layersPath(name)}/${digest.algorithm}/${digest.hex}`));
    await this.invalidate((cache) => cache.forgetLink(name, digest.value));
  }

  /**
   * Store small content (a manifest) under its digest. A file already there is kept only when it holds exactly
   * these bytes: one of the same size is no proof, and wrong bytes under a digest are replaced, never trusted.
   */
  async putContent(digest: Digest, content: Uint8Array): Promise<void> {
    const path = layout.blobDataPath(digest);
    const stored = await ifExists(this.driver.getContent(path));
    if (stored && Buffer.compare(stored, content) === 0) return;
    await this.driver.putContent(path, content);
  }

  async getContent(digest: Digest): Promise<Buffer | undefined> {
    const content = await ifExists(this.driver.getContent(layout.blobDataPath(digest)));
    if (content === undefined) await this.invalidate((cache) => cache.forget(digest.value));
    return content;
  }
}
