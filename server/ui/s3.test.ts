/**
 * The web UI's API on the S3 driver (a real Ceph RADOS Gateway, testing/s3-test-server.ts), with two replicas
 * sharing the bucket: the repository listing, tags and a manifest view read from S3, and a login made on one
 * replica is accepted by the other (the session key is kept in storage).
 */
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startWharf, writeHtpasswd, type RunningWharf } from '../../testing/harness.js';
import { startS3TestServer, type S3TestServer } from '../../testing/s3-test-server.js';
import { call, pushArtifact, pushImage, pushIndex, uiLogin } from '../../testing/ui-fixtures.js';

let s3: S3TestServer;
let dir: string;
let one: RunningWharf;
let two: RunningWharf;
const alice = { Authorization: `Basic ${Buffer.from('alice:alice-pw').toString('base64')}` };

test.before(async (t) => {
  t.timeout(10 * 60_000);
  dir = await mkdtemp(join(tmpdir(), 'wharf-ui-s3-'));
  await writeHtpasswd(join(dir, 'htpasswd'), { alice: 'alice-pw' });
  s3 = await startS3TestServer();
  const config = {
    storage: { s3: s3.storageConfig({ rootdirectory: '/ui' }), redirect: { disable: true } },
    auth: { htpasswd: { realm: 'r', path: join(dir, 'htpasswd') }, access: { anonymous: ['pub/**'], rules: [{ users: ['alice'], repositories: ['**'], actions: ['*'] }] } },
  };
  // One after the other: the first creates the session key, the second reads it.
  one = await startWharf({ config, startTimeoutMs: 120_000 });
  two = await startWharf({ config, startTimeoutMs: 120_000 });
});

test.after.always(async () => {
  await Promise.all([one?.stop(), two?.stop()]);
  await s3?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('s3: repositories, tags and a manifest with its referrers, read from S3; a login works on every replica', async (t) => {
  const index = await pushIndex(one.url, 'pub/multi', 'v1', undefined, alice);
  const image = await pushImage(one.url, 'pub/img', 'latest', { labels: { team: 'ui' } }, alice);
  const sig = await pushArtifact(one.url, 'pub/img', image, 'application/example.sig', {}, alice);
  await pushImage(one.url, 'priv/hidden', 'v1', {}, alice);

  // Anonymous, on the other replica.
  const repos = await call(two.url, '/ui/api/repositories');
  t.is(repos.status, 200, repos.text);
  t.deepEqual(repos.json.items.map((r: any) => r.name), ['pub/img', 'pub/multi']);
  const multi = repos.json.items.find((r: any) => r.name === 'pub/multi');
  t.is(multi.tags, 1);
  t.is(multi.size, Object.values(index.blobs).reduce((a, b) => a + b, 0));
  t.true(Date.parse(multi.lastPush) > Date.now() - 10 * 60_000, 'last push from S3 LastModified');

  const tags = await call(two.url, '/ui/api/repositories/pub/multi/tags');
  t.deepEqual(tags.json.items[0].platforms.map((p: any) => p.architecture), ['amd64', 'arm64']);
  const m = await call(two.url, '/ui/api/repositories/pub/img/manifests/latest');
  t.is(m.status, 200, m.text);
  t.deepEqual(m.json.config.labels, { team: 'ui' });
  t.deepEqual(m.json.referrers.map((r: any) => r.digest), [sig.digest]);
  t.is((await call(two.url, '/ui/api/repositories/priv/hidden/tags')).status, 401);

  // Logged in on one replica, recognised by the other.
  const cookie = await uiLogin(one.url, 'alice', 'alice-pw');
  t.is((await call(two.url, '/ui/api/session', { headers: { Cookie: cookie } })).json.user, 'alice');
  const all = await call(two.url, '/ui/api/repositories', { headers: { Cookie: cookie } });
  t.deepEqual(all.json.items.map((r: any) => r.name), ['priv/hidden', 'pub/img', 'pub/multi']);
});
