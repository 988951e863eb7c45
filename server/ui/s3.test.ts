/**
 * The web UI's API on the S3 driver (a real Ceph RADOS Gateway, testing/s3-test-server.ts), with two replicas
 * sharing the bucket: the repository listing, tags and a manifest view read from S3, and a login made on one
 * replica is accepted by the other (the session key is kept in storage). The same, seen in headless Chromium.
 */
import test from 'ava';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { createHash } from 'node:crypto';
import pLimit from 'p-limit';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startWharf, writeHtpasswd, type RunningWharf } from '../../testing/harness.js';
import { chromium } from 'playwright-core';
import { startS3TestServer, type S3TestServer } from '../../testing/s3-test-server.js';
import { call, pushArtifact, pushImage, pushIndex, putManifest, uiLogin, type Pushed } from '../../testing/ui-fixtures.js';
import { sample, scrape } from '../../testing/metrics.js';
import { LISTED_KEYS_PER_TAG } from './api.js';

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
    // Metrics: the last test counts the storage requests of a page view.
    http: { debug: { addr: '127.0.0.1:0', prometheus: { enabled: true } } },
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

test.serial('s3: repositories, tags and a manifest with its referrers, read from S3; a login works on every replica', async (t) => {
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

test.serial('s3, in Chromium: the list, a repository and an image with its referrer; a login on one replica shows the private one', async (t) => {
  const image = await pushImage(one.url, 'pub/browser', 'v2', { labels: { team: 'browser-ui' } }, alice);
  await pushArtifact(one.url, 'pub/browser', image, 'application/example.sbom', {}, alice);
  await pushImage(one.url, 'priv/seen-by-alice', 'v1', {}, alice);
  const browser = await chromium.launch({ executablePath: process.env.WHARF_CHROMIUM ?? '/usr/bin/chromium', headless: true });
  t.teardown(() => browser.close());
  const page = await (await browser.newContext()).newPage();
  page.setDefaultTimeout(15_000);
  const requests: string[] = [];
  page.on('request', (r) => requests.push(r.url()));

  // Anonymous, on the replica that did not take the pushes: everything is read from S3.
  await page.goto(`${two.url}/`);
  await page.getByRole('link', { name: 'pub/browser' }).waitFor();
  t.is(await page.getByRole('link', { name: 'priv/seen-by-alice' }).count(), 0, 'a private repository is not listed');
  await page.getByRole('link', { name: 'pub/browser' }).click();
  await page.locator('tr[data-tag="v2"]').waitFor();
  await page.goto(`${two.url}/ui/r/pub/browser/manifest/v2`);
  await page.getByText('browser-ui').waitFor();
  await page.getByText('application/example.sbom').first().waitFor();
  t.true(await page.getByText('browser-ui').isVisible(), 'the label is shown');
  t.true(await page.getByRole('heading', { name: 'Referrers' }).isVisible(), 'and the referrers, by artifact type');

  // Logged in through the page of one replica; the other one's page knows the session.
  await page.goto(`${one.url}/`);
  await page.getByRole('link', { name: 'Log in' }).first().click();
  await page.getByLabel('User name').fill('alice');
  await page.getByLabel('Password').fill('alice-pw');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('link', { name: 'priv/seen-by-alice' }).waitFor();
  const cookies = await page.context().cookies(one.url);
  // Same host, another port: the browser sends the cookie there too (cookies are not per port), as behind one name.
  await page.goto(`${two.url}/`);
  await page.getByRole('link', { name: 'priv/seen-by-alice' }).waitFor();
  t.true(cookies.some((c) => c.name === 'wharf_session' && c.httpOnly));
  const origins = new Set(requests.map((u) => new URL(u).origin));
  t.deepEqual([...origins].sort(), [new URL(one.url).origin, new URL(two.url).origin].sort(), 'no other origin');
});

/**
 * Storage requests of `w` so far that the UI's pages make per tag: link reads (`getContentWithInfo`, which nothing
 * in the background makes), stats and listings.
 */
async function requests(w: RunningWharf): Promise<Record<string, number>> {
  const text = await scrape(w);
  const count = (operation: string) => sample(text, 'wharf_storage_operation_duration_seconds_count', { driver: 's3', operation }) ?? 0;
  return { links: count('getContentWithInfo'), stat: count('stat'), listFiles: count('listFiles') };
}

/** What `view` costs `w` in those requests. */
async function cost(w: RunningWharf, view: () => Promise<unknown>): Promise<Record<string, number>> {
  const before = await requests(w);
  await view();
  const after = await requests(w);
  return Object.fromEntries(Object.keys(after).map((k) => [k, after[k]! - before[k]!]));
}

const uniqueSize = (images: Pushed[]) => Object.values(Object.assign({}, ...images.map((i) => i.blobs)) as Record<string, number>).reduce((a, b) => a + b, 0);

test.serial('s3: a page lists each repository\'s tags in one listing and reads only the links that changed, on any replica', async (t) => {
  const images: Record<string, Pushed> = {};
  for (const tag of ['a', 'b', 'c', 'd']) images[tag] = await pushImage(one.url, 'pub/many', tag, { layers: [300 + tag.charCodeAt(0)] }, alice);
  const view = () => call(two.url, '/ui/api/repositories?q=pub/many');
  const item = async () => (await view()).json.items[0];

  // The first view on this replica reads each link once; the next ones none: the listing names the same versions.
  t.is((await item()).size, uniqueSize(Object.values(images)));
  t.deepEqual(await cost(two, view), { links: 0, stat: 0, listFiles: 1 });

  // A tag moved on the other replica (to a manifest this one has summarised): seen at the next view, by reading that
  // link alone.
  const manifest = await fetch(`${one.url}/v2/pub/many/manifests/a`, { headers: { ...alice, Accept: images.a!.mediaType } });
  await putManifest(one.url, 'pub/many', 'b', Buffer.from(await manifest.arrayBuffer()), images.a!.mediaType, alice);
  images.b = images.a!;
  let seen: any;
  t.deepEqual(await cost(two, async () => (seen = await item())), { links: 1, stat: 0, listFiles: 1 });
  t.is(seen.tags, 4);
  t.is(seen.size, uniqueSize(Object.values(images)));

  // Newest first: the times come from the same listing, no request per tag (the one stat asks whether the
  // repository exists).
  let tags: any;
  t.deepEqual(await cost(two, async () => (tags = await call(two.url, '/ui/api/repositories/pub/many/tags?sort=-pushed'))), { links: 0, stat: 1, listFiles: 1 });
  t.is(tags.status, 200, tags.text);
  const items = tags.json.items as { tag: string; digest: string; lastPush: string }[];
  t.deepEqual(items.map((i) => i.tag).sort(), ['a', 'b', 'c', 'd']);
  const times = items.map((i) => Date.parse(i.lastPush));
  t.deepEqual(times, [...times].sort((x, y) => y - x), 'newest first (S3 keeps times to the second)');
  t.is(Date.parse(items.find((i) => i.tag === 'b')!.lastPush), times[0], 'the tag moved last is among the newest');
  t.is(items.find((i) => i.tag === 'b')!.digest, images.b!.digest);
});

test.serial('s3: a repository whose tags hold long histories is read link by link, not listed past 1,000 keys a tag', async (t) => {
  const image = await pushImage(one.url, 'pub/history', 'latest', {}, alice);
  // The index of the digests `latest` held before: what a tag moved by every build of a CI gathers.
  const client = s3.client();
  const index = 'ui/docker/registry/v2/repositories/pub/history/_manifests/tags/latest/index/sha256/';
  const limit = pLimit(32);
  await Promise.all(Array.from({ length: LISTED_KEYS_PER_TAG }, (_, i) => limit(async () => {
    const hex = createHash('sha256').update(`build ${i}`).digest('hex');
    await client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: `${index}${hex}/link`, Body: `sha256:${hex}` }));
  })));
  const view = () => call(two.url, '/ui/api/repositories?q=pub/history');
  const first = (await view()).json.items[0];
  t.is(first.tags, 1);
  t.is(first.size, uniqueSize([image]));
  // Every view gives the listing up after its first page and reads the one link instead.
  let again: any;
  t.deepEqual(await cost(two, async () => (again = (await view()).json.items[0])), { links: 1, stat: 0, listFiles: 1 });
  t.deepEqual(again, first);
  // Sorting by push time falls back to a stat of the link.
  let tags: any;
  t.deepEqual(await cost(two, async () => (tags = await call(two.url, '/ui/api/repositories/pub/history/tags?sort=-pushed'))), { links: 1, stat: 2, listFiles: 1 });
  t.deepEqual(tags.json.items.map((i: any) => [i.tag, i.digest]), [['latest', image.digest]]);
});
