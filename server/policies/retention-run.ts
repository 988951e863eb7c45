/**
 * Retention as a phase of a garbage-collection run (server/gc/worker.ts `runRetention`, before mark; and
 * `wharf retention`, which runs only this phase under the same lock). For each repository a retention rule covers:
 * read its tags, revisions and last-pull records, decide (./retention.ts), and delete what the decision says.
 *
 * How deletes stay safe while servers take pushes (the lock is held and every server records, before it writes, the
 * digests it links or references and marks the repository as written; server/gc/recorder.ts):
 *
 *   tag T (decided: names D, current link written at t):
 *     skip the repository's tags when the live set says a server wrote into it during this run
 *     re-read T: skip when it no longer names D or its link was rewritten since t (a re-push makes it newest)
 *     ManifestStore.delete(T)        the API's path (the immutable-tag refusal applies), then its pull record
 *   untagged revision D (not named by any tag just before, re-read):
 *     the sweeper (server/gc/sweep.ts): D recorded → kept; else its revision link and referrers link move to
 *     trash; D recorded meanwhile → moved back; else deleted. A push that tags D or pushes a manifest using D
 *     records D before writing, so it is either seen and D stays, or it comes after the move and its own check
 *     (is D a revision here?) fails cleanly with MANIFEST_BLOB_UNKNOWN / MANIFEST_UNKNOWN, never leaving a tag
 *     naming a deleted manifest.
 *
 * The remaining window is for tags: a re-tag of T whose repository mark lands after the last check and whose tag
 * write lands before the delete (one or two storage round trips apart) loses that tag; its manifest and blobs are
 * recorded, so they stay, and pushing the tag again restores it. It is counted (`retentionRaced`) and reported when
 * the repository is found written right after the delete.
 *
 * A dry run deletes nothing and reports every tag and manifest that would go, with the rule and the reason.
 */
import type { StorageDriver } from '../../storage-drivers/driver.js';
import { BlobStore } from '../registry/blobs.js';
import { RegistryError } from '../registry/errors.js';
import { parseManifest } from '../registry/manifest-format.js';
import { ManifestStore } from '../registry/manifests.js';
import { blobContent, scanRepository, tagLink, type LinkEntry, type RepositoryScan } from '../registry/scan.js';
import type { Policies, PolicyRules, RetentionRule } from './rules.js';
import { forgetPull, readPulls, readPullsSince } from './pulls.js';
import { decideRetention, stillUnneeded, type ManifestState, type RetentionPlan, type TagState } from './retention.js';

export interface RetentionStats {
  retentionRepositories: number;
  retentionTagsDeleted: number;
  retentionManifestsDeleted: number;
  /** Deletes skipped because a server wrote into the repository, or the tag moved, during the run. */
  retentionSkipped: number;
  /** Tags deleted while a push wrote into the repository (see the window above). */
  retentionRaced: number;
}

export interface RetentionItem {
  kind: 'tag' | 'manifest';
  /** `repo:tag` or `repo@digest`. */
  what: string;
  rule: string;
  reason: string;
}

export interface RetentionContext {
  driver: StorageDriver;
  policies: Policies;
  dryRun: boolean;
  stats: RetentionStats;
  /** Whether a server wrote into the repository while the lock is held (the live set). */
  repositoryWritten(name: string): Promise<boolean>;
  /** The sweeper's delete with the live-set re-check; resolves to what was deleted (a dry run: everything). */
  remove(items: { path: string; digest: string; keep?: string }[]): Promise<{ path: string; digest: string }[]>;
  /** Throws unless the lock is still ours. */
  verify(): Promise<void>;
  /** Each tag and manifest deleted (in a dry run: that would be). */
  note(item: RetentionItem): void;
  /** Something worth a warning (a skipped delete, a race). */
  warn?(message: string): void;
  /** Forget a deleted revision link in a shared descriptor cache. */
  forgetLink?(name: string, digest: string): Promise<void> | void;
  /** Since when pulls are recorded (`readPullsSince`), read once per run; read here when absent. */
  pullsSince?: Promise<number | undefined>;
  /** Give back a deleted revision's bytes to the quota rules that count them (server/policies/quota.ts). */
  releaseManifest?(name: string, digest: string): Promise<void>;
  now?: () => number;
}

/** What the decision needs of one scanned repository: tag push times and each revision's children and subject. */
export async function retentionInput(driver: StorageDriver, scan: RepositoryScan): Promise<{ tags: TagState[]; manifests: ManifestState[] }> {
  const tags: TagState[] = [];
  for (const [tag, digest] of scan.tags) {
    const link = await tagLink(driver, scan.name, tag);
    if (link) tags.push({ tag, digest, pushedAt: link.mtime });
  }
  const subjectOf = new Map<string, string>();
  for (const [subject, refs] of scan.referrers) for (const r of refs.keys()) subjectOf.set(r, subject);
  const manifests: ManifestState[] = [];
  for (const [digest, link] of scan.revisions) {
    let children: string[] = [];
    let subject = subjectOf.get(digest);
    const content = await blobContent(driver, digest);
    if (content) {
      try {
        const parsed = parseManifest(content, undefined, { maxDepth: Infinity });
        children = parsed.manifests.map((m) => m.value);
        subject ??= parsed.subject?.digest;
      } catch {
        // Not a manifest we can read: no children to keep.
      }
    }
    manifests.push({ digest, createdAt: link.mtime, children, ...(subject ? { subject } : {}) });
  }
  return { tags, manifests };
}

/** Decide for one repository (no deletes). Undefined when no rule covers it. */
export async function planRepository(
  driver: StorageDriver, rules: PolicyRules, name: string, now: number, since?: Promise<number | undefined>,
): Promise<{ rule: RetentionRule; scan: RepositoryScan; plan: RetentionPlan; manifests: ManifestState[]; now: number } | undefined> {
  const rule = rules.retentionFor(name);
  if (!rule) return undefined;
  const scan = await scanRepository(driver, name);
  const { tags, manifests } = await retentionInput(driver, scan);
  const pulls = await readPulls(driver, name);
  // No record of when recording began: nothing is known of pulls (now: the records cover no time at all).
  const pullsSince = rule.keep?.pulledWithinMs !== undefined ? ((await (since ?? readPullsSince(driver))) ?? now) : undefined;
  const plan = decideRetention({
    rule, now, tags, manifests, pulls, ...(pullsSince !== undefined ? { pullsSince } : {}),
    immutable: (tag) => rules.immutableRule(name, tag)?.name,
  });
  return { rule, scan, plan, manifests, now };
}

/** Apply retention to one repository. */
export async function retainRepository(ctx: RetentionContext, name: string): Promise<void> {
  const { driver, stats } = ctx;
  // The rules in force now (a SIGHUP only concerns servers; the command read its configuration once).
  const planned = await planRepository(driver, ctx.policies.rules, name, (ctx.now ?? Date.now)(), ctx.pullsSince);
  if (!planned) return;
  const { rule, scan, plan, manifests, now } = planned;
  stats.retentionRepositories++;
  const store = new ManifestStore(driver, new BlobStore(driver), { policies: ctx.policies });

  let written = false;
  for (const verdict of plan.deleteTags) {
    const item: RetentionItem = { kind: 'tag', what: `${name}:${verdict.tag}`, rule: rule.name, reason: verdict.reason };
    if (ctx.dryRun) {
      stats.retentionTagsDeleted++;
      ctx.note(item);
      continue;
    }
    await ctx.verify();
    written ||= await ctx.repositoryWritten(name);
    const current = await tagLink(driver, name, verdict.tag);
    const digest = current && (await store.resolveTag(name, verdict.tag))?.value;
    if (written || !current || current.mtime !== verdict.pushedAt || digest !== verdict.digest) {
      stats.retentionSkipped++;
      ctx.warn?.(`retention: kept ${item.what}: ${written ? 'a server wrote into the repository during this run' : 'the tag changed since it was examined'}`);
      continue;
    }
    try {
      await store.delete(name, { kind: 'tag', tag: verdict.tag });
    } catch (err) {
      // Gone meanwhile (an API delete), or refused (an immutable-tag rule the decision did not know of).
      if (!(err instanceof RegistryError)) throw err;
      stats.retentionSkipped++;
      ctx.warn?.(`retention: kept ${item.what}: ${err.message}`);
      continue;
    }
    await forgetPull(driver, name, { tag: verdict.tag });
    stats.retentionTagsDeleted++;
    ctx.note(item);
    if (await ctx.repositoryWritten(name)) {
      written = true;
      stats.retentionRaced++;
      ctx.warn?.(`retention: ${item.what} was deleted while a server wrote into ${name}; if a client re-pushed that tag just then, push it again`);
    }
  }

  if (plan.deleteManifests.length === 0) return;
  // Re-read the tags: what they name now (a tag this run kept after all, or one pushed meanwhile) keeps its closure.
  // A push tagging one of these after this read is caught by the sweeper's live-set looks.
  let unneeded = new Set(plan.deleteManifests.map((m) => m.digest));
  if (!ctx.dryRun) {
    await ctx.verify();
    const tagsNow = (await scanRepository(driver, name)).tags.values();
    unneeded = stillUnneeded([...unneeded], manifests, tagsNow, now, rule.untaggedOlderThanMs ?? 0);
  }
  const referrerLinks = new Map<string, LinkEntry>();
  for (const refs of scan.referrers.values()) for (const [d, link] of refs) referrerLinks.set(d, link);
  const reasons = new Map(plan.deleteManifests.map((m) => [m.digest, m.reason]));
  const doomed: { path: string; digest: string; keep?: string }[] = [];
  for (const { digest } of plan.deleteManifests) {
    const revision = scan.revisions.get(digest);
    if (!revision || !unneeded.has(digest)) {
      if (revision) stats.retentionSkipped++;
      continue;
    }
    doomed.push({ path: revision.path, digest, keep: revision.keep });
    const referrer = referrerLinks.get(digest);
    if (referrer) doomed.push({ path: referrer.path, digest, keep: referrer.keep });
  }
  const removed = await ctx.remove(doomed);
  const revisionPaths = new Set(doomed.filter((d) => d.path === scan.revisions.get(d.digest)?.path).map((d) => d.path));
  for (const { path, digest } of removed) {
    if (!revisionPaths.has(path)) continue;
    if (!ctx.dryRun) {
      await ctx.forgetLink?.(name, digest);
      await ctx.releaseManifest?.(name, digest);
      await forgetPull(driver, name, { digest });
    }
    stats.retentionManifestsDeleted++;
    ctx.note({ kind: 'manifest', what: `${name}@${digest}`, rule: rule.name, reason: reasons.get(digest) ?? '' });
  }
  const keptBySweeper = doomed.filter((d) => revisionPaths.has(d.path)).length - removed.filter((r) => revisionPaths.has(r.path)).length;
  if (keptBySweeper > 0 && !ctx.dryRun) stats.retentionSkipped += keptBySweeper;
}

/** Whether any retention rule is configured (the phase is skipped otherwise). */
export function hasRetention(policies: Policies | undefined): policies is Policies {
  return (policies?.rules.retention.length ?? 0) > 0;
}

export function newRetentionStats(): RetentionStats {
  return { retentionRepositories: 0, retentionTagsDeleted: 0, retentionManifestsDeleted: 0, retentionSkipped: 0, retentionRaced: 0 };
}
