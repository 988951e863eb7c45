/**
 * Builds authentication from the configuration: the registry-side check (htpasswd or token), the built-in token
 * server, the shared policy and password throttle; and rebuilds the parts that may change on SIGHUP (rules, groups,
 * users, trusted certificates) without touching the listener.
 */
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import {
  Authorizer, BearerAuthenticator, ensureSigningMaterial, Htpasswd, HtpasswdAuthenticator, parseCertificateBundle, parseJwks,
  Policy, Throttle, TokenIssuer, TokenServerUsers, TokenVerifier, type SigningMaterial,
} from '../../auth/index.js';
import type { WharfConfig } from '../config/index.js';
import { AccessControl, type AuthState } from './auth.js';
import type { AuthHooks } from './context.js';
import { refreshAudience, TokenServer, type TokenServerState } from './token.js';

export interface AuthSystem {
  /** Undefined when no auth is configured (everything is allowed, as registry:2 without `auth`). */
  hooks?: AuthHooks;
  /** Whether requests are checked (htpasswd or token configured): mounts without `from` are then refused. */
  checksRequests: boolean;
  /** Re-read rules, groups, users and trusted certificates from a newly loaded configuration. */
  reload(config: WharfConfig): void;
  /** What the web UI (server/ui/) decides with: the current rules and users, the same objects as the API's. */
  ui(): UiAuth;
}

/**
 * The web UI's view of authentication. `mode`: `none` (no checks: everything allowed), `htpasswd`, `token` (with
 * this server's own token server, whose users can log in) or `external` (tokens from another server: the UI can
 * only browse as an anonymous caller). `passwords` checks a login's password (throttled as the API's), when
 * logging in is possible.
 */
export interface UiAuth {
  mode: 'none' | 'htpasswd' | 'token' | 'external';
  authorizer?: Authorizer;
  passwords?: HtpasswdAuthenticator;
}

export async function createAuth(config: WharfConfig, logger: Logger): Promise<AuthSystem> {
  const { auth } = config;
  const throttle = new Throttle({
    accountFailures: auth.throttle.accountfailures,
    addressFailures: auth.throttle.addressfailures,
    accountTotalFailures: auth.throttle.accounttotalfailures,
    windowMs: auth.throttle.window,
  });

  let material: SigningMaterial | undefined;
  if (auth.tokenserver) {
    material = await ensureSigningMaterial(auth.tokenserver.key, auth.tokenserver.certificate, auth.tokenserver.issuer);
    if (material.generated) {
      logger.info({ key: auth.tokenserver.key, certificate: auth.tokenserver.certificate },
        'token server: created the signing key or certificate; give the certificate to registries as rootcertbundle');
    }
  }
  if (auth.tokenserver && !auth.token && !auth.htpasswd) {
    logger.warn('auth.tokenserver is configured without auth.token: tokens are issued, but this registry does not require them');
  }

  const build = (cfg: WharfConfig): { access?: AuthState; token?: TokenServerState } => {
    const a = cfg.auth;
    const policy = new Policy(a.access);
    const out: { access?: AuthState; token?: TokenServerState } = {};
    if (a.htpasswd) {
      out.access = {
        authorizer: new Authorizer(new HtpasswdAuthenticator(Htpasswd.fromFile(a.htpasswd.path), throttle), policy),
        challenge: { scheme: 'basic', realm: a.htpasswd.realm },
      };
    } else if (a.token) {
      const roots = [];
      if (a.token.rootcertbundle) roots.push(...parseCertificateBundle(readFileSync(a.token.rootcertbundle, 'utf8'), a.token.rootcertbundle));
      else if (material) roots.push(material.certificate);
      const jwks = a.token.jwks ? parseJwks(readFileSync(a.token.jwks, 'utf8'), a.token.jwks) : undefined;
      const verifier = new TokenVerifier({ issuer: a.token.issuer, audience: a.token.service, roots, jwks, algorithms: a.token.signingalgorithms });
      out.access = {
        authorizer: new Authorizer(new BearerAuthenticator(verifier), policy),
        challenge: { scheme: 'bearer', realm: a.token.realm, service: a.token.service, autoredirect: a.token.autoredirect },
      };
    }
    if (a.tokenserver && material) {
      const ts = a.tokenserver;
      const issuer = new TokenIssuer({ privateKey: material.privateKey, issuer: ts.issuer, expiresInSeconds: Math.max(1, Math.round(ts.expiration / 1000)) });
      const refreshVerifier = new TokenVerifier({ issuer: ts.issuer, audience: refreshAudience(ts.service), roots: [material.certificate] });
      out.token = {
        path: ts.path,
        service: ts.service,
        realm: ts.realm,
        issuer,
        refreshLifetimeSeconds: Math.max(1, Math.round(ts.refreshexpiration / 1000)),
        users: new TokenServerUsers(Htpasswd.fromFile(ts.htpasswd), throttle, refreshVerifier, issuer),
        policy,
      };
    }
    return out;
  };

  let current = build(config);
  const initial = current;
  const access = initial.access ? new AccessControl(initial.access, logger) : undefined;
  const tokenServer = initial.token ? new TokenServer(initial.token, logger) : undefined;

  const hooks: AuthHooks | undefined = access || tokenServer
    ? {
        serveToken: async (ctx) => (tokenServer ? tokenServer.handle(ctx) : false),
        authorize: async (ctx) => { if (access) await access.check(ctx); },
      }
    : undefined;

  return {
    hooks,
    checksRequests: access !== undefined,
    ui(): UiAuth {
      const authorizer = access ? current.access?.authorizer : undefined;
      if (!authorizer) return { mode: 'none' };
      if (authorizer.authenticator instanceof HtpasswdAuthenticator) return { mode: 'htpasswd', authorizer, passwords: authorizer.authenticator };
      if (current.token) return { mode: 'token', authorizer, passwords: current.token.users };
      return { mode: 'external', authorizer };
    },
    reload(cfg: WharfConfig) {
      const next = build(cfg);
      if (Boolean(next.access) !== Boolean(access) || Boolean(next.token) !== Boolean(tokenServer) ||
        (next.access && initial.access && next.access.challenge.scheme !== initial.access.challenge.scheme)) {
        logger.warn('auth: switching authentication on, off or between htpasswd and token needs a restart; only rules, users and certificates were reloaded');
      }
      // What is applied (and what the web UI then sees): the new state, or the old authenticator with new rules.
      let applied = current.access;
      if (access && next.access && next.access.challenge.scheme === initial.access!.challenge.scheme) applied = next.access;
      else if (access && next.access) applied = { ...initial.access!, authorizer: new Authorizer(initial.access!.authorizer.authenticator, next.access.authorizer.policy) };
      if (access && applied) access.update(applied);
      if (tokenServer && next.token) tokenServer.update(next.token);
      current = { access: applied, token: tokenServer && next.token ? next.token : current.token };
      logger.info({ rules: cfg.auth.access?.rules.length ?? 0 }, 'auth: configuration reloaded');
    },
  };
}
