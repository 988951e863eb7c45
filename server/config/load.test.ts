import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Ajv } from 'ajv';
import { ConfigError, loadConfig, parseConfig, type WharfConfig } from './index.js';
import { ANNOTATIONS } from './load.js';
import { ConfigSchema } from './schema.js';

/** The configuration registry:2's own image ships as /etc/docker/registry/config.yml. */
const REGISTRY2_IMAGE_CONFIG = `version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
`;

const MINIMAL = 'version: 0.1\nstorage:\n  filesystem:\n';

/** Every value a file that sets nothing but the driver gets, i.e. registry:2's defaults. */
const FILE_DEFAULTS: WharfConfig = {
  version: '0.1',
  log: { level: 'info', formatter: 'auto', accesslog: { disabled: false }, fields: {} },
  storage: {
    driver: 'filesystem',
    filesystem: { rootdirectory: '/var/lib/registry' },
    delete: { enabled: false },
    redirect: { disable: false },
    cache: { blobdescriptorsize: 10000 },
    maintenance: {
      readonly: { enabled: false },
      uploadpurging: { enabled: true, age: 168 * 3600_000, interval: 24 * 3600_000, dryrun: false },
      uploadlimits: { perrepository: 1000, peruser: 500 },
    },
  },
  http: {
    addr: ':5000', net: 'tcp', prefix: '/', relativeurls: false, draintimeout: 60_000, headers: {},
    trustedproxies: [], timeouts: { readheader: 30_000, stall: 60_000, idle: 75_000 }, maxconnectionsperaddress: 100,
  },
  validation: {
    disabled: false,
    manifests: { maxsize: 4194304, urls: { allow: [], deny: [] }, indexes: { platforms: 'all', platformlist: [] } },
  },
  catalog: { maxentries: 1000 },
  tags: { maxtags: 1000 },
  health: { storagedriver: { enabled: false, interval: 10_000, threshold: 3 } },
  notifications: { endpoints: [], maxqueue: 10_000 },
  auth: { throttle: { accountfailures: 5, addressfailures: 20, accounttotalfailures: 100, window: 60_000 } },
  ui: { enabled: true, title: 'Wharf', sessionlifetime: 8 * 3600_000 },
  policies: { immutabletags: [], quotas: [], retention: [] },
};

/** The problems a config produces (it must be invalid). */
function problemsOf(yaml: string, env: Record<string, string> = {}): readonly string[] {
  try {
    parseConfig(yaml, env, 'test.yml');
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('expected a ConfigError, but the configuration loaded');
}

// ---- defaults ----------------------------------------------------------------------------------------------

test('no file: the embedded default stores under ./data in the working directory', async (t) => {
  const { config, warnings } = await loadConfig({});
  t.deepEqual(warnings, []);
  t.deepEqual(config, {
    ...FILE_DEFAULTS,
    storage: { ...FILE_DEFAULTS.storage, filesystem: { rootdirectory: resolve(process.cwd(), 'data') } },
  });
});

test('no file: ./data is resolved against the given cwd', async (t) => {
  const { config } = await loadConfig({ cwd: '/srv/wharf' });
  t.is(config.storage.filesystem.rootdirectory, '/srv/wharf/data');
});

test('a file gets registry:2 defaults for every key it leaves out', (t) => {
  const { config, warnings } = parseConfig(MINIMAL, {}, 'test.yml');
  t.deepEqual(config, FILE_DEFAULTS);
  t.deepEqual(warnings, []);
});

test('loadConfig reads the file at path', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-config-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'config.yml');
  await writeFile(path, 'version: 0.1\nstorage:\n  inmemory:\nhttp:\n  addr: 127.0.0.1:6000\n');
  const { config } = await loadConfig({ path });
  t.is(config.storage.driver, 'inmemory');
  t.is(config.http.addr, '127.0.0.1:6000');
});

test('a missing file is a ConfigError naming the path', async (t) => {
  const path = join(tmpdir(), 'wharf-no-such-config.yml');
  const err = await t.throwsAsync(loadConfig({ path }), { instanceOf: ConfigError });
  t.is(err?.message, `cannot read configuration file ${path}: no such file`);
  t.is(err?.source, path);
});

// ---- registry:2 configs ------------------------------------------------------------------------------------

test("registry:2's image config loads without warnings", (t) => {
  const { config, warnings } = parseConfig(REGISTRY2_IMAGE_CONFIG, {}, 'config.yml');
  t.deepEqual(warnings, []);
  t.deepEqual(config.log.fields, { service: 'registry' });
  t.is(config.storage.driver, 'filesystem');
  t.is(config.storage.filesystem.rootdirectory, '/var/lib/registry');
  t.is(config.storage.cache.blobdescriptor, 'inmemory');
  t.is(config.http.addr, ':5000');
  t.deepEqual(config.http.headers, { 'X-Content-Type-Options': ['nosniff'] });
});

test('every implemented key is read', (t) => {
  const { config, warnings } = parseConfig(
    `version: 0.1
log:
  level: debug
  formatter: text
  accesslog:
    disabled: true
  fields:
    service: registry
    replicas: 3
storage:
  filesystem:
    rootdirectory: /srv/registry
  delete:
    enabled: true
  redirect:
    disable: true
  cache:
    blobdescriptor: inmemory
    blobdescriptorsize: 500
  maintenance:
    uploadpurging:
      enabled: false
      age: 72h
      interval: 12h
      dryrun: true
    uploadlimits:
      perrepository: 50
      peruser: 0
    readonly:
      enabled: true
http:
  addr: 127.0.0.1:5001
  net: tcp
  host: https://registry.example.com:8443/
  prefix: /registry/
  relativeurls: true
  draintimeout: 15s
  headers:
    X-Content-Type-Options: [nosniff]
    X-Multi: [a, b]
  tls:
    certificate: /etc/certs/tls.crt
    key: /etc/certs/tls.key
    clientcas: [/etc/certs/ca.pem]
  debug:
    addr: 127.0.0.1:5002
    prometheus:
      enabled: true
      path: /prom
validation:
  disabled: true
  manifests:
    maxsize: 1048576
health:
  storagedriver:
    enabled: true
    interval: 5s
    threshold: 2
auth:
  htpasswd:
    realm: basic-realm
    path: /auth/htpasswd
  access:
    groups: {admins: [alice]}
    anonymous: [public/*]
    rules: [{groups: [admins], repositories: ["**"], actions: ["*"], catalog: true}]
  throttle: {accountfailures: 3, addressfailures: 9, accounttotalfailures: 30, window: 2m}
ui:
  enabled: false
  title: Team registry
  sessionlifetime: 30m
`,
    {},
    'full.yml',
  );
  t.deepEqual(warnings, []);
  t.deepEqual(config, {
    version: '0.1',
    log: { level: 'debug', formatter: 'text', accesslog: { disabled: true }, fields: { service: 'registry', replicas: 3 } },
    storage: {
      driver: 'filesystem',
      filesystem: { rootdirectory: '/srv/registry' },
      delete: { enabled: true },
      redirect: { disable: true },
      cache: { blobdescriptor: 'inmemory', blobdescriptorsize: 500 },
      maintenance: {
        readonly: { enabled: true },
        uploadpurging: { enabled: false, age: 72 * 3600_000, interval: 12 * 3600_000, dryrun: true },
        uploadlimits: { perrepository: 50, peruser: 0 },
      },
    },
    http: {
      addr: '127.0.0.1:5001',
      net: 'tcp',
      host: 'https://registry.example.com:8443',
      prefix: '/registry/',
      relativeurls: true,
      draintimeout: 15_000,
      headers: { 'X-Content-Type-Options': ['nosniff'], 'X-Multi': ['a', 'b'] },
      tls: { certificate: '/etc/certs/tls.crt', key: '/etc/certs/tls.key', clientcas: ['/etc/certs/ca.pem'] },
      debug: { addr: '127.0.0.1:5002', prometheus: { enabled: true, path: '/prom' } },
      trustedproxies: [],
      timeouts: { readheader: 30_000, stall: 60_000, idle: 75_000 },
      maxconnectionsperaddress: 100,
    },
    validation: {
      disabled: true,
      manifests: { maxsize: 1048576, urls: { allow: [], deny: [] }, indexes: { platforms: 'all', platformlist: [] } },
    },
    catalog: { maxentries: 1000 },
    tags: { maxtags: 1000 },
    health: { storagedriver: { enabled: true, interval: 5000, threshold: 2 } },
    auth: {
      htpasswd: { realm: 'basic-realm', path: '/auth/htpasswd' },
      access: { groups: { admins: ['alice'] }, anonymous: ['public/*'], rules: [{ groups: ['admins'], repositories: ['**'], actions: ['*'], catalog: true }] },
      throttle: { accountfailures: 3, addressfailures: 9, accounttotalfailures: 30, window: 120_000 },
    },
    notifications: { endpoints: [], maxqueue: 10_000 },
    ui: { enabled: false, title: 'Team registry', sessionlifetime: 30 * 60_000 },
    policies: { immutabletags: [], quotas: [], retention: [] },
  });
});

test('ui: the title is at most 100 characters (empty: the default); the session lifetime positive; REGISTRY_UI_* set them', (t) => {
  t.is(parseConfig("version: 0.1\nstorage: inmemory\nui:\n  title: ''\n", {}, 'x').config.ui.title, 'Wharf');
  t.true(problemsOf(`version: 0.1\nstorage: inmemory\nui:\n  title: ${'x'.repeat(101)}\n`).some((p) => p.includes('ui.title')));
  t.true(problemsOf('version: 0.1\nstorage: inmemory\nui:\n  sessionlifetime: 0s\n').some((p) => p.includes('ui.sessionlifetime')));
  const { config } = parseConfig('version: 0.1\nstorage: inmemory\n', { REGISTRY_UI_ENABLED: 'false', REGISTRY_UI_TITLE: 'true' }, 'x');
  t.is(config.ui.enabled, false);
  t.is(config.ui.title, 'true');
});

test('`storage: inmemory` is short for an inmemory section', (t) => {
  const { config } = parseConfig('version: 0.1\nstorage: inmemory\n', {}, 'test.yml');
  t.is(config.storage.driver, 'inmemory');
});

test('a relative rootdirectory is resolved against the working directory', (t) => {
  const { config } = parseConfig('version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: var/reg\n', {}, 'x', { cwd: '/opt' });
  t.is(config.storage.filesystem.rootdirectory, '/opt/var/reg');
});

test('string keys keep the text as written, not as YAML would guess it', (t) => {
  const { config } = parseConfig(
    'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /srv/0755\nhttp:\n  headers:\n    X-Version: [1.10, 0x1F, yes]\n',
    {},
    'x',
  );
  t.deepEqual(config.http.headers['X-Version'], ['1.10', '0x1F', 'yes']);
});

test('a single header value is taken as a list of one', (t) => {
  const { config } = parseConfig(`${MINIMAL}http:\n  headers:\n    X-Frame-Options: DENY\n`, {}, 'x');
  t.deepEqual(config.http.headers, { 'X-Frame-Options': ['DENY'] });
});

test('http.prefix gains the leading and trailing slash registry:2 asks for', (t) => {
  for (const written of ['registry', '/registry', 'registry/', '/registry/']) {
    const { config } = parseConfig(`${MINIMAL}http:\n  prefix: ${written}\n`, {}, 'x');
    t.is(config.http.prefix, '/registry/', written);
  }
});

test('http.net unix takes a socket path as addr', (t) => {
  const { config } = parseConfig(`${MINIMAL}http:\n  net: unix\n  addr: /run/wharf.sock\n`, {}, 'x');
  t.is(config.http.net, 'unix');
  t.is(config.http.addr, '/run/wharf.sock');
});

test('http.addr accepts the listen address forms registry:2 does', (t) => {
  for (const addr of [':5000', '0.0.0.0:5000', 'localhost:80', '[::1]:5000', '[::]:0', 'registry.internal:65535']) {
    const { config } = parseConfig(`${MINIMAL}http:\n  addr: "${addr}"\n`, {}, 'x');
    t.is(config.http.addr, addr);
  }
});

test('http.trustedproxies, http.timeouts, http.maxconnectionsperaddress, catalog.maxentries and tags.maxtags are read', (t) => {
  const { config, warnings } = parseConfig(`${MINIMAL}http:
  trustedproxies: [10.0.0.0/8, 192.168.1.1, "fd00::/8", "::1"]
  timeouts: {readheader: 10s, stall: 2m, idle: 5s}
  maxconnectionsperaddress: 0
catalog: {maxentries: 50}
tags: {maxtags: 20}
`, {}, 'x');
  t.deepEqual(warnings, []);
  t.deepEqual(config.http.trustedproxies, ['10.0.0.0/8', '192.168.1.1', 'fd00::/8', '::1']);
  t.deepEqual(config.http.timeouts, { readheader: 10_000, stall: 120_000, idle: 5_000 });
  t.is(config.http.maxconnectionsperaddress, 0);
  t.is(config.catalog.maxentries, 50);
  t.is(config.tags.maxtags, 20);

  const fromEnv = parseConfig(MINIMAL, {
    REGISTRY_HTTP_TRUSTEDPROXIES: '[127.0.0.1]',
    REGISTRY_HTTP_TIMEOUTS_STALL: '5s',
    REGISTRY_HTTP_MAXCONNECTIONSPERADDRESS: '7',
    REGISTRY_TAGS_MAXTAGS: '3',
  }, 'x').config;
  t.deepEqual(fromEnv.http.trustedproxies, ['127.0.0.1']);
  t.is(fromEnv.http.timeouts.stall, 5_000);
  t.is(fromEnv.http.maxconnectionsperaddress, 7);
  t.is(fromEnv.tags.maxtags, 3);

  // registry:2 takes zero or a negative page limit as its default.
  t.is(parseConfig(`${MINIMAL}catalog: {maxentries: 0}\ntags: {maxtags: -1}\n`, {}, 'x').config.catalog.maxentries, 1000);

  t.deepEqual(problemsOf(`${MINIMAL}http:
  trustedproxies: [10.0.0.0/33, proxy.example.com, 10.0.0.1]
  timeouts: {readheader: 0s, stall: soon}
  maxconnectionsperaddress: -1
tags: {maxtags: many}
`), [
    'http.trustedproxies: entry 0: the prefix length is at most 32, got "10.0.0.0/33"',
    'http.trustedproxies: entry 1: expected an IP address or a CIDR range such as 10.0.0.0/8, got "proxy.example.com"',
    'http.timeouts.readheader: must be greater than zero, got "0s"',
    'http.timeouts.stall: expected a duration such as 30s, 15m or 1h30m (invalid duration "soon"), got "soon"',
    'http.maxconnectionsperaddress: must be at least 0, got -1',
    'tags.maxtags: expected an integer, got "many"',
  ]);
});

test('YAML anchors and merge keys work', (t) => {
  const { config } = parseConfig(
    'version: 0.1\nx-common: &on {enabled: true}\nstorage:\n  inmemory:\n  delete: *on\n  maintenance:\n    readonly:\n      <<: *on\n',
    {},
    'x',
  );
  t.true(config.storage.delete.enabled);
  t.true(config.storage.maintenance.readonly.enabled);
});

// ---- booleans, levels and other readings -------------------------------------------------------------------

test('booleans accept the YAML 1.1 words registry:2 accepts', (t) => {
  for (const [word, value] of [['yes', true], ['On', true], ['TRUE', true], ['y', true], ['no', false], ['off', false], ['False', false]] as const) {
    const { config } = parseConfig(`${MINIMAL}  delete:\n    enabled: ${word}\n`, {}, 'x');
    t.is(config.storage.delete.enabled, value, word);
  }
});

test('log.level accepts warning as warn, in any case', (t) => {
  t.is(parseConfig(`${MINIMAL}log:\n  level: warning\n`, {}, 'x').config.log.level, 'warn');
  t.is(parseConfig(`${MINIMAL}log:\n  level: DEBUG\n`, {}, 'x').config.log.level, 'debug');
});

test('the deprecated top-level loglevel is used when log.level is absent, with a warning', (t) => {
  const only = parseConfig(`${MINIMAL}loglevel: error\n`, {}, 'x');
  t.is(only.config.log.level, 'error');
  t.deepEqual(only.warnings, ['loglevel is deprecated; use log.level']);
  const both = parseConfig(`${MINIMAL}loglevel: error\nlog:\n  level: debug\n`, {}, 'x');
  t.is(both.config.log.level, 'debug');
  t.deepEqual(both.warnings, ['loglevel is deprecated and log.level is set; loglevel is ignored']);
});

test('log.formatter logstash falls back to json with a warning', (t) => {
  const { config, warnings } = parseConfig(`${MINIMAL}log:\n  formatter: logstash\n`, {}, 'x');
  t.is(config.log.formatter, 'json');
  t.deepEqual(warnings, ['log.formatter: logstash is not supported by this Wharf version; using json']);
});

test('durations take Go syntax, and a bare integer is nanoseconds as in registry:2', (t) => {
  const read = (value: string) => parseConfig(`${MINIMAL}http:\n  draintimeout: ${value}\n`, {}, 'x').config.http.draintimeout;
  t.is(read('300ms'), 300);
  t.is(read('1h30m'), 5_400_000);
  t.is(read('5000000000'), 5000);
  t.is(read('0'), 0);
  t.is(read('"2m"'), 120_000);
});

test('validation.enabled is the deprecated inverse of validation.disabled', (t) => {
  const old = parseConfig(`${MINIMAL}validation:\n  enabled: false\n`, {}, 'x');
  t.true(old.config.validation.disabled);
  t.deepEqual(old.warnings, ['validation.enabled is deprecated; use validation.disabled']);
  const both = parseConfig(`${MINIMAL}validation:\n  enabled: false\n  disabled: false\n`, {}, 'x');
  t.false(both.config.validation.disabled);
  t.deepEqual(both.warnings, ['validation.enabled is deprecated and validation.disabled is set; validation.enabled is ignored']);
});

test('storage.cache: layerinfo is the deprecated name; redis needs the redis section; unknown types leave the cache off', (t) => {
  const layerinfo = parseConfig(`${MINIMAL}  cache:\n    layerinfo: inmemory\n`, {}, 'x');
  t.is(layerinfo.config.storage.cache.blobdescriptor, 'inmemory');
  t.deepEqual(layerinfo.warnings, ['storage.cache.layerinfo is deprecated; use storage.cache.blobdescriptor']);

  const redis = t.throws(() => parseConfig(`${MINIMAL}  cache:\n    blobdescriptor: redis\n`, {}, 'x'), { instanceOf: ConfigError });
  t.deepEqual(redis.problems, ['storage.cache.blobdescriptor: redis needs the redis section with redis.addr or redis.url']);

  const unknown = parseConfig(`${MINIMAL}  cache:\n    blobdescriptor: memcached\n`, {}, 'x');
  t.is(unknown.config.storage.cache.blobdescriptor, undefined);
  t.deepEqual(unknown.warnings, ['storage.cache.blobdescriptor: unknown cache type "memcached"; blob descriptors are not cached']);
});

test('http.tls.clientcas without a certificate is ignored with a warning', (t) => {
  const { config, warnings } = parseConfig(`${MINIMAL}http:\n  tls:\n    clientcas: [/ca.pem]\n`, {}, 'x');
  t.is(config.http.tls, undefined);
  t.deepEqual(warnings, ['http.tls.clientcas: ignored, because http.tls.certificate and http.tls.key are not set']);
});

// ---- unknown and unsupported keys --------------------------------------------------------------------------

test('unknown keys are warnings naming the key path', (t) => {
  const { warnings } = parseConfig(
    `${MINIMAL}    speed: fast\nauth:\n  foo: {}\nhttp:\n  adr: :5000\nStorage: {}\nextras:\n  a: 1\n`,
    {},
    'x',
  );
  t.deepEqual(warnings, [
    'unknown key storage.filesystem.speed (ignored)',
    'unknown key auth.foo (ignored)',
    'unknown key http.adr (ignored)',
    'unknown key Storage (ignored)',
    'unknown key extras (ignored)',
  ]);
});

test('registry:2 sections Wharf does not implement are warnings', (t) => {
  const { config, warnings } = parseConfig(
    `version: 0.1
log:
  hooks: []
storage:
  filesystem:
    maxthreads: 100
  tag:
    concurrencylimit: 8
auth:
  silly: {realm: basic, service: x}
http:
  secret: asecretforlocaldevelopment
  debug: {addr: localhost:5001}
  http2: {disabled: false}
  tls:
    letsencrypt: {cachefile: /x, email: a@b.c}
validation:
  manifests:
    urls: {allow: ['^https://']}
middleware: {}
redis: {addr: localhost:6379}
proxy: {remoteurl: https://registry-1.docker.io}
notifications: {events: {includereferences: true}}
health: {file: [{file: /x}]}
reporting: {}
compatibility: {}
catalog: {maxentries: 100}
`,
    {},
    'x',
  );
  t.is(config.storage.driver, 'filesystem');
  t.deepEqual(warnings, [
    'log.hooks: not supported by this Wharf version',
    'storage.filesystem.maxthreads: not supported by this Wharf version',
    'storage.tag: not supported by this Wharf version',
    'auth.silly: not supported by this Wharf version',
    'http.secret: not needed by Wharf (upload state lives in storage, not in signed client state); ignored',
    'http.http2: not supported by this Wharf version',
    'http.tls.letsencrypt: not supported by this Wharf version',
    'middleware: not supported by this Wharf version',
    'notifications.events.includereferences: not supported by this Wharf version',
    'health.file: not supported by this Wharf version',
    'reporting: not supported by this Wharf version',
    'compatibility: not supported by this Wharf version',
  ]);
  t.is(config.catalog.maxentries, 100);
});

test('auth: none is accepted silently', (t) => {
  t.deepEqual(parseConfig(`${MINIMAL}auth: none\n`, {}, 'x').warnings, []);
});

// ---- validation errors -------------------------------------------------------------------------------------

const invalid: Array<[string, string, string]> = [
  ['version missing', 'storage: inmemory\n', 'version: must be "0.1" (missing)'],
  ['version 0.2', 'version: 0.2\nstorage: inmemory\n', 'version: must be "0.1", got 0.2'],
  ['version as a string', 'version: "1.0"\nstorage: inmemory\n', 'version: must be "0.1", got "1.0"'],
  ['no storage', 'version: 0.1\n', 'storage: exactly one storage driver must be configured (got none)'],
  ['only settings in storage', 'version: 0.1\nstorage:\n  delete: {enabled: true}\n', 'storage: exactly one storage driver must be configured (got none)'],
  [
    'two drivers',
    'version: 0.1\nstorage:\n  filesystem: {}\n  inmemory:\n',
    'storage: exactly one storage driver must be configured (got filesystem, inmemory)',
  ],
  [
    'an unsupported driver alone',
    'version: 0.1\nstorage:\n  gcs: {bucket: b}\n',
    'storage.gcs: this storage driver is not supported by this Wharf version (available: filesystem, inmemory, s3)',
  ],
  ['an unknown driver', 'version: 0.1\nstorage:\n  floppy: {}\n', 'storage.floppy: unknown storage driver (available: filesystem, inmemory, s3)'],
  ['storage not a mapping', 'version: 0.1\nstorage: [filesystem]\n', 'storage: expected a mapping, got a list'],
  ['driver parameters not a mapping', 'version: 0.1\nstorage:\n  filesystem: /data\n', 'storage.filesystem: expected a mapping, got "/data"'],
  ['rootdirectory a list', 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: [/a]\n', 'storage.filesystem.rootdirectory: expected a string, got a list'],
  ['delete.enabled not a boolean', `${MINIMAL}  delete:\n    enabled: yes please\n`, 'storage.delete.enabled: expected a boolean, got "yes please"'],
  ['delete not a mapping', `${MINIMAL}  delete: true\n`, 'storage.delete: expected a mapping, got true'],
  ['redirect.disable not a boolean', `${MINIMAL}  redirect:\n    disable: 1\n`, 'storage.redirect.disable: expected a boolean, got 1'],
  ['readonly not a mapping', `${MINIMAL}  maintenance:\n    readonly: true\n`, 'storage.maintenance.readonly: expected a mapping, got true'],
  [
    'readonly.enabled not a boolean',
    `${MINIMAL}  maintenance:\n    readonly:\n      enabled: sometimes\n`,
    'storage.maintenance.readonly.enabled: expected a boolean, got "sometimes"',
  ],
  [
    'uploadpurging.age not a duration',
    `${MINIMAL}  maintenance:\n    uploadpurging:\n      age: 7 days\n`,
    'storage.maintenance.uploadpurging.age: expected a duration such as 30s, 15m or 1h30m (invalid duration "7 days"), got "7 days"',
  ],
  [
    'uploadpurging.interval zero',
    `${MINIMAL}  maintenance:\n    uploadpurging:\n      interval: 0s\n`,
    'storage.maintenance.uploadpurging.interval: must be greater than zero, got "0s"',
  ],
  [
    'uploadpurging.age negative',
    `${MINIMAL}  maintenance:\n    uploadpurging:\n      age: -1h\n`,
    'storage.maintenance.uploadpurging.age: must be zero or more, got "-1h"',
  ],
  [
    'uploadpurging.dryrun not a boolean',
    `${MINIMAL}  maintenance:\n    uploadpurging:\n      dryrun: maybe\n`,
    'storage.maintenance.uploadpurging.dryrun: expected a boolean, got "maybe"',
  ],
  [
    'cache size negative',
    `${MINIMAL}  cache:\n    blobdescriptor: inmemory\n    blobdescriptorsize: -1\n`,
    'storage.cache.blobdescriptorsize: must be at least 0, got -1',
  ],
  ['http.addr without a port', `${MINIMAL}http:\n  addr: localhost\n`, 'http.addr: expected host:port or :port, such as :5000 or 127.0.0.1:5000, got "localhost"'],
  ['http.addr a bare number', `${MINIMAL}http:\n  addr: 5000\n`, 'http.addr: expected host:port or :port, such as :5000 or 127.0.0.1:5000, got "5000"'],
  [
    'http.addr port out of range',
    `${MINIMAL}http:\n  addr: :99999\n`,
    'http.addr: expected host:port or :port, such as :5000 or 127.0.0.1:5000; the port must be a number from 0 to 65535, got ":99999"',
  ],
  ['http.addr IPv6 without brackets', `${MINIMAL}http:\n  addr: "::1:5000"\n`, 'http.addr: an IPv6 address needs brackets, as in [::1]:5000, got "::1:5000"'],
  ['http.addr brackets around a name', `${MINIMAL}http:\n  addr: "[localhost]:5000"\n`, 'http.addr: the part in brackets must be an IPv6 address, got "[localhost]:5000"'],
  ['http.net unknown', `${MINIMAL}http:\n  net: udp\n`, 'http.net: expected tcp or unix, got "udp"'],
  ['unix socket without a path', `${MINIMAL}http:\n  net: unix\n`, 'http.addr: a socket path is required when http.net is unix'],
  [
    'http.host not http(s)',
    `${MINIMAL}http:\n  host: ftp://registry.example.com\n`,
    'http.host: expected scheme://host[:port] with scheme http or https (a path belongs in http.prefix), got "ftp://registry.example.com"',
  ],
  [
    'http.host with a path',
    `${MINIMAL}http:\n  host: https://example.com/registry\n`,
    'http.host: expected scheme://host[:port] with scheme http or https (a path belongs in http.prefix), got "https://example.com/registry"',
  ],
  ['http.prefix with a query', `${MINIMAL}http:\n  prefix: /r?x=1\n`, 'http.prefix: expected a URL path such as /registry/, got "/r?x=1"'],
  ['http.relativeurls not a boolean', `${MINIMAL}http:\n  relativeurls: sure\n`, 'http.relativeurls: expected a boolean, got "sure"'],
  [
    'http.draintimeout without a unit',
    `${MINIMAL}http:\n  draintimeout: "10"\n`,
    'http.draintimeout: expected a duration such as 30s, 15m or 1h30m (missing unit in "10"), got "10"',
  ],
  [
    'http.draintimeout a fraction',
    `${MINIMAL}http:\n  draintimeout: 1.5\n`,
    'http.draintimeout: expected a duration such as 30s, 15m or 1h30m, got 1.5',
  ],
  [
    'http.tls certificate without key',
    `${MINIMAL}http:\n  tls:\n    certificate: /c.pem\n`,
    'http.tls.key: required when http.tls.certificate is set (TLS needs both certificate and key)',
  ],
  [
    'http.tls key without certificate',
    `${MINIMAL}http:\n  tls:\n    key: /k.pem\n`,
    'http.tls.certificate: required when http.tls.key is set (TLS needs both certificate and key)',
  ],
  ['http.tls.clientcas not a list', `${MINIMAL}http:\n  tls:\n    certificate: /c\n    key: /k\n    clientcas: /ca.pem\n`, 'http.tls.clientcas: expected a list of strings, got "/ca.pem"'],
  ['http.headers a list', `${MINIMAL}http:\n  headers: [X-A]\n`, 'http.headers: expected a mapping of header names to lists of values, got a list'],
  ['a header name with a space', `${MINIMAL}http:\n  headers:\n    "X Bad": [v]\n`, 'http.headers.X Bad: not a valid HTTP header name'],
  ['a header value that is a mapping', `${MINIMAL}http:\n  headers:\n    X-A: [{a: b}]\n`, 'http.headers.X-A: expected a list of header values, got a mapping'],
  ['log.level unknown', `${MINIMAL}log:\n  level: verbose\n`, 'log.level: expected one of error, warn (or warning), info, debug, got "verbose"'],
  ['loglevel unknown', `${MINIMAL}loglevel: trace\n`, 'loglevel: expected one of error, warn (or warning), info, debug, got "trace"'],
  ['log.formatter unknown', `${MINIMAL}log:\n  formatter: xml\n`, 'log.formatter: expected json or text, got "xml"'],
  ['log.fields a list', `${MINIMAL}log:\n  fields: [a]\n`, 'log.fields: expected a mapping, got a list'],
  ['log.accesslog.disabled not a boolean', `${MINIMAL}log:\n  accesslog:\n    disabled: 2\n`, 'log.accesslog.disabled: expected a boolean, got 2'],
  ['validation.disabled not a boolean', `${MINIMAL}validation:\n  disabled: nope\n`, 'validation.disabled: expected a boolean, got "nope"'],
  ['maxsize zero', `${MINIMAL}validation:\n  manifests:\n    maxsize: 0\n`, 'validation.manifests.maxsize: must be at least 1, got 0'],
  ['maxsize not an integer', `${MINIMAL}validation:\n  manifests:\n    maxsize: 4MiB\n`, 'validation.manifests.maxsize: expected an integer, got "4MiB"'],
  ['http not a mapping', `${MINIMAL}http: :5000\n`, 'http: expected a mapping, got ":5000"'],
];

for (const [name, yaml, message] of invalid) {
  test(`invalid: ${name}`, (t) => {
    t.deepEqual(problemsOf(yaml), [message]);
  });
}

test('every problem is reported at once, and the message lists them line by line', (t) => {
  const err = t.throws(() => parseConfig('version: 0.2\nstorage:\n  inmemory:\n  delete: {enabled: maybe}\nhttp: {addr: nowhere}\n', {}, 'bad.yml'), {
    instanceOf: ConfigError,
  });
  t.deepEqual(err?.problems, [
    'version: must be "0.1", got 0.2',
    'storage.delete.enabled: expected a boolean, got "maybe"',
    'http.addr: expected host:port or :port, such as :5000 or 127.0.0.1:5000, got "nowhere"',
  ]);
  t.is(err?.message, err?.problems.join('\n'));
  t.is(err?.source, 'bad.yml');
  t.is(err?.name, 'ConfigError');
});

test('invalid YAML is a ConfigError with the position', (t) => {
  const err = t.throws(() => parseConfig('version: 0.1\nstorage: {filesystem: \n', {}, 'x'), { instanceOf: ConfigError });
  t.regex(err?.message ?? '', /^invalid YAML: .*line \d+, column \d+/s);
});

test('duplicate keys are an error', (t) => {
  const err = t.throws(() => parseConfig('version: 0.1\nstorage: inmemory\nstorage: inmemory\n', {}, 'x'), { instanceOf: ConfigError });
  t.regex(err?.message ?? '', /^invalid YAML: Map keys must be unique/);
});

test('a config that is not a mapping is a ConfigError', (t) => {
  t.throws(() => parseConfig('- version: 0.1\n', {}, 'x'), { instanceOf: ConfigError, message: 'the configuration must be a YAML mapping, got a list' });
});

test('an empty file only lacks its version and storage', (t) => {
  t.deepEqual(problemsOf(''), ['version: must be "0.1" (missing)', 'storage: exactly one storage driver must be configured (got none)']);
});

test('storage.maintenance.uploadlimits: defaults, 0 for no limit, the environment, and bad values named', (t) => {
  const base = 'version: 0.1\nstorage:\n  inmemory:\n';
  t.deepEqual(parseConfig(base, {}, 'x').config.storage.maintenance.uploadlimits, { perrepository: 1000, peruser: 500 });
  const env = { REGISTRY_STORAGE_MAINTENANCE_UPLOADLIMITS_PERREPOSITORY: '0', REGISTRY_STORAGE_MAINTENANCE_UPLOADLIMITS_PERUSER: '7' };
  t.deepEqual(parseConfig(base, env, 'x').config.storage.maintenance.uploadlimits, { perrepository: 0, peruser: 7 });
  t.deepEqual(problemsOf(`${base}  maintenance:\n    uploadlimits: {perrepository: -1, peruser: many}\n`), [
    'storage.maintenance.uploadlimits.perrepository: must be at least 0, got -1',
    'storage.maintenance.uploadlimits.peruser: expected an integer, got "many"',
  ]);
});

test('the schema is valid JSON Schema (the loader compiles it without checking, so this test does)', (t) => {
  const ajv = new Ajv({ strict: true });
  ajv.addVocabulary(ANNOTATIONS);
  t.true(ajv.validateSchema(ConfigSchema), JSON.stringify(ajv.errors));
  // And the check bites: a misspelt type is caught.
  t.false(ajv.validateSchema({ type: 'strnig' }));
});

test('policies and manifest validation: sizes with units, durations, rules as written', (t) => {
  const { config, warnings } = parseConfig(
    `${MINIMAL}validation:
  manifests:
    urls:
      allow: ['^https?://([^/]+\\.)*example\\.com/']
      deny: ['^https?://internal\\.example\\.com/']
    indexes:
      platforms: LIST
      platformlist: [{os: linux, architecture: amd64}, {os: linux, architecture: arm64, variant: v8}]
policies:
  immutabletags:
    - repositories: ['release/**']
      tags: ['v*']
  quotas:
    - repositories: ['team-a/**']
      maxsize: 10GiB
    - repositories: ['team-b/**']
      maxsize: 1.5GB
    - repositories: ['team-c/**']
      maxsize: 4096
  retention:
    - repositories: ['ci/**']
      keep: {mostrecent: 10, pulledwithin: 720h, tags: ['latest', 'v*']}
      untagged: {olderthan: 24h}
`,
    {},
    'test.yml',
  );
  t.deepEqual(warnings, []);
  t.deepEqual(config.validation.manifests.urls, { allow: ['^https?://([^/]+\\.)*example\\.com/'], deny: ['^https?://internal\\.example\\.com/'] });
  t.deepEqual(config.validation.manifests.indexes, {
    platforms: 'list',
    platformlist: [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64', variant: 'v8' }],
  });
  t.deepEqual(config.policies.immutabletags, [{ repositories: ['release/**'], tags: ['v*'] }]);
  t.deepEqual(config.policies.quotas.map((q) => q.maxsize), [10 * 1024 ** 3, 1.5e9, 4096]);
  t.deepEqual(config.policies.retention, [
    { repositories: ['ci/**'], keep: { mostrecent: 10, pulledwithin: 720 * 3600_000, tags: ['latest', 'v*'] }, untagged: { olderthan: 24 * 3600_000 } },
  ]);
});

test('policies and manifest validation: each mistake is named at its key', (t) => {
  const problems = problemsOf(`${MINIMAL}validation:
  manifests:
    urls:
      allow: ['(unclosed']
    indexes:
      platforms: list
policies:
  immutabletags:
    - repositories: ['release/**']
  quotas:
    - repositories: ['team-a/**']
      maxsize: 10 gigs
    - repositories: ['']
      maxsize: 0
  retention:
    - repositories: ['ci/**']
      keep: {}
    - repositories: ['x/**']
      keep: {mostrecent: -1}
      colour: blue
`);
  const text = problems.join('\n');
  t.regex(text, /validation\.manifests\.urls\.allow\.0: not a regular expression/);
  t.regex(text, /validation\.manifests\.indexes\.platformlist: required with platforms: list/);
  t.regex(text, /policies\.immutabletags\.0: a rule needs tags/);
  t.regex(text, /policies\.quotas\.0\.maxsize: expected a size such as 500MiB/);
  t.regex(text, /policies\.quotas\.1\.repositories\.0: expected a glob pattern/);
  t.regex(text, /policies\.quotas\.1\.maxsize: must be at least 1/);
  t.regex(text, /policies\.retention\.0: a retention rule needs keep/);
  t.regex(text, /policies\.retention\.1\.keep\.mostrecent: must be at least 0/);
  t.regex(text, /policies\.retention\.1\.colour: unknown retention key/);
});
