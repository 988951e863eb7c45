/**
 * Every example config in docs/examples/ passes `wharf config check` through the real CLI, and shows the
 * feature its name promises.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createSecureContext } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { loadConfig, type WharfConfig } from './index.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const EXAMPLES = join(ROOT, 'docs/examples');
const CLI = join(ROOT, 'dist/server/cli.js');

/** The environment without REGISTRY_* variables, so the examples are checked as written. */
const CLEAN_ENV = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('REGISTRY_')));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runCli(args: string[]): Promise<Run> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, env: CLEAN_ENV, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => resolveRun({ code, stdout, stderr }));
  });
}

/** What each example must configure, beyond loading. */
const FEATURES: Record<string, (t: import('ava').ExecutionContext, c: WharfConfig) => void> = {
  'filesystem.yml': (t, c) => {
    t.is(c.storage.driver, 'filesystem');
    t.is(c.storage.filesystem.rootdirectory, join(ROOT, 'data'));
  },
  'inmemory.yml': (t, c) => t.is(c.storage.driver, 'inmemory'),
  's3.yml': (t, c) => {
    t.is(c.storage.driver, 's3');
    t.is(c.storage.s3?.bucket, 'wharf-registry');
    t.is(c.storage.s3?.regionendpoint, 'http://127.0.0.1:9000');
    t.true(c.storage.s3?.forcepathstyle);
    t.is(c.storage.s3?.chunksize, 10 * 1024 * 1024);
    t.false(c.storage.redirect.disable);
  },
  'redis.yml': (t, c) => {
    t.is(c.storage.cache.blobdescriptor, 'redis');
    t.is(c.redis?.addr, 'localhost:6379');
    t.is(c.redis?.readtimeout, 500);
    t.true(c.storage.delete.enabled);
  },
  'delete-enabled.yml': (t, c) => t.true(c.storage.delete.enabled),
  'policies.yml': (t, c) => {
    t.is(c.policies.immutabletags.length, 1);
    t.is(c.policies.quotas[0]!.maxsize, 10 * 1024 ** 3);
    t.is(c.policies.retention[0]!.keep.mostrecent, 10);
    t.is(c.validation.manifests.indexes.platforms, 'list');
    t.deepEqual(c.validation.manifests.urls.deny, ['^https://internal\\.example\\.com/']);
  },
  'readonly.yml': (t, c) => t.true(c.storage.maintenance.readonly.enabled),
  'tls.yml': (t, c) => {
    t.truthy(c.http.tls);
    t.is(c.http.host, 'https://localhost:5443');
  },
  'prefix.yml': (t, c) => t.is(c.http.prefix, '/registry/'),
  'mirror.yml': (t, c) => {
    t.like(c.proxy?.upstreams[0], { name: 'default', url: 'https://registry-1.docker.io', ttl: 168 * 3600_000, librarymapping: true });
    t.like(c.proxy?.upstreams[1], { name: 'ghcr', url: 'https://ghcr.io', prefix: 'ghcr', ttl: 72 * 3600_000, namespaces: ['ghcr.io'] });
    t.deepEqual(c.proxy?.localnamespaces, ['mycompany']);
  },
  'notifications.yml': (t, c) => {
    t.is(c.notifications.endpoints.length, 1);
    t.like(c.notifications.endpoints[0], {
      name: 'audit', url: 'http://127.0.0.1:8088/registry-events', timeout: 2000, threshold: 5, backoff: 1000,
      ignore: { mediatypes: [], actions: ['pull'] },
    });
  },
  'monitoring.yml': (t, c) => {
    t.deepEqual(c.http.debug, { addr: '127.0.0.1:5001', prometheus: { enabled: true, path: '/metrics' } });
    t.deepEqual(c.health.storagedriver, { enabled: true, interval: 10_000, threshold: 3 });
  },
  'auth-htpasswd.yml': (t, c) => {
    t.deepEqual(c.auth.htpasswd, { realm: 'wharf', path: join(ROOT, 'docs/examples/auth/htpasswd') });
    t.is(c.auth.access?.rules.length, 4);
    t.deepEqual(c.auth.access?.anonymous, ['public/**']);
  },
  'auth-token.yml': (t, c) => {
    t.is(c.auth.token?.realm, 'http://localhost:5000/auth/token');
    t.is(c.auth.tokenserver?.path, '/auth/token');
    t.is(c.auth.tokenserver?.issuer, 'wharf-token-server');
    t.is(c.auth.tokenserver?.service, 'wharf');
    t.is(c.auth.tokenserver?.expiration, 5 * 60_000);
    t.is(c.auth.tokenserver?.htpasswd, join(ROOT, 'docs/examples/auth/htpasswd'));
  },
  'auth-external-token.yml': (t, c) => {
    t.is(c.auth.token?.rootcertbundle, join(ROOT, 'data/auth/token.crt'));
    t.deepEqual(c.auth.token?.signingalgorithms, ['ES256', 'RS256']);
    t.is(c.auth.tokenserver, undefined);
  },
  'registry2-compatible.yml': (t, c) => {
    t.is(c.storage.filesystem.rootdirectory, '/var/lib/registry');
    t.deepEqual(c.http.headers, { 'X-Content-Type-Options': ['nosniff'] });
    t.deepEqual(c.health.storagedriver, { enabled: true, interval: 10_000, threshold: 3 });
  },
};

const files = (await readdir(EXAMPLES)).filter((f) => f.endsWith('.yml')).sort();

test('every example has its feature test, and every feature its example', (t) => {
  t.deepEqual(files, Object.keys(FEATURES).sort());
});

for (const file of files) {
  const path = join('docs/examples', file);

  test(`${file}: wharf config check accepts it`, async (t) => {
    t.true(existsSync(CLI), `${CLI} is missing: run npm run build`);
    const run = await runCli(['config', 'check', path]);
    t.is(run.code, 0, run.stderr);
    t.true(run.stderr.includes(`configuration OK: ${path}`), run.stderr);
  });

  test(`${file}: starts with a comment saying what it shows, and configures it`, async (t) => {
    const text = await readFile(join(EXAMPLES, file), 'utf8');
    t.regex(text, /^# \S.*\n/);
    const { config, warnings } = await loadConfig({ path: join(EXAMPLES, file), env: {}, cwd: ROOT });
    t.deepEqual(warnings, []);
    FEATURES[file]!(t, config);
  });
}

test('tls.yml points at a certificate and key that belong together', async (t) => {
  const { config } = await loadConfig({ path: join(EXAMPLES, 'tls.yml'), env: {} });
  const tls = config.http.tls!;
  const [cert, key] = await Promise.all([readFile(join(ROOT, tls.certificate)), readFile(join(ROOT, tls.key))]);
  // createSecureContext refuses a key that does not match the certificate.
  t.notThrows(() => createSecureContext({ cert, key }));
});

test('wharf config check rejects a broken config with exit code 2, naming the key', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-examples-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'broken.yml');
  await writeFile(path, 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /tmp/x\n  delete:\n    enabled: yes please\n');
  const run = await runCli(['config', 'check', path]);
  t.is(run.code, 2, run.stderr);
  t.true(run.stderr.includes('storage.delete.enabled: expected a boolean, got "yes please"'), run.stderr);
  t.false(run.stderr.includes('configuration OK'));
});
