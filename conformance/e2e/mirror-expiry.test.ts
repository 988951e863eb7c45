/**
 * Mirror TTL expiry end to end: skopeo pulls two images through a Wharf mirror (upstream: a Wharf requiring Bearer
 * token auth) and pushes one into a local namespace; the storage is then aged by two days, one image's last-pull
 * records are dated two days back while the other's keep their pull time, and the compiled `wharf garbage-collect`
 * runs with the mirror's config (ttl 24h) while the mirror keeps serving. The expired image and its blobs go, the
 * recent and local ones stay, and pulling the expired image again fetches it from the upstream.
 */
import test from 'ava';
import { existsSync, readdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { ageAll, runWharf, type CliRun } from '../../testing/gc-helpers.js';
import { startWharf, type RunningWharf } from '../../testing/harness.js';
import { allBlobs, generateImage, writeOciLayout, type Image } from '../../testing/e2e/image.js';
import { tempDir } from '../../testing/e2e/target.js';
import { waitFor } from '../../testing/helpers.js';
import { UPSTREAM_USERS, pushUpstream, skopeo, startTokenUpstream, upstreamBlobGets } from '../../testing/e2e/upstream.js';

const DAY = 24 * 3_600_000;

let work: { path: string; remove: () => Promise<void> };
let upstream: RunningWharf;
let mirror: RunningWharf;
let gcConfig: string;

test.before(async () => {
  work = await tempDir('wharf-e2e-expiry-');
  upstream = await startTokenUpstream(work.path);
  const proxy = { remoteurl: upstream.url, username: 'puller', password: UPSTREAM_USERS.puller, ttl: '24h', localnamespaces: ['mine'] };
  mirror = await startWharf({ config: { proxy } });
  gcConfig = join(work.path, 'gc.yml');
  await writeFile(gcConfig, stringify({ version: '0.1', storage: { filesystem: { rootdirectory: mirror.rootDirectory } }, proxy }));
});

test.after.always(async () => {
  await Promise.all([upstream?.stop(), mirror?.stop()]);
  await work?.remove();
});

const v2 = () => join(mirror.rootDirectory, 'docker/registry/v2');
const digestsOf = (image: Image) => [image.manifest.digest, image.config.digest, ...image.layers.map((l) => l.blob.digest)];
const blobStored = (digest: string) => existsSync(join(v2(), 'blobs/sha256', digest.slice(7, 9), digest.slice(7), 'data'));
const record = (repository: string, digest: string) => join(v2(), '_wharf/proxy/lastpull', repository, 'sha256', digest.slice(7));

async function layoutOf(image: Image): Promise<string> {
  const dir = join(work.path, `layout-${image.manifest.digest.slice(7, 19)}`);
  await writeOciLayout(dir, [{ tag: 'img', target: image.manifest }], allBlobs(image));
  return dir;
}

async function pull(ref: string) {
  return skopeo('copy', '--src-tls-verify=false', `docker://${mirror.host}/${ref}`, `oci:${join(work.path, `pulled-${ref.replace(/[/:]/g, '-')}-${Date.now()}`)}:x`);
}

function garbageCollect(...args: string[]): Promise<CliRun> {
  return runWharf(['garbage-collect', gcConfig, ...args]);
}

test('the GC expires what was not pulled within the TTL; recent and local content stays; a re-pull fetches again', async (t) => {
  const old = generateImage({ layerCount: 2, firstLayerBytes: 64 * 1024 });
  const recent = generateImage({ layerCount: 1, firstLayerBytes: 64 * 1024 });
  const local = generateImage({ layerCount: 1, firstLayerBytes: 64 * 1024 });
  await pushUpstream(upstream, await layoutOf(old), 'img', 'team/old:1');
  await pushUpstream(upstream, await layoutOf(recent), 'img', 'team/recent:1');
  for (const ref of ['team/old:1', 'team/recent:1']) {
    const r = await pull(ref);
    t.is(r.code, 0, r.stderr);
  }
  const pushed = await skopeo('copy', '--dest-tls-verify=false', `oci:${await layoutOf(local)}:img`, `docker://${mirror.host}/mine/app:1`);
  t.is(pushed.code, 0, pushed.stderr);
  await waitFor('the last-pull records', async () =>
    [...digestsOf(old).map((d) => record('team/old', d)), ...digestsOf(recent).map((d) => record('team/recent', d))].every(existsSync) ? true : undefined);

  // Two days pass; team/old was last pulled then, team/recent keeps today's pull time.
  await ageAll(mirror.rootDirectory, 2 * DAY);
  const then = new Date(Date.now() - 2 * DAY).toISOString();
  for (const d of digestsOf(old)) await writeFile(record('team/old', d), then);

  const dry = await garbageCollect('--dry-run');
  t.is(dry.code, 0, dry.stderr);
  t.regex(dry.stdout, /would delete tag team\/old:1/);
  t.regex(dry.stdout, /mirror TTL: 1 tags and 1 manifests would expire/);
  t.notRegex(dry.stdout, /team\/recent|mine\/app/);
  t.true(digestsOf(old).every(blobStored), 'a dry run deletes nothing');

  const run = await garbageCollect();
  t.is(run.code, 0, run.stderr);
  t.regex(run.stdout, /mirror TTL: 1 tags and 1 manifests expired/);
  for (const d of digestsOf(old)) t.false(blobStored(d), `${d} of the expired image is deleted`);
  t.false(existsSync(join(v2(), 'repositories/team/old')));
  t.false(existsSync(join(v2(), '_wharf/proxy/lastpull/team/old')), 'its last-pull records are gone');
  for (const d of [...digestsOf(recent), ...digestsOf(local)]) t.true(blobStored(d));
  t.deepEqual(readdirSync(join(v2(), 'repositories/team')), ['recent']);
  const localPull = await pull('mine/app:1');
  t.is(localPull.code, 0, localPull.stderr);

  // The expired image is fetched from the upstream again on its next pull.
  const before = upstreamBlobGets(upstream, 'team/old');
  const again = await pull('team/old:1');
  t.is(again.code, 0, again.stderr);
  t.is(upstreamBlobGets(upstream, 'team/old'), before + 1 + old.layers.length, 'config and layers fetched again');
  t.true(digestsOf(old).every(blobStored));
});
