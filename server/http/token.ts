/**
 * The built-in token server (Docker token spec, `docs/content/spec/auth/token.md` and `oauth.md` in
 * distribution/distribution):
 *
 *   GET  <path>?service=&scope=&scope=&offline_token=&client_id=&account=   Basic credentials, or none (anonymous)
 *   POST <path>  application/x-www-form-urlencoded                          grant_type=password | refresh_token
 *
 * The granted access is what was asked intersected with what the rules allow (a partial or empty grant is not an
 * error: `docker login` asks for no scope at all). `offline_token=true` (GET) or `access_type=offline` (POST)
 * adds a refresh token, a long-lived JWT for the audience `<service>:refresh` that only this endpoint accepts. It
 * carries a keyed tag of the user's entry in the users file (claim `cred`): a changed password or a removed user
 * (after the file is reloaded) makes every refresh token issued before it invalid.
 */
import busboy from 'busboy';
import type { Context } from 'koa';
import type { Logger } from 'pino';
import {
  formatScope, parseScopes, TokenError, type Access, type Htpasswd, type Policy, type Throttle, type TokenIssuer,
  type TokenVerifier, type VerifiedToken,
} from '../../auth/index.js';
import { RegistryError } from '../registry/errors.js';
import { checkPassword, parseAuthorization } from './auth.js';
import { OAuthError } from './errors.js';

export interface TokenServerState {
  path: string;
  service: string;
  /** Basic realm named when credentials are refused. */
  realm: string;
  issuer: TokenIssuer;
  /** Verifies this server's own refresh tokens. */
  refreshVerifier: TokenVerifier;
  refreshLifetimeSeconds: number;
  users: Htpasswd;
  policy: Policy;
  throttle: Throttle;
}

const MAX_FORM_BYTES = 64 * 1024;

function refreshAudience(service: string): string {
  return `${service}:refresh`;
}

export class TokenServer {
  constructor(private state: TokenServerState, private readonly logger: Logger) {}

  update(state: TokenServerState): void {
    this.state = state;
  }

  get path(): string {
    return this.state.path;
  }

  /** Answer the request if it is for the token endpoint; returns whether it was. */
  async handle(ctx: Context): Promise<boolean> {
    if (ctx.path !== this.state.path) return false;
    ctx.set('Cache-Control', 'no-store');
    if (ctx.method === 'GET') await this.get(ctx);
    else if (ctx.method === 'POST') await this.post(ctx);
    else throw new OAuthError('invalid_request', `method ${ctx.method} not allowed here`, { kind: 'method-not-allowed', allowed: ['GET', 'POST'] });
    return true;
  }

  /** Basic credentials (the GET form's client authentication) refused: 401 with a Basic challenge (RFC 6749 §5.2). */
  private badClient(message = 'invalid username or password'): OAuthError {
    return new OAuthError('invalid_client', message, { kind: 'authentication-required', challenge: `Basic realm="${this.state.realm}"` });
  }

  /** The password or refresh token of a POST grant refused (RFC 6749 §5.2: 400). */
  private badGrant(message: string): OAuthError {
    return new OAuthError('invalid_grant', message);
  }

  /** `checkPassword`, with its throttle's refusal as the token endpoint answers it. */
  private async passwordMatches(user: string, password: string, address: string): Promise<boolean> {
    try {
      return await checkPassword(this.state.throttle, this.state.users, user, password, address);
    } catch (err) {
      if (err instanceof RegistryError && err.code === 'TOOMANYREQUESTS') {
        throw new OAuthError('temporarily_unavailable', err.message, { kind: 'rate-limited' });
      }
      throw err;
    }
  }

  private checkService(service: string | undefined): void {
    if (service !== undefined && service !== '' && service !== this.state.service) {
      throw new OAuthError('invalid_request', 'unknown service');
    }
  }

  private async get(ctx: Context): Promise<void> {
    const q = ctx.query;
    const one = (key: string) => (Array.isArray(q[key]) ? (q[key] as string[])[0] : (q[key] as string | undefined));
    const all = (key: string) => (q[key] === undefined ? [] : Array.isArray(q[key]) ? (q[key] as string[]) : [q[key] as string]);
    this.checkService(one('service'));
    const creds = parseAuthorization(ctx.get('Authorization') || undefined);
    let user: string | undefined;
    if (creds.scheme === 'basic') {
      if (!(await this.passwordMatches(creds.user, creds.password, ctx.ip))) {
        this.logger.info({ user: creds.user, remote: ctx.ip }, 'token request: authentication failed');
        throw this.badClient();
      }
      user = creds.user;
      const account = one('account');
      if (account !== undefined && account !== '' && account !== user) throw this.badClient('account does not match the credentials');
    } else if (creds.scheme !== 'none') {
      throw this.badClient('Basic credentials expected');
    }
    const offline = one('offline_token') === 'true';
    this.respond(ctx, user, parseScopes(all('scope')), offline && user !== undefined);
  }

  private async post(ctx: Context): Promise<void> {
    const form = await readForm(ctx);
    this.checkService(form.service);
    if (!form.client_id) throw new OAuthError('invalid_request', 'client_id is required');
    const scopes = parseScopes(form.scope ? [form.scope] : []);
    const offline = form.access_type === 'offline';
    if (form.grant_type === 'password') {
      const username = form.username ?? '';
      if (!(await this.passwordMatches(username, form.password ?? '', ctx.ip))) {
        this.logger.info({ user: username, remote: ctx.ip }, 'token request: authentication failed');
        throw this.badGrant('invalid username or password');
      }
      this.respond(ctx, username, scopes, offline);
      return;
    }
    if (form.grant_type === 'refresh_token') {
      let verified: VerifiedToken;
      try {
        verified = this.state.refreshVerifier.verify(form.refresh_token ?? '');
      } catch (err) {
        if (!(err instanceof TokenError)) throw err;
        throw this.badGrant('invalid refresh token');
      }
      const subject = verified.subject;
      // Only while the user's entry is the one the token was issued against: a removed user or a changed password
      // ends every refresh token issued before.
      const credential = subject ? this.state.users.credentialOf(subject) : undefined;
      if (credential === undefined || !this.state.issuer.matchesCredential(verified.claims.cred, subject, credential)) {
        this.logger.info({ user: subject, remote: ctx.ip }, 'token request: refresh token no longer valid for the user');
        throw this.badGrant('invalid refresh token');
      }
      this.respond(ctx, subject, scopes, false, form.refresh_token);
      return;
    }
    throw new OAuthError('unsupported_grant_type', 'grant_type must be password or refresh_token');
  }

  private respond(ctx: Context, user: string | undefined, requested: Access[], withRefresh: boolean, refreshToken?: string): void {
    const { issuer, service, policy } = this.state;
    const granted = policy.grant(user, requested);
    const issued = issuer.issue(user ?? '', service, granted);
    const body: Record<string, unknown> = {
      token: issued.token,
      access_token: issued.token,
      expires_in: issued.expiresIn,
      issued_at: issued.issuedAt,
      scope: granted.map(formatScope).join(' '),
    };
    const credential = user !== undefined ? this.state.users.credentialOf(user) : undefined;
    if (withRefresh && user !== undefined && credential !== undefined) {
      const cred = issuer.credentialTag(user, credential);
      body.refresh_token = issuer.issue(user, refreshAudience(service), [], this.state.refreshLifetimeSeconds, { cred }).token;
    } else if (refreshToken !== undefined) {
      body.refresh_token = refreshToken;
    }
    ctx.status = 200;
    ctx.set('Content-Type', 'application/json');
    ctx.body = Buffer.from(JSON.stringify(body));
  }
}

export { refreshAudience };

/** Read an urlencoded form with busboy, within fixed limits. */
function readForm(ctx: Context): Promise<Record<string, string>> {
  const type = ctx.get('Content-Type');
  if (!/^application\/x-www-form-urlencoded\b/i.test(type)) {
    return Promise.reject(new OAuthError('invalid_request', 'expected an application/x-www-form-urlencoded body'));
  }
  const declared = Number(ctx.get('Content-Length') || '0');
  if (declared > MAX_FORM_BYTES) {
    return Promise.reject(new OAuthError('invalid_request', 'form too large', { kind: 'body-too-large', limit: MAX_FORM_BYTES }));
  }
  return new Promise((resolve, reject) => {
    const fields: Record<string, string> = {};
    let parser: busboy.Busboy;
    try {
      parser = busboy({ headers: ctx.req.headers, limits: { fields: 32, fieldSize: 16 * 1024, fieldNameSize: 64, parts: 32 } });
    } catch {
      reject(new OAuthError('invalid_request', 'malformed form'));
      return;
    }
    let received = 0;
    let failed = false;
    const fail = (err: OAuthError) => {
      if (failed) return;
      failed = true;
      ctx.req.unpipe(parser);
      ctx.req.resume();
      reject(err);
    };
    parser.on('field', (name, value, info) => {
      if (info.valueTruncated || info.nameTruncated) fail(new OAuthError('invalid_request', 'form field too large', { kind: 'body-too-large', limit: MAX_FORM_BYTES }));
      else if (!Object.prototype.hasOwnProperty.call(fields, name)) Object.defineProperty(fields, name, { value, enumerable: true, writable: true, configurable: true });
      else if (name === 'scope') fields.scope = `${fields.scope} ${value}`;
    });
    parser.on('fieldsLimit', () => fail(new OAuthError('invalid_request', 'too many form fields', { kind: 'body-too-large', limit: MAX_FORM_BYTES })));
    parser.on('error', () => fail(new OAuthError('invalid_request', 'malformed form')));
    parser.on('close', () => { if (!failed) resolve(fields); });
    ctx.req.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (received > MAX_FORM_BYTES) fail(new OAuthError('invalid_request', 'form too large', { kind: 'body-too-large', limit: MAX_FORM_BYTES }));
    });
    ctx.req.pipe(parser);
  });
}
