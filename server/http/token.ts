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
import type { Context } from 'koa';
import type { Logger } from 'pino';
import {
  formatScope, parseAuthorization, parseScopes, type Access, type Authentication, type Credentials, type Policy, type TokenIssuer,
  type TokenServerUsers,
} from '../../auth/index.js';
import { THROTTLED_MESSAGE } from './auth.js';
import { OAuthError } from './errors.js';

export interface TokenServerState {
  path: string;
  service: string;
  /** Basic realm named when credentials are refused. */
  realm: string;
  issuer: TokenIssuer;
  refreshLifetimeSeconds: number;
  /** Passwords (throttled) and this server's refresh tokens. */
  users: TokenServerUsers;
  policy: Policy;
}

const MAX_FORM_BYTES = 64 * 1024;
const FORM_FIELDS = 32;

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

  /** Check credentials with the users' authenticator; the throttle's refusal is answered here. */
  private async authenticate(credentials: Credentials, address: string): Promise<Authentication> {
    const result = await this.state.users.authenticate(credentials, address);
    if (!result.ok && result.refusal === 'throttled') {
      throw new OAuthError('temporarily_unavailable', THROTTLED_MESSAGE, { kind: 'rate-limited' });
    }
    return result;
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
      if (!(await this.authenticate(creds, ctx.ip)).ok) {
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
    await this.respond(ctx, user, parseScopes(all('scope')), offline && user !== undefined);
  }

  private async post(ctx: Context): Promise<void> {
    const form = await readForm(ctx);
    this.checkService(form.service);
    if (!form.client_id) throw new OAuthError('invalid_request', 'client_id is required');
    const scopes = parseScopes(form.scope ? [form.scope] : []);
    const offline = form.access_type === 'offline';
    if (form.grant_type === 'password') {
      const username = form.username ?? '';
      if (!(await this.authenticate({ scheme: 'basic', user: username, password: form.password ?? '' }, ctx.ip)).ok) {
        this.logger.info({ user: username, remote: ctx.ip }, 'token request: authentication failed');
        throw this.badGrant('invalid username or password');
      }
      await this.respond(ctx, username, scopes, offline);
      return;
    }
    if (form.grant_type === 'refresh_token') {
      // Valid only while the user's entry is the one the token was issued against (auth/authenticator.ts).
      const result = await this.authenticate({ scheme: 'bearer', token: form.refresh_token ?? '' }, ctx.ip);
      if (!result.ok) {
        if (result.user !== undefined) this.logger.info({ user: result.user, remote: ctx.ip }, `token request: ${result.reason}`);
        throw this.badGrant('invalid refresh token');
      }
      await this.respond(ctx, result.identity.subject, scopes, false, form.refresh_token);
      return;
    }
    throw new OAuthError('unsupported_grant_type', 'grant_type must be password or refresh_token');
  }

  private async respond(ctx: Context, user: string | undefined, requested: Access[], withRefresh: boolean, refreshToken?: string): Promise<void> {
    const { issuer, service, policy } = this.state;
    const granted = policy.grant(user, requested);
    const issued = await issuer.issue(user ?? '', service, granted);
    const body: Record<string, unknown> = {
      token: issued.token,
      access_token: issued.token,
      expires_in: issued.expiresIn,
      issued_at: issued.issuedAt,
      scope: granted.map(formatScope).join(' '),
    };
    const binding = withRefresh && user !== undefined ? this.state.users.refreshClaims(user) : undefined;
    if (binding !== undefined) {
      body.refresh_token = (await issuer.issue(user!, refreshAudience(service), [], this.state.refreshLifetimeSeconds, binding)).token;
    } else if (refreshToken !== undefined) {
      body.refresh_token = refreshToken;
    }
    ctx.status = 200;
    ctx.set('Content-Type', 'application/json');
    ctx.body = Buffer.from(JSON.stringify(body));
  }
}

export { refreshAudience };

/**
 * Read an urlencoded form of at most MAX_FORM_BYTES, with at most FORM_FIELDS fields, names of 64 bytes and values of
 * 16 KiB. A repeated field keeps its first value, except `scope`, whose values are joined.
 */
async function readForm(ctx: Context): Promise<Record<string, string>> {
  if (!/^application\/x-www-form-urlencoded\b/i.test(ctx.get('Content-Type'))) {
    throw new OAuthError('invalid_request', 'expected an application/x-www-form-urlencoded body');
  }
  const tooLarge = (message = 'form too large') => new OAuthError('invalid_request', message, { kind: 'body-too-large', limit: MAX_FORM_BYTES });
  if (Number(ctx.get('Content-Length') || '0') > MAX_FORM_BYTES) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    // Stopping early leaves the request open: Node discards the rest once the error is answered.
    for await (const chunk of ctx.req.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
      size += chunk.byteLength;
      if (size > MAX_FORM_BYTES) throw tooLarge();
      chunks.push(chunk);
    }
  } catch (err) {
    throw err instanceof OAuthError ? err : new OAuthError('invalid_request', 'malformed form');
  }
  const fields = Object.create(null) as Record<string, string>;
  let count = 0;
  for (const [name, value] of new URLSearchParams(Buffer.concat(chunks, size).toString('utf8'))) {
    if (++count > FORM_FIELDS) throw tooLarge('too many form fields');
    if (Buffer.byteLength(name) > 64 || Buffer.byteLength(value) > 16 * 1024) throw tooLarge('form field too large');
    if (!(name in fields)) fields[name] = value;
    else if (name === 'scope') fields.scope = `${fields.scope} ${value}`;
  }
  return fields;
}
