/**
 * Bearer tokens (JWT, Docker token spec): verification on the registry side and issuing in the token server.
 *
 * Verification pins everything an attacker could choose:
 *  - the algorithm must be in the configured list, which only holds asymmetric algorithms (never `none`, never
 *    HMAC), and must fit the key's type and curve: an HS256 token "signed" with a public key never verifies;
 *  - the key comes from the `x5c` chain (verified up to a certificate of the root bundle), or from `kid` (the
 *    libtrust fingerprint or RFC 7638 thumbprint of a root certificate's key, or a JWKS `kid`), or from `jwk` only
 *    when that key is itself one of the trusted keys;
 *  - `iss` must equal the configured issuer, `aud` (string or list) must contain the service, `exp` is required,
 *    and `exp`/`nbf` are checked with a small leeway.
 * Signatures and claims are checked, and tokens signed, by `jose`; this module chooses the key and the rules.
 */
import { createHash, createHmac, createPublicKey, randomBytes, timingSafeEqual, X509Certificate, type KeyObject } from 'node:crypto';
import { errors as joseErrors, jwtVerify, SignJWT, type JWTHeaderParameters, type JWTPayload } from 'jose';
import { jwkThumbprint, libtrustKeyId } from './keys.js';
import { readAccessClaim, type Access } from './scope.js';

export const ASYMMETRIC_ALGORITHMS = [
  'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA',
] as const;

/** The longest token accepted; real ones are a few kilobytes at most. */
export const MAX_TOKEN_LENGTH = 16 * 1024;

export class TokenError extends Error {}

export interface VerifiedToken {
  subject: string;
  access: Access[];
  claims: Record<string, unknown>;
}

export interface VerifierOptions {
  issuer: string;
  /** The audience the token must name: the registry's `service`. */
  audience: string;
  /** The root certificate bundle: x5c chains end here, and their keys are trusted by key ID. */
  roots?: X509Certificate[];
  /** Keys from a JWKS file, by kid. */
  jwks?: Map<string, KeyObject>;
  /** Allowed algorithms (a subset of ASYMMETRIC_ALGORITHMS). Default: all of them. */
  algorithms?: string[];
  /** Clock leeway in seconds for exp/nbf. Default 60 (as registry:2). */
  leewaySeconds?: number;
  now?: () => number;
}

const EC_ALGORITHM: Record<string, string> = { 'prime256v1': 'ES256', 'secp384r1': 'ES384', 'secp521r1': 'ES512' };

/** Whether `alg` is meant for `key` (type and curve). */
function algorithmFits(alg: string, key: KeyObject): boolean {
  switch (key.asymmetricKeyType) {
    case 'rsa':
    case 'rsa-pss':
      return /^(RS|PS)(256|384|512)$/.test(alg);
    case 'ec':
      return EC_ALGORITHM[key.asymmetricKeyDetails?.namedCurve ?? ''] === alg;
    case 'ed25519': // EdDSA is Ed25519 only (as in jose and registry:2's go-jose): an Ed448 key verifies nothing
      return alg === 'EdDSA';
    default:
      return false;
  }
}

/** A jose failure as the TokenError the callers log (the messages name the check that failed). */
function tokenError(err: unknown): TokenError {
  if (err instanceof TokenError) return err;
  if (err instanceof joseErrors.JWTExpired) return new TokenError('token expired');
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    if (err.claim === 'exp') return new TokenError('token has no expiry');
    if (err.claim === 'nbf') return new TokenError('token not yet valid');
    if (err.claim === 'iss') return new TokenError('token issuer mismatch');
    if (err.claim === 'aud') return new TokenError('token audience mismatch');
  }
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return new TokenError('token algorithm not allowed');
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return new TokenError('invalid token signature');
  if (err instanceof joseErrors.JWSInvalid || err instanceof joseErrors.JWTInvalid) return new TokenError('malformed token');
  // Anything else jose refuses (a key it cannot use, such as an RSA key under 2048 bits) is still a bad token.
  return new TokenError(`invalid token: ${(err as Error).message}`);
}

export class TokenVerifier {
  private readonly trusted = new Map<string, KeyObject>();
  private readonly algorithms: string[];
  private readonly leeway: number;
  private readonly now: () => number;

  constructor(private readonly options: VerifierOptions) {
    for (const cert of options.roots ?? []) {
      this.trusted.set(libtrustKeyId(cert.publicKey), cert.publicKey);
      this.trusted.set(jwkThumbprint(cert.publicKey), cert.publicKey);
    }
    for (const [kid, key] of options.jwks ?? []) this.trusted.set(kid, key);
    this.algorithms = (options.algorithms ?? [...ASYMMETRIC_ALGORITHMS]).filter((a) => (ASYMMETRIC_ALGORITHMS as readonly string[]).includes(a));
    this.leeway = options.leewaySeconds ?? 60;
    this.now = options.now ?? Date.now;
  }

  /** The token's subject and access; throws TokenError (only) when it is not valid. Signature and claims: jose. */
  async verify(token: string): Promise<VerifiedToken> {
    if (token.length > MAX_TOKEN_LENGTH) throw new TokenError('token too long');
    let claims: JWTPayload;
    try {
      ({ payload: claims } = await jwtVerify(token, (header) => this.signingKey(header), {
        algorithms: this.algorithms,
        issuer: this.options.issuer,
        audience: this.options.audience,
        requiredClaims: ['exp'],
        clockTolerance: this.leeway,
        currentDate: new Date(this.now()),
      }));
    } catch (err) {
      throw tokenError(err);
    }
    return { subject: typeof claims.sub === 'string' ? claims.sub : '', access: readAccessClaim(claims.access), claims };
  }

  /** The key that must have signed the token (jose has already checked `alg` against the allowed list). */
  private signingKey(header: JWTHeaderParameters): KeyObject {
    const key = this.namedKey(header);
    if (!algorithmFits(header.alg, key)) throw new TokenError('token algorithm does not fit its key');
    return key;
  }

  private namedKey(header: JWTHeaderParameters): KeyObject {
    if (header.x5c !== undefined) return this.keyFromChain(header.x5c);
    if (header.jwk !== undefined) {
      let key: KeyObject;
      try {
        key = createPublicKey({ key: header.jwk as import('node:crypto').JsonWebKey, format: 'jwk' });
      } catch {
        throw new TokenError('malformed jwk header');
      }
      if (key.type !== 'public') throw new TokenError('malformed jwk header');
      // Only a key we already trust: an embedded key proves nothing by itself.
      const trusted = this.trusted.get(libtrustKeyId(key));
      if (!trusted || !trusted.equals(key)) throw new TokenError('untrusted jwk');
      return trusted;
    }
    if (typeof header.kid === 'string') {
      const key = this.trusted.get(header.kid);
      if (!key) throw new TokenError('unknown kid');
      return key;
    }
    throw new TokenError('token names no key (x5c, jwk or kid)');
  }

  /** Verify an x5c chain up to one of the roots; the leaf's key signs the token. */
  private keyFromChain(x5c: unknown): KeyObject {
    if (!Array.isArray(x5c) || x5c.length === 0 || x5c.length > 8 || !x5c.every((c) => typeof c === 'string')) {
      throw new TokenError('malformed x5c header');
    }
    let chain: X509Certificate[];
    try {
      chain = x5c.map((c: string) => new X509Certificate(Buffer.from(c, 'base64')));
    } catch {
      throw new TokenError('malformed x5c certificate');
    }
    const now = new Date(this.now());
    for (const cert of chain) {
      if (new Date(cert.validFrom) > now || new Date(cert.validTo) < now) throw new TokenError('x5c certificate outside its validity');
    }
    for (let i = 0; i + 1 < chain.length; i++) {
      if (!chain[i]!.checkIssued(chain[i + 1]!) || !chain[i]!.verify(chain[i + 1]!.publicKey)) {
        throw new TokenError('x5c chain broken');
      }
    }
    const top = chain.at(-1)!;
    const anchored = (this.options.roots ?? []).some((root) =>
      root.fingerprint256 === top.fingerprint256 || (top.checkIssued(root) && top.verify(root.publicKey)));
    if (!anchored) throw new TokenError('x5c chain does not lead to a trusted root');
    return chain[0]!.publicKey;
  }
}

export interface IssuerOptions {
  privateKey: KeyObject;
  issuer: string;
  /** Access token lifetime in seconds. */
  expiresInSeconds: number;
  now?: () => number;
}

export interface IssuedToken {
  token: string;
  expiresIn: number;
  issuedAt: string;
}

/** Signs tokens as registry:2 expects them: ES256 (or RS256 for an RSA key) with `kid` = the libtrust key ID. */
export class TokenIssuer {
  readonly algorithm: 'ES256' | 'ES384' | 'ES512' | 'RS256';
  readonly keyId: string;
  private readonly now: () => number;
  private readonly bindingKey: Buffer;

  constructor(private readonly options: IssuerOptions) {
    const key = options.privateKey;
    const curve = key.asymmetricKeyDetails?.namedCurve ?? '';
    if (key.asymmetricKeyType === 'ec' && EC_ALGORITHM[curve]) this.algorithm = EC_ALGORITHM[curve] as 'ES256';
    else if (key.asymmetricKeyType === 'rsa') this.algorithm = 'RS256';
    else throw new Error('the token signing key must be an ECDSA (P-256/384/521) or RSA key');
    this.keyId = libtrustKeyId(createPublicKey(key));
    this.now = options.now ?? Date.now;
    // A secret only the holders of the signing key know, the same in every process and replica that signs.
    this.bindingKey = createHash('sha256').update('wharf credential binding\0').update(key.export({ type: 'pkcs8', format: 'der' })).digest();
  }

  /**
   * A tag binding a token to the credential it was issued against (`credential`: the user's entry in the users
   * file, a bcrypt hash). Put in a refresh token, it lets the token server tell later whether the user and the
   * password are still the ones that were checked. Keyed, so the claim says nothing about the hash.
   */
  credentialTag(subject: string, credential: string): string {
    return createHmac('sha256', this.bindingKey).update(`${subject}\0${credential}`).digest('base64url');
  }

  /** Whether `tag` (from a token's claim) was made by `credentialTag` for this subject and credential. */
  matchesCredential(tag: unknown, subject: string, credential: string): boolean {
    if (typeof tag !== 'string') return false;
    const a = Buffer.from(tag);
    const b = Buffer.from(this.credentialTag(subject, credential));
    return a.length === b.length && timingSafeEqual(a, b);
  }

  get issuer(): string {
    return this.options.issuer;
  }

  /** An access token for `subject` (empty for anonymous) on `audience` with `access`. */
  async issue(subject: string, audience: string, access: Access[], lifetimeSeconds = this.options.expiresInSeconds, extra: Record<string, unknown> = {}): Promise<IssuedToken> {
    const nowMs = this.now();
    const iat = Math.floor(nowMs / 1000);
    const payload = {
      iss: this.options.issuer,
      sub: subject,
      aud: audience,
      exp: iat + lifetimeSeconds,
      nbf: iat - 1,
      iat,
      jti: randomBytes(16).toString('base64url'),
      access: access.map((a) => ({ type: a.type, name: a.name, actions: a.actions })),
      ...extra,
    };
    const token = await new SignJWT(payload)
      .setProtectedHeader({ alg: this.algorithm, typ: 'JWT', kid: this.keyId })
      .sign(this.options.privateKey);
    return { token, expiresIn: lifetimeSeconds, issuedAt: new Date(iat * 1000).toISOString() };
  }
}

/** A short, non-reversible tag for a token, safe to log when telling tokens apart matters. */
export function tokenTag(token: string): string {
  return createHash('sha256').update(token).digest('hex').slice(0, 12);
}
