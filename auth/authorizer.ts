/**
 * Whether a request may go ahead: the caller's identity (from an Authenticator) against the access the request
 * needs (a token's access claim, else the Policy's rules). Returns a decision for the caller to apply (allow, 401
 * challenge, 403 deny, 429 throttled); touches nothing.
 */
import type { Authenticator, Credentials, Identity, Refusal } from './authenticator.js';
import type { Policy } from './policy.js';
import { allows, missingAccess, type Access } from './scope.js';

export interface AccessRequest {
  credentials: Credentials;
  /** The client address, for throttling. */
  address: string;
  /** The access the request needs (empty for the base route). */
  required: Access[];
  /** The base route `/v2/`: it needs no access, but credentials (so `docker login` sees a challenge). */
  base?: boolean;
  /** The catalog: under rules, its listing is filtered to the repositories the caller may pull. */
  catalog?: boolean;
  /** The source repository of a cross-repository mount; it needs pull, softly. */
  mountFrom?: string;
}

export type ChallengeReason = Refusal | 'anonymous' | 'insufficient-scope';

export type AccessDecision =
  /** `dropMount`: the mount source is not readable, so the request becomes a plain upload (as the spec asks);
   * `catalogFilter`: list only the repositories it returns true for. */
  | { kind: 'allow'; user?: string; dropMount: boolean; catalogFilter?: (name: string) => boolean }
  | {
    kind: 'challenge';
    reason: Exclude<ChallengeReason, 'throttled'>;
    /** The access to name in the challenge. */
    scope: Access[];
    user?: string;
    /** For the log: what was wrong with refused credentials. */
    detail?: string;
  }
  | { kind: 'deny'; user?: string; missing: Access[] }
  | { kind: 'throttled' };

export class Authorizer {
  constructor(readonly authenticator: Authenticator, readonly policy: Policy) {}

  async authorize(request: AccessRequest): Promise<AccessDecision> {
    const result = await this.authenticator.authenticate(request.credentials, request.address);
    if (!result.ok) {
      if (result.refusal === 'throttled') return { kind: 'throttled' };
      return { kind: 'challenge', reason: result.refusal, scope: request.required, detail: result.reason };
    }
    return this.decide(result.identity, request);
  }

  /**
   * The decision for an identity already established (by `authorize`'s authenticator, or by the web UI's session
   * cookie, server/ui/session.ts): the same rules whoever checked the credentials.
   */
  decide(identity: Identity, request: Omit<AccessRequest, 'credentials' | 'address'>): AccessDecision {
    const { required, mountFrom } = request;
    const { authenticated, subject: user, access: granted } = identity;
    if (request.base) {
      return authenticated ? { kind: 'allow', user, dropMount: false } : { kind: 'challenge', reason: 'anonymous', scope: required };
    }

    const missing = granted !== undefined ? missingAccess(granted, required) : this.missingByPolicy(user, required);
    if (missing.length > 0) {
      if (!authenticated) {
        // A client starting without a token learns to ask for the mount source too (as registry:2 names it).
        const scope = mountFrom !== undefined ? [...required, { type: 'repository', name: mountFrom, actions: ['pull'] }] : required;
        return { kind: 'challenge', reason: 'anonymous', scope, user };
      }
      if (granted !== undefined) return { kind: 'challenge', reason: 'insufficient-scope', scope: required, user };
      return { kind: 'deny', user, missing };
    }

    const dropMount = mountFrom !== undefined && !(granted !== undefined
      ? allows(granted, 'repository', mountFrom, 'pull')
      : this.policy.repositoryActions(user, mountFrom).has('pull'));
    const { policy } = this;
    const catalogFilter = request.catalog && policy.hasRules ? (name: string) => policy.repositoryActions(user, name).has('pull') : undefined;
    return { kind: 'allow', user, dropMount, catalogFilter };
  }

  private missingByPolicy(user: string | undefined, required: Access[]): Access[] {
    const missing: Access[] = [];
    for (const r of required) {
      if (r.type === 'registry') {
        if (!this.policy.mayListCatalog(user)) missing.push(r);
        continue;
      }
      const have = this.policy.repositoryActions(user, r.name);
      const lacking = r.actions.filter((a) => !have.has(a));
      if (lacking.length > 0) missing.push({ ...r, actions: lacking });
    }
    return missing;
  }
}
