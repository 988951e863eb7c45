import test from 'ava';
import bcrypt from 'bcryptjs';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import {
  BearerAuthenticator, checkPassword, HtpasswdAuthenticator, MAX_AUTHORIZATION_LENGTH, parseAuthorization, TokenServerUsers,
} from './authenticator.js';
import { Htpasswd } from './htpasswd.js';
import { Throttle } from './throttle.js';
import { TokenIssuer, TokenVerifier } from './token.js';
import { selfSignedCertificate } from './x509.js';

const hash = (password: string) => bcrypt.hashSync(password, 4);
const users = () => new Htpasswd(`alice:${hash('alice-pw')}\nbob:${hash('bob-pw')}\n`);
const b64 = (s: string) => Buffer.from(s).toString('base64');
const ADDRESS = '10.0.0.1';

const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const certificate = new X509Certificate(selfSignedCertificate(privateKey, { commonName: 'test' }));
const issuer = new TokenIssuer({ privateKey, issuer: 'wharf', expiresInSeconds: 300 });
const access = [{ type: 'repository', name: 'team/app', actions: ['pull'] }];

test('parseAuthorization: none, Basic (the password may hold colons) and Bearer', (t) => {
  t.deepEqual(parseAuthorization(undefined), { scheme: 'none' });
  t.deepEqual(parseAuthorization(''), { scheme: 'none' });
  t.deepEqual(parseAuthorization(`Basic ${b64('alice:pa:ss')}`), { scheme: 'basic', user: 'alice', password: 'pa:ss' });
  t.deepEqual(parseAuthorization(`basic ${b64('alice:')}`), { scheme: 'basic', user: 'alice', password: '' });
  t.deepEqual(parseAuthorization('Bearer a.b.c'), { scheme: 'bearer', token: 'a.b.c' });
});

test('parseAuthorization: anything it cannot read with certainty is malformed', (t) => {
  for (const header of [
    'Basic', 'Basic !!!!', `Basic ${b64('no-colon')}`, `Basic ${b64(':no-user')}`, `Basic ${b64('a\u0000b:c')}`,
    `Basic ${b64('alice:pw').slice(0, -1)}`, 'Digest abc', 'Bearer a b', `Bearer ${'a'.repeat(MAX_AUTHORIZATION_LENGTH)}`,
  ]) {
    t.deepEqual(parseAuthorization(header), { scheme: 'malformed' }, header.slice(0, 30));
  }
});

test('checkPassword: right, wrong, and throttled before the password is looked at', async (t) => {
  const throttle = new Throttle({ accountFailures: 2 });
  const file = users();
  t.is(await checkPassword(throttle, file, 'alice', 'alice-pw', ADDRESS), 'ok');
  t.is(await checkPassword(throttle, file, 'alice', 'nope', ADDRESS), 'rejected');
  t.is(await checkPassword(throttle, file, 'alice', 'nope', ADDRESS), 'rejected');
  t.is(await checkPassword(throttle, file, 'alice', 'alice-pw', ADDRESS), 'throttled', 'even the right password');
  t.is(await checkPassword(throttle, file, 'alice', 'alice-pw', '10.0.0.2'), 'ok', 'from another address');
  t.is(await checkPassword(throttle, file, 'x'.repeat(257), 'pw', ADDRESS), 'rejected', 'over-long user names are not looked up');
});

test('HtpasswdAuthenticator: Basic credentials only; none is anonymous', async (t) => {
  const auth = new HtpasswdAuthenticator(users(), new Throttle({ accountFailures: 1 }));
  t.is(auth.scheme, 'basic');
  t.deepEqual(await auth.authenticate({ scheme: 'none' }, ADDRESS), { ok: true, identity: { authenticated: false } });
  t.deepEqual(await auth.authenticate({ scheme: 'basic', user: 'bob', password: 'bob-pw' }, ADDRESS),
    { ok: true, identity: { authenticated: true, subject: 'bob' } });
  t.like(await auth.authenticate({ scheme: 'bearer', token: 'x' }, ADDRESS), { ok: false, refusal: 'wrong-scheme' });
  t.like(await auth.authenticate({ scheme: 'malformed' }, ADDRESS), { ok: false, refusal: 'malformed' });
  t.like(await auth.authenticate({ scheme: 'basic', user: 'bob', password: 'no' }, ADDRESS), { ok: false, refusal: 'rejected' });
  t.like(await auth.authenticate({ scheme: 'basic', user: 'bob', password: 'bob-pw' }, ADDRESS), { ok: false, refusal: 'throttled' });
});

test('BearerAuthenticator: a valid token is its subject and access; an invalid one is refused with the reason', async (t) => {
  const auth = new BearerAuthenticator(new TokenVerifier({ issuer: 'wharf', audience: 'registry', roots: [certificate] }));
  t.is(auth.scheme, 'bearer');
  const { token } = await issuer.issue('alice', 'registry', access);
  t.deepEqual(await auth.authenticate({ scheme: 'bearer', token }), { ok: true, identity: { authenticated: true, subject: 'alice', access } });
  const anonymous = (await issuer.issue('', 'registry', [])).token;
  t.deepEqual(await auth.authenticate({ scheme: 'bearer', token: anonymous }),
    { ok: true, identity: { authenticated: true, subject: undefined, access: [] } }, 'a token for nobody is still a token');
  const other = (await issuer.issue('alice', 'another-registry', access)).token;
  t.like(await auth.authenticate({ scheme: 'bearer', token: other }), { ok: false, refusal: 'rejected', reason: 'token audience mismatch' });
  t.like(await auth.authenticate({ scheme: 'basic', user: 'alice', password: 'alice-pw' }), { ok: false, refusal: 'wrong-scheme' });
  t.like(await auth.authenticate({ scheme: 'malformed' }), { ok: false, refusal: 'malformed' });
  t.deepEqual(await auth.authenticate({ scheme: 'none' }), { ok: true, identity: { authenticated: false } });
});

test("TokenServerUsers: passwords, and refresh tokens only while the user's entry is the one they were issued for", async (t) => {
  const refreshVerifier = new TokenVerifier({ issuer: 'wharf', audience: 'registry:refresh', roots: [certificate] });
  const file = users();
  const auth = new TokenServerUsers(file, new Throttle(), refreshVerifier, issuer);
  t.like(await auth.authenticate({ scheme: 'basic', user: 'alice', password: 'alice-pw' }, ADDRESS), { ok: true, identity: { subject: 'alice' } });
  t.like(await auth.authenticate({ scheme: 'basic', user: 'alice', password: 'bob-pw' }, ADDRESS), { ok: false, refusal: 'rejected' });

  const claims = auth.refreshClaims('alice')!;
  t.truthy(claims.cred);
  t.is(auth.refreshClaims('nobody'), undefined);
  const refresh = (await issuer.issue('alice', 'registry:refresh', [], 600, claims)).token;
  t.deepEqual(await auth.authenticate({ scheme: 'bearer', token: refresh }, ADDRESS), { ok: true, identity: { authenticated: true, subject: 'alice' } });

  // The same token after alice's password changed: refused, naming her for the log.
  const changed = new TokenServerUsers(new Htpasswd(`alice:${hash('new-pw')}\n`), new Throttle(), refreshVerifier, issuer);
  t.like(await changed.authenticate({ scheme: 'bearer', token: refresh }, ADDRESS), { ok: false, refusal: 'rejected', user: 'alice' });
  // Without the binding claim, or bound to another user: refused.
  const unbound = (await issuer.issue('alice', 'registry:refresh', [], 600)).token;
  t.like(await auth.authenticate({ scheme: 'bearer', token: unbound }, ADDRESS), { ok: false, refusal: 'rejected', user: 'alice' });
  const borrowed = (await issuer.issue('bob', 'registry:refresh', [], 600, claims)).token;
  t.like(await auth.authenticate({ scheme: 'bearer', token: borrowed }, ADDRESS), { ok: false, refusal: 'rejected', user: 'bob' });
  // An access token is not a refresh token (another audience); garbage is refused without a user.
  const accessToken = (await issuer.issue('alice', 'registry', access)).token;
  const wrongAudience = await auth.authenticate({ scheme: 'bearer', token: accessToken }, ADDRESS);
  t.like(wrongAudience, { ok: false, refusal: 'rejected', reason: 'token audience mismatch' });
  t.is((wrongAudience as { user?: string }).user, undefined);
  t.like(await auth.authenticate({ scheme: 'bearer', token: 'garbage' }, ADDRESS), { ok: false, refusal: 'rejected' });
});
