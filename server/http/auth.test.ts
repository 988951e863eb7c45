/**
 * Authentication and access control over HTTP, against real Wharf processes: one in token mode with the built-in
 * token server, access rules and anonymous pull; one with htpasswd Basic auth and rules; one whose rules are
 * reloaded with SIGHUP while a connection stays open. Every security case of the auth issue is a test here or in
 * auth/*.test.ts.
 */
import test from 'ava';
import bcrypt from 'bcryptjs';
import { createPrivateKey } from 'node:crypto';
import { request as httpRequest, Agent } from 'node:http';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT } from 'jose';
import { stringify } from 'yaml';
import { freePort, startWharf, writeHtpasswd, type RunningWharf } from '../../testing/harness.js';
import { libtrustKeyId } from '../../auth/keys.js';
import { sha256, waitForOutput } from '../../testing/helpers.js';

const PASSWORDS = { alice: 'alice-pw-Q1', bob: 'bob-pw-Z9', carol: 'carol-pw-K3', victim: 'victim-pw-X7', hupper: 'hupper-pw-R2' };
let dir: string;
let tokenWharf: RunningWharf;
let basicWharf: RunningWharf;
let tokenPort: number;

const RULES = {
  groups: { admins: ['alice'], dev: ['carol'] },
  anonymous: ['public/**'],
  rules: [
    { groups: ['admins'], repositories: ['**'], actions: ['*'], catalog: true },
    { users: ['*'], repositories: ['${user}/**'], actions: ['pull', 'push', 'delete'] },
    { groups: ['dev'], repositories: ['team/*'], actions: ['pull', 'push'] },
    { users: ['bob', 'carol'], catalog: true },
  ],
};

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wharf-auth-http-'));
  await writeHtpasswd(join(dir, 'htpasswd'), PASSWORDS);
  tokenPort = await freePort();
  [tokenWharf, basicWharf] = await Promise.all([
    startWharf({
      config: {
        log: { level: 'debug' },
        http: { addr: `127.0.0.1:${tokenPort}` },
        auth: {
          token: { realm: `http://127.0.0.1:${tokenPort}/auth/token`, service: 'wharf-test', issuer: 'wharf-issuer' },
          tokenserver: { key: join(dir, 'token.key'), certificate: join(dir, 'token.crt'), htpasswd: join(dir, 'htpasswd') },
          access: RULES,
          throttle: { accountfailures: 3, addressfailures: 100 },
        },
      },
    }),
    startWharf({
      config: {
        log: { level: 'debug' },
        // The tests stand in for clients behind a proxy on loopback, each named by X-Forwarded-For.
        http: { trustedproxies: ['127.0.0.1'] },
        auth: {
          htpasswd: { realm: 'test-realm', path: join(dir, 'htpasswd') },
          access: RULES,
          throttle: { accountfailures: 3, addressfailures: 6 },
        },
      },
    }),
  ]);
});

test.after.always(async () => {
  await Promise.all([tokenWharf?.stop(), basicWharf?.stop()]);
  if (dir) await rm(dir, { recursive: true, force: true });
});

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

async function call(base: string, path: string, init: { method?: string; headers?: Record<string, string>; body?: Buffer | string } = {}) {
  const res = await fetch(`${base}${path}`, { method: init.method ?? 'GET', headers: init.headers, body: init.body });
  const text = await res.text();
  let json: any;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, headers: res.headers, text, json };
}

async function token(user: string | undefined, scopes: string[], extra = ''): Promise<string> {
  const q = new URLSearchParams({ service: 'wharf-test' });
  for (const s of scopes) q.append('scope', s);
  const res = await call(tokenWharf.url, `/auth/token?${q}${extra}`, { headers: user ? { Authorization: basic(user, PASSWORDS[user as keyof typeof PASSWORDS]) } : {} });
  if (res.status !== 200) throw new Error(`token request failed: ${res.status} ${res.text}`);
  return res.json.token;
}

const bearer = (t: string) => ({ Authorization: `Bearer ${t}` });
const claims = (t: string) => JSON.parse(Buffer.from(t.split('.')[1]!, 'base64url').toString());

async function pushBlob(base: string, repo: string, auth: Record<string, string>, bytes = Buffer.from(`blob for ${repo} ${Math.random()}`)) {
  const digest = sha256(bytes);
  const res = await call(base, `/v2/${repo}/blobs/uploads/?digest=${digest}`, {
    method: 'POST', headers: { ...auth, 'Content-Type': 'application/octet-stream' }, body: bytes,
  });
  return { res, digest };
}

/** Sign a token with the token server's own key, with any claims: for the expiry / audience / issuer cases. */
async function forge(payload: Record<string, unknown>): Promise<string> {
  const key = createPrivateKey(await readFile(join(dir, 'token.key')));
  const { createPublicKey } = await import('node:crypto');
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: 'wharf-issuer', aud: 'wharf-test', sub: 'alice', nbf: now - 5, exp: now + 300,
    access: [{ type: 'repository', name: 'alice/empty', actions: ['pull', 'push'] }], ...payload })
    .setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: libtrustKeyId(createPublicKey(key)) })
    .sign(key);
}

// ---- token mode: challenges ------------------------------------------------------------------------------------

test('token: GET /v2/ without credentials is 401 with a Bearer challenge without scope', async (t) => {
  const res = await call(tokenWharf.url, '/v2/');
  t.is(res.status, 401);
  t.is(res.headers.get('www-authenticate'), `Bearer realm="http://127.0.0.1:${tokenPort}/auth/token",service="wharf-test"`);
  t.is(res.json.errors[0].code, 'UNAUTHORIZED');
});

test('token: challenges name the scope each route needs', async (t) => {
  const cases: [string, string, string][] = [
    ['GET', '/v2/team/app/tags/list', 'repository:team/app:pull'],
    ['HEAD', '/v2/team/app/manifests/latest', 'repository:team/app:pull'],
    ['POST', '/v2/team/app/blobs/uploads/', 'repository:team/app:pull,push'],
    ['PUT', '/v2/team/app/manifests/latest', 'repository:team/app:pull,push'],
    ['DELETE', `/v2/team/app/blobs/sha256:${'a'.repeat(64)}`, 'repository:team/app:delete'],
    ['GET', '/v2/_catalog', 'registry:catalog:*'],
  ];
  for (const [method, path, scope] of cases) {
    const res = await call(tokenWharf.url, path, { method });
    t.is(res.status, 401, `${method} ${path}`);
    t.is(res.headers.get('www-authenticate'), `Bearer realm="http://127.0.0.1:${tokenPort}/auth/token",service="wharf-test",scope="${scope}"`);
  }
});

test('token: a token from the built-in server opens /v2/ and the repositories it names', async (t) => {
  const tok = await token('alice', ['repository:alice/app:pull,push']);
  t.is((await call(tokenWharf.url, '/v2/', { headers: bearer(tok) })).status, 200);
  const { res } = await pushBlob(tokenWharf.url, 'alice/app', bearer(tok));
  t.is(res.status, 201);
  t.is((await call(tokenWharf.url, '/v2/alice/app/tags/list', { headers: bearer(tok) })).status, 200, 'allowed: the repository now exists');
});

test('security: a token for repository A is refused on repository B (insufficient_scope)', async (t) => {
  const tok = await token('alice', ['repository:alice/a:pull']);
  const res = await call(tokenWharf.url, '/v2/alice/b/tags/list', { headers: bearer(tok) });
  t.is(res.status, 401);
  t.is(res.headers.get('www-authenticate'),
    `Bearer realm="http://127.0.0.1:${tokenPort}/auth/token",service="wharf-test",scope="repository:alice/b:pull",error="insufficient_scope"`);
});

test('security: push with a pull-only token is refused (insufficient_scope)', async (t) => {
  const tok = await token('alice', ['repository:alice/ro:pull']);
  const { res } = await pushBlob(tokenWharf.url, 'alice/ro', bearer(tok));
  t.is(res.status, 401);
  t.regex(res.headers.get('www-authenticate')!, /scope="repository:alice\/ro:pull,push",error="insufficient_scope"$/);
  const del = await call(tokenWharf.url, `/v2/alice/ro/manifests/sha256:${'b'.repeat(64)}`, { method: 'DELETE', headers: bearer(tok) });
  t.is(del.status, 401);
});

test('security: the catalog needs registry:catalog:* and lists only pullable repositories', async (t) => {
  const admin = await token('alice', ['repository:team/app:pull,push', 'repository:secret/x:pull,push']);
  t.is((await pushBlob(tokenWharf.url, 'team/app', bearer(admin))).res.status, 201);
  t.is((await pushBlob(tokenWharf.url, 'secret/x', bearer(admin))).res.status, 201);

  const noCatalog = await token('carol', ['repository:team/app:pull']);
  const refused = await call(tokenWharf.url, '/v2/_catalog', { headers: bearer(noCatalog) });
  t.is(refused.status, 401);
  t.regex(refused.headers.get('www-authenticate')!, /scope="registry:catalog:\*",error="insufficient_scope"/);

  const carol = await token('carol', ['registry:catalog:*']);
  const listed = await call(tokenWharf.url, '/v2/_catalog', { headers: bearer(carol) });
  t.is(listed.status, 200);
  t.true(listed.json.repositories.includes('team/app'));
  t.false(listed.json.repositories.includes('secret/x'), 'carol may not pull secret/x');

  const all = await call(tokenWharf.url, '/v2/_catalog', { headers: bearer(await token('alice', ['registry:catalog:*'])) });
  t.true(all.json.repositories.includes('secret/x'));
});

test('security: expired, not-yet-valid, wrong-audience, wrong-issuer and tampered tokens are invalid_token', async (t) => {
  const now = Math.floor(Date.now() / 1000);
  const bad = [
    await forge({ nbf: now - 1000, exp: now - 120 }),
    await forge({ nbf: now + 600, exp: now + 900 }),
    await forge({ aud: 'another-service' }),
    await forge({ iss: 'someone-else' }),
  ];
  const good = await forge({});
  const [h, p, s] = good.split('.') as [string, string, string];
  const payload = JSON.parse(Buffer.from(p, 'base64url').toString());
  payload.access[0].name = 'secret/x';
  bad.push(`${h}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.${s}`);
  bad.push(`${Buffer.from('{"alg":"none"}').toString('base64url')}.${p}.`);
  t.is((await call(tokenWharf.url, '/v2/alice/empty/tags/list', { headers: bearer(good) })).status, 404, 'the untampered token works (NAME_UNKNOWN, not 401)');
  for (const [i, tok] of bad.entries()) {
    const res = await call(tokenWharf.url, '/v2/secret/x/tags/list', { headers: bearer(tok) });
    t.is(res.status, 401, `case ${i}`);
    t.regex(res.headers.get('www-authenticate')!, /error="invalid_token"$/, `case ${i}`);
  }
});

test('security: very long and malformed Authorization headers are 401 (or 431 from Node), never 500', async (t) => {
  const headers = [
    'Bearer', 'Bearer ', 'Basic !!!', `Basic ${Buffer.from('no-colon').toString('base64')}`, 'Digest abc', 'Bearer a b',
    `Bearer ${'A'.repeat(15_000)}`, `Basic ${'A'.repeat(15_000)}`, 'Bearer \u00e9t\u00e9', `Basic ${Buffer.from('a\u0000:b').toString('base64')}`,
  ];
  for (const value of headers) {
    const res = await call(tokenWharf.url, '/v2/alice/app/tags/list', { headers: { Authorization: value } });
    t.is(res.status, 401, value.slice(0, 20));
    const basicRes = await call(basicWharf.url, '/v2/alice/app/tags/list', { headers: { Authorization: value } });
    t.is(basicRes.status, 401, `basic: ${value.slice(0, 20)}`);
  }
  const huge = await new Promise<number>((resolve, reject) => {
    const req = httpRequest(`${tokenWharf.url}/v2/`, { headers: { Authorization: `Bearer ${'A'.repeat(100_000)}` } }, (res) => {
      res.resume();
      resolve(res.statusCode!);
    });
    req.on('error', reject);
    req.end();
  });
  t.is(huge, 431);
});

test('token: anonymous pull of the chosen repositories, directly and through an anonymous token', async (t) => {
  const admin = await token('alice', ['repository:public/base:pull,push']);
  const { digest } = await pushBlob(tokenWharf.url, 'public/base', bearer(admin));
  t.is((await call(tokenWharf.url, `/v2/public/base/blobs/${digest}`)).status, 200);
  const anon = await token(undefined, ['repository:public/base:pull,push', 'repository:team/app:pull']);
  t.deepEqual(claims(anon).access, [{ type: 'repository', name: 'public/base', actions: ['pull'] }]);
  t.is(claims(anon).sub, '');
  t.is((await call(tokenWharf.url, `/v2/public/base/blobs/${digest}`, { headers: bearer(anon) })).status, 200);
  t.is((await pushBlob(tokenWharf.url, 'public/base', {})).res.status, 401, 'anonymous push is refused');
});

test('security: a scope whose name has a port is one repository name, not a trick', async (t) => {
  const tok = await token('bob', ['repository:bob:5000/x:pull,push', 'repository:localhost:5000/bob:pull']);
  t.deepEqual(claims(tok).access, [], 'bob/** does not cover "bob:5000/x"');
  const admin = await token('alice', ['repository:localhost:5000/app:pull', 'repository:app:pull']);
  t.deepEqual(claims(admin).access, [{ type: 'repository', name: 'app', actions: ['pull'] }], 'a name with a port is no repository name: nothing is granted for it');
});

test('token server: personal namespaces, partial grants, docker login (empty scope) and account checks', async (t) => {
  const bob = await token('bob', ['repository:bob/tools:pull,push,delete', 'repository:carol/tools:pull', 'repository:team/app:pull']);
  t.deepEqual(claims(bob).access, [{ type: 'repository', name: 'bob/tools', actions: ['pull', 'push', 'delete'] }]);
  t.is(claims(bob).sub, 'bob');
  t.is(claims(bob).aud, 'wharf-test');
  t.is(claims(bob).iss, 'wharf-issuer');
  const login = await call(tokenWharf.url, '/auth/token?service=wharf-test&account=bob&client_id=docker&offline_token=true',
    { headers: { Authorization: basic('bob', PASSWORDS.bob) } });
  t.is(login.status, 200);
  t.deepEqual(claims(login.json.token).access, []);
  t.is(login.json.token, login.json.access_token);
  t.is(login.json.expires_in, 300);
  t.regex(login.json.issued_at, /^\d{4}-\d\d-\d\dT/);
  t.is(typeof login.json.refresh_token, 'string');
  const wrongAccount = await call(tokenWharf.url, '/auth/token?service=wharf-test&account=alice', { headers: { Authorization: basic('bob', PASSWORDS.bob) } });
  t.is(wrongAccount.status, 401);
  const wrongService = await call(tokenWharf.url, '/auth/token?service=elsewhere', { headers: { Authorization: basic('bob', PASSWORDS.bob) } });
  t.is(wrongService.status, 400);
  const badPassword = await call(tokenWharf.url, '/auth/token?service=wharf-test', { headers: { Authorization: basic('carol', 'nope') } });
  t.is(badPassword.status, 401);
  t.is(badPassword.headers.get('www-authenticate'), 'Basic realm="wharf"');
  t.is((await call(tokenWharf.url, '/auth/token', { method: 'DELETE' })).status, 405);
});

test('token server: OAuth2 POST with password and refresh_token grants', async (t) => {
  const form = (fields: Record<string, string>) => ({
    method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(fields).toString(),
  });
  const pw = await call(tokenWharf.url, '/auth/token', form({
    grant_type: 'password', username: 'carol', password: PASSWORDS.carol, service: 'wharf-test', client_id: 'test',
    access_type: 'offline', scope: 'repository:team/app:pull,push repository:secret/x:pull',
  }));
  t.is(pw.status, 200);
  t.deepEqual(claims(pw.json.access_token).access, [{ type: 'repository', name: 'team/app', actions: ['pull', 'push'] }]);
  t.is(pw.json.scope, 'repository:team/app:pull,push');
  const refresh = pw.json.refresh_token as string;
  t.is(claims(refresh).aud, 'wharf-test:refresh');
  // A refresh token is not an access token.
  t.is((await call(tokenWharf.url, '/v2/carol/x/tags/list', { headers: bearer(refresh) })).status, 401);

  const again = await call(tokenWharf.url, '/auth/token', form({
    grant_type: 'refresh_token', refresh_token: refresh, service: 'wharf-test', client_id: 'test', scope: 'repository:carol/x:pull',
  }));
  t.is(again.status, 200);
  t.deepEqual(claims(again.json.access_token).access, [{ type: 'repository', name: 'carol/x', actions: ['pull'] }]);

  const forged = await call(tokenWharf.url, '/auth/token', form({
    grant_type: 'refresh_token', refresh_token: await forge({ aud: 'wharf-test' }), service: 'wharf-test', client_id: 'test',
  }));
  t.is(forged.status, 400, 'an access token is not a refresh token (invalid_grant)');
  t.is((await call(tokenWharf.url, '/auth/token', form({ grant_type: 'password', username: 'carol', password: 'wrong', client_id: 'test' }))).status, 400);
  t.is((await call(tokenWharf.url, '/auth/token', form({ grant_type: 'client_credentials', client_id: 'test' }))).status, 400);
  t.is((await call(tokenWharf.url, '/auth/token', form({ grant_type: 'password', username: 'carol', password: PASSWORDS.carol }))).status, 400, 'client_id is required');
  const notForm = await call(tokenWharf.url, '/auth/token', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' });
  t.is(notForm.status, 400);
  const huge = await call(tokenWharf.url, '/auth/token', form({ grant_type: 'password', client_id: 'x', username: 'a'.repeat(100_000) }));
  t.is(huge.status, 413);
});

test('security: a mount from a repository the caller cannot read becomes a plain upload', async (t) => {
  const admin = await token('alice', ['repository:alice/src:pull,push']);
  const { digest } = await pushBlob(tokenWharf.url, 'alice/src', bearer(admin));
  const carol = await token('carol', ['repository:team/mnt:pull,push', 'repository:alice/src:pull']);
  t.deepEqual(claims(carol).access.map((a: { name: string }) => a.name), ['team/mnt']);
  const denied = await call(tokenWharf.url, `/v2/team/mnt/blobs/uploads/?mount=${digest}&from=alice/src`, { method: 'POST', headers: bearer(carol) });
  t.is(denied.status, 202, 'an upload session, not a mount');
  t.is((await call(tokenWharf.url, `/v2/team/mnt/blobs/${digest}`, { method: 'HEAD', headers: bearer(carol) })).status, 404);
  const noFrom = await call(tokenWharf.url, `/v2/team/mnt/blobs/uploads/?mount=${digest}`, { method: 'POST', headers: bearer(carol) });
  t.is(noFrom.status, 202, 'a mount without from never reaches other repositories');

  const both = await token('alice', ['repository:alice/dst:pull,push', 'repository:alice/src:pull']);
  const mounted = await call(tokenWharf.url, `/v2/alice/dst/blobs/uploads/?mount=${digest}&from=alice/src`, { method: 'POST', headers: bearer(both) });
  t.is(mounted.status, 201);
});

// ---- htpasswd mode ----------------------------------------------------------------------------------------------

test('htpasswd: Basic challenge, right and wrong passwords', async (t) => {
  const none = await call(basicWharf.url, '/v2/');
  t.is(none.status, 401);
  t.is(none.headers.get('www-authenticate'), 'Basic realm="test-realm"');
  t.is((await call(basicWharf.url, '/v2/', { headers: { Authorization: basic('bob', PASSWORDS.bob) } })).status, 200);
  const wrong = await call(basicWharf.url, '/v2/', { headers: { Authorization: basic('bob', 'bob-pw-Z8') } });
  t.is(wrong.status, 401);
  t.is(wrong.headers.get('www-authenticate'), 'Basic realm="test-realm"');
  t.is((await call(basicWharf.url, '/v2/', { headers: { Authorization: basic('nobody', 'x') } })).status, 401);
  t.is((await call(basicWharf.url, '/v2/', { headers: bearer(await forge({})) })).status, 401, 'Bearer is not accepted in htpasswd mode');
});

test('htpasswd: credentials without the right are 403 DENIED; rules and namespaces apply', async (t) => {
  const bob = { Authorization: basic('bob', PASSWORDS.bob) };
  const { res } = await pushBlob(basicWharf.url, 'bob/app', bob);
  t.is(res.status, 201);
  const denied = await pushBlob(basicWharf.url, 'team/app', bob);
  t.is(denied.res.status, 403);
  t.is(denied.res.json.errors[0].code, 'DENIED');
  t.is((await call(basicWharf.url, '/v2/carol/app/tags/list', { headers: bob })).status, 403);
  const carol = { Authorization: basic('carol', PASSWORDS.carol) };
  t.is((await pushBlob(basicWharf.url, 'team/app', carol)).res.status, 201);
  t.is((await call(basicWharf.url, `/v2/team/app/blobs/sha256:${'c'.repeat(64)}`, { method: 'DELETE', headers: carol })).status, 403, 'dev may not delete');
  const anon = await call(basicWharf.url, '/v2/team/app/tags/list');
  t.is(anon.status, 401, 'anonymous callers get a challenge, not 403');
  const catalog = await call(basicWharf.url, '/v2/_catalog', { headers: bob });
  t.is(catalog.status, 200);
  t.true(catalog.json.repositories.includes('bob/app'));
  t.false(catalog.json.repositories.includes('team/app'));
});

test('security: brute force is throttled per account and per address', async (t) => {
  const from = (ip: string) => ({ 'X-Forwarded-For': ip });
  for (let i = 0; i < 3; i++) {
    const res = await call(basicWharf.url, '/v2/', { headers: { Authorization: basic('victim', `guess${i}`), ...from('10.1.1.1') } });
    t.is(res.status, 401);
  }
  // The account is locked for that address now: even the right password is refused from it without being checked.
  const locked = await call(basicWharf.url, '/v2/', { headers: { Authorization: basic('victim', PASSWORDS.victim), ...from('10.1.1.1') } });
  t.is(locked.status, 429);
  t.is(locked.json.errors[0].code, 'TOOMANYREQUESTS');
  // The account's owner elsewhere is not locked out (server/http/access-control.test.ts checks it with real addresses).
  t.is((await call(basicWharf.url, '/v2/', { headers: { Authorization: basic('victim', PASSWORDS.victim), ...from('10.2.2.2') } })).status, 200);
  // Per address: six failures over different accounts lock the address for everyone.
  for (let i = 0; i < 6; i++) {
    await call(basicWharf.url, '/v2/', { headers: { Authorization: basic(`spray${i}`, 'x'), ...from('10.3.3.3') } });
  }
  t.is((await call(basicWharf.url, '/v2/', { headers: { Authorization: basic('alice', PASSWORDS.alice), ...from('10.3.3.3') } })).status, 429);
  t.is((await call(basicWharf.url, '/v2/', { headers: { Authorization: basic('alice', PASSWORDS.alice), ...from('10.4.4.4') } })).status, 200);
  // The token server shares the throttle (these requests all come from 127.0.0.1).
  for (let i = 0; i < 3; i++) await call(tokenWharf.url, '/auth/token?service=wharf-test', { headers: { Authorization: basic('victim', 'bad') } });
  t.is((await call(tokenWharf.url, '/auth/token?service=wharf-test', { headers: { Authorization: basic('victim', PASSWORDS.victim) } })).status, 429);
});

test('htpasswd: anonymous pull of the chosen repositories', async (t) => {
  const { digest } = await pushBlob(basicWharf.url, 'public/tools', { Authorization: basic('alice', PASSWORDS.alice) });
  t.is((await call(basicWharf.url, `/v2/public/tools/blobs/${digest}`)).status, 200);
  t.is((await pushBlob(basicWharf.url, 'public/tools', {})).res.status, 401);
});

test('security: passwords and tokens never appear in the logs, even at debug level', async (t) => {
  // A process of its own, so its complete log can be read after every kind of authentication it saw.
  const port = await freePort();
  const wharf = await startWharf({
    config: {
      log: { level: 'debug' },
      http: { addr: `127.0.0.1:${port}` },
      auth: {
        token: { realm: `http://127.0.0.1:${port}/auth/token`, service: 'wharf-test', issuer: 'wharf-issuer' },
        tokenserver: { key: join(dir, 'token.key'), certificate: join(dir, 'token.crt'), htpasswd: join(dir, 'htpasswd'), service: 'wharf-test', issuer: 'wharf-issuer' },
      },
    },
  });
  const secrets: string[] = [PASSWORDS.bob, 'wrong-password-123'];
  try {
    const q = '/auth/token?service=wharf-test&scope=repository:bob/x:pull,push&offline_token=true';
    const got = await call(wharf.url, q, { headers: { Authorization: basic('bob', PASSWORDS.bob) } });
    t.is(got.status, 200);
    secrets.push(got.json.token, got.json.refresh_token);
    t.is((await call(wharf.url, q, { headers: { Authorization: basic('bob', 'wrong-password-123') } })).status, 401);
    t.is((await call(wharf.url, '/v2/bob/x/tags/list', { headers: bearer(got.json.token) })).status, 404);
    const tampered = `${got.json.token.slice(0, -4)}AAAA`;
    secrets.push(tampered);
    t.is((await call(wharf.url, '/v2/bob/x/tags/list', { headers: bearer(tampered) })).status, 401);
    const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: got.json.refresh_token, client_id: 'c', service: 'wharf-test' });
    const refreshed = await call(wharf.url, '/auth/token', { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: form.toString() });
    t.is(refreshed.status, 200);
    secrets.push(refreshed.json.token);
    const pwForm = new URLSearchParams({ grant_type: 'password', username: 'bob', password: PASSWORDS.bob, client_id: 'c' });
    t.is((await call(wharf.url, '/auth/token', { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: pwForm.toString() })).status, 200);
  } finally {
    await wharf.stop();
  }
  const logs = wharf.output();
  t.regex(logs, /"path":"\/auth\/token"/, 'requests were logged');
  t.regex(logs, /authentication failed/, 'the failure was logged');
  for (const secret of secrets) {
    t.false(logs.includes(secret), 'a secret was logged');
    if (secret.includes('.')) t.false(logs.includes(secret.split('.')[2]!), 'a token signature was logged');
  }
  t.false(/Basic [A-Za-z0-9+/=]{8,}/.test(logs), 'an Authorization header was logged');
});

// ---- reload -----------------------------------------------------------------------------------------------------

test('SIGHUP reloads the rules without dropping an open connection', async (t) => {
  const hdir = await mkdtemp(join(tmpdir(), 'wharf-auth-hup-'));
  await writeFile(join(hdir, 'htpasswd'), `hupper:${bcrypt.hashSync(PASSWORDS.hupper, 4)}\n`);
  const before = { rules: [{ users: ['hupper'], repositories: ['mine/*'], actions: ['pull'] }] };
  const wharf = await startWharf({ config: { log: { level: 'info' }, auth: { htpasswd: { realm: 'r', path: join(hdir, 'htpasswd') }, access: before } } });
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const ports = new Set<number>();
    const get = (path: string) => new Promise<number>((resolve, reject) => {
      const req = httpRequest(`${wharf.url}${path}`, { agent, headers: { Authorization: basic('hupper', PASSWORDS.hupper) } }, (res) => {
        ports.add(res.socket.localPort!);
        res.resume();
        res.on('end', () => resolve(res.statusCode!));
      });
      req.on('error', reject);
      req.end();
    });
    t.is(await get('/v2/theirs/app/tags/list'), 403);
    t.is(await get('/v2/mine/app/tags/list'), 404);

    // The harness wrote config.yml next to the data directory; change its rules and send SIGHUP.
    const configPath = join(wharf.rootDirectory, '..', 'config.yml');
    const { parse } = await import('yaml');
    const config = parse(await readFile(configPath, 'utf8'));
    config.auth.access = { rules: [{ users: ['hupper'], repositories: ['theirs/*'], actions: ['pull'] }] };
    await writeFile(configPath, stringify(config));
    wharf.process.kill('SIGHUP');
    let status = 0;
    for (let i = 0; i < 200 && status !== 404; i++) {
      status = await get('/v2/theirs/app/tags/list');
      if (status !== 404) await new Promise((r) => setTimeout(r, 25));
    }
    t.is(status, 404, 'the new rule allows theirs/*');
    t.is(await get('/v2/mine/app/tags/list'), 403, 'the old rule is gone');
    t.is(ports.size, 1, 'every request went over the same connection');
    t.is(wharf.process.exitCode, null, 'the server is still running');
    await waitForOutput(wharf, /auth: configuration reloaded/);
  } finally {
    agent.destroy();
    await wharf.stop();
    await rm(hdir, { recursive: true, force: true });
  }
});
