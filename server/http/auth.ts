/**
 * The Koa side of authentication and access control: which access a request needs, who the caller is (htpasswd
 * Basic or Bearer token, see auth/), whether that is enough, and the challenge when it is not.
 *
 *   route / method                          required access
 *   GET /v2/                                 none, but credentials (so `docker login` sees a challenge)
 *   GET, HEAD  /v2/<name>/…                   repository:<name>:pull
 *   POST, PATCH, PUT /v2/<name>/…, upload GET repository:<name>:pull,push
 *   DELETE /v2/<name>/…  (upload DELETE: pull,push)   repository:<name>:delete
 *   POST …/blobs/uploads/?mount=&from=<other> also pull on <other>; without it the mount becomes a plain upload
 *   GET /v2/_catalog                         registry:catalog:*  (listing filtered to pullable names under rules)
 *
 * Answers: no or bad credentials → 401 UNAUTHORIZED with a challenge naming the scope; Basic credentials without
 * the right → 403 DENIED; a valid Bearer token without the right → 401 with error="insufficient_scope"; an
 * invalid token → 401 with error="invalid_token"; too many failed passwords (for the account from this address, or
 * from this address for any account) → 429 TOOMANYREQUESTS.
 */
import type { Context } from 'koa';
import type { Logger } from 'pino';
import {
  formatScope, Htpasswd, missingAccess, Policy, Throttle, TokenError, TokenVerifier, allows, type Access, type VerifiedToken,
} from '../../auth/index.js';
import { RegistryError } from '../registry/errors.js';
import { dropMount, mountRequest, type RegistryContext } from './context.js';
import type { RouteMatch } from './routes.js';

/** Longest Authorization header read; longer ones are refused as malformed without decoding. */
export const MAX_AUTHORIZATION_LENGTH = 16 * 1024 + 16;

export type Credentials =
  | { scheme: 'none' }
  | { scheme: 'basic'; user: string; password: string }
  | { scheme: 'bearer'; token: string }
  | { scheme: 'malformed' };

/** Read an Authorization header without trusting it: bounded length, strict base64, no control characters. */
export function parseAuthorization(header: string | undefined): Credentials {
  if (header === undefined || header === '') return { scheme: 'none' };
  if (header.length > MAX_AUTHORIZATION_LENGTH) return { scheme: 'malformed' };
  const m = /^([A-Za-z]+) +([A-Za-z0-9+/=._~-]+)\s*$/.exec(header);
  if (!m) return { scheme: 'malformed' };
  const scheme = m[1]!.toLowerCase();
  const value = m[2]!;
  if (scheme === 'bearer') return { scheme: 'bearer', token: value };
  if (scheme !== 'basic' || !/^[A-Za-z0-9+/]+={0,2}$/.test(value) || value.length % 4 !== 0) return { scheme: 'malformed' };
  const decoded = Buffer.from(value, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  // eslint-disable-next-line no-control-regex
  if (colon <= 0 || /[\u0000-\u001f\u007f\ufffd]/.test(decoded)) return { scheme: 'malformed' };
  return { scheme: 'basic', user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** The access a request needs, and the `from` repository of a mount (which needs pull, but softly). */
export function requiredAccess(match: RouteMatch, method: string): Access[] {
  if (match.route === 'base') return [];
  if (match.route === 'catalog') return [{ type: 'registry', name: 'catalog', actions: ['*'] }];
  const name = match.name!;
  if (match.route === 'upload' || match.route === 'uploadStart') return [{ type: 'repository', name, actions: ['pull', 'push'] }];
  if (method === 'GET' || method === 'HEAD') return [{ type: 'repository', name, actions: ['pull'] }];
  if (method === 'DELETE') return [{ type: 'repository', name, actions: ['delete'] }];
  return [{ type: 'repository', name, actions: ['pull', 'push'] }];
}

export interface BasicMode {
  kind: 'htpasswd';
  realm: string;
  users: Htpasswd;
}

export interface TokenMode {
  kind: 'token';
  realm: string;
  service: string;
  autoredirect: boolean;
  verifier: TokenVerifier;
}

/** Everything a request check needs; swapped as a whole on reload. */
export interface AuthState {
  mode: BasicMode | TokenMode;
  policy: Policy;
  throttle: Throttle;
}

function quote(value: string): string {
  return `"${value.replace(/["\\]/g, '')}"`;
}

/**
 * Check a password with throttling: an (account, address) pair or an address that failed too often is refused (429)
 * before the password is looked at; failures count against both. The account's owner, from another address, is
 * not affected by someone else's failures.
 */
export async function checkPassword(throttle: Throttle, users: Htpasswd, user: string, password: string, address: string): Promise<boolean> {
  if (throttle.isLocked(user, address)) {
    throw new RegistryError('TOOMANYREQUESTS', 'too many failed login attempts; try again later');
  }
  const ok = user.length <= 256 && password.length <= 1024 && (await users.verify(user, password));
  if (ok) throttle.success(user, address);
  else throttle.failure(user, address);
  return ok;
}

export class AccessControl {
  constructor(private state: AuthState, private readonly logger: Logger) {}

  update(state: AuthState): void {
    this.state = state;
  }

  /** The current policy (for the token server, which shares it). */
  get policy(): Policy {
    return this.state.policy;
  }

  private challenge(ctx: Context, required: Access[], error?: 'invalid_token' | 'insufficient_scope'): string {
    const { mode } = this.state;
    if (mode.kind === 'htpasswd') return `Basic realm=${quote(mode.realm)}`;
    let realm = mode.realm;
    if (mode.autoredirect) realm = `${ctx.protocol}://${ctx.host}${new URL(mode.realm).pathname}`;
    let header = `Bearer realm=${quote(realm)},service=${quote(mode.service)}`;
    if (required.length > 0) header += `,scope=${quote(required.map(formatScope).join(' '))}`;
    if (error) header += `,error="${error}"`;
    return header;
  }

  private unauthorized(ctx: Context, required: Access[], message: string, error?: 'invalid_token' | 'insufficient_scope'): RegistryError {
    return new RegistryError('UNAUTHORIZED', message, {
      reason: { kind: 'authentication-required', challenge: this.challenge(ctx, required, error) },
      detail: required.map((a) => ({ Type: a.type, Name: a.name, Action: a.actions.join(',') })),
    });
  }

  /**
   * Decide the request; throws the OCI error to answer with. On success, may drop an unreadable mount source and
   * set a catalog filter.
   */
  async authorize(ctx: RegistryContext): Promise<void> {
    const { mode, policy, throttle } = this.state;
    const match = ctx.state.match;
    const required = requiredAccess(match, ctx.method);
    const creds = parseAuthorization(ctx.get('Authorization') || undefined);
    // Read once, validated, kept on the request: the handler mounts exactly what is checked here.
    const mountFrom = mountRequest(ctx)?.from;

    let principal: string | undefined;
    /** What the caller holds: a token's access claim, or undefined when the policy decides. */
    let granted: Access[] | undefined;
    if (creds.scheme === 'malformed') {
      throw this.unauthorized(ctx, required, 'malformed Authorization header', mode.kind === 'token' ? 'invalid_token' : undefined);
    }
    if (mode.kind === 'htpasswd') {
      if (creds.scheme === 'bearer') throw this.unauthorized(ctx, required, 'Basic credentials required');
      if (creds.scheme === 'basic') {
        if (!(await checkPassword(throttle, mode.users, creds.user, creds.password, ctx.ip))) {
          this.logger.info({ user: creds.user, remote: ctx.ip }, 'authentication failed');
          throw this.unauthorized(ctx, required, 'invalid username or password');
        }
        principal = creds.user;
      }
    } else if (creds.scheme === 'bearer') {
      let verified: VerifiedToken;
      try {
        verified = mode.verifier.verify(creds.token);
      } catch (err) {
        if (!(err instanceof TokenError)) throw err;
        this.logger.info({ reason: err.message, remote: ctx.ip }, 'token rejected');
        throw this.unauthorized(ctx, required, 'invalid token', 'invalid_token');
      }
      principal = verified.subject || undefined;
      granted = verified.access;
    } else if (creds.scheme === 'basic') {
      throw this.unauthorized(ctx, required, 'a Bearer token is required; get one from the realm');
    }

    const authenticated = creds.scheme !== 'none';
    // Who made the request, for the access log and notification events.
    if (principal) ctx.state.user = principal;
    if (match.route === 'base') {
      if (!authenticated) throw this.unauthorized(ctx, required, 'authentication required');
      return;
    }

    const missing = granted !== undefined ? missingAccess(granted, required) : this.missingByPolicy(policy, principal, required);
    if (missing.length > 0) {
      if (!authenticated) {
        // A client starting without a token learns to ask for the mount source too (as registry:2 names it).
        const asked = mountFrom !== undefined ? [...required, { type: 'repository', name: mountFrom, actions: ['pull'] }] : required;
        throw this.unauthorized(ctx, asked, 'authentication required');
      }
      if (granted !== undefined) throw this.unauthorized(ctx, required, 'insufficient scope', 'insufficient_scope');
      throw new RegistryError('DENIED', 'requested access to the resource is denied', {
        detail: missing.map((a) => ({ Type: a.type, Name: a.name, Action: a.actions.join(',') })),
      });
    }

    if (mountFrom !== undefined) {
      const readable = granted !== undefined
        ? allows(granted, 'repository', mountFrom, 'pull')
        : policy.repositoryActions(principal, mountFrom).has('pull');
      if (!readable) {
        // The spec's answer to a mount that cannot happen: a normal upload session, saying nothing about `from`.
        dropMount(ctx);
      }
    }
    if (match.route === 'catalog' && policy.hasRules) {
      ctx.state.catalogFilter = (name: string) => policy.repositoryActions(principal, name).has('pull');
    }
  }

  private missingByPolicy(policy: Policy, principal: string | undefined, required: Access[]): Access[] {
    const missing: Access[] = [];
    for (const r of required) {
      if (r.type === 'registry') {
        if (!policy.mayListCatalog(principal)) missing.push(r);
        continue;
      }
      const have = policy.repositoryActions(principal, r.name);
      const lacking = r.actions.filter((a) => !have.has(a));
      if (lacking.length > 0) missing.push({ ...r, actions: lacking });
    }
    return missing;
  }
}
