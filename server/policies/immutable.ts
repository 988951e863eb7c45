/**
 * Immutable tags (`policies.immutabletags`): a tag a rule covers, once it names a manifest, is never moved to
 * another one and never deleted, nor is the manifest it names. The rules are read from `Policies` at each decision,
 * so a rule added and SIGHUP'd covers the existing tags from the next request on (no migration).
 *
 * What makes it hold with several replicas over one storage (ManifestStore calls these; see docs/policies.md):
 *
 *  - Setting a covered tag that does not exist yet is an exclusive create of its current link
 *    (`putContentIfAbsent`: O_EXCL on the filesystem, a conditional PutObject on S3). Of two pushes racing to a new
 *    tag exactly one creates it; the other reads the link back and succeeds only when it names the same digest.
 *    A covered tag that exists is never written again. The tag's index link (its history) is written only once
 *    the tag names the digest, so a refused push leaves no history entry claiming the tag once held its manifest.
 *
 *  - A delete by digest racing a push that sets a covered tag to that digest. The push writes the revision link,
 *    then the tag, then checks that the revision link is still there (and writes it back if not). The delete looks
 *    for covered tags naming the digest (refusing when one does), removes the other tags and the revision, then
 *    looks again, and when a covered tag names the digest now, writes the revision back and answers DENIED. With
 *    storage that reads its own writes (both drivers), one of the two always sees the other: if the push's tag
 *    came before the delete's second look, the delete restores the revision; if after, the push's check comes after
 *    the delete's removal and restores it. Either way no covered tag is left naming a missing manifest, and no
 *    covered tag is ever removed (the delete skips covered tags).
 */
import { type StorageDriver, ifExists, readAfterLostCreate } from '../../storage-drivers/driver.js';
import { RegistryError } from '../registry/errors.js';
import * as layout from '../registry/layout.js';
import { parseDigest, tryParseDigest, type Digest } from '../registry/reference.js';
import type { ImmutableTagRule, Policies } from './rules.js';

/** A covered tag and the rule covering it. */
export interface ImmutableTag {
  tag: string;
  rule: ImmutableTagRule;
  /** Set when the tag names an index that lists the manifest (a platform's manifest), rather than the manifest. */
  index?: string;
}

/** Marks the refusals as a policy's, not an authorization failure (server/http/errors.ts). */
const REFUSED = { kind: 'policy-refused', policy: 'immutabletags' } as const;

/** The refusal of a push that would move a covered tag. */
export function moveDenied(rule: ImmutableTagRule, tag: string, current: string, attempted: string): RegistryError {
  return new RegistryError(
    'DENIED',
    `tag ${tag} is immutable under ${rule.name}: it names ${current} and cannot be moved to ${attempted}`,
    { detail: { rule: rule.name, tag, current, attempted }, reason: REFUSED },
  );
}

/** The refusal of a DELETE by tag of a covered tag. */
export function tagDeleteDenied(rule: ImmutableTagRule, tag: string, current: string): RegistryError {
  return new RegistryError('DENIED', `tag ${tag} is immutable under ${rule.name} and cannot be deleted`, {
    detail: { rule: rule.name, tag, current },
    reason: REFUSED,
  });
}

/** The refusal of a DELETE by digest of a manifest that covered tags name. */
export function manifestDeleteDenied(digest: string, naming: readonly ImmutableTag[]): RegistryError {
  const first = naming[0]!;
  const others = naming.length > 1 ? ` (and ${naming.length - 1} more immutable tag${naming.length > 2 ? 's' : ''})` : '';
  const how = first.index ? `listed by index ${first.index}, which tag ${first.tag} names` : `named by tag ${first.tag}`;
  return new RegistryError(
    'DENIED',
    `manifest ${digest} is ${how}, immutable under ${first.rule.name}${others}, and cannot be deleted`,
    { detail: { digest, tags: naming.map((n) => ({ tag: n.tag, rule: n.rule.name, ...(n.index ? { index: n.index } : {}) })) }, reason: REFUSED },
  );
}

async function readLink(driver: StorageDriver, path: string, afterLostCreate = false): Promise<Digest | undefined> {
  // After a lost exclusive create, the winner's link may still be empty for a moment.
  const raw = afterLostCreate ? await readAfterLostCreate(driver, path) : await ifExists(driver.getContent(path));
  return raw === undefined ? undefined : tryParseDigest(raw.toString('utf8').trim());
}

/**
 * The early check of a push (before anything is stored): DENIED when one of `tags` is covered and already names
 * another manifest. The exclusive create in `setImmutableTag` is what decides races; this only spares storing a
 * revision for a push that is bound to be refused, and refuses a push of several tags before any is set.
 */
export async function refuseMoves(driver: StorageDriver, policies: Policies | undefined, name: string, tags: readonly string[], digest: Digest): Promise<void> {
  if (!policies) return;
  for (const tag of tags) {
    const rule = policies.rules.immutableRule(name, tag);
    if (!rule) continue;
    const current = await readLink(driver, layout.tagCurrentLinkPath(name, tag));
    if (current && current.value !== digest.value) throw moveDenied(rule, tag, current.value, digest.value);
  }
}

/**
 * Make covered tag `tag` name `digest`: created exclusively when absent; when present, it must already name
 * `digest` (else DENIED). Then the tag's index link. Returns whether this call created the tag.
 */
export async function setImmutableTag(driver: StorageDriver, name: string, tag: string, digest: Digest, rule: ImmutableTagRule): Promise<boolean> {
  const path = layout.tagCurrentLinkPath(name, tag);
  let created = false;
  // Two rounds at most: a tag found absent by the exclusive create's loser could only have been removed in between
  // by a replica whose rules do not cover it (a reload not yet applied there).
  for (let attempt = 0; ; attempt++) {
    const current = await readLink(driver, path, attempt > 0);
    if (current) {
      if (current.value !== digest.value) throw moveDenied(rule, tag, current.value, digest.value);
      break;
    }
    if (await driver.putContentIfAbsent(path, digest.value)) {
      created = true;
      break;
    }
    if (attempt >= 2) {
      throw new RegistryError('UNKNOWN', `tag ${tag} changed while it was being set; try again`, { detail: { tag } });
    }
  }
  await driver.putContent(layout.tagIndexLinkPath(name, tag, digest), digest.value);
  return created;
}

/**
 * The covered tags of `name` naming `digest` now (each tag's current link read from storage), among the tags
 * listed in storage, or naming an index that lists it (`childrenOf`: the manifests an index lists, [] for others).
 * Empty without rules covering the repository.
 */
export async function immutableTagsNaming(
  driver: StorageDriver,
  policies: Policies | undefined,
  name: string,
  digest: Digest,
  childrenOf?: (index: Digest) => Promise<readonly string[]>,
): Promise<ImmutableTag[]> {
  const found: ImmutableTag[] = [];
  for (const [named, tags] of await immutableTagsByDigest(driver, policies, name)) {
    if (named === digest.value) found.push(...tags);
    else if (childrenOf && (await childrenOf(parseDigest(named))).includes(digest.value)) found.push(...tags.map((t) => ({ ...t, index: named })));
  }
  return found.sort((a, b) => (a.tag < b.tag ? -1 : a.tag > b.tag ? 1 : 0));
}

/**
 * Every covered tag of `name` by the digest it names (one listing, and a read of each covered tag's link): what the
 * web UI needs to offer only the deletes that would go through. Empty without rules covering the repository.
 */
export async function immutableTagsByDigest(driver: StorageDriver, policies: Policies | undefined, name: string): Promise<Map<string, ImmutableTag[]>> {
  const rules = policies?.rules;
  const byDigest = new Map<string, ImmutableTag[]>();
  if (!rules?.hasImmutableTags(name)) return byDigest;
  const entries = (await ifExists(driver.list(layout.tagsPath(name)))) ?? [];
  for (const tag of entries.map(layout.baseName).sort()) {
    const rule = rules.immutableRule(name, tag);
    if (!rule) continue;
    const digest = await readLink(driver, layout.tagCurrentLinkPath(name, tag));
    if (!digest) continue;
    const list = byDigest.get(digest.value) ?? [];
    list.push({ tag, rule });
    byDigest.set(digest.value, list);
  }
  return byDigest;
}

/** Why a delete of the manifest named by these covered tags would be refused (the web UI shows it). */
export function manifestDeleteRefusal(naming: readonly ImmutableTag[]): string | null {
  const first = naming[0];
  if (!first) return null;
  return first.index
    ? `listed by the index ${first.index}, which the immutable tag ${first.tag} names (${first.rule.name})`
    : `named by the immutable tag ${first.tag} (${first.rule.name})`;
}
