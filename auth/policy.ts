/**
 * Access rules: who may do what on which repositories.
 *
 *   groups:     { admins: [alice], ci: [robot] }
 *   anonymous:  ["public/**"]                       pull without credentials
 *   rules:
 *     - { groups: [admins], repositories: ["**"], actions: ["*"], catalog: true }
 *     - { users: ["*"], repositories: ["${user}/**"], actions: [pull, push, delete] }
 *     - { users: [robot], repositories: ["team/*"], actions: [pull, push] }
 *
 * Repository patterns are globs over the slash-separated name: `*` matches within one path component, `**` any
 * number of characters including `/`, `?` one character other than `/`. `${user}` stands for the caller's user name.
 * `users: ["*"]` means every authenticated user. The actions a caller has on a repository are the union of every
 * matching rule's actions; `*` is every action (pull, push, delete). `catalog: true` grants `registry:catalog:*`.
 *
 * Without a policy (no `auth.access`), every authenticated user may do everything and anonymous callers nothing:
 * registry:2's behaviour.
 */
import { isValidRepositoryName } from './repository-name.js';
import type { Access } from './scope.js';

export const ACTIONS = ['pull', 'push', 'delete'] as const;

export interface AccessRule {
  users?: string[];
  groups?: string[];
  repositories?: string[];
  actions?: string[];
  catalog?: boolean;
}

export interface PolicyConfig {
  groups?: Record<string, string[]>;
  anonymous?: string[];
  rules?: AccessRule[];
}

/** Who is calling: a user name, or undefined for an anonymous caller. */
export type Principal = string | undefined;

/** Turn a glob into an anchored regular expression; `${user}` becomes the (escaped) user name. */
export function globToRegExp(pattern: string, user?: string): RegExp | undefined {
  if (pattern.includes('${user}') && (user === undefined || user === '')) return undefined;
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    if (pattern.startsWith('${user}', i)) {
      re += escapeRegExp(user!);
      i += '${user}'.length - 1;
    } else if (pattern.startsWith('**', i)) {
      re += '.*';
      i++;
    } else if (pattern[i] === '*') {
      re += '[^/]*';
    } else if (pattern[i] === '?') {
      re += '[^/]';
    } else {
      re += escapeRegExp(pattern[i]!);
    }
  }
  return new RegExp(`^${re}$`);
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
}

export class Policy {
  /** Whether rules are in force (an `auth.access` section was given). */
  readonly hasRules: boolean;
  private readonly groupsOf = new Map<string, Set<string>>();
  private readonly anonymous: RegExp[];
  private readonly rules: AccessRule[];

  constructor(config?: PolicyConfig) {
    this.hasRules = config !== undefined;
    for (const [group, members] of Object.entries(config?.groups ?? {})) {
      for (const member of members) {
        const set = this.groupsOf.get(member) ?? new Set<string>();
        set.add(group);
        this.groupsOf.set(member, set);
      }
    }
    this.anonymous = (config?.anonymous ?? []).map((p) => globToRegExp(p)).filter((r): r is RegExp => r !== undefined);
    this.rules = config?.rules ?? [];
  }

  groups(user: string): string[] {
    return [...(this.groupsOf.get(user) ?? [])];
  }

  private matchingRules(user: string): AccessRule[] {
    const groups = this.groupsOf.get(user);
    return this.rules.filter((r) =>
      (r.users ?? []).some((u) => u === '*' || u === user) || (r.groups ?? []).some((g) => groups?.has(g)));
  }

  /** The actions `principal` has on repository `name`. */
  repositoryActions(principal: Principal, name: string): Set<string> {
    const out = new Set<string>();
    if (principal === undefined) {
      if (this.anonymous.some((re) => re.test(name))) out.add('pull');
      return out;
    }
    if (!this.hasRules) return new Set(ACTIONS);
    if (this.anonymous.some((re) => re.test(name))) out.add('pull');
    for (const rule of this.matchingRules(principal)) {
      if (!(rule.repositories ?? []).some((p) => globToRegExp(p, principal)?.test(name))) continue;
      for (const action of rule.actions ?? []) {
        if (action === '*') ACTIONS.forEach((a) => out.add(a));
        else out.add(action);
      }
    }
    return out;
  }

  mayListCatalog(principal: Principal): boolean {
    if (principal === undefined) return false;
    if (!this.hasRules) return true;
    return this.matchingRules(principal).some((r) => r.catalog === true);
  }

  /**
   * The part of `requested` this principal is allowed: the intersection, per resource. Entries with nothing
   * allowed are left out (a partial grant is not an error), and so are repositories whose names the API would
   * refuse.
   */
  grant(principal: Principal, requested: readonly Access[]): Access[] {
    const out: Access[] = [];
    for (const req of requested) {
      let actions: string[] = [];
      // Only names the API accepts: `bob/../alice/x` matches `bob/**` as a glob, but is no repository of bob's.
      if (req.type === 'repository' && req.class === undefined && isValidRepositoryName(req.name)) {
        const have = this.repositoryActions(principal, req.name);
        actions = req.actions.flatMap((a) => (a === '*' ? [...have] : have.has(a) ? [a] : []));
      } else if (req.type === 'registry' && req.name === 'catalog' && this.mayListCatalog(principal)) {
        actions = req.actions.filter((a) => a === '*');
      }
      actions = [...new Set(actions)];
      if (actions.length > 0) out.push({ type: req.type, name: req.name, actions });
    }
    return out;
  }
}
