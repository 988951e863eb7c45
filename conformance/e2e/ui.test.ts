/**
 * The web UI in a real browser: Debian's headless Chromium driven by playwright-core (no browser download), against a
 * real Wharf with htpasswd users and access rules, and real images pushed over the registry API: a multi-platform
 * index, an image with labels (one of them hostile HTML), env and history, an artifact whose `subject` is that image,
 * and a private repository.
 *
 * What a person sees is checked through the page (roles, text), never through the UI's JSON API. Every page's
 * requests are recorded: none may go to another origin. With WHARF_UI_SCREENSHOTS=1 the screenshots docs/ui.md shows
 * are written to docs/images/ui-*.png; otherwise to a temporary directory.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { freePort, startWharf, writeHtpasswd, type RunningWharf } from '../../testing/harness.js';
import { runWharf, writeGcConfig } from '../../testing/gc-helpers.js';
import { pushBlob, sha256 } from '../../testing/helpers.js';

const CHROMIUM = process.env.WHARF_CHROMIUM ?? '/usr/bin/chromium';
const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '..', '..', '..');

const USERS = { alice: 'alice-ui-pw', bob: 'bob-ui-pw' };
const TITLE = 'Acme registry';
const HOSTILE_IMG = '<img src=x onerror="window.__pwned=1">';
const HOSTILE_SCRIPT = '<script>window.__pwned=2</script>';
const SBOM_TYPE = 'application/vnd.example.sbom+json';
/** alice: everything; bob: his own namespace; everyone, also anonymous: pull public/**. */
const ACCESS = {
  anonymous: ['public/**'],
  groups: { admins: ['alice'] },
  rules: [
    { groups: ['admins'], repositories: ['**'], actions: ['*'], catalog: true },
    { users: ['bob'], repositories: ['bob/**'], actions: ['pull', 'push', 'delete'] },
  ],
};

const M = {
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  index: 'application/vnd.oci.image.index.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layer: 'application/vnd.oci.image.layer.v1.tar+gzip',
};

let wharf: RunningWharf;
let browser: Browser;
let work: string;
let shots: string;
const basic = (user: keyof typeof USERS) => `Basic ${Buffer.from(`${user}:${USERS[user]}`).toString('base64')}`;

interface Pushed { digest: string; size: number }

async function putManifest(repo: string, ref: string, body: unknown, mediaType: string): Promise<Pushed> {
  const bytes = Buffer.from(JSON.stringify(body));
  const res = await fetch(`${wharf.url}/v2/${repo}/manifests/${ref}`, {
    method: 'PUT',
    body: bytes,
    headers: { 'Content-Type': mediaType, Authorization: basic('alice') },
  });
  if (res.status !== 201) throw new Error(`manifest push ${repo}:${ref} answered ${res.status}: ${await res.text()}`);
  return { digest: sha256(bytes), size: bytes.length };
}

async function blob(repo: string, bytes: Buffer, mediaType: string): Promise<{ mediaType: string; digest: string; size: number }> {
  const digest = await pushBlob(wharf.url, repo, bytes, { Authorization: basic('alice') });
  return { mediaType, digest, size: bytes.length };
}

/** An image: `layers` of the given sizes (random bytes, stored as they are), a config with these fields and history. */
async function pushImage(repo: string, tag: string, opts: {
  arch?: string; layers?: number[]; labels?: Record<string, string>; env?: string[]; history?: string[];
} = {}): Promise<Pushed> {
  const layers = [];
  for (const size of opts.layers ?? [2048]) layers.push(await blob(repo, Buffer.from(Array.from({ length: size }, () => Math.floor(Math.random() * 256))), M.layer));
  const history = (opts.history ?? layers.map((_, i) => `RUN step ${i + 1}`)).flatMap((cmd, i) => [
    { created: '2026-11-01T10:00:00Z', created_by: cmd },
    ...(i === 0 ? [{ created: '2026-11-01T10:00:01Z', created_by: 'ENV nothing=changed', empty_layer: true }] : []),
  ]);
  const config = await blob(repo, Buffer.from(JSON.stringify({
    created: '2026-11-02T12:34:56Z',
    architecture: opts.arch ?? 'amd64',
    os: 'linux',
    config: { Env: opts.env ?? ['PATH=/usr/bin'], Entrypoint: ['/bin/app'], Cmd: ['serve'], Labels: opts.labels ?? {} },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
    history,
  })), M.config);
  return putManifest(repo, tag, { schemaVersion: 2, mediaType: M.manifest, config, layers }, M.manifest);
}

test.before(async () => {
  work = await mkdtemp(join(tmpdir(), 'wharf-ui-'));
  shots = process.env.WHARF_UI_SCREENSHOTS === '1' ? join(repoRoot, 'docs', 'images') : join(work, 'shots');
  await mkdir(shots, { recursive: true });
  await writeHtpasswd(join(work, 'htpasswd'), USERS, 4);
  wharf = await startWharf({
    config: {
      ui: { title: TITLE },
      auth: {
        htpasswd: { realm: 'wharf-ui', path: join(work, 'htpasswd') },
        access: ACCESS,
      },
    },
  });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });

  // A multi-platform index, an image with labels and history, an artifact about it, a private image, and tags to delete.
  const amd = await pushImage('public/multi', 'amd64-only', { arch: 'amd64', layers: [3000, 1000] });
  const arm = await pushImage('public/multi', 'arm64-only', { arch: 'arm64', layers: [2500] });
  await putManifest('public/multi', 'latest', {
    schemaVersion: 2,
    mediaType: M.index,
    manifests: [
      { mediaType: M.manifest, ...amd, platform: { os: 'linux', architecture: 'amd64' } },
      { mediaType: M.manifest, ...arm, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
    ],
  }, M.index);
  const app = await pushImage('public/app', '1.0', {
    layers: [40_000, 8_000, 500],
    labels: { 'org.opencontainers.image.title': 'The app', evil: HOSTILE_IMG, script: HOSTILE_SCRIPT },
    env: ['PATH=/usr/local/bin:/usr/bin', 'APP_MODE=production'],
    history: ['ADD rootfs.tar.gz /', 'RUN apk add --no-cache curl', 'COPY app /bin/app'],
  });
  const empty = await blob('public/app', Buffer.from('{}'), 'application/vnd.oci.empty.v1+json');
  const sbom = await blob('public/app', Buffer.from(JSON.stringify({ spdxVersion: 'SPDX-2.3', name: 'app' })), SBOM_TYPE);
  await putManifest('public/app', sha256(Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: M.manifest, artifactType: SBOM_TYPE, config: empty, layers: [sbom],
    subject: { mediaType: M.manifest, ...app }, annotations: { 'org.opencontainers.image.created': '2026-11-03T00:00:00Z' },
  }))), {
    schemaVersion: 2, mediaType: M.manifest, artifactType: SBOM_TYPE, config: empty, layers: [sbom],
    subject: { mediaType: M.manifest, ...app }, annotations: { 'org.opencontainers.image.created': '2026-11-03T00:00:00Z' },
  }, M.manifest);
  await pushImage('private/secret', 'v1', { labels: { secret: 'the-private-label' } });
  await pushImage('public/doomed', 'a', { layers: [700] });
  await pushImage('public/doomed', 'b', { layers: [900] });
  await pushImage('public/doomed', 'c', { layers: [1100] });
});

test.after.always(async () => {
  await browser?.close();
  await wharf?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

interface Watched {
  context: BrowserContext;
  page: Page;
  /** Every URL the page requested. */
  requests: string[];
  /** Dialogs (alert/confirm/prompt) opened, console errors and uncaught errors: each a side effect to assert on. */
  dialogs: string[];
  errors: string[];
}

/** A fresh browser context (its own cookies) whose page records its requests, dialogs and errors. */
async function open(t: ExecutionContext, viewport = { width: 1200, height: 900 }): Promise<Watched> {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const w: Watched = { context, page, requests: [], dialogs: [], errors: [] };
  page.on('request', (r) => w.requests.push(r.url()));
  page.on('dialog', (d) => { w.dialogs.push(d.message()); void d.dismiss(); });
  page.on('pageerror', (e) => w.errors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') w.errors.push(m.text()); });
  t.teardown(() => context.close());
  return w;
}

/** Nothing went to another origin (the data: icon is no request to anyone). */
function assertSameOrigin(t: ExecutionContext, w: Watched, server: RunningWharf = wharf): void {
  const origin = new URL(server.url).origin;
  const foreign = w.requests.filter((u) => !u.startsWith('data:') && new URL(u).origin !== origin);
  t.deepEqual(foreign, [], 'the page requested nothing from another origin');
  t.true(w.requests.length > 0);
}

async function login(w: Watched, user: keyof typeof USERS, password: string = USERS[user]): Promise<void> {
  const { page } = w;
  await page.getByRole('link', { name: 'Log in' }).first().click();
  await page.getByLabel('User name').fill(user);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
}

const main = (page: Page) => page.locator('main');

test.serial('the repositories page: what anonymous visitors may pull, with the title, a chart, and the CSP', async (t) => {
  const w = await open(t);
  const res = await w.page.goto(`${wharf.url}/`);
  t.is(res?.status(), 200);
  const csp = res?.headers()['content-security-policy'] ?? '';
  t.regex(csp, /default-src 'none'/);
  t.regex(csp, /script-src 'self'/);
  t.regex(csp, /frame-ancestors 'none'/);
  t.is(res?.headers()['x-content-type-options'], 'nosniff');

  // The title from ui.title, in the header and the tab.
  await t.notThrowsAsync(w.page.getByRole('link', { name: TITLE, exact: true }).waitFor());
  t.is(await w.page.title(), `Repositories · ${TITLE}`);
  for (const name of ['public/app', 'public/multi', 'public/doomed']) {
    await t.notThrowsAsync(main(w.page).getByRole('link', { name, exact: true }).waitFor(), name);
  }
  t.false((await main(w.page).innerText()).includes('private/secret'), 'an anonymous visitor sees nothing of private/');
  // The storage chart: a bar per repository on the page.
  t.is(await w.page.locator('section.chart svg.bar').count(), 3);
  // Searching filters on the server, and the URL keeps it.
  await w.page.getByLabel('Name contains').fill('mul');
  await w.page.getByRole('button', { name: 'Search' }).click();
  await w.page.waitForURL(/\?q=mul$/);
  await main(w.page).getByRole('link', { name: 'public/app', exact: true }).waitFor({ state: 'detached' });
  await main(w.page).getByRole('table').getByRole('link', { name: 'public/multi', exact: true }).waitFor();
  t.deepEqual(await main(w.page).getByRole('table').getByRole('link').allInnerTexts(), ['public/multi']);
  await w.page.goto(`${wharf.url}/`);
  await main(w.page).getByRole('link', { name: 'public/app', exact: true }).waitFor();
  await w.page.screenshot({ path: join(shots, 'ui-repositories.png') });
  t.deepEqual(w.dialogs, []);
  assertSameOrigin(t, w);
});

test.serial('a repository of a multi-platform index: the tag, its kind and platforms, the pull command, then each platform', async (t) => {
  const w = await open(t);
  await w.page.goto(`${wharf.url}/`);
  await main(w.page).getByRole('link', { name: 'public/multi', exact: true }).click();
  await w.page.waitForURL(`${wharf.url}/ui/r/public/multi`);
  const row = w.page.locator('tr[data-tag="latest"]');
  await row.waitFor();
  t.regex(await row.innerText(), /index/);
  t.regex(await row.innerText(), /linux\/amd64/);
  t.regex(await row.innerText(), /linux\/arm64\/v8/);
  t.is(await row.locator('[data-command]').getAttribute('data-command'), `docker pull ${wharf.host}/public/multi:latest`);
  // Anonymous: no delete buttons.
  t.is(await w.page.getByRole('button', { name: /Delete/ }).count(), 0);
  await w.page.screenshot({ path: join(shots, 'ui-repository.png') });
  // Sorting and filtering are in the URL and done by the server.
  const tags = () => w.page.locator('tr[data-tag]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-tag')));
  t.deepEqual(await tags(), ['amd64-only', 'arm64-only', 'latest']);
  await w.page.getByLabel('Sort').selectOption('-name');
  await w.page.waitForURL(/sort=-name/);
  await w.page.waitForFunction(() => (globalThis as any).document.querySelector('tr[data-tag]')?.getAttribute('data-tag') === 'latest');
  t.deepEqual(await tags(), ['latest', 'arm64-only', 'amd64-only']);
  await w.page.getByLabel('Tag contains').fill('arm');
  await w.page.getByRole('button', { name: 'Filter' }).click();
  await w.page.waitForURL(/q=arm/);
  await w.page.locator('tr[data-tag="latest"]').waitFor({ state: 'detached' });
  await w.page.locator('tr[data-tag="arm64-only"]').waitFor();
  t.deepEqual(await tags(), ['arm64-only']);
  await w.page.goto(`${wharf.url}/ui/r/public/multi`);
  await row.waitFor();

  await row.getByRole('link', { name: 'latest', exact: true }).click();
  await w.page.waitForURL(`${wharf.url}/ui/r/public/multi/manifest/latest`);
  await w.page.getByRole('heading', { name: 'Platforms' }).waitFor();
  t.is(await w.page.locator('.platform-link').count(), 2);
  // The pull commands by tag and by digest, as text.
  const commands = await w.page.locator('section code.command').allInnerTexts();
  t.true(commands.includes(`docker pull ${wharf.host}/public/multi:latest`));
  t.true(commands.some((c) => c.startsWith(`docker pull ${wharf.host}/public/multi@sha256:`)));
  await w.page.screenshot({ path: join(shots, 'ui-index.png'), fullPage: true });
  // The Copy button puts the command on the clipboard.
  await w.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: new URL(wharf.url).origin });
  await w.page.getByRole('button', { name: /Copy the pull command by tag/ }).click();
  await w.page.getByText('Copied').waitFor();
  t.is(await w.page.evaluate('navigator.clipboard.readText()'), `docker pull ${wharf.host}/public/multi:latest`);

  await w.page.getByRole('link', { name: 'linux/arm64/v8' }).click();
  await w.page.waitForURL(/\/ui\/r\/public\/multi\/manifest\/sha256:[0-9a-f]{64}$/);
  await w.page.getByRole('heading', { name: 'Layers' }).waitFor();
  t.regex(await main(w.page).innerText(), /linux\/arm64/);
  // Back returns to the index (history API), forward again to the image.
  await w.page.goBack();
  await w.page.getByRole('heading', { name: 'Platforms' }).waitFor();
  t.deepEqual(w.dialogs, []);
  t.deepEqual(w.errors, []);
  assertSameOrigin(t, w);
});

test.serial('an image: config, env, labels (a hostile one as text, running nothing), layers with history, referrers, raw JSON', async (t) => {
  const w = await open(t);
  await w.page.goto(`${wharf.url}/ui/r/public/app/manifest/1.0`);
  await w.page.getByRole('heading', { name: 'Labels' }).waitFor();
  const text = await main(w.page).innerText();
  t.true(text.includes(HOSTILE_IMG), 'the hostile label is shown literally');
  t.true(text.includes(HOSTILE_SCRIPT));
  t.true(text.includes('The app'));
  t.true(text.includes('APP_MODE=production'));
  t.true(text.includes('["/bin/app"]'));
  t.is(await main(w.page).locator('img, script, iframe').count(), 0, 'no element was made from a label');
  t.is(await w.page.evaluate('window.__pwned'), undefined);

  // Layers: one bar each, their sizes, and the history command of each (the empty_layer entry skipped).
  t.is(await w.page.locator('li.layer').count(), 3);
  t.is(await w.page.locator('li.layer svg.bar').count(), 3);
  const layers = await w.page.locator('li.layer').allInnerTexts();
  t.regex(layers[0]!, /39 KiB/);
  t.regex(layers[0]!, /ADD rootfs\.tar\.gz \//);
  t.regex(layers[1]!, /RUN apk add --no-cache curl/);
  t.regex(layers[2]!, /COPY app \/bin\/app/);

  // Referrers grouped by artifactType.
  await w.page.getByRole('heading', { name: SBOM_TYPE }).waitFor();
  await w.page.screenshot({ path: join(shots, 'ui-image.png'), fullPage: true });

  // The raw JSON on request, as text.
  t.is(await w.page.locator('pre.json').count(), 0);
  await w.page.getByRole('button', { name: 'Show manifest JSON' }).click();
  const raw = JSON.parse(await w.page.locator('pre.json').innerText());
  t.is(raw.mediaType, M.manifest);
  await w.page.getByRole('button', { name: 'Show config JSON' }).click();
  t.regex(await w.page.locator('pre.json').nth(1).innerText(), /onerror/);
  t.is(await main(w.page).locator('img, script').count(), 0);

  // The referrer opens the artifact, whose subject links back.
  await w.page.locator('ul.referrers a').first().click();
  await w.page.waitForURL(/\/manifest\/sha256:/);
  await w.page.getByText('Subject').waitFor();
  t.regex(await main(w.page).innerText(), /artifact/);
  t.true((await main(w.page).innerText()).includes(SBOM_TYPE));

  t.deepEqual(w.dialogs, [], 'no dialog was opened');
  t.deepEqual(w.errors, [], 'no script error or console error');
  t.is(await w.page.evaluate('window.__pwned'), undefined);
  assertSameOrigin(t, w);
});

test.serial('an image whose config is larger than the UI reads: said in a sentence, the layers still shown', async (t) => {
  const layer = await blob('public/big', Buffer.from('a layer of bytes'), M.layer);
  const config = await blob('public/big', Buffer.from(JSON.stringify({
    architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [layer.digest] }, padding: 'x'.repeat(4.5 * 1024 * 1024),
  })), M.config);
  await putManifest('public/big', 'v1', { schemaVersion: 2, mediaType: M.manifest, config, layers: [layer] }, M.manifest);
  const w = await open(t);
  await w.page.goto(`${wharf.url}/ui/r/public/big/manifest/v1`);
  await w.page.getByText('more than the web UI reads').waitFor();
  t.true((await main(w.page).innerText()).includes(config.digest));
  t.is(await w.page.locator('li.layer').count(), 1);
  t.is(await w.page.getByRole('button', { name: 'Show config JSON' }).count(), 0);
  t.deepEqual(w.errors, []);
});

test.serial('login, the private repository, delete a tag after a confirmation (cancel first), status, logout', async (t) => {
  const w = await open(t);
  await w.page.goto(`${wharf.url}/`);
  await main(w.page).getByRole('link', { name: 'public/app', exact: true }).waitFor();
  // A wrong password is said, and nobody is logged in.
  await login(w, 'alice', 'wrong');
  await w.page.getByRole('alert').filter({ hasText: 'wrong' }).waitFor();
  await w.page.screenshot({ path: join(shots, 'ui-login.png') });
  await w.page.getByLabel('Password').fill(USERS.alice);
  await w.page.getByRole('button', { name: 'Log in' }).click();
  await w.page.getByText('Logged in as').waitFor();
  t.regex(await w.page.locator('header').innerText(), /alice/);
  const cookies = await w.context.cookies();
  const session = cookies.find((c) => c.name === 'wharf_session');
  t.truthy(session);
  t.true(session!.httpOnly);
  t.is(session!.sameSite, 'Strict');
  await main(w.page).getByRole('link', { name: 'private/secret', exact: true }).waitFor();

  await w.page.goto(`${wharf.url}/ui/r/public/doomed`);
  const row = w.page.locator('tr[data-tag="a"]');
  await row.waitFor();
  const trigger = row.getByRole('button', { name: 'Delete the tag a' });
  await trigger.click();
  const dialog = w.page.getByRole('dialog');
  await dialog.waitFor();
  t.regex(await dialog.innerText(), /public\/doomed:a/);
  // Focus starts on Cancel; Escape closes and gives focus back; nothing was deleted.
  t.is(await w.page.evaluate('document.activeElement?.textContent'), 'Cancel');
  await w.page.screenshot({ path: join(shots, 'ui-delete.png') });
  await w.page.keyboard.press('Escape');
  await dialog.waitFor({ state: 'detached' });
  t.is(await w.page.evaluate('document.activeElement?.getAttribute("aria-label")'), 'Delete the tag a');
  t.is((await (await fetch(`${wharf.url}/v2/public/doomed/manifests/a`, { method: 'HEAD' })).status), 200);

  await trigger.click();
  await dialog.getByRole('button', { name: 'Delete tag' }).click();
  await w.page.getByRole('status').filter({ hasText: 'Deleted the tag a.' }).waitFor();
  await row.waitFor({ state: 'detached' });
  await w.page.locator('tr[data-tag="b"]').waitFor();
  t.is((await (await fetch(`${wharf.url}/v2/public/doomed/manifests/a`, { method: 'HEAD' })).status), 404);

  // A manifest is deleted from its own page, after the same confirmation; the page returns to the repository.
  await w.page.goto(`${wharf.url}/ui/r/public/doomed/manifest/c`);
  await w.page.getByRole('heading', { name: 'Layers' }).waitFor();
  await w.page.getByRole('button', { name: 'Delete manifest' }).click();
  await w.page.getByRole('dialog').getByRole('button', { name: 'Delete manifest' }).click();
  await w.page.waitForURL(`${wharf.url}/ui/r/public/doomed`);
  await w.page.locator('tr[data-tag="b"]').waitFor();
  t.is(await w.page.locator('tr[data-tag="c"]').count(), 0);
  t.is((await (await fetch(`${wharf.url}/v2/public/doomed/manifests/c`, { method: 'HEAD' })).status), 404);

  // The status page, after a garbage collection has run on the storage: its figures as the collector recorded them.
  const gc = await runWharf(['garbage-collect', await writeGcConfig(work, wharf.rootDirectory)]);
  t.is(gc.code, 0, gc.stdout + gc.stderr);
  await w.page.getByRole('link', { name: 'Status' }).click();
  await w.page.getByText('Storage driver').waitFor();
  const status = await main(w.page).innerText();
  t.regex(status, /filesystem/);
  t.regex(status, /Last run\s+\d{4}-\d\d-\d\d \d\d:\d\d UTC/);
  t.regex(status, /Result\s+succeeded/);
  t.regex(status, /Blobs removed\s+\d+/);
  await w.page.screenshot({ path: join(shots, 'ui-status.png') });

  await w.page.getByRole('button', { name: 'Log out' }).click();
  await w.page.getByRole('link', { name: 'Log in' }).waitFor();
  await main(w.page).getByRole('link', { name: 'public/app', exact: true }).waitFor();
  t.false((await main(w.page).innerText()).includes('private/secret'));
  t.falsy((await w.context.cookies()).find((c) => c.name === 'wharf_session' && c.value !== ''));
  t.deepEqual(w.dialogs, []);
  assertSameOrigin(t, w);
});

test.serial('a user without rights sees nothing of a private repository, and no delete where they may not delete', async (t) => {
  const w = await open(t);
  await w.page.goto(`${wharf.url}/`);
  await login(w, 'bob');
  await w.page.getByText('Logged in as').waitFor();
  await main(w.page).getByRole('link', { name: 'public/app', exact: true }).waitFor();
  t.false((await main(w.page).innerText()).includes('private/secret'));

  // The private repository's own URLs show a refusal and none of its content.
  for (const path of ['/ui/r/private/secret', '/ui/r/private/secret/manifest/v1']) {
    await w.page.goto(`${wharf.url}${path}`);
    await w.page.getByRole('alert').waitFor();
    const text = await main(w.page).innerText();
    t.false(text.includes('the-private-label') || text.includes('sha256:') || text.includes('Layers'), path);
  }

  // bob may pull but not delete in public/: no delete is offered, on the tags or on a manifest's page.
  await w.page.goto(`${wharf.url}/ui/r/public/doomed`);
  await w.page.locator('tr[data-tag="b"]').waitFor();
  t.is(await w.page.getByRole('button', { name: /Delete/ }).count(), 0, 'no delete on the tags');
  await w.page.goto(`${wharf.url}/ui/r/public/doomed/manifest/b`);
  await w.page.getByRole('heading', { name: /Pull/ }).waitFor();
  t.is(await w.page.getByRole('button', { name: /Delete/ }).count(), 0, 'no delete on the manifest');
  t.is((await (await fetch(`${wharf.url}/v2/public/doomed/manifests/b`, { method: 'HEAD' })).status), 200);
  t.deepEqual(w.dialogs, []);
  assertSameOrigin(t, w);
});

test.serial('with the built-in token server: the same login form, the same rules', async (t) => {
  // A second Wharf on the same storage, in token mode with Wharf's own token server and the same users and rules.
  const port = await freePort();
  const tokenWharf = await startWharf({
    rootDirectory: wharf.rootDirectory,
    config: {
      http: { addr: `127.0.0.1:${port}` },
      auth: {
        token: { realm: `http://127.0.0.1:${port}/auth/token`, service: 'wharf-ui', issuer: 'wharf-ui-issuer' },
        tokenserver: { key: join(work, 'token.key'), certificate: join(work, 'token.crt'), htpasswd: join(work, 'htpasswd') },
        access: ACCESS,
      },
    },
  });
  t.teardown(() => tokenWharf.stop());
  const w = await open(t);
  await w.page.goto(`${tokenWharf.url}/`);
  await main(w.page).getByRole('link', { name: 'public/app', exact: true }).waitFor();
  t.false((await main(w.page).innerText()).includes('private/secret'));
  await login(w, 'alice');
  await w.page.getByText('Logged in as').waitFor();
  await main(w.page).getByRole('link', { name: 'private/secret', exact: true }).click();
  await w.page.locator('tr[data-tag="v1"]').waitFor();
  await w.page.locator('tr[data-tag="v1"]').getByRole('link', { name: 'v1', exact: true }).click();
  await w.page.getByRole('heading', { name: 'Labels' }).waitFor();
  t.true((await main(w.page).innerText()).includes('the-private-label'));
  // The session ends (here: the cookie is gone) while the page is open: the next refusal puts "Log in" back.
  await w.context.clearCookies();
  await w.page.evaluate("history.pushState(null, '', '/ui/r/private/secret'); dispatchEvent(new PopStateEvent('popstate'))");
  await w.page.getByRole('alert').filter({ hasText: 'Log in to see this repository' }).waitFor();
  await w.page.locator('header').getByRole('link', { name: 'Log in' }).waitFor();
  t.is(await w.page.getByText('Logged in as').count(), 0);
  assertSameOrigin(t, w, tokenWharf);
});

test.serial('without auth: everyone browses everything and is offered delete, and there is no login', async (t) => {
  const open_ = await startWharf({ rootDirectory: wharf.rootDirectory });
  t.teardown(() => open_.stop());
  const w = await open(t);
  await w.page.goto(`${open_.url}/`);
  await main(w.page).getByRole('link', { name: 'private/secret', exact: true }).waitFor();
  t.is(await w.page.getByRole('link', { name: 'Log in' }).count(), 0);
  await w.page.goto(`${open_.url}/ui/r/public/doomed`);
  await w.page.locator('tr[data-tag="b"]').waitFor();
  t.is(await w.page.getByRole('button', { name: 'Delete the tag b' }).count(), 1);
  await w.page.goto(`${open_.url}/ui/login`);
  await w.page.getByText('This registry has no users').waitFor();
  assertSameOrigin(t, w, open_);
});

test.serial('at phone width (375 px) the pages fit the screen, and the keyboard reaches every action', async (t) => {
  const w = await open(t, { width: 375, height: 800 });
  await w.page.goto(`${wharf.url}/ui/r/public/multi`);
  await w.page.locator('tr[data-tag="latest"]').waitFor();
  const overflow = () => w.page.evaluate('document.documentElement.scrollWidth - document.documentElement.clientWidth');
  t.is(await overflow(), 0, 'no horizontal scrolling on a repository');
  await w.page.screenshot({ path: join(shots, 'ui-phone.png'), fullPage: true });
  await w.page.goto(`${wharf.url}/ui/r/public/app/manifest/1.0`);
  await w.page.getByRole('heading', { name: 'Layers' }).waitFor();
  t.is(await overflow(), 0, 'no horizontal scrolling on an image');

  // Keyboard: the skip link comes first, then the header's links; Enter on a link navigates.
  await w.page.keyboard.press('Tab');
  t.is(await w.page.evaluate('document.activeElement?.textContent'), 'Skip to content');
  await w.page.keyboard.press('Tab');
  await w.page.keyboard.press('Tab');
  t.is(await w.page.evaluate('document.activeElement?.textContent'), 'Repositories');
  await w.page.keyboard.press('Enter');
  await w.page.waitForURL(`${wharf.url}/`);
  await main(w.page).getByRole('link', { name: 'public/app', exact: true }).waitFor();
  t.is(await w.page.evaluate('document.activeElement?.tagName'), 'H1', 'focus moves to the new view');
  assertSameOrigin(t, w);
});

test.serial('the assets: hashed names with a long cache, index.html never cached, no path outside the build', async (t) => {
  const page = await fetch(`${wharf.url}/ui/r/public/app`);
  t.is(page.status, 200);
  t.regex(page.headers.get('content-type') ?? '', /^text\/html/);
  t.is(page.headers.get('cache-control'), 'no-store');
  const html = await page.text();
  t.false(/<script>|<style>| style=/.test(html), 'no inline script or style');
  const js = /src="(\/ui\/assets\/app-[A-Z0-9]+\.js)"/.exec(html)?.[1];
  const css = /href="(\/ui\/assets\/app-[A-Z0-9]+\.css)"/.exec(html)?.[1];
  t.truthy(js);
  t.truthy(css);
  for (const [path, type] of [[js!, /^text\/javascript/], [css!, /^text\/css/]] as const) {
    const res = await fetch(`${wharf.url}${path}`);
    t.is(res.status, 200);
    t.regex(res.headers.get('content-type') ?? '', type);
    t.regex(res.headers.get('cache-control') ?? '', /max-age=31536000/);
    t.truthy(res.headers.get('content-security-policy'));
    await res.arrayBuffer();
  }
  for (const path of ['/ui/assets/..%2F..%2Fpackage.json', '/ui/assets/%2e%2e/%2e%2e/package.json', '/ui/assets/../index.html',
    '/ui/assets/.', '/ui/assets/build.json', '/ui/assets/app.js']) {
    const res = await fetch(`${wharf.url}${path}`);
    t.is(res.status, 404, path);
    t.false((await res.text()).includes('"name": "wharf"'), path);
  }
});

test.serial('paging: a page of 50 repositories, the next page from the cursor in the URL, and back to the first', async (t) => {
  // Last, since it adds repositories the other tests' lists would see.
  await Promise.all(Array.from({ length: 50 }, (_, i) => pushImage(`public/page-${String(i).padStart(2, '0')}`, 'v1', { layers: [100] })));
  const w = await open(t);
  await w.page.goto(`${wharf.url}/`);
  await main(w.page).getByRole('link', { name: 'public/app', exact: true }).waitFor();
  const names = () => main(w.page).getByRole('table').getByRole('link').allInnerTexts();
  const first = await names();
  t.is(first.length, 50);
  t.is(first[0], 'public/app');
  await w.page.getByRole('link', { name: 'Next page' }).click();
  await w.page.waitForURL(/\?next=/);
  await main(w.page).getByRole('link', { name: 'public/app', exact: true }).waitFor({ state: 'detached' });
  await main(w.page).getByRole('link', { name: 'public/page-49', exact: true }).waitFor();
  const second = await names();
  t.deepEqual([...first, ...second].sort(), [...new Set([...first, ...second])].sort(), 'no repository on both pages');
  t.is(first.length + second.length, 54);
  t.is(await w.page.getByRole('link', { name: 'Next page' }).count(), 0);
  await w.page.getByRole('link', { name: 'First page' }).click();
  await main(w.page).getByRole('link', { name: 'public/app', exact: true }).waitFor();
  assertSameOrigin(t, w);
});

test('the page\'s source type-checks (esbuild bundles it without checking; tsc checks it with the DOM types)', async (t) => {
  const tsc = join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc');
  const result = await new Promise<{ code: number | null; out: string }>((done) => {
    const child = spawn(process.execPath, [tsc, '-p', join(repoRoot, 'server', 'ui', 'web'), '--noEmit'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { out += d; });
    child.once('exit', (code) => done({ code, out }));
  });
  t.is(result.code, 0, result.out);
});
