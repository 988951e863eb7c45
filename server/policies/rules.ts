/**
 * The content-governance rules of the configuration (`policies` and `validation.manifests`), compiled once per load:
 * which tags are immutable, which quota rules and which retention rule a repository falls under, and which
 * manifests validation accepts. `Policies` holds the current set and swaps it on SIGHUP, so every reader asks
 * `policies.rules` at the moment it decides (a reload never changes a decision half-way).
 *
 * Repository and tag patterns are the access rules' globs (auth/policy.ts): `*` within one path component, `**`
 * across components.
 */
import { createHash } from 'node:crypto';
import { globToRegExp } from '../../auth/policy.js';
import type { PlatformConfig, WharfConfig } from '../config/index.js';

function globs(patterns: readonly string[]): RegExp[] {
  return patterns.map((p) => globToRegExp(p)).filter((r): r is RegExp => r !== undefined);
}

const matchesAny = (res: readonly RegExp[], value: string) => res.some((re) => re.test(value));

/** How a rule is named in messages and logs: `policies.quotas[0] (team-a/**)`. */
function ruleName(kind: string, index: number, repositories: readonly string[]): string {
  return `policies.${kind}[${index}] (${repositories.join(', ')})`;
}

export interface ImmutableTagRule {
  index: number;
  /** `policies.immutabletags[0] (release/**, tags v*)`: what a refusal names. */
  name: string;
  repositories: readonly string[];
  tags: readonly string[];
}

export interface QuotaRule {
  index: number;
  /** `policies.quotas[0] (team-a/**)`. */
  name: string;
  /**
   * A stable key for the rule's usage records: derived from its repository patterns only, so a reload that changes
   * `maxsize` (or reorders rules) keeps the count, and one that changes the patterns starts a new one.
   */
  id: string;
  repositories: readonly string[];
  maxsize: number;
  matches(repository: string): boolean;
}

export interface RetentionRule {
  index: number;
  /** `policies.retention[0] (ci/**)`. */
  name: string;
  repositories: readonly string[];
  /** Tags are deleted only when `keep` says something (any of its three keys); otherwise only `untagged` applies. */
  keep?: { mostRecent?: number; pulledWithinMs?: number; tags: readonly string[]; isKeptTag(tag: string): boolean };
  /** Untagged manifests whose revision is older than this go; absent: untagged manifests are left. */
  untaggedOlderThanMs?: number;
}

export interface ManifestValidation {
  /** Foreign-layer URL checks (registry:2); undefined when `validation.disabled`. */
  urls?: { allow: readonly RegExp[]; deny: readonly RegExp[] };
  /** Which children of an index must exist when it is pushed. */
  indexes: { platforms: 'all' | 'none' | 'list'; platformList: readonly PlatformConfig[] };
}

/** One configuration's rules, immutable; see `Policies` for the current one. */
export class PolicyRules {
  readonly immutableTags: readonly ImmutableTagRule[];
  readonly quotas: readonly QuotaRule[];
  readonly retention: readonly RetentionRule[];
  readonly manifests: ManifestValidation;
  private readonly immutableMatchers: { repositories: RegExp[]; tags: RegExp[]; rule: ImmutableTagRule }[];
  private readonly retentionMatchers: { repositories: RegExp[]; rule: RetentionRule }[];

  constructor(config: Pick<WharfConfig, 'policies' | 'validation'>) {
    const p = config.policies;
    this.immutableMatchers = p.immutabletags.map((r, index) => ({
      repositories: globs(r.repositories),
      tags: globs(r.tags),
      rule: {
        index,
        name: `policies.immutabletags[${index}] (${r.repositories.join(', ')}; tags ${r.tags.join(', ')})`,
        repositories: r.repositories,
        tags: r.tags,
      },
    }));
    this.immutableTags = this.immutableMatchers.map((m) => m.rule);
    this.quotas = p.quotas.map((r, index) => {
      const res = globs(r.repositories);
      return {
        index,
        name: ruleName('quotas', index, r.repositories),
        id: createHash('sha256').update(JSON.stringify([...r.repositories].sort())).digest('hex').slice(0, 16),
        repositories: r.repositories,
        maxsize: r.maxsize,
        matches: (repository: string) => matchesAny(res, repository),
      };
    });
    this.retentionMatchers = p.retention.map((r, index) => {
      const keptTags = globs(r.keep.tags);
      const keeps = r.keep.mostrecent !== undefined || r.keep.pulledwithin !== undefined || r.keep.tags.length > 0;
      return {
        repositories: globs(r.repositories),
        rule: {
          index,
          name: ruleName('retention', index, r.repositories),
          repositories: r.repositories,
          ...(keeps
            ? {
                keep: {
                  ...(r.keep.mostrecent !== undefined ? { mostRecent: r.keep.mostrecent } : {}),
                  ...(r.keep.pulledwithin !== undefined ? { pulledWithinMs: r.keep.pulledwithin } : {}),
                  tags: r.keep.tags,
                  isKeptTag: (tag: string) => matchesAny(keptTags, tag),
                },
              }
            : {}),
          ...(r.untagged ? { untaggedOlderThanMs: r.untagged.olderthan } : {}),
        },
      };
    });
    this.retention = this.retentionMatchers.map((m) => m.rule);
    const m = config.validation.manifests;
    this.manifests = {
      ...(config.validation.disabled ? {} : { urls: { allow: m.urls.allow.map((re) => new RegExp(re)), deny: m.urls.deny.map((re) => new RegExp(re)) } }),
      indexes: { platforms: m.indexes.platforms, platformList: m.indexes.platformlist },
    };
  }

  /** The first immutable-tag rule covering `tag` in `repository`, if any. */
  immutableRule(repository: string, tag: string): ImmutableTagRule | undefined {
    return this.immutableMatchers.find((m) => matchesAny(m.repositories, repository) && matchesAny(m.tags, tag))?.rule;
  }

  /** Whether any immutable-tag rule covers the repository (so deletes by digest must look at its tags). */
  hasImmutableTags(repository: string): boolean {
    return this.immutableMatchers.some((m) => matchesAny(m.repositories, repository));
  }

  /** Every quota rule the repository counts towards (rules may overlap: each is enforced). */
  quotasFor(repository: string): QuotaRule[] {
    return this.quotas.filter((q) => q.matches(repository));
  }

  /** The retention rule of the repository: the first that matches it. */
  retentionFor(repository: string): RetentionRule | undefined {
    return this.retentionMatchers.find((m) => matchesAny(m.repositories, repository))?.rule;
  }
}

/** The rules in force; `reload` swaps them (SIGHUP). */
export class Policies {
  private current: PolicyRules;
  constructor(config: Pick<WharfConfig, 'policies' | 'validation'>) {
    this.current = new PolicyRules(config);
  }

  get rules(): PolicyRules {
    return this.current;
  }

  reload(config: Pick<WharfConfig, 'policies' | 'validation'>): void {
    this.current = new PolicyRules(config);
  }
}
