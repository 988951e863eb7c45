/** The `redis` section and `storage.cache.blobdescriptor: redis`: registry:2 keys, Wharf's url, env overrides. */
import test from 'ava';
import { ConfigError, parseConfig } from './index.js';

const MINIMAL = 'version: 0.1\nstorage:\n  inmemory: {}\n  cache:\n    blobdescriptor: redis\n';

function problems(yaml: string, env: Record<string, string> = {}): string[] {
  const err = (() => {
    try {
      parseConfig(yaml, env, 'x');
    } catch (e) {
      return e;
    }
    return undefined;
  })();
  if (!(err instanceof ConfigError)) throw new Error('expected a ConfigError, but the configuration loaded');
  return [...err.problems];
}

test('registry:2 redis keys load with their types, defaults filled in, and no warnings', (t) => {
  const { config, warnings } = parseConfig(
    `${MINIMAL}redis:
  addr: redis.internal:6380
  password: s3cret
  db: 3
  dialtimeout: 2s
  readtimeout: 500ms
  writetimeout: 1s
  tls:
    enabled: true
  pool:
    maxidle: 16
    maxactive: 64
    idletimeout: 300s
`,
    {},
    'x',
  );
  t.deepEqual(warnings, []);
  t.is(config.storage.cache.blobdescriptor, 'redis');
  t.deepEqual(config.redis, {
    addr: 'redis.internal:6380',
    password: 's3cret',
    db: 3,
    dialtimeout: 2000,
    readtimeout: 500,
    writetimeout: 1000,
    tls: { enabled: true, clientcas: [] },
    pool: { maxidle: 16, maxactive: 64, idletimeout: 300_000 },
  });
});

test('redis.url is accepted, with defaults for the timeouts', (t) => {
  const { config } = parseConfig(`${MINIMAL}redis:\n  url: redis://:pw@127.0.0.1:6379/2\n`, {}, 'x');
  t.is(config.redis?.url, 'redis://:pw@127.0.0.1:6379/2');
  t.is(config.redis?.dialtimeout, 5000);
  t.is(config.redis?.readtimeout, 3000);
  t.is(config.redis?.writetimeout, 3000);
});

test('REGISTRY_REDIS_* environment overrides set and refine the section', (t) => {
  const { config } = parseConfig(MINIMAL, {
    REGISTRY_REDIS_ADDR: 'cache:6379',
    REGISTRY_REDIS_PASSWORD: 'from-env',
    REGISTRY_REDIS_DB: '1',
    REGISTRY_REDIS_TLS_ENABLED: 'true',
    REGISTRY_REDIS_TLS_CLIENTCAS_0: '/etc/ca.pem',
  }, 'x');
  t.is(config.redis?.addr, 'cache:6379');
  t.is(config.redis?.password, 'from-env');
  t.is(config.redis?.db, 1);
  t.deepEqual(config.redis?.tls, { enabled: true, clientcas: ['/etc/ca.pem'] });
  const cacheFromEnv = parseConfig('version: 0.1\nstorage: inmemory\n', { REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR: 'redis', REGISTRY_REDIS_URL: 'redis://r:6379' }, 'x');
  t.is(cacheFromEnv.config.storage.cache.blobdescriptor, 'redis');
  t.is(cacheFromEnv.config.redis?.url, 'redis://r:6379');
});

test('bad redis values are problems naming the key, and never echo the password', (t) => {
  const secret = 'hunter2-very-secret';
  const found = problems(
    `${MINIMAL}redis:\n  url: http://:${secret}@host:6379\n  db: -1\n  readtimeout: soon\n  tls:\n    certificate: /c.pem\n`,
  );
  t.true(found.some((p) => p.startsWith('redis.url: expected redis://')), found.join('\n'));
  t.true(found.some((p) => p.startsWith('redis.db: must be at least 0')));
  t.true(found.some((p) => p.startsWith('redis.readtimeout: expected a duration')));
  t.true(found.some((p) => p.startsWith('redis.tls.key: redis.tls.certificate and redis.tls.key go together')));
  t.false(found.join('\n').includes(secret));
  t.deepEqual(problems(`${MINIMAL}redis:\n  addr: no-port\n`), ['redis.addr: expected host:port, such as redis:6379, got "no-port"']);
  t.deepEqual(problems(`${MINIMAL}redis:\n  url: redis://host/zero\n`), [
    'redis.url: the path of a Redis URL is the database number, such as redis://host:6379/0',
  ]);
  t.deepEqual(problems(MINIMAL), ['storage.cache.blobdescriptor: redis needs the redis section with redis.addr or redis.url']);
  t.deepEqual(problems(MINIMAL, { REGISTRY_REDIS_DB: 'x', REGISTRY_REDIS_ADDR: 'r:1' }), [
    'redis.db (from REGISTRY_REDIS_DB): expected an integer, got "x"',
  ]);
});

test('a redis section without addr or url, and redis.addrs, are warned about', (t) => {
  const { config, warnings } = parseConfig('version: 0.1\nstorage: inmemory\nredis:\n  db: 1\n  addrs: [a:1, b:2]\n', {}, 'x');
  t.is(config.redis, undefined);
  t.deepEqual(warnings, [
    'redis.addrs: several Redis addresses (cluster/sentinel) are not supported by this Wharf version; use redis.addr',
    'redis: no addr or url given; Redis is not used',
  ]);
});
