/**
 * The web UI's login sessions: a cookie `wharf_session` holding a signed, expiring token (a JWT, HS256 by `jose`).
 *
 * The signing key is 32 random bytes kept in storage (`layout.UI_SESSION_KEY_PATH`), created at the first login by
 * whichever process gets there first (an exclusive create), so every worker and replica sharing the storage signs
 * and accepts the same cookies without any configuration. Until somebody logs in nothing is written: a registry
 * nobody logs in to through the UI keeps exactly registry:2's tree, and serving reads writes nothing. Whoever can read the storage can forge a session; they can read every
 * image already.
 *
 * A token names the user and binds to their current entry in the users file (`cred`: an HMAC of that line under
 * the session key), so changing a user's password or removing the user ends their sessions at once. Logging out
 * clears the cookie; there is no revocation store, so a copied cookie stays valid until it expires
 * (`ui.sessionlifetime`).
 */
import { createHmac, randomBytes } from 'node:crypto';
import { jwtVerify, SignJWT } from 'jose';
import type { Logger } from 'pino';
import { ifExists, readAfterLostCreate, UnsupportedOperationError, type StorageDriver } from '../../storage-drivers/driver.js';
import { UI_SESSION_KEY_PATH } from '../registry/layout.js';

export const COOKIE_NAME = 'wharf_session';
const AUDIENCE = 'wharf-ui';
const ISSUER = 'wharf-ui';
const KEY_BYTES = 32;
/** Longest cookie value looked at; a token of ours is well under this. */
const MAX_TOKEN_LENGTH = 2048;

/** Read the shared key, creating it when no process has yet. Falls back to a key of this process alone. */
export async function loadSessionKey(driver: StorageDriver, logger: Logger): Promise<Uint8Array> {
  try {
    const existing = await ifExists(driver.getContent(UI_SESSION_KEY_PATH));
    if (existing && existing.byteLength === KEY_BYTES) return new Uint8Array(existing);
    const fresh = randomBytes(KEY_BYTES);
    if (existing) await driver.putContent(UI_SESSION_KEY_PATH, fresh);
    else {
      let created: boolean;
      try {
        created = await driver.putContentIfAbsent(UI_SESSION_KEY_PATH, fresh);
      } catch (err) {
        // A backend without exclusive create: written plainly; processes starting at the same moment may race once.
        if (!(err instanceof UnsupportedOperationError)) throw err;
        await driver.putContent(UI_SESSION_KEY_PATH, fresh);
        created = true;
      }
      if (!created) {
        // Another process created it first: use theirs, once it has written it (the file is created empty).
        const theirs = await readAfterLostCreate(driver, UI_SESSION_KEY_PATH);
        if (theirs?.byteLength === KEY_BYTES) return new Uint8Array(theirs);
      }
    }
    // Read back: what is stored is what every other process uses. Never a key of another length: an empty one would
    // let anybody sign a session.
    const stored = await driver.getContent(UI_SESSION_KEY_PATH);
    if (stored.byteLength !== KEY_BYTES) throw new Error(`the stored key has ${stored.byteLength} bytes, not ${KEY_BYTES}`);
    return new Uint8Array(stored);
  } catch (err) {
    logger.warn({ err: (err as Error).message }, 'web UI: could not keep the session key in storage; logins are valid in this process only');
    return new Uint8Array(randomBytes(KEY_BYTES));
  }
}

export interface Session {
  user: string;
  /** The token's `cred`, checked against the user's current entry. */
  cred: string;
}

/**
 * The shared key, found lazily: read from storage when a cookie is to be checked (until it exists), created by the
 * first login. Once known it is kept for the life of the process.
 */
export class SharedSessionKey {
  private known: Uint8Array | undefined;
  private creating: Promise<Uint8Array> | undefined;

  constructor(private readonly driver: StorageDriver, private readonly logger: Logger) {}

  /** The key if one exists (no write); undefined while nobody has logged in. */
  async existing(): Promise<Uint8Array | undefined> {
    if (this.known) return this.known;
    const stored = await ifExists(this.driver.getContent(UI_SESSION_KEY_PATH)).catch(() => undefined);
    if (stored?.byteLength === KEY_BYTES) this.known ??= new Uint8Array(stored);
    return this.known;
  }

  /** The key, created in storage when none exists yet. */
  async create(): Promise<Uint8Array> {
    if (this.known) return this.known;
    this.creating ??= loadSessionKey(this.driver, this.logger).then((key) => (this.known ??= key));
    return this.creating;
  }

  /** The key when it is already known in this process, without any storage access. */
  get current(): Uint8Array | undefined {
    return this.known;
  }
}

export class SessionKeys {
  private readonly shared: SharedSessionKey | undefined;
  private readonly fixed: Uint8Array | undefined;

  /** `key`: a fixed key, or the storage's shared one. */
  constructor(key: Uint8Array | SharedSessionKey, private readonly lifetimeSeconds: number) {
    if (key instanceof SharedSessionKey) this.shared = key;
    else this.fixed = key;
  }

  get maxAgeSeconds(): number {
    return this.lifetimeSeconds;
  }

  /**
   * The binding of a session to one entry of the users file (an HMAC of the whole line, not reversible). Empty (so
   * matching no token) while no key is known, which can only be before any token of ours was verified or issued.
   */
  credentialTag(user: string, credential: string): string {
    const key = this.fixed ?? this.shared?.current;
    if (!key) return '';
    return createHmac('sha256', key).update(`${user}\n${credential}`).digest('base64url').slice(0, 22);
  }

  async issue(user: string, credential: string): Promise<string> {
    const key = this.fixed ?? (await this.shared!.create());
    return new SignJWT({ cred: this.credentialTag(user, credential) })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setSubject(user)
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setIssuedAt()
      .setExpirationTime(Math.floor(Date.now() / 1000) + this.lifetimeSeconds)
      .sign(key);
  }

  /** The session a cookie value carries, or undefined when it is not one of ours, expired, or malformed. */
  async verify(token: string | undefined): Promise<Session | undefined> {
    if (!token || token.length > MAX_TOKEN_LENGTH) return undefined;
    const key = this.fixed ?? (await this.shared!.existing());
    if (!key) return undefined;
    try {
      const { payload } = await jwtVerify(token, key, { algorithms: ['HS256'], audience: AUDIENCE, issuer: ISSUER });
      if (typeof payload.sub !== 'string' || payload.sub === '' || typeof payload.cred !== 'string') return undefined;
      return { user: payload.sub, cred: payload.cred };
    } catch {
      return undefined;
    }
  }
}

/** The `Set-Cookie` value that sets (or, with `token` null, clears) the session cookie. */
export function sessionCookie(token: string | null, maxAgeSeconds: number, secure: boolean): string {
  const parts = [`${COOKIE_NAME}=${token ?? ''}`, 'HttpOnly', 'SameSite=Strict', 'Path=/', `Max-Age=${token ? maxAgeSeconds : 0}`];
  if (secure) parts.push('Secure');
  return parts.join('; ');
}

/** The session cookie's value in a `Cookie` header (the first one of that name), read without decoding. */
export function readSessionCookie(header: string | undefined): string | undefined {
  if (!header || header.length > 16 * 1024) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === COOKIE_NAME) {
      const value = part.slice(eq + 1).trim();
      return /^[A-Za-z0-9._-]+$/.test(value) ? value : undefined;
    }
  }
  return undefined;
}
