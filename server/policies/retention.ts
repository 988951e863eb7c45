/**
 * The retention decision for one repository under its rule (`policies.retention`, ./rules.ts `retentionFor`): a pure
 * function of the repository's tags (with push times), its manifest revisions (with ages, index children and
 * subjects), the last-pull records (./pulls.ts) and the immutable-tag rules. ./retention-run.ts reads storage, calls
 * it, and deletes what it says through the safe paths.
 *
 * Tags (only when the rule has `keep`): a tag is kept when it is among the `mostrecent` most recently pushed (push
 * time: when its current link was last written; ties by name), was pulled within `pulledwithin` (by tag, or the
 * digest it names now was pulled), matches `keep.tags`, or is immutable. A referrers-schema tag (`sha256-<hex>` or
 * `sha256-<hex>.<suffix>`, as cosign and the spec's fallback write) whose digest is a kept manifest is kept too, so a
 * kept image keeps its signatures. Every other tag is deleted (the tag only).
 *
 * Untagged manifests (only with `untagged.olderthan`): after the tag decisions, the kept set is the closure, over
 * index children and referrers (manifests whose `subject` is kept), of every manifest a remaining tag names and every
 * revision younger than the bound. A revision outside it and older than the bound is deleted.
 */
import type { RetentionRule } from './rules.js';

export interface TagState {
  tag: string;
  digest: string;
  /** When the tag's current link was last written (ms). */
  pushedAt: number;
}

export interface ManifestState {
  digest: string;
  /** When its revision link was written (ms). */
  createdAt: number;
  /** Manifests an index names. */
  children: readonly string[];
  /** The `subject` digest, when it has one. */
  subject?: string;
}

export interface RetentionInput {
  rule: RetentionRule;
  now: number;
  tags: readonly TagState[];
  manifests: readonly ManifestState[];
  pulls: { tags: ReadonlyMap<string, number>; digests: ReadonlyMap<string, number> };
  /**
   * Since when the pull records are complete (./pulls.ts `readPullsSince`); absent: complete. A tag no record shows
   * pulled within `pulledwithin` is kept while the records cover less than that window: it may have been pulled
   * before they began.
   */
  pullsSince?: number;
  /** The name of the immutable-tag rule covering the tag, if any. */
  immutable(tag: string): string | undefined;
}

export interface TagVerdict extends TagState {
  keep: boolean;
  /** Why it is kept, or why it goes (`not among the 10 most recently pushed; last pulled 41 days ago`). */
  reason: string;
}

export interface ManifestVerdict {
  digest: string;
  reason: string;
}

export interface RetentionPlan {
  /** Every tag, with its verdict (all kept when the rule has no `keep`). */
  tags: TagVerdict[];
  /** The tags to delete, in the order of `tags`. */
  deleteTags: TagVerdict[];
  /** Untagged revisions to delete. */
  deleteManifests: ManifestVerdict[];
  /** Every manifest the decision keeps (the closure), when the rule has `untagged`. */
  kept: Set<string>;
}

/** `41 days`, `5 hours`, `12 minutes`, `30 seconds`: the largest whole unit. */
export function formatAge(ms: number): string {
  const units: [number, string][] = [[86_400_000, 'day'], [3_600_000, 'hour'], [60_000, 'minute'], [1000, 'second']];
  for (const [size, unit] of units) {
    const n = Math.floor(ms / size);
    if (n >= 1) return `${n} ${unit}${n === 1 ? '' : 's'}`;
  }
  return '0 seconds';
}

const REFERRERS_TAG = /^([a-z0-9]+)-([a-f0-9]{32,})(?:\..+)?$/;

/** The subject digest a referrers-schema tag stands for (`sha256-<hex>[.sig]` → `sha256:<hex>`). */
export function referrersTagSubject(tag: string): string | undefined {
  const m = REFERRERS_TAG.exec(tag);
  return m ? `${m[1]}:${m[2]}` : undefined;
}

export function decideRetention(input: RetentionInput): RetentionPlan {
  const { rule, now, pulls } = input;
  const keep = rule.keep;
  // Newest first; ties by name so the decision is stable.
  const byPush = [...input.tags].sort((a, b) => b.pushedAt - a.pushedAt || (a.tag < b.tag ? -1 : a.tag > b.tag ? 1 : 0));
  const rank = new Map(byPush.map((t, i) => [t.tag, i]));
  const lastPull = (t: TagState) => {
    const a = pulls.tags.get(t.tag);
    const b = pulls.digests.get(t.digest);
    return a === undefined ? b : b === undefined ? a : Math.max(a, b);
  };

  const verdicts: TagVerdict[] = input.tags.map((t) => {
    if (!keep) return { ...t, keep: true, reason: 'the rule keeps every tag (no keep)' };
    const immutable = input.immutable(t.tag);
    if (immutable) return { ...t, keep: true, reason: `immutable (${immutable})` };
    if (keep.isKeptTag(t.tag)) return { ...t, keep: true, reason: 'matches keep.tags' };
    const position = rank.get(t.tag)!;
    if (keep.mostRecent !== undefined && position < keep.mostRecent) {
      return { ...t, keep: true, reason: `among the ${keep.mostRecent} most recently pushed` };
    }
    const pulled = lastPull(t);
    if (keep.pulledWithinMs !== undefined && pulled !== undefined && now - pulled <= keep.pulledWithinMs) {
      return { ...t, keep: true, reason: `pulled ${formatAge(now - pulled)} ago` };
    }
    if (keep.pulledWithinMs !== undefined && input.pullsSince !== undefined && now - input.pullsSince < keep.pulledWithinMs) {
      return { ...t, keep: true, reason: `pulls are recorded only for ${formatAge(now - input.pullsSince)}, less than pulledwithin` };
    }
    const why: string[] = [];
    if (keep.mostRecent !== undefined) why.push(`not among the ${keep.mostRecent} most recently pushed`);
    else why.push(`pushed ${formatAge(now - t.pushedAt)} ago`);
    if (keep.pulledWithinMs !== undefined) why.push(pulled === undefined ? 'never pulled' : `last pulled ${formatAge(now - pulled)} ago`);
    if (keep.tags.length > 0) why.push('matches none of keep.tags');
    return { ...t, keep: false, reason: why.join('; ') };
  });

  const untaggedBound = rule.untaggedOlderThanMs;
  const closure = keptClosure(input.manifests);
  const kept = closure.kept;
  const roots = verdicts.filter((v) => v.keep).map((v) => v.digest);
  if (untaggedBound !== undefined) {
    for (const m of input.manifests) if (now - m.createdAt < untaggedBound) roots.push(m.digest);
  }
  closure.add(roots);
  // A referrers-schema tag of a kept manifest stays (repeated: what it names may make another such tag's subject kept).
  for (let changed = true; changed;) {
    changed = false;
    for (const v of verdicts) {
      if (v.keep) continue;
      const subject = referrersTagSubject(v.tag);
      if (subject === undefined || !kept.has(subject)) continue;
      v.keep = true;
      v.reason = `referrers tag of kept manifest ${subject}`;
      closure.add([v.digest]);
      changed = true;
    }
  }

  const deleteTags = verdicts.filter((v) => !v.keep);
  const deleteManifests: ManifestVerdict[] = [];
  if (untaggedBound !== undefined) {
    const deletedTagsOf = new Map<string, string[]>();
    for (const v of deleteTags) deletedTagsOf.set(v.digest, [...(deletedTagsOf.get(v.digest) ?? []), v.tag]);
    for (const m of input.manifests) {
      if (kept.has(m.digest) || now - m.createdAt < untaggedBound) continue;
      const was = deletedTagsOf.get(m.digest);
      deleteManifests.push({
        digest: m.digest,
        reason: `${was ? `untagged once ${was.join(', ')} ${was.length === 1 ? 'goes' : 'go'}` : 'untagged'}, pushed ${formatAge(now - m.createdAt)} ago (older than ${formatAge(untaggedBound)}), no kept manifest needs it`,
      });
    }
  }
  return { tags: verdicts, deleteTags, deleteManifests, kept };
}

/** The closure over index children and referrers, grown by `add(roots)`. */
function keptClosure(manifests: readonly ManifestState[]): { kept: Set<string>; add(roots: Iterable<string>): void } {
  const byDigest = new Map(manifests.map((m) => [m.digest, m]));
  const referrersOf = new Map<string, string[]>();
  for (const m of manifests) {
    if (m.subject === undefined) continue;
    const list = referrersOf.get(m.subject) ?? [];
    list.push(m.digest);
    referrersOf.set(m.subject, list);
  }
  const kept = new Set<string>();
  return {
    kept,
    add(roots) {
      const queue = [...roots];
      while (queue.length > 0) {
        const d = queue.pop()!;
        if (kept.has(d)) continue;
        kept.add(d);
        for (const c of byDigest.get(d)?.children ?? []) queue.push(c);
        for (const r of referrersOf.get(d) ?? []) queue.push(r);
      }
    },
  };
}

/**
 * Which of `candidates` (untagged revisions the plan would delete) may still go once the tags are re-read right
 * before deleting: those outside the closure of what the tags name now and of the young revisions. A tag the run
 * did not delete after all (it moved, a push touched the repository) or a tag pushed meanwhile keeps what it needs.
 */
export function stillUnneeded(
  candidates: readonly string[], manifests: readonly ManifestState[], tagDigests: Iterable<string>, now: number, olderThanMs: number,
): Set<string> {
  const closure = keptClosure(manifests);
  closure.add([...tagDigests, ...manifests.filter((m) => now - m.createdAt < olderThanMs).map((m) => m.digest)]);
  return new Set(candidates.filter((d) => !closure.kept.has(d)));
}
