/**
 * Manifest validation (issue #17) against real `wharf serve` processes on the filesystem and on S3 (one throw-away
 * Ceph RADOS Gateway for the file): foreign-layer URLs (`validation.manifests.urls`) and sparse indexes
 * (`validation.manifests.indexes`), with what must cope with a sparse index (pulls, referrers, the web UI, the
 * garbage collector, DELETE), the conformance suite's sparse-index checks, a SIGHUP reload, and skopeo pushing an
 * index without all its platforms, and two replicas racing the garbage collector.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify, parse } from 'yaml';
import { startS3TestServer, type S3TestServer } from '../../testing/s3-test-server.js';
import { startWharf, type RunningWharf } from '../../testing/harness.js';
import { pushBlob, sha256, waitFor } from '../../testing/helpers.js';
import { call, pushArtifact, pushImage, OCI_INDEX, OCI_MANIFEST, OCI_CONFIG, type Pushed } from '../../testing/ui-fixtures.js';
import { configFileFor, runWharf } from '../../testing/gc-helpers.js';
import { allBlobs, generateMultiArch, writeOciLayout } from '../../testing/e2e/image.js';
import { run } from '../../testing/e2e/target.js';
import { runSuite } from '../suite.js';

const UI = { 'X-Wharf-UI': '1' };
const ALLOW = ['^https?://([^/]+\\.)*example\\.com/'];
const DENY = ['^https?://internal\\.example\\.com/'];

let s3: S3TestServer;
test.before(async (t) => {
  t.timeout(180_000);
  s3 = await startS3TestServer();
});
test.after.always(async () => {
  await s3?.stop();
});

let roots = 0;
/** The storage section for a backend: the harness's filesystem default, or a fresh root in the shared bucket. */
function storageFor(backend: 'filesystem' | 's3'): Record<string, unknown> | undefined {
  return backend === 's3' ? { s3: s3.storageConfig({ rootdirectory: `/validation-${process.pid}-${roots++}` }), redirect: { disable: true } } : undefined;
}

async function wharfWith(t: ExecutionContext, backend: 'filesystem' | 's3', platforms: 'all' | 'none' | 'list', extra: Record<string, unknown> = {}): Promise<RunningWharf> {
  const storage = storageFor(backend);
  const wharf = await startWharf({
    startTimeoutMs: 120_000,
    config: {
      ...(storage ? { storage: { ...storage, delete: { enabled: true } } } : {}),
      validation: { manifests: { urls: { allow: ALLOW, deny: DENY }, indexes: { platforms, ...extra } } },
    },
  });
  t.teardown(() => wharf.stop());
  return wharf;
}

/** An index over `present` (linux/amd64) and a linux/arm64 child nobody pushed. */
function sparseIndex(present: Pushed): { body: Buffer; digest: string; absent: string } {
  const absent = sha256(randomBytes(64));
  const body = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: [
      { mediaType: present.mediaType, digest: present.digest, size: present.size, platform: { os: 'linux', architecture: 'amd64' } },
      { mediaType: OCI_MANIFEST, digest: absent, size: 1234, platform: { os: 'linux', architecture: 'arm64' } },
    ],
  }));
  return { body, digest: sha256(body), absent };
}

function put(base: string, repo: string, ref: string, body: Buffer, mediaType: string) {
  return call(base, `/v2/${repo}/manifests/${ref}`, { method: 'PUT', headers: { 'Content-Type': mediaType }, body: body as unknown as string });
}

/** An image manifest whose one layer is a non-distributable layer (never pushed) carrying `url`. */
async function foreignImage(base: string, repo: string, url: string): Promise<Buffer> {
  const config = Buffer.from(JSON.stringify({ os: 'windows', architecture: 'amd64', rootfs: { type: 'layers', diff_ids: [] } }));
  const configDigest = await pushBlob(base, repo, config);
  return Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: OCI_CONFIG, digest: configDigest, size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip', digest: sha256(randomBytes(32)), size: 5000, urls: [url] }],
  }));
}

for (const backend of ['filesystem', 's3'] as const) {
  test(`${backend}: foreign-layer URLs are checked against allow and deny on push`, async (t) => {
    const wharf = await wharfWith(t, backend, 'all');
    const repo = 'win/base';
    const denied = await put(wharf.url, repo, 'denied', await foreignImage(wharf.url, repo, 'https://internal.example.com/base.tar.gz'), OCI_MANIFEST);
    t.is(denied.status, 400);
    t.is(denied.json.errors[0].code, 'MANIFEST_INVALID');
    t.regex(denied.json.errors[0].message, /URL "https:\/\/internal\.example\.com\/base\.tar\.gz" is denied/);
    t.is(denied.json.errors[0].detail.url, 'https://internal.example.com/base.tar.gz');
    const elsewhere = await put(wharf.url, repo, 'elsewhere', await foreignImage(wharf.url, repo, 'https://cdn.example.org/base.tar.gz'), OCI_MANIFEST);
    t.is(elsewhere.status, 400);
    t.regex(elsewhere.json.errors[0].message, /matches no validation\.manifests\.urls\.allow expression/);
    t.is((await call(wharf.url, `/v2/${repo}/manifests/denied`)).status, 404, 'nothing was stored for the refused push');

    // Allowed: accepted although the foreign layer's blob was never pushed, and served as pushed.
    const allowed = await foreignImage(wharf.url, repo, 'https://cdn.example.com/base.tar.gz');
    t.is((await put(wharf.url, repo, 'allowed', allowed, OCI_MANIFEST)).status, 201);
    const got = await fetch(`${wharf.url}/v2/${repo}/manifests/allowed`, { headers: { Accept: OCI_MANIFEST } });
    t.deepEqual(Buffer.from(await got.arrayBuffer()), allowed);
  });

  test(`${backend}: a sparse index under platforms: none is pulled, referred to, shown by the UI, kept whole by the GC and deleted`, async (t) => {
    const wharf = await wharfWith(t, backend, 'none');
    const repo = 'multi/app';
    const present = await pushImage(wharf.url, repo, undefined);
    const sparse = sparseIndex(present);
    t.is((await put(wharf.url, repo, 'v1', sparse.body, OCI_INDEX)).status, 201);

    for (const ref of ['v1', sparse.digest]) {
      const got = await fetch(`${wharf.url}/v2/${repo}/manifests/${ref}`, { headers: { Accept: OCI_INDEX } });
      t.is(got.status, 200);
      t.is(got.headers.get('docker-content-digest'), sparse.digest);
      t.deepEqual(Buffer.from(await got.arrayBuffer()), sparse.body);
    }
    t.is((await call(wharf.url, `/v2/${repo}/manifests/${sparse.absent}`)).json.errors[0].code, 'MANIFEST_UNKNOWN');

    // Referrers of the sparse index.
    const sig = await pushArtifact(wharf.url, repo, { digest: sparse.digest, mediaType: OCI_INDEX, size: sparse.body.length, blobs: {} }, 'application/vnd.example.signature');
    const referrers = await call(wharf.url, `/v2/${repo}/referrers/${sparse.digest}`);
    t.is(referrers.status, 200);
    t.deepEqual(referrers.json.manifests.map((m: { digest: string }) => m.digest), [sig.digest]);

    // The web UI: the index with its absent child marked, and the tag list, never a 500.
    const view = await call(wharf.url, `/ui/api/repositories/${repo}/manifests/v1`, { headers: UI });
    t.is(view.status, 200, view.text);
    t.deepEqual(view.json.children.map((c: { digest: string; missing: boolean }) => [c.digest, c.missing]), [[present.digest, false], [sparse.absent, true]]);
    const tags = await call(wharf.url, `/ui/api/repositories/${repo}/tags`, { headers: UI });
    t.is(tags.status, 200, tags.text);
    t.is((await call(wharf.url, `/ui/api/repositories/${repo}/manifests/${sparse.absent}`, { headers: UI })).status, 404);

    // The garbage collector (untagged manifests too, no grace): the present child is reached through the sparse index
    // and keeps its blobs; the absent child is not reported as damage; an orphan blob does go.
    const orphan = await pushBlob(wharf.url, 'multi/orphan', randomBytes(300));
    const dir = await mkdtemp(join(tmpdir(), 'wharf-validation-gc-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const storage = backend === 's3' && parse(await readFile(join(wharf.rootDirectory, '..', 'config.yml'), 'utf8')).storage;
    const config = await configFileFor(storage || { filesystem: { rootdirectory: wharf.rootDirectory }, delete: { enabled: true } }, join(dir, 'gc.yml'));
    const gc = await runWharf(['garbage-collect', config, '--delete-untagged', '--grace', '0s']);
    t.is(gc.code, 0, gc.stderr + gc.stdout);
    t.notRegex(gc.stdout + gc.stderr, /have no content/);
    t.is((await call(wharf.url, `/v2/multi/orphan/blobs/${orphan}`, { method: 'HEAD' })).status, 404, 'the collector did collect');
    t.is((await call(wharf.url, `/v2/${repo}/manifests/${present.digest}`)).status, 200);
    for (const blob of Object.keys(present.blobs)) t.is((await call(wharf.url, `/v2/${repo}/blobs/${blob}`, { method: 'HEAD' })).status, 200, blob);
    t.is((await call(wharf.url, `/v2/${repo}/manifests/v1`)).status, 200);

    // DELETE of the sparse index: the index and its tag go, the present child stays.
    t.is((await call(wharf.url, `/v2/${repo}/manifests/${sparse.digest}`, { method: 'DELETE' })).status, 202);
    t.is((await call(wharf.url, `/v2/${repo}/manifests/v1`)).status, 404);
    t.is((await call(wharf.url, `/v2/${repo}/manifests/${present.digest}`)).status, 200);
  });
}

test('platforms: all refuses a sparse index with MANIFEST_BLOB_UNKNOWN, and the suite\'s sparse-index checks fail there; list requires the listed platforms only', async (t) => {
  const all = await wharfWith(t, 'filesystem', 'all');
  const present = await pushImage(all.url, 'multi/app', undefined);
  const sparse = sparseIndex(present);
  const refused = await put(all.url, 'multi/app', 'v1', sparse.body, OCI_INDEX);
  t.is(refused.status, 400);
  t.is(refused.json.errors[0].code, 'MANIFEST_BLOB_UNKNOWN');
  t.deepEqual(refused.json.errors[0].detail, { missing: [sparse.absent] });

  const results = await runSuite({ url: all.url, features: ['sparse-index'], checks: ['sparseIndexPushedByTagIsServed', 'sparseIndexPushedByDigestIsServed', 'sparseDockerManifestListIsServed', 'sparseIndexIsDeleted', 'indexWithUnknownChildIsRejected'] });
  t.deepEqual(results.map((r) => [r.check.name, r.status]).sort(), [
    ['indexWithUnknownChildIsRejected', 'skip'],
    ['sparseDockerManifestListIsServed', 'fail'],
    ['sparseIndexIsDeleted', 'fail'],
    ['sparseIndexPushedByDigestIsServed', 'fail'],
    ['sparseIndexPushedByTagIsServed', 'fail'],
  ]);
  for (const r of results.filter((r) => r.status === 'fail')) t.regex(r.message!, /MANIFEST_BLOB_UNKNOWN/, r.check.name);

  const list = await wharfWith(t, 'filesystem', 'list', { platformlist: [{ os: 'linux', architecture: 'amd64' }] });
  const child = await pushImage(list.url, 'multi/app', undefined);
  t.is((await put(list.url, 'multi/app', 'v1', sparseIndex(child).body, OCI_INDEX)).status, 201, 'arm64 is not listed: it may be absent');
  const amd64Absent = sparseIndex({ ...child, digest: sha256(randomBytes(8)) });
  const listed = await put(list.url, 'multi/app', 'v2', amd64Absent.body, OCI_INDEX);
  t.is(listed.status, 400);
  t.is(listed.json.errors[0].code, 'MANIFEST_BLOB_UNKNOWN');
});

test('SIGHUP: a changed validation.manifests applies to the next push', async (t) => {
  const wharf = await wharfWith(t, 'filesystem', 'all');
  const repo = 'multi/app';
  const present = await pushImage(wharf.url, repo, undefined);
  const sparse = sparseIndex(present);
  t.is((await put(wharf.url, repo, 'v1', sparse.body, OCI_INDEX)).json.errors[0].code, 'MANIFEST_BLOB_UNKNOWN');
  const foreign = await foreignImage(wharf.url, repo, 'https://downloads.example.net/layer.tar.gz');
  t.is((await put(wharf.url, repo, 'win', foreign, OCI_MANIFEST)).status, 400);

  const configPath = join(wharf.rootDirectory, '..', 'config.yml');
  const config = parse(await readFile(configPath, 'utf8'));
  config.validation.manifests = { urls: { allow: ['^https://downloads\\.example\\.net/'] }, indexes: { platforms: 'none' } };
  await writeFile(configPath, stringify(config));
  wharf.process.kill('SIGHUP');
  await waitFor('the sparse index accepted after SIGHUP', async () => ((await put(wharf.url, repo, 'v1', sparse.body, OCI_INDEX)).status === 201 ? true : undefined), 20_000, 50);
  t.is((await put(wharf.url, repo, 'win', foreign, OCI_MANIFEST)).status, 201, 'the new allow list is in force');
  t.is(wharf.process.exitCode, null);

  // And back: the old rules return with the next reload.
  config.validation.manifests = { indexes: { platforms: 'all' } };
  await writeFile(configPath, stringify(config));
  wharf.process.kill('SIGHUP');
  const other = sparseIndex(present);
  await waitFor('the sparse index refused after the second SIGHUP', async () => ((await put(wharf.url, repo, 'v2', other.body, OCI_INDEX)).status === 400 ? true : undefined), 20_000, 50);
  t.is((await put(wharf.url, repo, 'win2', foreign, OCI_MANIFEST)).json.errors[0].code, 'MANIFEST_INVALID');
});

test('skopeo --multi-arch=index-only with one platform pushed: accepted under platforms: none, refused clearly under all', async (t) => {
  const work = await mkdtemp(join(tmpdir(), 'wharf-validation-skopeo-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const multi = generateMultiArch();
  const layout = join(work, 'layout');
  await writeOciLayout(layout, [{ tag: 'multi', target: multi.index }, { tag: 'amd64', target: multi.images[0]!.manifest }], allBlobs(multi));
  const [none, all] = await Promise.all([wharfWith(t, 'filesystem', 'none'), wharfWith(t, 'filesystem', 'all')]);
  const skopeo = (...args: string[]) => run('skopeo', ['--insecure-policy', ...args]);

  for (const wharf of [none, all]) {
    const one = await skopeo('copy', '--dest-tls-verify=false', `oci:${layout}:amd64`, `docker://${wharf.host}/multi/app:amd64`);
    t.is(one.code, 0, one.stderr);
  }
  const sparse = await skopeo('copy', '--dest-tls-verify=false', '--multi-arch=index-only', `oci:${layout}:multi`, `docker://${none.host}/multi/app:latest`);
  t.is(sparse.code, 0, sparse.stderr);
  const raw = await skopeo('inspect', '--tls-verify=false', '--raw', `docker://${none.host}/multi/app:latest`);
  t.is(sha256(Buffer.from(raw.stdout)), multi.index.digest, 'the index is served with the bytes pushed');
  // A client pulls the platform that is there.
  const pulled = await skopeo('copy', '--src-tls-verify=false', '--override-os', 'linux', '--override-arch', 'amd64', `docker://${none.host}/multi/app:latest`, `dir:${join(work, 'pulled')}`);
  t.is(pulled.code, 0, pulled.stderr);

  const refused = await skopeo('copy', '--dest-tls-verify=false', '--multi-arch=index-only', `oci:${layout}:multi`, `docker://${all.host}/multi/app:latest`);
  t.not(refused.code, 0);
  t.regex(refused.stderr, /manifest blob unknown|MANIFEST_BLOB_UNKNOWN/i);
});

test('two replicas under platforms: list, racing the garbage collector: an accepted index never loses a listed child', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-validation-replicas-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const root = join(dir, 'data');
  const validation = { manifests: { indexes: { platforms: 'list', platformlist: [{ os: 'linux', architecture: 'amd64' }] } } };
  const [a, b] = await Promise.all([0, 1].map(() => startWharf({ rootDirectory: root, config: { validation } })));
  t.teardown(async () => { await Promise.all([a!.stop(), b!.stop()]); });
  const gcConfig = await configFileFor({ filesystem: { rootdirectory: root }, delete: { enabled: true } }, join(dir, 'gc.yml'));

  // The collector runs again and again with no grace period, deleting untagged manifests, while A pushes an untagged
  // amd64 image and B an index naming it and an arm64 child nobody pushed.
  let pushing = true;
  let collections = 0;
  const collector = (async () => {
    while (pushing) {
      const gc = await runWharf(['garbage-collect', gcConfig, '--delete-untagged', '--grace', '0s', '--quiet']);
      if (gc.code !== 0) throw new Error(`garbage-collect failed: ${gc.stderr}`);
      collections++;
    }
  })();
  const accepted: { tag: string; child: Pushed }[] = [];
  let refused = 0;
  try {
    for (let i = 0; i < 12 || (collections < 2 && i < 60); i++) {
      let child: Pushed | undefined;
      // A child whose blobs the collector took between upload and manifest is pushed again, as a client would.
      for (let attempt = 0; !child && attempt < 5; attempt++) child = await pushImage(a!.url, 'multi/app', undefined).catch(() => undefined);
      if (!child) throw new Error('the child image could not be pushed in 5 attempts');
      const answer = await put(b!.url, 'multi/app', `v${i}`, sparseIndex(child).body, OCI_INDEX);
      if (answer.status === 201) accepted.push({ tag: `v${i}`, child });
      else {
        // The listed child was collected before the check: refused, never accepted without it.
        t.is(answer.json.errors[0].code, 'MANIFEST_BLOB_UNKNOWN');
        refused++;
      }
    }
  } finally {
    pushing = false;
    await collector;
  }
  const last = await runWharf(['garbage-collect', gcConfig, '--delete-untagged', '--grace', '0s']);
  t.is(last.code, 0, last.stderr);
  t.notRegex(last.stdout + last.stderr, /have no content/);
  t.true(accepted.length > 0, `refused ${refused}`);
  for (const { tag, child } of accepted) {
    for (const replica of [a!, b!]) {
      t.is((await call(replica.url, `/v2/multi/app/manifests/${tag}`)).status, 200, tag);
      t.is((await call(replica.url, `/v2/multi/app/manifests/${child.digest}`)).status, 200, `${tag}'s amd64 child`);
    }
    for (const blob of Object.keys(child.blobs)) t.is((await call(a!.url, `/v2/multi/app/blobs/${blob}`, { method: 'HEAD' })).status, 200, `${tag}: ${blob}`);
  }
  t.log(`${accepted.length} indexes accepted, ${refused} refused, ${collections} collections during the pushes`);
});
