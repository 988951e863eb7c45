/**
 * Who is calling. `parseAuthorization` reads the credentials of an `Authorization` header without trusting them;
 * an `Authenticator` checks credentials and answers with an identity or the reason it refuses them:
 *
 *   HtpasswdAuthenticator   Basic user/password against an htpasswd file, throttled (registry `auth.htpasswd`)
 *   BearerAuthenticator     a JWT from a token server, verified by a TokenVerifier (registry `auth.token`)
 *   TokenServerUsers        the built-in token server's users: a password (throttled), or a refresh token this
 *                           server issued, while the user's entry in the users file is the one it was issued for
 *
 * No credentials at all is an anonymous identity, not a failure: what an anonymous caller may do is the
 * authorizer's question (./authorizer.ts).
 */
import type { Htpasswd } from './htpasswd.js';
import type { Access } from './scope.js';
import type { Throttle } from './throttle.js';
import { TokenError, type TokenIssuer, type TokenVerifier, type VerifiedToken } from './token.js';

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

export interface Identity {
  /** False when the request carried no credentials. */
  authenticated: boolean;
  /** The user; undefined for an anonymous caller (and for a token issued to nobody). */
  subject?: string;
  /** What a token grants; undefined when the access rules decide. */
  access?: Access[];
}

/** Why credentials were refused: unreadable, of the other scheme, wrong, or too many wrong ones lately. */
export type Refusal = 'malformed' | 'wrong-scheme' | 'rejected' | 'throttled';

export type Authentication =
  | { ok: true; identity: Identity }
  | {
    ok: false;
    refusal: Refusal;
    /** For the log: what was wrong with a token. */
    reason?: string;
    /** For the log: the account a refused token was valid for. */
    user?: string;
  };

export interface Authenticator {
  /** The scheme this authenticator takes: what a challenge asks for. */
  readonly scheme: 'basic' | 'bearer';
  /** Check the credentials of a request from `address` (the client address, for throttling). */
  authenticate(credentials: Credentials, address: string): Promise<Authentication>;
}

const refused = (refusal: Refusal, reason?: string, user?: string): Authentication => ({ ok: false, refusal, reason, user });

/** The answer to credentials not of `scheme`: none is anonymous, unreadable ones malformed, others the wrong scheme. */
function notOf(scheme: 'basic' | 'bearer', credentials: Credentials): Authentication {
  if (credentials.scheme === 'none') return { ok: true, identity: { authenticated: false } };
  return refused(credentials.scheme === 'malformed' ? 'malformed' : 'wrong-scheme');
}

/**
 * Check a password with throttling: an (account, address) pair or an address that failed too often is refused
 * before the password is looked at; failures count against both. The account's owner, from another address, is
 * not affected by someone else's failures.
 */
export async function checkPassword(throttle: Throttle, users: Htpasswd, user: string, password: string, address: string): Promise<'ok' | 'rejected' | 'throttled'> {
  if (throttle.isLocked(user, address)) return 'throttled';
  const ok = user.length <= 256 && password.length <= 1024 && (await users.verify(user, password));
  if (ok) throttle.success(user, address);
  else throttle.failure(user, address);
  return ok ? 'ok' : 'rejected';
}

/** Basic credentials against an htpasswd file. */
export class HtpasswdAuthenticator implements Authenticator {
  readonly scheme = 'basic';

  constructor(readonly users: Htpasswd, protected readonly throttle: Throttle) {}

  async authenticate(credentials: Credentials, address: string): Promise<Authentication> {
    if (credentials.scheme !== 'basic') return notOf('basic', credentials);
    const outcome = await checkPassword(this.throttle, this.users, credentials.user, credentials.password, address);
    return outcome === 'ok' ? { ok: true, identity: { authenticated: true, subject: credentials.user } } : refused(outcome);
  }
}

/** A verified token, or why it is not valid. Errors other than TokenError are bugs: thrown. */
async function verifyToken(verifier: TokenVerifier, token: string): Promise<VerifiedToken | Authentication> {
  try {
    return await verifier.verify(token);
  } catch (err) {
    if (!(err instanceof TokenError)) throw err;
    return refused('rejected', err.message);
  }
}

/** Bearer tokens from a token server (the built-in one or another), checked by `verifier`. */
export class BearerAuthenticator implements Authenticator {
  readonly scheme = 'bearer';

  constructor(private readonly verifier: TokenVerifier) {}

  async authenticate(credentials: Credentials): Promise<Authentication> {
    if (credentials.scheme !== 'bearer') return notOf('bearer', credentials);
    const verified = await verifyToken(this.verifier, credentials.token);
    if ('ok' in verified) return verified;
    return { ok: true, identity: { authenticated: true, subject: verified.subject || undefined, access: verified.access } };
  }
}

/**
 * The built-in token server's users: Basic credentials are a password (as HtpasswdAuthenticator checks it);
 * bearer credentials are a refresh token this server issued, valid only while the user's entry in the users file
 * is the one it was issued against (a removed user or a changed password ends every refresh token issued before).
 */
export class TokenServerUsers extends HtpasswdAuthenticator {
  constructor(users: Htpasswd, throttle: Throttle, private readonly refreshVerifier: TokenVerifier, private readonly issuer: TokenIssuer) {
    super(users, throttle);
  }

  override async authenticate(credentials: Credentials, address: string): Promise<Authentication> {
    if (credentials.scheme !== 'bearer') return super.authenticate(credentials, address);
    const verified = await verifyToken(this.refreshVerifier, credentials.token);
    if ('ok' in verified) return verified;
    const subject = verified.subject;
    const credential = subject ? this.users.credentialOf(subject) : undefined;
    if (credential === undefined || !this.issuer.matchesCredential(verified.claims.cred, subject, credential)) {
      return refused('rejected', 'refresh token no longer valid for the user', subject);
    }
    return { ok: true, identity: { authenticated: true, subject } };
  }

  /** The claims binding a refresh token for `user` to their current entry; undefined for an unknown user. */
  refreshClaims(user: string): { cred: string } | undefined {
    const credential = this.users.credentialOf(user);
    return credential === undefined ? undefined : { cred: this.issuer.credentialTag(user, credential) };
  }
}
