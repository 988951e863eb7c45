/**
 * Retention end to end (docs/policies.md#retention): real `wharf serve` replicas over one storage (the filesystem, and
 * one shared Ceph RGW for S3), images pushed over HTTP, pulls through both replicas (one flushed at its graceful
 * stop, the other by its batch interval, WHARF_PULLS_FLUSH_MS), then the compiled `wharf retention --dry-run`
 * (lists with reasons, deletes nothing) and `wharf garbage-collect` (retention as its own phase, then the collection):
 * tags neither pulled nor kept go with their manifests and blobs, while pulled, kept, immutable and other
 * repositories' images, a kept index's children and a kept image's signature stay, and skopeo copies a kept image.
 * The last tests race pushes and re-tags against `wharf retention` (lock and live set in storage, then in Redis) and
 * check every pushed image stays complete.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { ifExists, type StorageDriver } from '../../storage-drivers/driver.js';
import { checkedDriver } from '../../storage-drivers/checked.js';
import { createDriver } from '../../storage-drivers/index.js';
import { S3Driver } from '../../storage-drivers/s3.js';
import * as layout from '../../server/registry/layout.js';
import { parseDigest } from '../../server/registry/reference.js';
import { readPulls, readPullsSince } from '../../server/policies/pulls.js';
import { ageAll, runWharf } from '../../testing/gc-helpers.js';
import { CLI_PATH, startWharf, type RunningWharf } from '../../testing/harness.js';
import { skopeo } from '../../testing/e2e/upstream.js';
import { waitFor } from '../../testing/helpers.js';
import { startRedis } from '../../testing/redis-test-server.js';
import { startS3TestServer, type S3TestServer } from '../../testing/s3-test-server.js';
import { OCI_INDEX, OCI_MANIFEST, call, pushArtifact, pushImage, pushIndex, putManifest, type Pushed } from '../../testing/ui-fixtures.js';

const DAY = 24 * 3_600_000;
const ENV = { WHARF_PULLS_FLUSH_MS: '300' };

let s3: Promise<S3TestServer> | undefined;
test.after.always(async () => {
  if (s3) await (await s3).stop();
});

const POLICIES = {
  immutabletags: [{ repositories: ['ci/**'], tags: ['rel'] }],
  retention: [{ repositories: ['ci/**'], keep: { pulledwithin: '1h', tags: ['latest'] }, untagged: { olderthan: '1s' } }],
};

interface Storage {
  section: Record<string, unknown>;
  driver: StorageDriver;
  dir: string;
  /** Set every stored time back (the filesystem only; S3 cannot, so S3 waits for `olderthan` instead). */
  age?: (ms: number) => Promise<void>;
  remove(): Promise<void>;
}

async function filesystemStorage(): Promise<Storage> {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-e2e-retention-'));
  const root = join(dir, 'data');
  return {
    section: { filesystem: { rootdirectory: root } }, dir,
    driver: createDriver({ driver: 'filesystem', rootDirectory: root }),
    age: (ms) => ageAll(root, ms),
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}

async function s3Storage(): Promise<Storage> {
  const srv = await (s3 ??= startS3TestServer());
  const root = `/retention-${randomUUID()}`;
  const raw = new S3Driver(srv.driverOptions({ rootDirectory: root }));
  const dir = await mkdtemp(join(tmpdir(), 'wharf-e2e-retention-s3-'));
  const driver = checkedDriver(raw);
  return {
    section: { s3: srv.storageConfig({ rootdirectory: root }) }, dir, driver,
    remove: async () => {
      await driver.delete('/').catch(() => {});
      raw.destroy();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function replica(t: { teardown(fn: () => Promise<unknown>): void }, storage: Storage, extra: Record<string, unknown> = {}): Promise<RunningWharf> {
  // The servers run with the same rules as the commands: they record pulls where a rule has pulledwithin.
  const w = await startWharf({ config: { storage: { ...storage.section, delete: { enabled: true } }, policies: POLICIES, ...extra }, env: ENV });
  t.teardown(() => w.stop());
  return w;
}

async function configFile(storage: Storage, extra: Record<string, unknown> = {}): Promise<string> {
  const path = join(storage.dir, 'retention.yml');
  await writeFile(path, stringify({ version: '0.1', log: { level: 'warn' }, storage: storage.section, policies: POLICIES, ...extra }));
  return path;
}

const blobStored = async (driver: StorageDriver, digest: string) => (await ifExists(driver.stat(layout.blobDataPath(parseDigest(digest))))) !== undefined;
const status = async (base: string, repo: string, ref: string, method = 'GET') =>
  (await call(base, `/v2/${repo}/manifests/${ref}`, { method, headers: { Accept: `${OCI_MANIFEST}, ${OCI_INDEX}` } })).status;
const digestsOf = (p: Pushed) => [p.digest, ...Object.keys(p.blobs)];

/** Say pulls have been recorded for 30 days (the servers' recorder marks when it began: `_wharf/pulls/_since`). */
async function recordedLongAgo(storage: Storage): Promise<void> {
  await storage.driver.putContent(layout.PULLS_SINCE_PATH, `${new Date(Date.now() - 30 * DAY).toISOString()}\n`);
}

async function scenario(t: ExecutionContext, storage: Storage): Promise<void> {
  t.teardown(() => storage.remove());
  const a = await replica(t, storage);
  const b = await replica(t, storage);
  const repo = 'ci/app';
  const pulledA = await pushImage(a.url, repo, 'pulled-a');
  const pulledB = await pushImage(a.url, repo, 'pulled-b');
  const old = await pushImage(a.url, repo, 'old');
  await pushImage(a.url, repo, 'latest');
  await pushImage(a.url, repo, 'rel');
  const multi = await pushIndex(a.url, repo, 'multi');
  const signature = await pushArtifact(a.url, repo, pulledA, 'application/vnd.example.signature');
  const orphan = await pushImage(a.url, repo, undefined);
  const other = await pushImage(a.url, 'other/app', 'v1');
  if (storage.age) await storage.age(10 * DAY);

  // Pulls: A by tag (GET); B as docker does (HEAD by tag, GET by digest) and a HEAD of the index by tag.
  t.is(await status(a.url, repo, 'pulled-a'), 200);
  t.is(await status(b.url, repo, 'pulled-b', 'HEAD'), 200);
  t.is(await status(b.url, repo, pulledB.digest), 200);
  t.is(await status(b.url, repo, 'multi', 'HEAD'), 200);
  // A writes its records at its graceful stop; B by its batch interval.
  t.is(await a.stop(), 0);
  t.true((await readPulls(storage.driver, repo)).tags.has('pulled-a'));
  await waitFor('replica B wrote its pulls', async () => {
    const pulls = await readPulls(storage.driver, repo);
    return pulls.tags.has('pulled-b') && pulls.tags.has('multi') && pulls.digests.has(pulledB.digest) ? true : undefined;
  });
  // The servers began recording pulls when they started; say it was 30 days ago (longer than pulledwithin), or
  // retention would keep every tag nobody is known to have pulled.
  t.not(await readPullsSince(storage.driver), undefined, 'the servers marked when recording began');
  await recordedLongAgo(storage);
  const config = await configFile(storage);

  // S3 cannot be aged: wait (on the dry run's own answer) until the orphan is older than `olderthan`.
  const dry = await waitFor('the dry run lists the untagged image', async () => {
    const run = await runWharf(['retention', config, '--dry-run']);
    return run.stdout.includes(`manifest ${repo}@${orphan.digest}`) ? run : undefined;
  }, 30_000, 300);
  t.is(dry.code, 0, dry.stderr);
  t.regex(dry.stdout, /^would delete tag ci\/app:old \(policies\.retention\[0\] \(ci\/\*\*\): pushed \d+ \w+ ago; never pulled; matches none of keep\.tags\)$/m);
  t.regex(dry.stdout, new RegExp(`^would delete manifest ci/app@${old.digest} \\(policies\\.retention\\[0\\] \\(ci/\\*\\*\\): untagged once old goes`, 'm'));
  const listed = dry.stdout.split('\n').filter((l) => l.startsWith('would delete'));
  t.is(listed.length, 3, dry.stdout); // the tag `old`, its manifest, the orphan
  t.regex(dry.stdout, /retention: 1 repositories under a rule, 1 tags and 2 untagged manifests would delete/);
  // Looked at in storage: a GET or HEAD would count as a pull and keep them.
  t.truthy(await ifExists(storage.driver.stat(layout.tagCurrentLinkPath(repo, 'old'))));
  t.truthy(await ifExists(storage.driver.stat(layout.revisionLinkPath(repo, parseDigest(orphan.digest)))));

  const gc = await runWharf(['garbage-collect', config, '--grace', '0s']);
  t.is(gc.code, 0, gc.stderr);
  t.regex(gc.stdout, /retention: 1 repositories under a rule, 1 tags and 2 untagged manifests deleted/);

  t.is(await status(b.url, repo, 'old'), 404);
  t.is(await status(b.url, repo, old.digest), 404);
  t.is(await status(b.url, repo, orphan.digest), 404);
  for (const d of [...digestsOf(old), ...digestsOf(orphan)]) t.false(await blobStored(storage.driver, d), `${d} collected`);
  for (const tag of ['pulled-a', 'pulled-b', 'latest', 'rel', 'multi']) t.is(await status(b.url, repo, tag), 200, tag);
  t.is(await status(b.url, 'other/app', 'v1'), 200);
  for (const child of multi.children) t.is(await status(b.url, repo, child.digest), 200);
  const referrers = await call(b.url, `/v2/${repo}/referrers/${pulledA.digest}`);
  t.deepEqual(referrers.json.manifests.map((m: { digest: string }) => m.digest), [signature.digest]);
  for (const d of [...digestsOf(pulledA), ...digestsOf(pulledB), ...digestsOf(signature), ...digestsOf(multi), ...digestsOf(other)]) {
    t.true(await blobStored(storage.driver, d), `${d} kept`);
  }
  const copied = await skopeo('copy', '--src-tls-verify=false', `docker://${b.host}/${repo}:pulled-b`, `oci:${join(storage.dir, 'copy')}:x`);
  t.is(copied.code, 0, copied.stderr);
}

test('filesystem, two replicas: pulls on both count; dry run lists and keeps; garbage-collect drops and collects', async (t) => {
  await scenario(t, await filesystemStorage());
});

test('S3 (Ceph RGW), two replicas: the same', async (t) => {
  await scenario(t, await s3Storage());
});

async function race(t: ExecutionContext, extra: Record<string, unknown> = {}): Promise<void> {
  const storage = await filesystemStorage();
  t.teardown(() => storage.remove());
  const w = await replica(t, storage, extra);
  const repo = 'ci/race';
  // Old candidates: tags nobody pulled, and untagged images; a quiet repository shows the run did delete.
  const orphans: Pushed[] = [];
  for (let i = 0; i < 6; i++) {
    await pushImage(w.url, repo, `stale-${i}`, { layers: [200] });
    orphans.push(await pushImage(w.url, repo, undefined, { layers: [200] }));
  }
  // More untagged images, re-tagged all at once at the worst moment: when the run has just finished `ci/quiet` (the
  // repository before `ci/race`) and is about to delete `ci/race`'s untagged manifests.
  const late: { image: Pushed; bytes: string }[] = [];
  for (let i = 0; i < 12; i++) {
    const image = await pushImage(w.url, repo, undefined, { layers: [100] });
    late.push({ image, bytes: (await call(w.url, `/v2/${repo}/manifests/${image.digest}`, { headers: { Accept: OCI_MANIFEST } })).text });
  }
  await pushImage(w.url, 'ci/quiet', 'stale', { layers: [200] });
  await storage.age!(10 * DAY);
  await recordedLongAgo(storage);
  const config = await configFile(storage, extra);

  const pushed: { ref: string; image: Pushed }[] = [];
  let burst: Promise<unknown> = Promise.resolve();
  const retention = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_PATH, 'retention', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      const first = !stdout.includes('ci/quiet:stale');
      stdout += d;
      if (first && stdout.includes('ci/quiet:stale')) {
        burst = Promise.all(late.map(async ({ image, bytes }, i) => {
          await putManifest(w.url, repo, `late-${i}`, Buffer.from(bytes), OCI_MANIFEST);
          pushed.push({ ref: `late-${i}`, image });
        }));
      }
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
  let done = false;
  void retention.then(() => { done = true; });
  // While it runs (its lock wait included): new images and indexes under kept tags, old untagged images re-tagged,
  // and stale tags re-pushed to new images.
  for (let i = 0; !done; i++) {
    const image = await pushImage(w.url, repo, `latest`, { layers: [300] });
    pushed.push({ ref: 'latest', image });
    const orphan = orphans[i % orphans.length]!;
    const manifest = (await call(w.url, `/v2/${repo}/manifests/${orphan.digest}`, { headers: { Accept: OCI_MANIFEST } })).text;
    await putManifest(w.url, repo, `revived-${i}`, Buffer.from(manifest), OCI_MANIFEST);
    pushed.push({ ref: `revived-${i}`, image: orphan });
    const repushed = await pushImage(w.url, repo, `stale-${i % 6}`, { layers: [300] });
    pushed.push({ ref: `stale-${i % 6}`, image: repushed });
    const index = await pushIndex(w.url, repo, `latest`);
    pushed.push({ ref: 'latest', image: index });
  }
  const run = await retention;
  await burst;
  t.is(run.code, 0, run.stderr);
  t.true(pushed.some((p) => p.ref.startsWith('late-')), 'the late re-tags ran');
  t.regex(run.stdout, /deleted tag ci\/quiet:stale /);
  // The servers' records (in storage or Redis) reached the run: the raced repository kept its tags.
  t.regex(run.stderr, /kept ci\/race:stale-\d+: a server wrote into the repository during this run/);
  // Each re-tag and each stale tag's last push is still there and complete (`latest` names the last index).
  const last = new Map(pushed.map((p) => [p.ref, p.image]));
  for (const [ref, image] of last) {
    const got = await call(w.url, `/v2/${repo}/manifests/${ref}`, { headers: { Accept: `${OCI_MANIFEST}, ${OCI_INDEX}` } });
    t.is(got.status, 200, ref);
    t.is(got.headers['docker-content-digest'], image.digest, ref);
    for (const d of Object.keys(image.blobs)) t.true(await blobStored(storage.driver, d), `${ref} blob ${d}`);
  }
  // An index's children too (pushed by digest, untagged until the index came). Images a later push of `latest` or
  // `stale-N` replaced are untagged and may go (olderthan: 1s): that is the rule, not a loss.
  for (const image of last.values()) {
    for (const child of (image as Pushed & { children?: Pushed[] }).children ?? []) t.is(await status(w.url, repo, child.digest), 200, child.digest);
  }
}

test('pushes and re-tags racing `wharf retention` leave every pushed image complete', (t) => race(t));

test('the same with the lock and live set in Redis', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  await race(t, { redis: { addr: redis.host } });
});
