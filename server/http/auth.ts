/**
 * The Koa side of authentication and access control: which access a request needs, and the answer to the decision
 * of auth/authorizer.ts (who the caller is and whether that is enough), with the challenge when it is not.
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
import { formatScope, parseAuthorization, type Access, type AccessDecision, type Authorizer } from '../../auth/index.js';
import { RegistryError } from '../registry/errors.js';
import { dropMount, mountRequest, type RegistryContext } from './context.js';
import type { RouteMatch } from './routes.js';

/** The 429 answer to a password check refused by the throttle (here and at the token endpoint). */
export const THROTTLED_MESSAGE = 'too many failed login attempts; try again later';

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

/** What a 401 challenge names. */
export type ChallengeOptions =
  | { scheme: 'basic'; realm: string }
  | { scheme: 'bearer'; realm: string; service: string; autoredirect: boolean };

/** Everything a request check needs; swapped as a whole on reload. */
export interface AuthState {
  authorizer: Authorizer;
  challenge: ChallengeOptions;
}

type Reason = Extract<AccessDecision, { kind: 'challenge' }>['reason'];

/** A 401's message in Basic and in Bearer mode, and the `error` a Bearer challenge names, by the decision's reason. */
const CHALLENGES: Record<Reason, [basic: string, bearer: string, error?: 'invalid_token' | 'insufficient_scope']> = {
  malformed: ['malformed Authorization header', 'malformed Authorization header', 'invalid_token'],
  'wrong-scheme': ['Basic credentials required', 'a Bearer token is required; get one from the realm'],
  rejected: ['invalid username or password', 'invalid token', 'invalid_token'],
  anonymous: ['authentication required', 'authentication required'],
  'insufficient-scope': ['insufficient scope', 'insufficient scope', 'insufficient_scope'],
};

function quote(value: string): string {
  return `"${value.replace(/["\\]/g, '')}"`;
}

const accessDetail = (list: Access[]) => list.map((a) => ({ Type: a.type, Name: a.name, Action: a.actions.join(',') }));

export class AccessControl {
  constructor(private state: AuthState, private readonly logger: Logger) {}

  update(state: AuthState): void {
    this.state = state;
  }

  private challengeHeader(ctx: Context, scope: Access[], error?: 'invalid_token' | 'insufficient_scope'): string {
    const options = this.state.challenge;
    if (options.scheme === 'basic') return `Basic realm=${quote(options.realm)}`;
    let realm = options.realm;
    if (options.autoredirect) realm = `${ctx.protocol}://${ctx.host}${new URL(options.realm).pathname}`;
    let header = `Bearer realm=${quote(realm)},service=${quote(options.service)}`;
    if (scope.length > 0) header += `,scope=${quote(scope.map(formatScope).join(' '))}`;
    if (error) header += `,error="${error}"`;
    return header;
  }

  /**
   * Check the request (auth/authorizer.ts decides) and apply the decision: throw the OCI error to answer with, or
   * note the user, drop an unreadable mount source and set the catalog filter.
   */
  async check(ctx: RegistryContext): Promise<void> {
    const match = ctx.state.match;
    // Read once, validated, kept on the request: the handler mounts exactly what is checked here.
    const mountFrom = mountRequest(ctx)?.from;
    const credentials = parseAuthorization(ctx.get('Authorization') || undefined);
    const decision = await this.state.authorizer.authorize({
      credentials,
      address: ctx.ip,
      required: requiredAccess(match, ctx.method),
      base: match.route === 'base',
      catalog: match.route === 'catalog',
      mountFrom,
    });
    if (decision.kind === 'throttled') throw new RegistryError('TOOMANYREQUESTS', THROTTLED_MESSAGE);
    // Who made the request, for the access log and notification events.
    if (decision.user) ctx.state.user = decision.user;
    if (decision.kind === 'challenge') {
      if (decision.reason === 'rejected') {
        if (credentials.scheme === 'basic') this.logger.info({ user: credentials.user, remote: ctx.ip }, 'authentication failed');
        else this.logger.info({ reason: decision.detail, remote: ctx.ip }, 'token rejected');
      }
      const [basicMessage, bearerMessage, error] = CHALLENGES[decision.reason];
      const message = this.state.challenge.scheme === 'basic' ? basicMessage : bearerMessage;
      throw new RegistryError('UNAUTHORIZED', message, {
        reason: { kind: 'authentication-required', challenge: this.challengeHeader(ctx, decision.scope, error) },
        detail: accessDetail(decision.scope),
      });
    }
    if (decision.kind === 'deny') {
      throw new RegistryError('DENIED', 'requested access to the resource is denied', { detail: accessDetail(decision.missing) });
    }
    // The spec's answer to a mount that cannot happen: a normal upload session, saying nothing about `from`.
    if (decision.dropMount) dropMount(ctx);
    if (decision.catalogFilter) ctx.state.catalogFilter = decision.catalogFilter;
  }
}
