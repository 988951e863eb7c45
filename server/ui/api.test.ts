/**
 * The web UI's server side against real Wharf processes with real pushed images: sessions and cookies, the access
 * rules applied to every endpoint, CSRF refusals, deletes, paging and filtering, indexes, configs and referrers,
 * the status endpoint, and the UI switched off.
 */
import test from 'ava';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startWharf, writeHtpasswd, type RunningWharf } from '../../testing/harness.js';
import { pushBlob } from '../../testing/helpers.js';
import { sample, scrape } from '../../testing/metrics.js';
import { call, OCI_CONFIG, OCI_MANIFEST, pushArtifact, pushImage, pushIndex, putManifest, uiLogin, type Answer, type Pushed } from '../../testing/ui-fixtures.js';

const PASSWORDS = { alice: 'alice-pw-1', bob: 'bob-pw-2', carol: 'carol-pw-3' };
const basic = (user: keyof typeof PASSWORDS) => ({ Authorization: `Basic ${Buffer.from(`${user}:${PASSWORDS[user]}`).toString('base64')}` });
const UI = { 'X-Wharf-UI': '1' };

let dir: string;
/** htpasswd with rules: anonymous pulls public/**, bob pulls public/**, alice may do everything. */
let secured: RunningWharf;
/** No auth, deletion disabled, a title with markup. */
let open: RunningWharf;
/** ui.enabled: false. */
let off: RunningWharf;

let app: Pushed & { children: Pushed[] };
let labelled: Pushed;
let secret: Pushed;
let signature: Pushed;
let sbom: Pushed;

test.before(async (t) => {
  t.timeout(120_000);
  dir = await mkdtemp(join(tmpdir(), 'wharf-ui-'));
  await writeHtpasswd(join(dir, 'htpasswd'), PASSWORDS);
  [secured, open, off] = await Promise.all([
    startWharf({
      config: {
        http: { trustedproxies: ['127.0.0.1'] },
        auth: {
          htpasswd: { realm: 'r', path: join(dir, 'htpasswd') },
          access: {
            anonymous: ['public/**'],
            rules: [
              { users: ['alice'], repositories: ['**'], actions: ['*'], catalog: true },
              { users: ['bob'], repositories: ['public/**'], actions: ['pull'] },
            ],
          },
          throttle: { accountfailures: 3 },
        },
      },
    }),
    startWharf({
      config: {
        storage: { delete: { enabled: false } },
        ui: { title: 'Test <b>Reg</b>' },
        http: { headers: { 'X-Team': ['ui'] }, debug: { addr: '127.0.0.1:0', prometheus: { enabled: true } } },
      },
    }),
    startWharf({ config: { ui: { enabled: false } } }),
  ]);
  const a = basic('alice');
  app = await pushIndex(secured.url, 'public/app', 'v1', undefined, a);
  labelled = await pushImage(secured.url, 'public/app', 'labelled', {
    labels: { 'org.opencontainers.image.title': '<img src=x onerror=alert(1)>', maintainer: 'ops' },
    entrypoint: ['/entry'], cmd: ['serve', '--port', '80'], env: ['A=1', 'B=<script>'],
    layers: [2000, 1000, 10],
    history: [
      { created_by: 'ADD rootfs /' },
      { created_by: 'ENV A=1', empty_layer: true },
      { created_by: 'RUN make' },
      { created_by: 'LABEL x=y', empty_layer: true },
      { created_by: 'COPY app /' },
    ],
  }, a);
  signature = await pushArtifact(secured.url, 'public/app', labelled, 'application/vnd.dev.cosign.artifact.sig.v1+json', { 'dev.sigstore.cosign': 'yes' }, a);
  sbom = await pushArtifact(secured.url, 'public/app', labelled, 'application/spdx+json', {}, a);
  secret = await pushImage(secured.url, 'private/secret', 'latest', { labels: { secret: 'yes' } }, a);
});

test.after.always(async () => {
  await Promise.all([secured?.stop(), open?.stop(), off?.stop()]);
  if (dir) await rm(dir, { recursive: true, force: true });
});

const get = (w: RunningWharf, path: string, headers: Record<string, string> = {}) => call(w.url, `/ui/api${path}`, { headers });
const setCookies = (a: Answer) => ([] as string[]).concat(a.headers['set-cookie'] ?? []);

// ---- headers ----------------------------------------------------------------------------------------------------

test('every UI API answer has the UI policy, nosniff, no-referrer and no-store; errors too', async (t) => {
  for (const answer of [await get(secured, '/session'), await get(secured, '/repositories/private/secret/tags'), await get(secured, '/nope')]) {
    t.regex(String(answer.headers['content-security-policy']), /^default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;/);
    t.regex(String(answer.headers['content-security-policy']), /frame-ancestors 'none'/);
    t.is(answer.headers['x-content-type-options'], 'nosniff');
    t.is(answer.headers['referrer-policy'], 'no-referrer');
    t.is(answer.headers['cache-control'], 'no-store');
    t.regex(String(answer.headers['content-type']), /^application\/json/);
  }
  const notFound = await get(secured, '/nope');
  t.is(notFound.status, 404);
  t.is(notFound.json.errors[0].code, 'NAME_UNKNOWN');
  // http.headers reach UI answers, errors included.
  t.is((await get(open, '/session')).headers['x-team'], 'ui');
  t.is((await get(open, '/repositories?limit=0')).headers['x-team'], 'ui');
  // The API itself keeps its own policy.
  const api = await call(secured.url, '/v2/');
  t.regex(String(api.headers['content-security-policy']), /sandbox/);
});

// ---- session, login, logout ------------------------------------------------------------------------------------

test('session: anonymous on htpasswd; title, auth mode, login possible, deletes on, host from the request', async (t) => {
  const s = await get(secured, '/session');
  t.is(s.status, 200);
  t.deepEqual(s.json, { title: 'Wharf', user: null, authMode: 'htpasswd', canLogin: true, deleteEnabled: true, registryHost: secured.host });
  const o = await get(open, '/session');
  t.deepEqual(o.json, { title: 'Test <b>Reg</b>', user: null, authMode: 'none', canLogin: false, deleteEnabled: false, registryHost: open.host });
});

test('login sets an HttpOnly SameSite=Strict cookie that names the user; logout clears it', async (t) => {
  const login = await call(secured.url, '/ui/api/login', {
    method: 'POST', headers: { ...UI, 'Content-Type': 'application/json' }, body: JSON.stringify({ username: 'alice', password: PASSWORDS.alice }),
  });
  t.is(login.status, 200);
  t.deepEqual(login.json, { user: 'alice' });
  const [cookie] = setCookies(login);
  t.regex(cookie!, /^wharf_session=[A-Za-z0-9._-]+; HttpOnly; SameSite=Strict; Path=\/; Max-Age=28800$/);
  t.false(/Secure/.test(cookie!), 'no Secure flag over plain HTTP');
  t.false(login.text.includes(cookie!.split(';')[0]!.split('=')[1]!), 'the token is not in the body');
  const session = cookie!.split(';')[0]!;
  const s = await get(secured, '/session', { Cookie: session });
  t.is(s.json.user, 'alice');

  const out = await call(secured.url, '/ui/api/logout', { method: 'POST', headers: { ...UI, Cookie: session } });
  t.is(out.status, 200);
  t.regex(setCookies(out)[0]!, /^wharf_session=; HttpOnly; SameSite=Strict; Path=\/; Max-Age=0$/);
});

test('the cookie is Secure when a trusted proxy says the request came over HTTPS', async (t) => {
  const login = await call(secured.url, '/ui/api/login', {
    method: 'POST',
    headers: { ...UI, 'Content-Type': 'application/json', 'X-Forwarded-Proto': 'https', Origin: `https://${secured.host}` },
    body: JSON.stringify({ username: 'bob', password: PASSWORDS.bob }),
  });
  t.is(login.status, 200, login.text);
  t.regex(setCookies(login)[0]!, /; Secure$/);
});

test('a wrong password is 401 without a challenge; repeated failures are throttled (429) as the API does', async (t) => {
  const attempt = (password: string) => call(secured.url, '/ui/api/login', {
    method: 'POST', headers: { ...UI, 'Content-Type': 'application/json' }, body: JSON.stringify({ username: 'carol', password }),
  });
  const bad = await attempt('wrong');
  t.is(bad.status, 401);
  t.is(bad.json.errors[0].code, 'UNAUTHORIZED');
  t.is(bad.headers['www-authenticate'], undefined);
  t.deepEqual(setCookies(bad), []);
  t.false(bad.text.includes('wrong'));
  await attempt('wrong');
  await attempt('wrong');
  const locked = await attempt(PASSWORDS.carol);
  t.is(locked.status, 429);
  t.is(locked.json.errors[0].code, 'TOOMANYREQUESTS');
  // The API shares the throttle: carol is refused there too.
  const api = await call(secured.url, '/v2/public/app/tags/list', { headers: basic('carol') });
  t.is(api.status, 429);
});

test('login refuses a body that is not the expected JSON', async (t) => {
  const send = (body: string, type = 'application/json') => call(secured.url, '/ui/api/login', { method: 'POST', headers: { ...UI, 'Content-Type': type }, body });
  t.is((await send('{"username": 1}')).status, 400);
  t.is((await send('not json')).status, 400);
  t.is((await send('{"username":"a","password":"b"}', 'text/plain')).status, 400);
  t.is((await send(JSON.stringify({ username: 'a', password: 'x'.repeat(5000) }))).status, 413);
});

test('a tampered or foreign cookie is anonymous, and is cleared', async (t) => {
  const session = await uiLogin(secured.url, 'alice', PASSWORDS.alice);
  const [name, token] = session.split('=');
  const parts = token!.split('.');
  const payload = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString());
  payload.sub = 'bob';
  const forged = `${name}=${parts[0]}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.${parts[2]}`;
  const s = await get(secured, '/session', { Cookie: forged });
  t.is(s.json.user, null);
  t.regex(setCookies(s)[0]!, /^wharf_session=;.*Max-Age=0/);
  // A session of another server (its own key) is not accepted either.
  const denied = await get(secured, '/repositories/private/secret/tags', { Cookie: forged });
  t.is(denied.status, 401);
});

// ---- CSRF ---------------------------------------------------------------------------------------------------------

test('mutating requests need X-Wharf-UI: 1 and, with an Origin, this origin', async (t) => {
  const session = await uiLogin(secured.url, 'alice', PASSWORDS.alice);
  const loginBody = JSON.stringify({ username: 'alice', password: PASSWORDS.alice });
  const noHeader = await call(secured.url, '/ui/api/login', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: loginBody });
  t.is(noHeader.status, 403);
  t.is(noHeader.json.errors[0].code, 'DENIED');
  t.deepEqual(setCookies(noHeader), []);
  const foreign = await call(secured.url, '/ui/api/login', { method: 'POST', headers: { ...UI, 'Content-Type': 'application/json', Origin: 'https://evil.example' }, body: loginBody });
  t.is(foreign.status, 403);
  const same = await call(secured.url, '/ui/api/login', { method: 'POST', headers: { ...UI, 'Content-Type': 'application/json', Origin: secured.url }, body: loginBody });
  t.is(same.status, 200);

  await pushImage(secured.url, 'public/csrf', 'keep', {}, basic('alice'));
  const attempts: Record<string, string>[] = [{ Cookie: session }, { Cookie: session, ...UI, Origin: 'http://evil.example' }, { Cookie: session, 'X-Wharf-UI': 'yes' }];
  for (const headers of attempts) {
    const del = await call(secured.url, '/ui/api/repositories/public/csrf/tags/keep', { method: 'DELETE', headers });
    t.is(del.status, 403, JSON.stringify(headers));
  }
  t.is((await call(secured.url, '/v2/public/csrf/manifests/keep', { method: 'HEAD' })).status, 200, 'the tag is still there');
});

// ---- access rules in every endpoint ------------------------------------------------------------------------------

test('repositories: each caller sees exactly the repositories they may pull', async (t) => {
  const names = async (headers: Record<string, string> = {}) => ((await get(secured, '/repositories', headers)).json.items as { name: string }[]).map((r) => r.name);
  const anonymous = await names();
  t.true(anonymous.includes('public/app'));
  t.false(anonymous.some((n) => n.startsWith('private/')));
  const bob = await names({ Cookie: await uiLogin(secured.url, 'bob', PASSWORDS.bob) });
  t.false(bob.some((n) => n.startsWith('private/')));
  t.true(bob.includes('public/app'));
  const alice = await names({ Cookie: await uiLogin(secured.url, 'alice', PASSWORDS.alice) });
  t.true(alice.includes('private/secret'));
  // Filtering by name does not reveal a hidden repository either.
  const q = await get(secured, '/repositories?q=secret');
  t.deepEqual(q.json.items, []);
});

test('a user without pull rights sees nothing of a private repository in any endpoint', async (t) => {
  const bob = { Cookie: await uiLogin(secured.url, 'bob', PASSWORDS.bob) };
  for (const [who, headers, status, code] of [['anonymous', {}, 401, 'UNAUTHORIZED'], ['bob', bob, 403, 'DENIED']] as const) {
    for (const path of ['/repositories/private/secret/tags', '/repositories/private/secret/manifests/latest', `/repositories/private/secret/manifests/${secret.digest}`]) {
      const answer = await get(secured, path, headers);
      t.is(answer.status, status, `${who} ${path}`);
      t.is(answer.json.errors[0].code, code);
      t.is(answer.headers['www-authenticate'], undefined);
      t.false(answer.text.includes(secret.digest));
      t.false(answer.text.includes('secret') && answer.text.includes('yes'));
    }
    const del = await call(secured.url, '/ui/api/repositories/private/secret/tags/latest', { method: 'DELETE', headers: { ...UI, ...headers } });
    t.is(del.status, status);
  }
  // The same answers for a repository that does not exist: nothing tells them apart.
  const missing = await get(secured, '/repositories/private/nothing/tags', bob);
  t.is(missing.status, 403);
});

// ---- tags -------------------------------------------------------------------------------------------------------

test('tags: an index with its platforms and an image with created, size and kind', async (t) => {
  const tags = await get(secured, '/repositories/public/app/tags');
  t.is(tags.status, 200, tags.text);
  const byTag = Object.fromEntries((tags.json.items as any[]).map((i) => [i.tag, i]));
  t.deepEqual(Object.keys(byTag).sort(), ['labelled', 'v1']);
  t.like(byTag.v1, { digest: app.digest, kind: 'index', mediaType: 'application/vnd.oci.image.index.v1+json', artifactType: null, created: null });
  t.deepEqual(byTag.v1.platforms, [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64', variant: 'v8' }]);
  t.is(byTag.v1.size, Object.values(app.blobs).reduce((a, b) => a + b, 0));
  t.like(byTag.labelled, { digest: labelled.digest, kind: 'image', created: '2024-05-01T12:00:00.000Z' });
  t.deepEqual(byTag.labelled.platforms, [{ os: 'linux', architecture: 'amd64' }]);
  t.is(byTag.labelled.size, Object.values(labelled.blobs).reduce((a, b) => a + b, 0));
  t.true(Date.parse(byTag.labelled.lastPush) > Date.now() - 10 * 60_000);
  t.is(tags.json.next, null);
});

test('repositories: tag count, last push and unique size', async (t) => {
  const r = await get(secured, '/repositories?q=public/app');
  const item = (r.json.items as any[]).find((i) => i.name === 'public/app');
  t.is(item.tags, 2);
  const unique = { ...app.blobs, ...labelled.blobs };
  t.is(item.size, Object.values(unique).reduce((a, b) => a + b, 0));
  t.true(typeof item.lastPush === 'string' && Date.parse(item.lastPush) > 0);
});

// Serial: the storage calls it counts are those of its own page views.
test.serial('repositories: a view reads each tag link once, its time with its digest, and stats no tag', async (t) => {
  const tags = ['a', 'b', 'c', 'd', 'e'];
  for (const tag of tags) await pushImage(open.url, 'reads/five', tag);
  const reads = async () => {
    const text = await scrape(open);
    const count = (operation: string) => sample(text, 'wharf_storage_operation_duration_seconds_count', { driver: 'filesystem', operation }) ?? 0;
    // Link reads (nothing in the background makes them) and stats.
    return { links: count('getContentWithInfo'), stat: count('stat') };
  };
  const view = () => get(open, '/repositories?q=reads/five');
  const first = await view(); // reads the manifests, whose summaries are kept
  const before = await reads();
  const r = await view();
  const after = await reads();
  t.deepEqual(r.json.items, first.json.items);
  const item = (r.json.items as any[])[0];
  t.is(item.name, 'reads/five');
  t.is(item.tags, tags.length);
  // The newest link's time: the last tag pushed, to the millisecond.
  const newest = await stat(join(open.rootDirectory, 'docker/registry/v2/repositories/reads/five/_manifests/tags/e/current/link'));
  t.is(item.lastPush, newest.mtime.toISOString());
  t.deepEqual({ links: after.links - before.links, stat: after.stat - before.stat }, { links: tags.length, stat: 0 });
});

// ---- manifests ----------------------------------------------------------------------------------------------------

test('manifest: an index lists its children with platforms, each openable', async (t) => {
  const m = await get(secured, '/repositories/public/app/manifests/v1');
  t.is(m.status, 200, m.text);
  t.is(m.json.digest, app.digest);
  t.is(m.json.kind, 'index');
  t.is(m.json.config, null);
  t.deepEqual(m.json.children.map((c: any) => [c.digest, c.platform]), [
    [app.children[0]!.digest, { os: 'linux', architecture: 'amd64' }],
    [app.children[1]!.digest, { os: 'linux', architecture: 'arm64', variant: 'v8' }],
  ]);
  const child = await get(secured, `/repositories/public/app/manifests/${app.children[1]!.digest}`);
  t.is(child.status, 200);
  t.is(child.json.config.architecture, 'arm64');
  t.is(child.json.config.variant, 'v8');
});

test('manifest: an image with config, labels as given, layers matched to history, and its referrers', async (t) => {
  const m = await get(secured, '/repositories/public/app/manifests/labelled');
  t.is(m.status, 200, m.text);
  const { json } = m;
  t.is(json.kind, 'image');
  t.is(json.digest, labelled.digest);
  t.is(json.size, labelled.size);
  t.is(json.raw.schemaVersion, 2);
  t.like(json.config, { os: 'linux', architecture: 'amd64', created: '2024-05-01T12:00:00.000Z' });
  t.deepEqual(json.config.entrypoint, ['/entry']);
  t.deepEqual(json.config.cmd, ['serve', '--port', '80']);
  t.deepEqual(json.config.env, ['A=1', 'B=<script>']);
  t.deepEqual(json.config.labels, { 'org.opencontainers.image.title': '<img src=x onerror=alert(1)>', maintainer: 'ops' });
  t.is(json.config.raw.history.length, 5);
  t.deepEqual(json.layers.map((l: any) => [l.size, l.createdBy]), [[2000, 'ADD rootfs /'], [1000, 'RUN make'], [10, 'COPY app /']]);
  t.is(json.subject, null);
  const refs = Object.fromEntries((json.referrers as any[]).map((r) => [r.digest, r]));
  t.deepEqual(Object.keys(refs).sort(), [signature.digest, sbom.digest].sort());
  t.is(refs[signature.digest].artifactType, 'application/vnd.dev.cosign.artifact.sig.v1+json');
  t.deepEqual(refs[signature.digest].annotations, { 'dev.sigstore.cosign': 'yes' });
  t.is(refs[sbom.digest].artifactType, 'application/spdx+json');
});

test('manifest: an artifact shows its subject and artifact type', async (t) => {
  const m = await get(secured, `/repositories/public/app/manifests/${signature.digest}`);
  t.is(m.status, 200, m.text);
  t.is(m.json.kind, 'artifact');
  t.is(m.json.artifactType, 'application/vnd.dev.cosign.artifact.sig.v1+json');
  t.like(m.json.subject, { digest: labelled.digest, mediaType: labelled.mediaType, size: labelled.size });
  t.is(m.json.config, null);
});

test('manifest: unknown reference, bad names and digests answer as the API', async (t) => {
  const unknown = await get(secured, '/repositories/public/app/manifests/nope');
  t.is(unknown.status, 404);
  t.is(unknown.json.errors[0].code, 'MANIFEST_UNKNOWN');
  const badName = await get(secured, '/repositories/Public/App/tags');
  t.is(badName.status, 400);
  t.is(badName.json.errors[0].code, 'NAME_INVALID');
  const badDigest = await get(secured, '/repositories/public/app/manifests/sha256:xyz');
  t.is(badDigest.status, 400);
  // Percent-encoded names (a page using encodeURIComponent) are the same repository.
  const encoded = await get(secured, `/repositories/public%2Fapp/manifests/${encodeURIComponent(labelled.digest)}`);
  t.is(encoded.status, 200);
});

// ---- deletes ------------------------------------------------------------------------------------------------------

test('delete: offered to and allowed for alice (tag, then manifest), neither for bob, never when deletion is disabled', async (t) => {
  const a = basic('alice');
  const img = await pushImage(secured.url, 'public/del', 'one', {}, a);
  await fetch(`${secured.url}/v2/public/del/manifests/two`, { method: 'PUT', headers: { ...a, 'Content-Type': img.mediaType }, body: (await (await fetch(`${secured.url}/v2/public/del/manifests/one`, { headers: { ...a, Accept: img.mediaType } })).arrayBuffer()) });
  const alice = { ...UI, Cookie: await uiLogin(secured.url, 'alice', PASSWORDS.alice) };
  const bob = { ...UI, Cookie: await uiLogin(secured.url, 'bob', PASSWORDS.bob) };
  // What the page offers: delete only where the same rules would let it through.
  const offered = async (headers: Record<string, string>, base = secured.url, repo = 'public/del', ref = 'one') => [
    (await call(base, `/ui/api/repositories/${repo}/tags`, { headers })).json.canDelete,
    (await call(base, `/ui/api/repositories/${repo}/manifests/${ref}`, { headers })).json.canDelete,
  ];
  t.deepEqual(await offered(alice), [true, true], 'alice may delete');
  t.deepEqual(await offered(bob), [false, false], 'bob may only pull');
  const denied = await call(secured.url, '/ui/api/repositories/public/del/tags/one', { method: 'DELETE', headers: bob });
  t.is(denied.status, 403);
  t.is(denied.json.errors[0].code, 'DENIED');
  const tagGone = await call(secured.url, '/ui/api/repositories/public/del/tags/one', { method: 'DELETE', headers: alice });
  t.is(tagGone.status, 204);
  t.is((await call(secured.url, '/v2/public/del/manifests/one', { method: 'HEAD', headers: a })).status, 404);
  t.is((await call(secured.url, '/v2/public/del/manifests/two', { method: 'HEAD', headers: a })).status, 200);
  const again = await call(secured.url, '/ui/api/repositories/public/del/tags/one', { method: 'DELETE', headers: alice });
  t.is(again.status, 404);
  const manifestGone = await call(secured.url, `/ui/api/repositories/public/del/manifests/${img.digest}`, { method: 'DELETE', headers: alice });
  t.is(manifestGone.status, 204);
  t.is((await call(secured.url, `/v2/public/del/manifests/${img.digest}`, { method: 'HEAD', headers: a })).status, 404);
  const byTag = await call(secured.url, '/ui/api/repositories/public/del/manifests/two', { method: 'DELETE', headers: alice });
  t.is(byTag.status, 400, 'a manifest delete takes a digest');

  const kept = await pushImage(open.url, 'keep/me', 'v1');
  t.deepEqual(await offered({}, open.url, 'keep/me', 'v1'), [false, false], 'deletion disabled: never offered');
  const disabled = await call(open.url, '/ui/api/repositories/keep/me/tags/v1', { method: 'DELETE', headers: UI });
  t.is(disabled.status, 405);
  t.is(disabled.json.errors[0].code, 'UNSUPPORTED');
  const disabledDigest = await call(open.url, `/ui/api/repositories/keep/me/manifests/${kept.digest}`, { method: 'DELETE', headers: UI });
  t.is(disabledDigest.status, 405);
  t.is((await call(open.url, '/v2/keep/me/manifests/v1', { method: 'HEAD' })).status, 200);
});

// ---- paging and filtering -----------------------------------------------------------------------------------------

test('repositories are paged with limit and next, sorted by name, and filtered by q', async (t) => {
  const names = Array.from({ length: 23 }, (_, i) => `page/r${String(i).padStart(2, '0')}${i % 3 === 0 ? '-x' : ''}`);
  for (const n of names) await pushImage(open.url, n, 'v', { layers: [10] });
  const seen: string[] = [];
  let next: string | null = null;
  let pages = 0;
  do {
    const r: Answer = await get(open, `/repositories?q=page/&limit=7${next ? `&next=${next}` : ''}`);
    t.is(r.status, 200, r.text);
    t.true(r.json.items.length <= 7);
    seen.push(...r.json.items.map((i: any) => i.name));
    next = r.json.next;
    pages++;
  } while (next);
  t.deepEqual(seen, [...names].sort());
  t.is(pages, 4);
  const filtered = await get(open, '/repositories?q=-x&limit=100');
  t.deepEqual(filtered.json.items.map((i: any) => i.name), names.filter((n) => n.endsWith('-x')).sort());
  for (const bad of ['limit=0', 'limit=101', 'limit=abc', 'next=%%%', 'next=eyJrIjoxfQ', 'limit=5&limit=6']) {
    t.is((await get(open, `/repositories?${bad}`)).status, 400, bad);
  }
});

test('tags are paged from storage with a cursor, in each sort order, and filtered by q', async (t) => {
  const img = await pushImage(open.url, 'many/tags', 't000', { layers: [10] });
  const content = await (await fetch(`${open.url}/v2/many/tags/manifests/t000`, { headers: { Accept: img.mediaType } })).arrayBuffer();
  const tags = Array.from({ length: 260 }, (_, i) => `t${String(i).padStart(3, '0')}`);
  // Pushed in a shuffled order, so push order differs from name order.
  const order = [...tags.slice(1)].sort((a, b) => (a.split('').reverse().join('') < b.split('').reverse().join('') ? -1 : 1));
  for (const tag of order) {
    const res = await fetch(`${open.url}/v2/many/tags/manifests/${tag}`, { method: 'PUT', headers: { 'Content-Type': img.mediaType }, body: content });
    t.is(res.status, 201);
  }
  const walk = async (query: string, limit: number) => {
    const out: string[] = [];
    let next: string | null = null;
    let total: number | null = null;
    do {
      const r: Answer = await get(open, `/repositories/many/tags/tags?${query}&limit=${limit}${next ? `&next=${next}` : ''}`);
      t.is(r.status, 200, r.text);
      t.true(r.json.items.length <= limit);
      out.push(...r.json.items.map((i: any) => i.tag));
      next = r.json.next;
      total = r.json.total;
    } while (next);
    return { out, total };
  };
  t.deepEqual((await walk('sort=name', 100)).out, tags);
  t.deepEqual((await walk('', 37)).out, tags);
  const desc = await walk('sort=-name', 50);
  t.deepEqual(desc.out, [...tags].reverse());
  t.is(desc.total, 260);
  const q = await walk('q=t1', 9);
  t.deepEqual(q.out, tags.filter((x) => x.includes('t1')));
  // By push time: every tag once, in the order of their links' times.
  const pushed = await walk('sort=pushed', 64);
  t.deepEqual([...pushed.out].sort(), tags);
  const times = new Map<string, number>();
  for (const r of (await get(open, '/repositories/many/tags/tags?sort=-pushed&limit=100')).json.items) times.set(r.tag, Date.parse(r.lastPush));
  const latest = [...times.values()];
  t.deepEqual(latest, [...latest].sort((a, b) => b - a));
  t.is((await get(open, '/repositories/many/tags/tags?sort=size')).status, 400);
  t.is((await get(open, '/repositories/nope/nope/tags')).status, 404);
});

// ---- status ------------------------------------------------------------------------------------------------------

test('status: for users allowed the catalog (or everyone without auth)', async (t) => {
  t.is((await get(secured, '/status')).status, 401);
  t.is((await get(secured, '/status', { Cookie: await uiLogin(secured.url, 'bob', PASSWORDS.bob) })).status, 403);
  const alice = await get(secured, '/status', { Cookie: await uiLogin(secured.url, 'alice', PASSWORDS.alice) });
  t.is(alice.status, 200, alice.text);
  t.is(alice.json.storageDriver, 'filesystem');
  t.regex(alice.json.version, /^\d+\.\d+\.\d+/);
  t.true(alice.json.uptimeSeconds >= 0);
  t.true(Date.parse(alice.json.startedAt) <= Date.now());
  t.is(alice.json.gc, null);
  t.is(alice.json.mirror, null);
  t.is((await get(open, '/status')).status, 200);
});

// ---- switched off ------------------------------------------------------------------------------------------------

test('ui.enabled: false answers 404 under / and /ui/ as before, and the API still works', async (t) => {
  for (const path of ['/', '/ui/api/session', '/ui/assets/app.js', '/ui/r/x']) {
    const answer = await call(off.url, path);
    t.is(answer.status, 404, path);
    t.regex(String(answer.headers['content-security-policy']), /sandbox/);
  }
  t.is((await call(off.url, '/v2/')).status, 200);
});

test('page routes without a built page answer 404 in JSON; other methods 405', async (t) => {
  // This test build has no server/ui/static.js unless the page was merged in: either way no HTML is templated.
  const page = await call(open.url, '/ui/r/a/b/manifest/sha256:abc');
  t.true(page.status === 200 || page.status === 404);
  t.regex(String(page.headers['content-security-policy']), /script-src 'self'/);
  const post = await call(open.url, '/', { method: 'POST', headers: UI });
  t.is(post.status, 405);
});

test('a config over 4 MiB is not read: the manifest shows its descriptor and says it is too large', async (t) => {
  const config = Buffer.from(JSON.stringify({ os: 'linux', architecture: 'amd64', created: '2024-01-01T00:00:00Z', config: { Labels: { pad: 'x'.repeat(4 * 1024 * 1024 + 10) } } }));
  const configDigest = await pushBlob(open.url, 'big/config', config);
  const layer = Buffer.from('layer');
  const layerDigest = await pushBlob(open.url, 'big/config', layer);
  await putManifest(open.url, 'big/config', 'v1', Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST,
    config: { mediaType: OCI_CONFIG, digest: configDigest, size: config.byteLength },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layerDigest, size: layer.byteLength }],
  })), OCI_MANIFEST);
  const m = await get(open, '/repositories/big/config/manifests/v1');
  t.is(m.status, 200, m.text.slice(0, 300));
  t.like(m.json.config, { digest: configDigest, size: config.byteLength, tooLarge: true, os: null, created: null, raw: null });
  t.deepEqual(m.json.config.labels, {});
  t.deepEqual(m.json.layers.map((l: any) => [l.digest, l.createdBy]), [[layerDigest, null]]);
  t.true(m.text.length < 100_000, 'the config is not in the answer');
  const tags = await get(open, '/repositories/big/config/tags');
  t.like(tags.json.items[0], { tag: 'v1', kind: 'image', created: null, size: config.byteLength + layer.byteLength });
});
