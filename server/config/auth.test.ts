/** The auth.* configuration keys: registry:2's htpasswd and token sections, Wharf's tokenserver, access, throttle. */
import test from 'ava';
import { ConfigError, parseConfig } from './index.js';

const BASE = 'version: 0.1\nstorage:\n  inmemory: {}\n';
const problems = (yaml: string, env: Record<string, string> = {}) => {
  try {
    parseConfig(BASE + yaml, env, 'x', { cwd: '/srv' });
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
};

test('no auth section: throttle defaults only, nothing else', (t) => {
  const { config } = parseConfig(BASE, {}, 'x');
  t.deepEqual(config.auth, { throttle: { accountfailures: 5, addressfailures: 20, accounttotalfailures: 100, window: 60_000 } });
});

test('registry:2 htpasswd and token sections load as registry:2 writes them, paths resolved', (t) => {
  const h = parseConfig(`${BASE}auth:\n  htpasswd:\n    realm: basic-realm\n    path: auth/htpasswd\n`, {}, 'x', { cwd: '/srv' });
  t.deepEqual(h.config.auth.htpasswd, { realm: 'basic-realm', path: '/srv/auth/htpasswd' });
  t.deepEqual(h.warnings, []);
  const tk = parseConfig(`${BASE}auth:\n  token:\n    realm: https://auth.example.com/token\n    service: reg\n    issuer: iss\n    rootcertbundle: /certs/bundle.pem\n    autoredirect: true\n`, {}, 'x');
  t.deepEqual(tk.config.auth.token, {
    realm: 'https://auth.example.com/token', service: 'reg', issuer: 'iss', rootcertbundle: '/certs/bundle.pem',
    autoredirect: true, signingalgorithms: ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'],
  });
});

test('missing required keys, bad realms and two drivers are errors naming the key', (t) => {
  t.deepEqual(problems('auth:\n  htpasswd:\n    realm: r\n'), ['auth.htpasswd.path: required (the htpasswd file with bcrypt entries)']);
  t.deepEqual(problems('auth:\n  token:\n    realm: not-a-url\n    service: s\n    issuer: i\n    rootcertbundle: /c\n'),
    ['auth.token.realm: expected an http(s) URL, got "not-a-url"']);
  t.true(problems('auth:\n  token:\n    realm: http://a/t\n    service: s\n    issuer: i\n')
    .some((p) => p.startsWith('auth.token.rootcertbundle: required')));
  t.true(problems('auth:\n  htpasswd: {realm: r, path: /p}\n  token: {realm: http://a/t, service: s, issuer: i, rootcertbundle: /c}\n')
    .some((p) => p.startsWith('auth: only one of htpasswd, token')));
  t.deepEqual(problems('auth:\n  htpasswd:\n    realm: \'a"b\'\n    path: /p\n'), ['auth.htpasswd.realm: must not contain quotes, backslashes or line breaks']);
});

test('signingalgorithms refuses none and HMAC', (t) => {
  const p = problems('auth:\n  token: {realm: http://a/t, service: s, issuer: i, rootcertbundle: /c, signingalgorithms: [ES256, HS256, none]}\n');
  t.is(p.length, 2);
  t.regex(p[0]!, /^auth\.token\.signingalgorithms: "HS256" is not allowed/);
  t.regex(p[1]!, /"none" is not allowed/);
});

test('tokenserver: defaults from auth.token, durations, required files, a path outside /v2', (t) => {
  const { config } = parseConfig(`${BASE}auth:\n  token: {realm: http://a/t, service: svc, issuer: iss}\n  tokenserver:\n    key: k.pem\n    certificate: c.pem\n    htpasswd: users\n    expiration: 15m\n`, {}, 'x', { cwd: '/srv' });
  t.deepEqual(config.auth.tokenserver, {
    path: '/auth/token', issuer: 'iss', service: 'svc', realm: 'wharf', expiration: 15 * 60_000, refreshexpiration: 720 * 3600_000,
    key: '/srv/k.pem', certificate: '/srv/c.pem', htpasswd: '/srv/users',
  });
  t.is(config.auth.token?.rootcertbundle, undefined, 'the token server\'s certificate is trusted instead');
  const p = problems('auth:\n  tokenserver:\n    path: /v2/token\n    expiration: soon\n');
  t.true(p.some((x) => x.startsWith('auth.tokenserver.path: expected a URL path outside /v2')));
  t.true(p.some((x) => x.startsWith('auth.tokenserver.key: required')));
  t.true(p.some((x) => x.startsWith('auth.tokenserver.certificate: required')));
  t.true(p.some((x) => x.startsWith('auth.tokenserver.htpasswd: required')));
  t.true(p.some((x) => x.startsWith('auth.tokenserver.expiration: expected a duration')));
});

test('access rules: read as written; unknown keys, actions and groups are errors naming the rule', (t) => {
  const { config } = parseConfig(`${BASE}auth:
  htpasswd: {realm: r, path: /p}
  access:
    groups: {admins: [alice]}
    anonymous: ["public/**"]
    rules:
      - {groups: [admins], repositories: ["**"], actions: ["*"], catalog: true}
      - {users: ["*"], repositories: ["\${user}/**"], actions: [pull, push]}
`, {}, 'x');
  t.deepEqual(config.auth.access, {
    groups: { admins: ['alice'] },
    anonymous: ['public/**'],
    rules: [
      { groups: ['admins'], repositories: ['**'], actions: ['*'], catalog: true },
      { users: ['*'], repositories: ['${user}/**'], actions: ['pull', 'push'] },
    ],
  });
  const p = problems(`auth:
  htpasswd: {realm: r, path: /p}
  access:
    rules:
      - {groups: [ghosts], repositories: [a], actions: [pull]}
      - {users: [bob], repositories: [a], actions: [pull, fly]}
      - {users: [bob], repository: a, actions: [pull]}
      - {repositories: [a], actions: [pull]}
      - just a string
`);
  t.deepEqual(p, [
    'auth.access.rules.0.groups: group "ghosts" is not defined in auth.access.groups',
    'auth.access.rules.1.actions: unknown action "fly" (pull, push, delete or *)',
    'auth.access.rules.2.repository: unknown rule key (expected users, groups, repositories, actions, catalog)',
    'auth.access.rules.2: a rule needs repositories and actions (or catalog: true)',
    'auth.access.rules.3: a rule needs users or groups',
    'auth.access.rules.4: expected a mapping with users or groups, repositories and actions, got "just a string"',
  ]);
});

test('REGISTRY_AUTH_* environment overrides reach the auth keys', (t) => {
  const { config } = parseConfig(`${BASE}auth:\n  htpasswd: {realm: r, path: /p}\n`, {
    REGISTRY_AUTH_HTPASSWD_PATH: '/etc/wharf/users',
    REGISTRY_AUTH_THROTTLE_ACCOUNTFAILURES: '10',
    REGISTRY_AUTH_THROTTLE_ACCOUNTTOTALFAILURES: '40',
    REGISTRY_AUTH_THROTTLE_WINDOW: '5m',
  }, 'x');
  t.is(config.auth.htpasswd?.path, '/etc/wharf/users');
  t.deepEqual(config.auth.throttle, { accountfailures: 10, addressfailures: 20, accounttotalfailures: 40, window: 300_000 });
  t.true(problems('', { REGISTRY_AUTH_THROTTLE_ACCOUNTTOTALFAILURES: '0' }).some((x) => x.startsWith('auth.throttle.accounttotalfailures (from REGISTRY_AUTH_THROTTLE_ACCOUNTTOTALFAILURES): must be at least 1')));
  t.true(problems('', { REGISTRY_AUTH_THROTTLE_WINDOW: '0s' }).some((x) => x.startsWith('auth.throttle.window (from REGISTRY_AUTH_THROTTLE_WINDOW): must be greater than zero')));
});
