/** The `storage.s3` section: registry:2's keys, defaults, limits and environment overrides. */
import test from 'ava';
import { ConfigError } from './errors.js';
import { parseConfig } from './load.js';

const MiB = 1024 * 1024;

const minimal = `version: 0.1
storage:
  s3:
    region: us-east-1
    bucket: images
`;

test('s3: a minimal section gets registry:2 defaults and no warnings', (t) => {
  const { config, warnings } = parseConfig(minimal);
  t.is(config.storage.driver, 's3');
  t.deepEqual(config.storage.s3, {
    region: 'us-east-1',
    bucket: 'images',
    forcepathstyle: false,
    rootdirectory: '',
    chunksize: 10 * MiB,
    multipartcopychunksize: 32 * MiB,
    multipartcopymaxconcurrency: 100,
    multipartcopythresholdsize: 32 * MiB,
    stalltimeout: 30_000,
    uploadbuffermemory: 32 * MiB,
    secure: true,
    skipverify: false,
    storageclass: 'STANDARD',
    encrypt: false,
  });
  t.false(config.storage.redirect.disable, 'redirects are on by default, as in registry:2');
  t.deepEqual(warnings, []);
});

test('s3: every key is read', (t) => {
  const { config } = parseConfig(`version: 0.1
storage:
  s3:
    region: eu-west-1
    bucket: images
    regionendpoint: https://s3.example.com:9000
    forcepathstyle: true
    accesskey: AKIAEXAMPLE
    secretkey: "12345"
    sessiontoken: token
    rootdirectory: /registry
    chunksize: "5242880"
    multipartcopychunksize: 67108864
    multipartcopymaxconcurrency: 8
    multipartcopythresholdsize: 0
    stalltimeout: 5s
    uploadbuffermemory: 16777216
    secure: false
    skipverify: true
    storageclass: reduced_redundancy
    encrypt: true
    keyid: arn:aws:kms:eu-west-1:123:key/abc
  redirect:
    disable: true
`);
  t.deepEqual(config.storage.s3, {
    region: 'eu-west-1',
    bucket: 'images',
    regionendpoint: 'https://s3.example.com:9000',
    forcepathstyle: true,
    accesskey: 'AKIAEXAMPLE',
    secretkey: '12345',
    sessiontoken: 'token',
    rootdirectory: '/registry',
    chunksize: 5 * MiB,
    multipartcopychunksize: 64 * MiB,
    multipartcopymaxconcurrency: 8,
    multipartcopythresholdsize: 0,
    stalltimeout: 5000,
    uploadbuffermemory: 16 * MiB,
    secure: false,
    skipverify: true,
    storageclass: 'REDUCED_REDUNDANCY',
    encrypt: true,
    keyid: 'arn:aws:kms:eu-west-1:123:key/abc',
  });
  t.true(config.storage.redirect.disable);
});

function problems(yaml: string, env: Record<string, string> = {}): string {
  const err = (() => {
    try {
      parseConfig(yaml, env);
    } catch (e) {
      return e;
    }
    return undefined;
  })();
  if (!(err instanceof ConfigError)) throw new Error('expected a ConfigError');
  return err.message;
}

test('s3: missing, out-of-range and malformed keys are errors naming the key', (t) => {
  const message = problems(`version: 0.1
storage:
  s3:
    chunksize: 1048576
    multipartcopychunksize: 1
    multipartcopythresholdsize: 6442450944
    multipartcopymaxconcurrency: 0
    storageclass: COLD
    regionendpoint: ftp://example.com
    forcepathstyle: maybe
`);
  t.regex(message, /storage\.s3\.region: required/);
  t.regex(message, /storage\.s3\.bucket: required/);
  t.regex(message, /storage\.s3\.chunksize: must be at least 5242880/);
  t.regex(message, /storage\.s3\.multipartcopychunksize: must be at least 5242880/);
  t.regex(message, /storage\.s3\.multipartcopythresholdsize: must be at most 5368709120/);
  t.regex(message, /storage\.s3\.multipartcopymaxconcurrency: must be at least 1/);
  t.regex(message, /storage\.s3\.storageclass: expected one of STANDARD/);
  t.regex(message, /storage\.s3\.regionendpoint: expected an http\(s\) URL/);
  t.regex(message, /storage\.s3\.forcepathstyle: expected a boolean/);
});

test('s3: a secret key without an access key is an error that does not repeat the secret', (t) => {
  const message = problems(`${minimal}    secretkey: very-secret-value\n`);
  t.regex(message, /storage\.s3\.accesskey: accesskey and secretkey must be given together/);
  t.notRegex(message, /very-secret-value/);
});

test('s3: REGISTRY_STORAGE=s3 with REGISTRY_STORAGE_S3_* switches a filesystem file to S3', (t) => {
  const { config } = parseConfig(
    `version: 0.1
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
`,
    {
      REGISTRY_STORAGE: 's3',
      REGISTRY_STORAGE_S3_REGION: 'us-east-1',
      REGISTRY_STORAGE_S3_BUCKET: 'from-env',
      REGISTRY_STORAGE_S3_REGIONENDPOINT: 'http://127.0.0.1:9000',
      REGISTRY_STORAGE_S3_FORCEPATHSTYLE: 'true',
      REGISTRY_STORAGE_S3_ACCESSKEY: 'key',
      REGISTRY_STORAGE_S3_SECRETKEY: '0123',
      REGISTRY_STORAGE_S3_CHUNKSIZE: '20971520',
    },
  );
  t.is(config.storage.driver, 's3');
  t.is(config.storage.s3?.bucket, 'from-env');
  t.true(config.storage.s3?.forcepathstyle);
  t.is(config.storage.s3?.secretkey, '0123', 'a secret that looks like a number stays a string');
  t.is(config.storage.s3?.chunksize, 20 * MiB);
  t.true(config.storage.delete.enabled, 'the storage settings of the file are kept');
  const missing = problems(minimal, { REGISTRY_STORAGE_S3_CHUNKSIZE: '10' });
  t.regex(missing, /storage\.s3\.chunksize \(from REGISTRY_STORAGE_S3_CHUNKSIZE\): must be at least/);
});

test('s3: registry:2 keys Wharf does not implement are warned about, not errors', (t) => {
  const { warnings } = parseConfig(`${minimal}    useragent: custom\n    v4auth: false\n`);
  t.true(warnings.some((w) => w.includes('storage.s3.useragent: not supported')));
  t.true(warnings.some((w) => w.includes('storage.s3.v4auth: false is ignored')));
});
