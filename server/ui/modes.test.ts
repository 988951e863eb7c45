/**
 * The web UI under each auth mode and with the server's other parts: the built-in token server's users logging in,
 * an external token server (anonymous browsing only), a password change ending a session, the status page's
 * garbage-collection figures and a mirror's upstreams.
 */
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startWharf, writeHtpasswd, type RunningWharf } from '../../testing/harness.js';
import { runWharf, writeGcConfig } from '../../testing/gc-helpers.js';
import { waitFor } from '../../testing/helpers.js';
import { call, pushImage, uiLogin } from '../../testing/ui-fixtures.js';

const UI = { 'X-Wharf-UI': '1', 'Content-Type': 'application/json' };
let dir: string;
let tokenWharf: RunningWharf;
let external: RunningWharf;
let basicWharf: RunningWharf;
let plain: RunningWharf;

test.before(async (t) => {
  t.timeout(120_000);
  dir = await mkdtemp(join(tmpdir(), 'wharf-ui-modes-'));
  await writeHtpasswd(join(dir, 'htpasswd'), { owner: 'owner-pw', other: 'other-pw' });
  await writeHtpasswd(join(dir, 'basic-htpasswd'), { dana: 'dana-pw' });
  const tokenPort = await freePort();
  [tokenWharf, basicWharf, plain] = await Promise.all([
    startWharf({
      config: {
        http: { addr: `127.0.0.1:${tokenPort}` },
        auth: {
          token: { realm: `http://127.0.0.1:${tokenPort}/auth/token`, service: 'svc', issuer: 'iss' },
          tokenserver: { key: join(dir, 'token.key'), certificate: join(dir, 'token.crt'), htpasswd: join(dir, 'htpasswd'), service: 'svc', issuer: 'iss' },
          access: { anonymous: ['pub/**'], rules: [{ users: ['*'], repositories: ['${user}/**'], actions: ['*'] }] },
        },
      },
    }),
    startWharf({ config: { auth: { htpasswd: { realm: 'r', path: join(dir, 'basic-htpasswd') } } } }),
    startWharf({}),
  ]);
  // Tokens of another server: this one has no users of its own.
  external = await startWharf({
    config: {
      http: { host: 'https://registry.example.com:8443' },
      auth: {
        token: { realm: 'https://auth.example/token', service: 'svc', issuer: 'iss', rootcertbundle: join(dir, 'token.crt') },
        access: { anonymous: ['pub/**'] },
      },
    },
  });
});

test.after.always(async () => {
  await Promise.all([tokenWharf?.stop(), external?.stop(), basicWharf?.stop(), plain?.stop()]);
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** A token from the built-in token server, to push with. */
async function bearer(w: RunningWharf, user: string, password: string, scope: string): Promise<Record<string, string>> {
  const res = await fetch(`${w.url}/auth/token?service=svc&scope=${encodeURIComponent(scope)}`, {
    headers: { Authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` },
  });
  const { token } = (await res.json()) as { token: string };
  return { Authorization: `Bearer ${token}` };
}

test('token mode: the token server\'s users log in, and see what the rules give them', async (t) => {
  await pushImage(tokenWharf.url, 'owner/app', 'v1', {}, await bearer(tokenWharf, 'owner', 'owner-pw', 'repository:owner/app:pull,push'));
  await pushImage(tokenWharf.url, 'other/app', 'v1', {}, await bearer(tokenWharf, 'other', 'other-pw', 'repository:other/app:pull,push'));
  const session = await call(tokenWharf.url, '/ui/api/session');
  t.like(session.json, { authMode: 'token', canLogin: true, user: null });
  const cookie = await uiLogin(tokenWharf.url, 'owner', 'owner-pw');
  t.is((await call(tokenWharf.url, '/ui/api/session', { headers: { Cookie: cookie } })).json.user, 'owner');
  const repos = await call(tokenWharf.url, '/ui/api/repositories', { headers: { Cookie: cookie } });
  t.deepEqual(repos.json.items.map((r: any) => r.name), ['owner/app']);
  t.is((await call(tokenWharf.url, '/ui/api/repositories/other/app/tags', { headers: { Cookie: cookie } })).status, 403);
  t.is((await call(tokenWharf.url, '/ui/api/repositories/owner/app/tags', { headers: { Cookie: cookie } })).status, 200);
  t.deepEqual((await call(tokenWharf.url, '/ui/api/repositories')).json.items, [], 'anonymous sees no private repository');
  const del = await call(tokenWharf.url, '/ui/api/repositories/owner/app/tags/v1', { method: 'DELETE', headers: { ...UI, Cookie: cookie } });
  t.is(del.status, 204, 'owner may delete in their own namespace');
  t.is((await call(tokenWharf.url, '/ui/api/repositories/owner/app/tags', { headers: { Cookie: cookie } })).json.items.length, 0);
  const bad = await call(tokenWharf.url, '/ui/api/login', { method: 'POST', headers: UI, body: JSON.stringify({ username: 'owner', password: 'nope' }) });
  t.is(bad.status, 401);
});

test('external token server: no login, anonymous browsing under the anonymous rules', async (t) => {
  const session = await call(external.url, '/ui/api/session');
  t.like(session.json, { authMode: 'external', canLogin: false, user: null, registryHost: 'registry.example.com:8443' });
  const login = await call(external.url, '/ui/api/login', { method: 'POST', headers: UI, body: JSON.stringify({ username: 'owner', password: 'owner-pw' }) });
  t.is(login.status, 405);
  t.regex(login.json.errors[0].message, /external token server/);
  t.is((await call(external.url, '/ui/api/repositories')).status, 200);
  t.is((await call(external.url, '/ui/api/repositories/priv/x/tags')).status, 401);
  t.is((await call(external.url, '/ui/api/status')).status, 401);
});

test('a password change (htpasswd re-read on SIGHUP) ends the sessions issued before it', async (t) => {
  const cookie = await uiLogin(basicWharf.url, 'dana', 'dana-pw');
  t.is((await call(basicWharf.url, '/ui/api/session', { headers: { Cookie: cookie } })).json.user, 'dana');
  await writeHtpasswd(join(dir, 'basic-htpasswd'), { dana: 'dana-new-pw' });
  basicWharf.process.kill('SIGHUP');
  const after = await waitFor('the session to end', async () => {
    const s = await call(basicWharf.url, '/ui/api/session', { headers: { Cookie: cookie } });
    return s.json.user === null ? s : undefined;
  });
  t.regex(([] as string[]).concat(after.headers['set-cookie'] ?? [])[0]!, /Max-Age=0/);
  t.truthy(await uiLogin(basicWharf.url, 'dana', 'dana-new-pw'));
});

test('status: the last garbage collection\'s figures, as the collector recorded them', async (t) => {
  const before = await call(plain.url, '/ui/api/status');
  t.is(before.json.gc, null);
  await pushImage(plain.url, 'gc/me', 'v1');
  const { code, stdout, stderr } = await runWharf(['garbage-collect', await writeGcConfig(dir, plain.rootDirectory)]);
  t.is(code, 0, stdout + stderr);
  const status = await call(plain.url, '/ui/api/status');
  t.is(status.status, 200);
  const { gc } = status.json;
  t.true(Date.parse(gc.lastRun) > Date.now() - 10 * 60_000);
  t.is(gc.success, true);
  t.is(gc.dryRun, false);
  t.is(typeof gc.durationSeconds, 'number');
  t.true(gc.repositoriesMarked >= 1);
  t.is(gc.blobsDeleted, 0);
  t.is(typeof gc.bytesFreed, 'number');
});

test('status: a mirror\'s upstreams with their last success and failure', async (t) => {
  await pushImage(plain.url, 'library/mirrored', 'v1');
  const deadPort = await freePort();
  const mirror = await startWharf({
    config: {
      proxy: {
        upstreams: [
          { name: 'live', url: plain.url, prefix: 'live' },
          { name: 'dead', url: `http://127.0.0.1:${deadPort}`, prefix: 'dead' },
        ],
      },
    },
  });
  t.teardown(() => mirror.stop());
  const initial = await call(mirror.url, '/ui/api/status');
  t.deepEqual(initial.json.mirror, [
    { upstream: 'live', lastSuccess: null, lastFailure: null, lastError: null },
    { upstream: 'dead', lastSuccess: null, lastFailure: null, lastError: null },
  ]);
  t.is((await call(mirror.url, '/v2/live/library/mirrored/manifests/v1')).status, 200);
  t.true((await call(mirror.url, '/v2/dead/library/x/manifests/v1')).status >= 500);
  const { mirror: upstreams } = (await call(mirror.url, '/ui/api/status')).json;
  t.truthy(upstreams[0].lastSuccess);
  t.is(upstreams[0].lastFailure, null);
  t.is(upstreams[1].lastSuccess, null);
  t.truthy(upstreams[1].lastFailure);
  t.regex(upstreams[1].lastError, /^unavailable/);
  t.false(upstreams[1].lastError.includes('127.0.0.1'), 'no upstream address in the status');
  // The UI lists what the mirror holds, without asking the upstream.
  const repos = await call(mirror.url, '/ui/api/repositories');
  t.deepEqual(repos.json.items.map((r: any) => r.name), ['live/library/mirrored']);
  t.is((await call(mirror.url, '/ui/api/repositories/live/library/mirrored/tags')).json.canDelete, false, 'so none is offered');
  const del = await call(mirror.url, '/ui/api/repositories/live/library/mirrored/tags/v1', { method: 'DELETE', headers: UI });
  t.is(del.status, 405, 'a mirrored repository takes no deletes');
});

test('a delete from the UI sends the same webhook event as a delete through the API, naming the user', async (t) => {
  const events: any[] = [];
  const receiver = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => { body += d; });
    req.on('end', () => { events.push(...(JSON.parse(body) as { events: any[] }).events); res.writeHead(200).end(); });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  t.teardown(() => receiver.close());
  const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/events`;
  await writeHtpasswd(join(dir, 'events-htpasswd'), { erin: 'erin-pw' });
  const w = await startWharf({
    config: {
      auth: { htpasswd: { realm: 'r', path: join(dir, 'events-htpasswd') } },
      notifications: { endpoints: [{ name: 'hook', url, ignore: { actions: ['push', 'pull'] } }] },
    },
  });
  t.teardown(() => w.stop());
  const basicErin = { Authorization: `Basic ${Buffer.from('erin:erin-pw').toString('base64')}` };
  const img = await pushImage(w.url, 'ev/app', 'v1', {}, basicErin);
  const cookie = await uiLogin(w.url, 'erin', 'erin-pw');
  t.is((await call(w.url, '/ui/api/repositories/ev/app/tags/v1', { method: 'DELETE', headers: { ...UI, Cookie: cookie } })).status, 204);
  t.is((await call(w.url, `/ui/api/repositories/ev/app/manifests/${img.digest}`, { method: 'DELETE', headers: { ...UI, Cookie: cookie } })).status, 204);
  await waitFor('two delete events', async () => (events.length >= 2 ? true : undefined));
  t.like(events[0], { action: 'delete', target: { repository: 'ev/app', tag: 'v1' }, actor: { name: 'erin' }, request: { method: 'DELETE' } });
  t.like(events[1], { action: 'delete', target: { repository: 'ev/app', digest: img.digest }, actor: { name: 'erin' } });
  t.false(JSON.stringify(events).includes('wharf_session'), 'no cookie in events');
});
