/**
 * The test files of `npm run test:unit` (scripts/test.mjs --unit), as sources relative to the repository root.
 *
 * The unit set: test files that start no process and open no port (no Wharf, Redis, Ceph, registry:2, docker,
 * skopeo or openssl), so they need nothing beyond `npm ci` and finish in seconds. A file belongs here only while that
 * holds; testing/unit-set.test.ts checks each listed source for the imports and calls that would break it.
 */
export const UNIT_TESTS = [
  'auth/authenticator.test.ts',
  'auth/authorizer.test.ts',
  'auth/htpasswd.test.ts',
  'auth/policy.test.ts',
  'auth/scope.test.ts',
  'auth/token.test.ts',
  'server/cache/memory.test.ts',
  'server/config/auth.test.ts',
  'server/config/docs.test.ts',
  'server/config/duration.test.ts',
  'server/config/env.test.ts',
  'server/config/load.test.ts',
  'server/config/redis.test.ts',
  'server/config/s3.test.ts',
  'server/gc/cli.test.ts',
  'server/gc/proxy-expiry.test.ts',
  'server/http/blobs.test.ts',
  'server/logging.test.ts',
  'server/policies/immutable.test.ts',
  'server/policies/validation.test.ts',
  'server/proxy/mirror.test.ts',
  'server/policies/quota.test.ts',
  'server/registry/purge.test.ts',
  'server/registry/reference.test.ts',
  'server/registry/scan.test.ts',
  'server/registry/registry.test.ts',
  'server/registry/uploads.test.ts',
  'server/ui/session.test.ts',
  'server/ui/static.test.ts',
  'storage-drivers/checked.test.ts',
  'storage-drivers/index.test.ts',
  'storage-drivers/inmemory.test.ts',
  'testing/e2e/image.test.ts',
  'testing/import-cycles.test.ts',
  'testing/unit-set.test.ts',
];
