/**
 * What a conformance check is: a named async function plus where it sits in the spec and how binding it is.
 */
import type { RegistryClient } from './client.js';

/** The spec's workflow categories ("Requirements"), with referrers split out because it is a 1.1 addition. */
export type Area = 'pull' | 'push' | 'discovery' | 'management' | 'referrers';
export const AREAS: readonly Area[] = ['pull', 'push', 'discovery', 'management', 'referrers'];

/**
 * How binding a check is:
 * - `required`: the spec says MUST (or the check is the only conforming behaviour left);
 * - `optional`: the spec says SHOULD or MAY, or describes a feature a registry may leave out;
 * - `strict`: stricter than the spec, behaviour Wharf promises (JSON errors everywhere, one exact error code where
 *   the spec allows several answers). Run only with --strict.
 */
export type Level = 'required' | 'optional' | 'strict';

/**
 * Features that a registry may legitimately disable by configuration. A check that needs one is skipped when the
 * feature is turned off (--skip-delete, --skip-referrers, --skip <feature>).
 * `delete-disabled` is the reverse: those checks run only when deletion is declared off, and verify how a registry
 * refuses.
 */
export type Feature = 'delete' | 'delete-disabled' | 'referrers' | 'catalog' | 'mount-without-from' | 'tag-query'
  | 'sha512' | 'sparse-index' | 'complete-index';
export const FEATURES: readonly Feature[] = ['delete', 'delete-disabled', 'referrers', 'catalog',
  'mount-without-from', 'tag-query', 'sha512'];

/**
 * Features off unless declared on (--sparse-index): behaviour the spec lets a registry choose and that is not the
 * usual default. `sparse-index`: an index may be pushed while some of its children are absent (the OCI suite's
 * sparse data). `complete-index` is its reverse: checks that an index with an absent child is refused, which run
 * only while `sparse-index` is not declared.
 */
export const OPT_IN_FEATURES: readonly Feature[] = ['sparse-index'];

export interface Context {
  client: RegistryClient;
  /** A fresh repository name under the run's prefix; every call returns a new one. */
  repo(label?: string): string;
  /** A fresh name segment under the run's prefix, for checks that create several related repositories. */
  namespace(label?: string): string;
}

export interface Check {
  /** The function's name, such as `blobGetReturnsContent`. */
  name: string;
  area: Area;
  level: Level;
  /** The spec section the check comes from, e.g. "spec.md § Pulling blobs". */
  spec: string;
  features: Feature[];
  run(ctx: Context): Promise<void>;
}

export interface CheckMeta {
  level: Level;
  spec: string;
  features?: Feature[];
}

/** Builds the checks of one area: `area('pull').add({ level, spec }, async function name(ctx) { … })`. */
export function area(name: Area) {
  const checks: Check[] = [];
  return {
    checks,
    add(meta: CheckMeta, fn: (ctx: Context) => Promise<void>): void {
      if (!fn.name) throw new Error('a conformance check must be a named function');
      checks.push({ name: fn.name, area: name, level: meta.level, spec: meta.spec, features: meta.features ?? [],
        run: fn });
    },
  };
}
