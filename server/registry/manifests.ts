/**
 * Manifests, tags and referrers of a repository.
 *
 * A manifest's bytes live in the content store like any blob; the repository holds a revision link to it. A tag is
 * a `current/link` holding a manifest digest (plus an index of every digest it ever held, as registry:2 keeps).
 * A manifest with a `subject` is recorded under `_referrers/<subject>` so the referrers API is a directory listing.
 */
import { LRUCache } from 'lru-cache';
import { lruOfEntries } from '../lru.js';
import { PathNotFoundError, StorageDriverError, type StorageDriver, ifExists } from '../../storage-drivers/driver.js';
import { BlobStore } from './blobs.js';
import { RegistryError } from './errors.js';
import * as layout from './layout.js';
import {
  EMPTY_JSON,
  EMPTY_JSON_DIGEST,
  parseManifest,
  parseManifestJson,
  servableMediaType,
  type Descriptor,
} from './manifest-format.js';
import type { Policies } from '../policies/rules.js';
import { immutableTagsNaming, manifestDeleteDenied, type ImmutableTag, refuseMoves, setImmutableTag, tagDeleteDenied } from '../policies/immutable.js';
import { validateManifest } from '../policies/validation.js';
import type { Quotas } from '../policies/quota.js';
import { digestOf, isValidTag, parseDigest, tryParseDigest, validateTag, type Digest, type Reference } from './reference.js';

export interface StoredManifest {
  digest: string;
  mediaType: string;
  content: Buffer;
}

export interface PutManifestResult {
  digest: string;
  /** The media type the manifest was stored as. */
  mediaType: string;
  /** The subject digest when the manifest has one (answered as `OCI-Subject`). */
  subject?: string;
  /** Tags set by this request. */
  tags: string[];
}

export interface ManifestHooks {
  /** Called for every digest a pushed manifest makes live (itself, blobs, children), before anything is checked. */
  onReferenced?(name: string, digests: string[]): Promise<void> | void;
  /** Told when stored bytes do not hash to the digest they are stored under (they are then not served). */
  onCorrupt?(digest: string): void;
  /** The content policies and manifest validation in force (read at each decision; see server/policies/rules.ts). */
  policies?: Policies;
  /** Quotas (server/policies/quota.ts): a revision link is charged before it is written and released after it goes. */
  quotas?: Pick<Quotas, 'charge' | 'release' | 'recharge'>;
}

export interface TagPage {
  tags: string[];
  /** Set when more tags follow the page: the last tag of this page. */
  next?: string;
}

function manifestUnknown(name: string, reference: string): RegistryError {
  return new RegistryError('MANIFEST_UNKNOWN', undefined, { detail: { name, reference } });
}

/**
 * The media type of cached manifest bytes ('' when they are not a servable manifest), worked out once per cached
 * buffer rather than parsed on every GET.
 */
const mediaTypes = new WeakMap<Buffer, string>();
function mediaTypeOf(content: Buffer): string | undefined {
  let mediaType = mediaTypes.get(content);
  if (mediaType === undefined) {
    mediaType = servableMediaType(content) ?? '';
    mediaTypes.set(content, mediaType);
  }
  return mediaType === '' ? undefined : mediaType;
}

/** (repository, digest) pairs whose revision link this process has seen, bounded (least recently added dropped first). */
class RevisionSet {
  private readonly entries: LRUCache<string, true>;
  constructor(maxEntries: number) {
    this.entries = lruOfEntries(maxEntries);
  }

  has(name: string, digest: string): boolean {
    return this.entries.has(`${name}\u0000${digest}`);
  }

  add(name: string, digest: string): void {
    this.entries.set(`${name}\u0000${digest}`, true);
  }

  delete(name: string, digest: string): void {
    this.entries.delete(`${name}\u0000${digest}`);
  }
}

export class ManifestStore {
  /**
   * Immutable manifest bytes by digest, bounded by total size; none above a quarter of it is kept (a manifest GET by
   * tag is the hot path). Sizes must be positive for lru-cache, so empty bytes count as one.
   */
  private readonly cache = new LRUCache<string, Buffer>({
    maxSize: 32 * 1024 * 1024,
    maxEntrySize: 8 * 1024 * 1024,
    sizeCalculation: (content) => Math.max(content.byteLength, 1),
  });
  private readonly revisions = new RevisionSet(100_000);

  constructor(
    private readonly driver: StorageDriver,
    private readonly blobs: BlobStore,
    private readonly hooks: ManifestHooks = {},
  ) {}

  private async readLink(path: string): Promise<Digest | undefined> {
    const raw = await ifExists(this.driver.getContent(path));
    return raw === undefined ? undefined : tryParseDigest(raw.toString('utf8').trim());
  }

  /** The digest a tag points at, or undefined. */
  async resolveTag(name: string, tag: string): Promise<Digest | undefined> {
    return this.readLink(layout.tagCurrentLinkPath(name, tag));
  }

  /**
   * Whether the repository holds the manifest: a revision link, or (for data written by registry:2 before 2.1.1,
   * which linked manifests like layers) a `_layers` link to bytes that are a manifest, as registry:2 still accepts.
   */
  async hasRevision(name: string, digest: Digest): Promise<boolean> {
    return (await this.revisionLink(name, digest)) !== undefined;
  }

  private async revisionLink(name: string, digest: Digest): Promise<'revision' | 'legacy' | undefined> {
    if ((await this.readLink(layout.revisionLinkPath(name, digest)))?.value === digest.value) return 'revision';
    if ((await this.readLink(layout.layerLinkPath(name, digest)))?.value === digest.value) return 'legacy';
    return undefined;
  }

  /**
   * The bytes stored under `digest`, verified: storage bytes that do not hash to the digest (a damaged file, or one
   * written by a race) are never served as that manifest. Verified bytes are cached, so the hot path hashes nothing.
   */
  private async content(digest: Digest): Promise<Buffer | undefined> {
    const cached = this.cache.get(digest.value);
    if (cached) return cached;
    const content = await this.blobs.getContent(digest);
    if (!content) return undefined;
    if (digestOf(content, digest.algorithm) !== digest.value) {
      this.hooks.onCorrupt?.(digest.value);
      return undefined;
    }
    this.cache.set(digest.value, content);
    return content;
  }

  /**
   * The manifest a tag or digest names in the repository; MANIFEST_UNKNOWN when there is none.
   *
   * By tag, the tag link is always read from storage, but the revision check may come from `revisions`: a tag only
   * ever names a revision that exists (a push writes the revision first; a delete by digest removes the tags
   * before the revision, in any replica), so a revision seen once stays valid for as long as a tag names it.
   * By digest, the revision link is always read.
   */
  async get(name: string, ref: Reference): Promise<StoredManifest> {
    const reference = ref.kind === 'tag' ? ref.tag : ref.digest.value;
    const digest = ref.kind === 'tag' ? await this.resolveTag(name, ref.tag) : ref.digest;
    const known = ref.kind === 'tag' && digest !== undefined && this.revisions.has(name, digest.value);
    const link = known ? 'revision' : digest && (await this.revisionLink(name, digest));
    if (!digest || !link) throw manifestUnknown(name, reference);
    const content = await this.content(digest);
    // Bytes that are not a manifest of a type we serve are unknown as a manifest, whatever link names them (a legacy
    // `_layers` link may name any blob, and a blob can say it is `text/html`).
    const mediaType = content && mediaTypeOf(content);
    if (!content || !mediaType) throw manifestUnknown(name, reference);
    if (link === 'revision') this.revisions.add(name, digest.value);
    return { digest: digest.value, mediaType, content };
  }

  /**
   * Store a manifest. `ref` is the tag or digest of the URL; `extraTags` come from `?tag=` (digest pushes only).
   * Validation: JSON and media type (MANIFEST_INVALID), layer URLs (`validation.manifests.urls`, MANIFEST_INVALID),
   * the URL digest matches the bytes (DIGEST_INVALID), every referenced blob, and every child manifest
   * `validation.manifests.indexes` requires, is in this repository (MANIFEST_BLOB_UNKNOWN). The subject need not exist.
   */
  async put(
    name: string,
    ref: Reference,
    content: Buffer,
    contentType: string | undefined,
    extraTags: string[] = [],
  ): Promise<PutManifestResult> {
    const parsed = parseManifest(content, contentType);
    // validation.manifests: layer URLs (MANIFEST_INVALID), and which blobs and index children must exist here.
    const required = validateManifest(parsed, this.hooks.policies?.rules.manifests);
    const algorithm = ref.kind === 'digest' ? ref.digest.algorithm : 'sha256';
    const digest = parseDigest(digestOf(content, algorithm));
    if (ref.kind === 'digest' && ref.digest.value !== digest.value) {
      throw new RegistryError('DIGEST_INVALID', 'manifest digest does not match the URL', {
        detail: { expected: ref.digest.value, actual: digest.value },
      });
    }
    const tags = [...new Set([...(ref.kind === 'tag' ? [ref.tag] : []), ...extraTags.map(validateTag)])];
    // An immutable tag naming another manifest refuses the push before anything is stored (server/policies/immutable.ts).
    await refuseMoves(this.driver, this.hooks.policies, name, tags, digest);

    // Before the existence checks: the garbage collector re-checks this record before deleting anything, so a blob
    // checked here is either kept or found missing (MANIFEST_BLOB_UNKNOWN), never deleted after the check.
    await this.hooks.onReferenced?.(name, [digest.value, ...parsed.blobs.map((b) => b.value), ...parsed.manifests.map((m) => m.value)]);
    const missing: string[] = [];
    let supplyEmptyConfig: Digest | undefined;
    for (const blob of required.blobs) {
      if ((await this.blobs.isLinked(name, blob)) && (await this.blobs.statContent(blob))) continue;
      // Artifacts use the empty JSON `{}` as config; we know its bytes, so we can supply it when it was not pushed.
      if (blob.value === EMPTY_JSON_DIGEST && parsed.emptyConfig) supplyEmptyConfig = blob;
      else missing.push(blob.value);
    }
    for (const child of required.manifests) {
      if (!(await this.hasRevision(name, child))) missing.push(child.value);
    }
    if (missing.length > 0) {
      throw new RegistryError('MANIFEST_BLOB_UNKNOWN', 'manifest references blobs or manifests unknown to this repository', {
        detail: { missing },
      });
    }

    // Quotas: the empty config and the manifest's own bytes are charged before their links are written.
    const undoConfig = supplyEmptyConfig && (await this.hooks.quotas?.charge(name, 'layer', supplyEmptyConfig.value, EMPTY_JSON.length));
    let undoManifest: (() => Promise<void>) | undefined;
    try {
      undoManifest = await this.hooks.quotas?.charge(name, 'manifest', digest.value, content.length);
    } catch (err) {
      await undoConfig?.().catch(() => {});
      throw err;
    }
    try {
      if (supplyEmptyConfig) {
        await this.blobs.putContent(supplyEmptyConfig, EMPTY_JSON);
        await this.blobs.link(name, supplyEmptyConfig);
      }
      await this.blobs.putContent(digest, content);
      await this.driver.putContent(layout.revisionLinkPath(name, digest), digest.value);
    } catch (err) {
      await undoManifest?.().catch(() => {});
      await undoConfig?.().catch(() => {});
      throw err;
    }
    if (parsed.subject) {
      await this.driver.putContent(layout.referrerLinkPath(name, parsed.subject.parsed, digest), digest.value);
    }
    for (const tag of tags) await this.tag(name, tag, digest);
    this.cache.set(digest.value, content);
    return { digest: digest.value, mediaType: parsed.mediaType, subject: parsed.subject?.digest, tags };
  }

  /**
   * Point a tag at a manifest revision. The current link is replaced atomically, so concurrent PUTs leave one.
   * A tag an immutable-tag rule covers is instead created exclusively, or left as it is when it already names the
   * digest (DENIED when it names another), then the revision is made sure of (a delete by digest may have raced).
   */
  async tag(name: string, tag: string, digest: Digest): Promise<void> {
    const rule = this.hooks.policies?.rules.immutableRule(name, tag);
    if (rule) {
      await setImmutableTag(this.driver, name, tag, digest, rule);
      for (const d of [digest.value, ...(await this.childrenOf(digest))]) {
        const parsed = parseDigest(d);
        if ((await this.revisionLink(name, parsed)) === undefined) await this.restoreRevision(name, parsed);
      }
      return;
    }
    await this.driver.putContent(layout.tagIndexLinkPath(name, tag, digest), digest.value);
    await this.driver.putContent(layout.tagCurrentLinkPath(name, tag), digest.value);
  }

  /**
   * DELETE by tag removes the tag only. DELETE by digest removes the revision, every tag pointing at it, and its
   * entry in the referrers index; the bytes stay for the garbage collector.
   */
  async delete(name: string, ref: Reference): Promise<void> {
    if (ref.kind === 'tag') {
      const current = await this.resolveTag(name, ref.tag);
      if (!current) throw manifestUnknown(name, ref.tag);
      const rule = this.hooks.policies?.rules.immutableRule(name, ref.tag);
      if (rule) throw tagDeleteDenied(rule, ref.tag, current.value);
      await ifExists(this.driver.delete(layout.tagPath(name, ref.tag)));
      return;
    }
    const digest = ref.digest;
    this.revisions.delete(name, digest.value);
    if (!(await this.hasRevision(name, digest))) throw manifestUnknown(name, digest.value);
    // Immutable tags naming the manifest refuse the delete before anything is removed; they are never removed below.
    const policies = this.hooks.policies;
    const locked = await this.immutableTagsNaming(name, digest);
    if (locked.length > 0) throw manifestDeleteDenied(digest.value, locked);
    const content = await this.content(digest);
    for (const tag of await this.allTags(name)) {
      if (policies?.rules.immutableRule(name, tag)) continue;
      const current = await this.resolveTag(name, tag);
      if (current?.value === digest.value) await ifExists(this.driver.delete(layout.tagPath(name, tag)));
    }
    if (content) {
      try {
        const subject = parseManifest(content, undefined).subject;
        if (subject) await ifExists(this.driver.delete(layout.referrerLinkPath(name, subject.parsed, digest).replace(/\/link$/, '')));
      } catch {
        // Bytes that no longer parse have no referrers entry we could have written.
      }
    }
    await this.removeRevisionDir(name, digest);
    // A push may have set an immutable tag to the manifest since the first look: then the delete did not happen.
    const raced = await this.immutableTagsNaming(name, digest);
    if (raced.length > 0) {
      await this.restoreRevision(name, digest, content);
      throw manifestDeleteDenied(digest.value, raced);
    }
    await this.hooks.quotas?.release(name, 'manifest', digest.value);
  }

  /**
   * The immutable tags that keep the manifest from being deleted: those naming it, and those naming an index that
   * lists it (server/policies/immutable.ts).
   */
  async immutableTagsNaming(name: string, digest: Digest): Promise<ImmutableTag[]> {
    return immutableTagsNaming(this.driver, this.hooks.policies, name, digest, (d) => this.childrenOf(d));
  }

  /** The manifests an index lists ([] for any other manifest, or bytes that are missing or do not parse). */
  private async childrenOf(digest: Digest): Promise<string[]> {
    const content = await this.content(digest);
    if (!content) return [];
    try {
      return parseManifest(content, undefined).manifests.map((m) => m.value);
    } catch {
      return [];
    }
  }

  /**
   * Remove a revision's folder. A push of the same manifest writing its link meanwhile can make a recursive removal
   * on the filesystem fail (ENOTEMPTY); the removal is tried again, as the delete was asked first.
   */
  private async removeRevisionDir(name: string, digest: Digest): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await ifExists(this.driver.delete(layout.revisionDir(name, digest)));
        return;
      } catch (err) {
        if (!(err instanceof StorageDriverError) || attempt >= 3) throw err;
      }
    }
  }

  /**
   * Write back the revision link (and referrers entry) of a manifest an immutable tag names, removed by a delete
   * by digest that raced the push setting the tag (server/policies/immutable.ts). Recorded for the garbage
   * collector first, as a push records what it makes live.
   */
  private async restoreRevision(name: string, digest: Digest, known?: Buffer): Promise<void> {
    await this.hooks.onReferenced?.(name, [digest.value]);
    const content = known ?? (await this.content(digest));
    // Counted again (never refused: the manifest was accepted, only a racing delete released it).
    await this.hooks.quotas?.recharge(name, 'manifest', digest.value, content?.length ?? 0);
    await this.driver.putContent(layout.revisionLinkPath(name, digest), digest.value);
    if (!content) return;
    try {
      const subject = parseManifest(content, undefined).subject;
      if (subject) await this.driver.putContent(layout.referrerLinkPath(name, subject.parsed, digest), digest.value);
    } catch {
      // Bytes that no longer parse had no referrers entry.
    }
  }

  /** True when anything was ever stored for the repository. */
  async repositoryExists(name: string): Promise<boolean> {
    return (await ifExists(this.driver.stat(layout.repositoryPath(name)))) !== undefined;
  }

  private async allTags(name: string): Promise<string[]> {
    const entries = await ifExists(this.driver.list(layout.tagsPath(name)));
    return (entries ?? []).map(layout.baseName).sort();
  }

  /**
   * Tags in ASCII order, `n` of them after `last` (both optional). NAME_UNKNOWN when the repository does not exist.
   */
  async listTags(name: string, n?: number, last?: string): Promise<TagPage> {
    // Read only the page: the walk lists the tags folder from just after `last` (S3 with start-after), does not
    // descend into any tag, and stops as soon as it knows whether more tags follow. Siblings come in ASCII order.
    const root = layout.tagsPath(name);
    const tags: string[] = [];
    try {
      for await (const info of this.driver.walk(root, {
        descend: () => false,
        startAfter: last !== undefined && isValidTag(last) ? `${root}/${last}` : undefined,
      })) {
        const tag = layout.baseName(info.path);
        if (!info.isDir || (last !== undefined && tag <= last)) continue;
        if (n !== undefined && tags.length === n) return { tags, next: tags.at(-1) };
        tags.push(tag);
      }
    } catch (err) {
      if (!(err instanceof PathNotFoundError)) throw err;
      if (!(await this.repositoryExists(name))) throw new RegistryError('NAME_UNKNOWN', undefined, { detail: { name } });
    }
    return { tags };
  }

  /** The descriptor of a stored manifest as the referrers API shows it, and the manifest's subject. */
  private describe(digest: Digest, content: Buffer): { desc: Descriptor; subject?: string } {
    const parsed = parseManifest(content, undefined);
    const desc: Descriptor = { mediaType: parsed.mediaType, digest: digest.value, size: content.byteLength };
    if (parsed.artifactType) desc.artifactType = parsed.artifactType;
    if (parsed.annotations) desc.annotations = parsed.annotations;
    return { desc, subject: parsed.subject?.digest };
  }

  /**
   * Manifests in the repository whose `subject` is `subject`, optionally only those of one artifactType.
   * Includes manifests listed in a registry-maintained fallback tag (`<alg>-<hex>`, the spec's referrers tag
   * schema) that clients wrote before this registry offered the API.
   */
  async referrers(name: string, subject: Digest, artifactType?: string): Promise<Descriptor[]> {
    const found = new Map<string, Digest>();
    const algDirs = await ifExists(this.driver.list(layout.referrersPath(name, subject)));
    for (const algDir of algDirs ?? []) {
      for (const entry of (await ifExists(this.driver.list(algDir))) ?? []) {
        const d = tryParseDigest(`${layout.baseName(algDir)}:${layout.baseName(entry)}`);
        if (d) found.set(d.value, d);
      }
    }
    const fallback = await this.resolveTag(name, `${subject.algorithm}-${subject.hex.slice(0, 64)}`);
    if (fallback) {
      const index = await this.content(fallback);
      try {
        const doc = index ? (parseManifestJson(index) as { manifests?: { digest?: string }[] } | null) : undefined;
        for (const m of doc?.manifests ?? []) {
          const d = typeof m.digest === 'string' ? tryParseDigest(m.digest) : undefined;
          if (d) found.set(d.value, d);
        }
      } catch {
        // Not an index: nothing to add.
      }
    }

    const result: Descriptor[] = [];
    for (const d of [...found.values()].sort((a, b) => (a.value < b.value ? -1 : 1))) {
      if (!(await this.hasRevision(name, d))) continue;
      const content = await this.content(d);
      if (!content) continue;
      let described: ReturnType<ManifestStore['describe']>;
      try {
        described = this.describe(d, content);
      } catch {
        continue;
      }
      const { desc } = described;
      if (described.subject !== subject.value) continue;
      if (artifactType !== undefined && desc.artifactType !== artifactType) continue;
      result.push(desc);
    }
    return result;
  }
}

