import test from 'ava';
import { resolve } from 'node:path';
import { ConfigError, loadConfig, parseConfig } from './index.js';

const FILE = `version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: false
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
`;

const load = (env: Record<string, string | undefined>, yaml = FILE) => parseConfig(yaml, env, 'config.yml');

function problemsOf(env: Record<string, string>, yaml = FILE): readonly string[] {
  try {
    load(env, yaml);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('expected a ConfigError, but the configuration loaded');
}

test('the examples from the registry:2 docs override the file', (t) => {
  const { config, warnings } = load({
    REGISTRY_LOG_LEVEL: 'debug',
    REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: '/x',
    REGISTRY_HTTP_ADDR: '127.0.0.1:6000',
    REGISTRY_STORAGE_DELETE_ENABLED: 'true',
  });
  t.deepEqual(warnings, []);
  t.is(config.log.level, 'debug');
  t.is(config.storage.filesystem.rootdirectory, '/x');
  t.is(config.http.addr, '127.0.0.1:6000');
  t.true(config.storage.delete.enabled);
});

test('keys the file does not have are created', (t) => {
  const { config } = load({
    REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED: 'true',
    REGISTRY_HTTP_PREFIX: '/r/',
    REGISTRY_VALIDATION_MANIFESTS_MAXSIZE: '1024',
    REGISTRY_HTTP_DRAINTIMEOUT: '5s',
    REGISTRY_LOG_FIELDS_ENVIRONMENT: 'staging',
  });
  t.true(config.storage.maintenance.readonly.enabled);
  t.is(config.http.prefix, '/r/');
  t.is(config.validation.manifests.maxsize, 1024);
  t.is(config.http.draintimeout, 5000);
  t.deepEqual(config.log.fields, { environment: 'staging' });
});

test('overrides apply to the embedded default too', async (t) => {
  const { config } = await loadConfig({ env: { REGISTRY_HTTP_ADDR: ':7000', REGISTRY_LOG_LEVEL: 'warning' }, cwd: '/w' });
  t.is(config.http.addr, ':7000');
  t.is(config.log.level, 'warn');
  t.is(config.storage.filesystem.rootdirectory, resolve('/w', 'data'));
});

test('REGISTRY_STORAGE=inmemory switches the driver and keeps the storage settings', (t) => {
  const { config } = load({ REGISTRY_STORAGE: 'inmemory', REGISTRY_STORAGE_DELETE_ENABLED: 'true' });
  t.is(config.storage.driver, 'inmemory');
  t.true(config.storage.delete.enabled);
  const kept = load({ REGISTRY_STORAGE: 'inmemory' }, FILE.replace('enabled: false', 'enabled: true'));
  t.true(kept.config.storage.delete.enabled);
});

test('naming the configured driver keeps its parameters', (t) => {
  const { config } = load({ REGISTRY_STORAGE: 'filesystem' });
  t.is(config.storage.driver, 'filesystem');
  t.is(config.storage.filesystem.rootdirectory, '/var/lib/registry');
});

test('a section is switched before the keys inside it are set (variables apply in name order)', (t) => {
  // The object literal lists the inner key first; sorting by name applies REGISTRY_STORAGE first all the same.
  const { config } = load(
    { REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: '/from-env', REGISTRY_STORAGE: 'filesystem' },
    'version: 0.1\nstorage:\n  inmemory:\n',
  );
  t.is(config.storage.driver, 'filesystem');
  t.is(config.storage.filesystem.rootdirectory, '/from-env');
});

test('a second driver from the environment is an error, as in registry:2', (t) => {
  t.deepEqual(problemsOf({ REGISTRY_STORAGE_INMEMORY: '' }), [
    'storage: exactly one storage driver must be configured (got filesystem, inmemory)',
  ]);
});

test('switching to a driver Wharf lacks is an error naming the variable', (t) => {
  t.deepEqual(problemsOf({ REGISTRY_STORAGE: 'gcs', REGISTRY_STORAGE_GCS_BUCKET: 'b' }), [
    'storage.gcs (from REGISTRY_STORAGE): this storage driver is not supported by this Wharf version (available: filesystem, inmemory, s3)',
  ]);
});

test('a whole section can be given as YAML', (t) => {
  const { config } = load({ REGISTRY_STORAGE: '{inmemory: {}, delete: {enabled: true}}' });
  t.is(config.storage.driver, 'inmemory');
  t.true(config.storage.delete.enabled);
});

test('values are YAML scalars: booleans and numbers', (t) => {
  t.false(load({ REGISTRY_STORAGE_DELETE_ENABLED: 'false' }).config.storage.delete.enabled);
  t.true(load({ REGISTRY_STORAGE_DELETE_ENABLED: 'yes' }).config.storage.delete.enabled);
  t.is(load({ REGISTRY_HTTP_DRAINTIMEOUT: '2000000000' }).config.http.draintimeout, 2000);
});

test('string keys take the value verbatim', (t) => {
  t.is(load({ REGISTRY_HTTP_ADDR: '[::1]:5000' }).config.http.addr, '[::1]:5000');
  t.is(load({ REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: '/data/0755' }).config.storage.filesystem.rootdirectory, '/data/0755');
});

test('names match the config tree ignoring case; new user keys are lower case', (t) => {
  const { config } = load({
    'REGISTRY_HTTP_HEADERS_X-CONTENT-TYPE-OPTIONS': '[nosniff, other]',
    'REGISTRY_HTTP_HEADERS_X-FRAME-OPTIONS': '[DENY]',
    REGISTRY_log_Level: 'error',
  });
  t.deepEqual(config.http.headers, { 'X-Content-Type-Options': ['nosniff', 'other'], 'x-frame-options': ['DENY'] });
  t.is(config.log.level, 'error');
});

test('list items are addressed by index; one past the end appends', (t) => {
  const yaml = `${FILE}  tls:\n    certificate: /c\n    key: /k\n    clientcas: [/a.pem]\n`;
  const { config } = load({ REGISTRY_HTTP_TLS_CLIENTCAS_0: '/z.pem', REGISTRY_HTTP_TLS_CLIENTCAS_1: '/b.pem' }, yaml);
  t.deepEqual(config.http.tls?.clientcas, ['/z.pem', '/b.pem']);
  t.deepEqual(problemsOf({ REGISTRY_HTTP_TLS_CLIENTCAS_5: '/x.pem' }, yaml), [
    'http.tls.clientcas (from REGISTRY_HTTP_TLS_CLIENTCAS_5): 5 is not an index of this list (it has 1 item; the next index appends)',
  ]);
});

test('TLS can be switched on from the environment alone', (t) => {
  const { config } = load({ REGISTRY_HTTP_TLS_CERTIFICATE: '/c.pem', REGISTRY_HTTP_TLS_KEY: '/k.pem' });
  t.deepEqual(config.http.tls, { certificate: '/c.pem', key: '/k.pem' });
});

test('a bad value names the key and the variable', (t) => {
  t.deepEqual(problemsOf({ REGISTRY_STORAGE_DELETE_ENABLED: 'yes please' }), [
    'storage.delete.enabled (from REGISTRY_STORAGE_DELETE_ENABLED): expected a boolean, got "yes please"',
  ]);
  t.deepEqual(problemsOf({ REGISTRY_HTTP_ADDR: 'nowhere' }), [
    'http.addr (from REGISTRY_HTTP_ADDR): expected host:port or :port, such as :5000 or 127.0.0.1:5000, got "nowhere"',
  ]);
});

test('an empty value unsets the key', (t) => {
  const { config } = load({ REGISTRY_HTTP_HOST: '', REGISTRY_LOG_LEVEL: '' }, `${FILE}  host: https://r.example.com\n`);
  t.is(config.http.host, undefined);
  t.is(config.log.level, 'info');
});

test('variables that match no key are ignored with a warning', (t) => {
  const { config, warnings } = load({
    REGISTRY_PORT: 'tcp://10.0.0.1:5000', // what Kubernetes injects for a Service named "registry"
    REGISTRY_HTTP_ADDR_EXTRA: 'x',
    REGISTRY__DOUBLE: 'x',
    REGISTRY_VERSION: '0.2',
  });
  t.is(config.http.addr, ':5000');
  t.deepEqual(warnings, [
    'environment variable REGISTRY_HTTP_ADDR_EXTRA: http.addr holds a single value, not a section (ignored)',
    'environment variable REGISTRY_PORT matches no configuration key (ignored)',
    'environment variable REGISTRY_VERSION: the configuration version cannot be overridden (ignored)',
    'environment variable REGISTRY__DOUBLE matches no configuration key (ignored)',
  ]);
});

test('other variables and undefined values are left alone', (t) => {
  const { config, warnings } = load({ PATH: '/bin', HOME: '/root', REGISTRY_LOG_LEVEL: undefined, registry_log_level: 'debug' });
  t.deepEqual(warnings, []);
  t.is(config.log.level, 'info');
});

test('an unsupported section set from the environment is warned about like one in the file', (t) => {
  const { warnings } = load({ REGISTRY_REPORTING_BUGSNAG_APIKEY: 'x', REGISTRY_AUTH_FOO_REALM: 'x' });
  t.deepEqual(warnings, ['unknown key auth.foo (ignored)', 'reporting: not supported by this Wharf version']);
});

test('entries of a list of sections are addressed by index, the schema telling list from mapping', (t) => {
  const { config } = load({
    REGISTRY_NOTIFICATIONS_ENDPOINTS_0_NAME: 'audit',
    REGISTRY_NOTIFICATIONS_ENDPOINTS_0_URL: 'http://127.0.0.1:8088/events',
    REGISTRY_PROXY_UPSTREAMS_0_URL: 'http://127.0.0.1:5001',
    REGISTRY_PROXY_UPSTREAMS_0_PREFIX: 'up',
  });
  t.like(config.notifications.endpoints[0], { name: 'audit', url: 'http://127.0.0.1:8088/events', timeout: 1000 });
  t.like(config.proxy?.upstreams[0], { name: 'up', url: 'http://127.0.0.1:5001', prefix: 'up' });
});
