/**
 * Adversarial tests of access control against real Wharf processes (issue #13): lockout on demand, refresh tokens
 * that outlive a password, the cost of refusing unknown users, scopes for names the API would refuse, and the
 * limits on open upload sessions.
 */
import test from 'ava';
import { SignJWT } from 'jose';
import bcrypt from 'bcryptjs';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Htpasswd, HtpasswdError, libtrustKeyId } from '../../auth/index.js';
import { InMemoryDriver } from '../../storage-drivers/inmemory.js';
import { BlobStore } from '../registry/blobs.js';
import { UploadStore } from '../registry/uploads.js';
import { UploadLimits } from './upload-limits.js';
import { freePort, startWharf, writeHtpasswd, type RunningWharf } from '../../testing/harness.js';
import { sha256 } from '../../testing/helpers.js';
import { call, type Answer } from '../../testing/ui-fixtures.js';

const PASSWORDS = { owner: 'owner-pw-A1', other: 'other-pw-B2', distant: 'distant-pw-C3' };
let dir: string;
let basicWharf: RunningWharf;
let tokenWharf: RunningWharf;
let tokenPort: number;

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wharf-access-'));
  await writeHtpasswd(join(dir, 'htpasswd'), PASSWORDS);
  tokenPort = await freePort();
  [basicWharf, tokenWharf] = await Promise.all([
    startWharf({
      config: { auth: { htpasswd: { realm: 'r', path: join(dir, 'htpasswd') }, throttle: { accountfailures: 3, addressfailures: 6, accounttotalfailures: 6 } } },
    }),
    startWharf({
      config: {
        http: { addr: `127.0.0.1:${tokenPort}` },
        auth: {
          token: { realm: `http://127.0.0.1:${tokenPort}/auth/token`, service: 'svc', issuer: 'iss' },
          tokenserver: { key: join(dir, 'token.key'), certificate: join(dir, 'token.crt'), htpasswd: join(dir, 'htpasswd'), service: 'svc', issuer: 'iss' },
          access: { rules: [{ users: ['*'], repositories: ['${user}/**'], actions: ['*'] }] },
          throttle: { accountfailures: 3, addressfailures: 6 },
        },
      },
    }),
  ]);
});

test.after.always(async () => {
  await Promise.all([basicWharf?.stop(), tokenWharf?.stop()]);
  if (dir) await rm(dir, { recursive: true, force: true });
});

const claims = (t: string) => JSON.parse(Buffer.from(t.split('.')[1]!, 'base64url').toString());
const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

// ---- finding 8: lockout on demand -------------------------------------------------------------------------------

for (const mode of ['htpasswd', 'token server'] as const) {
  test(`finding 8 (${mode}): an attacker's failures lock the attacker, not the account's owner`, async (t) => {
    const target = mode === 'htpasswd' ? basicWharf : tokenWharf;
    const path = mode === 'htpasswd' ? '/v2/' : '/auth/token?service=svc';
    const attempt = (password: string, from: string) => call(target.url, path, { headers: { Authorization: basic('owner', password) }, from });
    for (let i = 0; i < 3; i++) t.is((await attempt(`guess-${i}`, '127.0.0.2')).status, 401);
    const attacker = await attempt('guess-again', '127.0.0.2');
    t.is(attacker.status, 429, "the attacker's further attempts are refused");
    // The token endpoint answers OAuth2 errors (RFC 6749), the API the OCI envelope.
    t.is(mode === 'htpasswd' ? attacker.json.errors[0].code : attacker.json.error, mode === 'htpasswd' ? 'TOOMANYREQUESTS' : 'temporarily_unavailable');
    t.is((await attempt(PASSWORDS.owner, '127.0.0.2')).status, 429, 'even the right password, from the attacking address');
    t.is((await attempt(PASSWORDS.owner, '127.0.0.1')).status, 200, 'the owner, from their own address, logs in');
    // Spraying many accounts from one address still locks that address for every account.
    for (let i = 0; i < 6; i++) await call(target.url, path, { headers: { Authorization: basic(`spray${i}`, 'x') }, from: '127.0.0.3' });
    t.is((await call(target.url, path, { headers: { Authorization: basic('other', PASSWORDS.other) }, from: '127.0.0.3' })).status, 429);
    t.is((await call(target.url, path, { headers: { Authorization: basic('other', PASSWORDS.other) }, from: '127.0.0.1' })).status, 200);
  });
}

test('finding 8: guessing one account from many addresses is bounded, and the owner keeps a known address', async (t) => {
  const attempt = (password: string, from: string) => call(basicWharf.url, '/v2/', { headers: { Authorization: basic('distant', password) }, from });
  t.is((await attempt(PASSWORDS.distant, '127.0.4.1')).status, 200, 'the owner logs in once from their address');
  // Two guesses from each of three addresses: below every per-address limit, six for the account in all.
  for (const from of ['127.0.4.2', '127.0.4.3', '127.0.4.4']) {
    for (let i = 0; i < 2; i++) t.is((await attempt(`guess-${from}-${i}`, from)).status, 401);
  }
  t.is((await attempt('guess-fresh', '127.0.4.5')).status, 429, 'a fresh address may not keep guessing');
  t.is((await attempt(PASSWORDS.distant, '127.0.4.1')).status, 200, 'the owner, from an address that logged in before, gets in');
  t.is((await attempt(PASSWORDS.distant, '127.0.4.6')).status, 429, 'a new address waits until the attack stops');
  t.is((await call(basicWharf.url, '/v2/', { headers: { Authorization: basic('other', PASSWORDS.other) }, from: '127.0.4.5' })).status, 200,
    'other accounts are not affected');
});

// ---- finding 11: unknown users cost what known ones do ----------------------------------------------------------

test('finding 11: an unknown user is refused after one bcrypt comparison at the highest cost of the file', async (t) => {
  // Entries need not be real hashes of anything to set the costs: a cost-13 entry and a cheap one.
  const entry = (cost: number) => `$2y$${String(cost).padStart(2, '0')}$${'a'.repeat(22)}${'b'.repeat(31)}`;
  const users = new Htpasswd(`slow:${entry(13)}\nfast:${entry(5)}\n`);
  const salts: string[] = [];
  const realHash = bcrypt.hash;
  // Record the comparisons instead of paying for them: bcryptjs's exported object is the one htpasswd.ts calls.
  (bcrypt as { hash: unknown }).hash = async (_password: string, salt: string) => { salts.push(salt); return `${salt}${'x'.repeat(31)}`; };
  try {
    t.false(await users.verify('nobody', 'guess'));
  } finally {
    (bcrypt as { hash: unknown }).hash = realHash;
  }
  t.is(salts.length, 1, 'one comparison');
  t.regex(salts[0]!, /^\$2[aby]\$13\$/, 'at cost 13, as for the slowest real entry');
  t.is(users.dummyCost, 13);
  t.is(new Htpasswd('').dummyCost, 10);
  t.throws(() => new Htpasswd(`huge:${entry(32)}\n`), { instanceOf: HtpasswdError, message: /cost/ });
  t.throws(() => new Htpasswd(`tiny:${entry(3)}\n`), { instanceOf: HtpasswdError, message: /cost/ });
});

// ---- finding 12: scopes only for names the API accepts ----------------------------------------------------------

test('finding 12: the token server grants nothing for names that are not repository names', async (t) => {
  const invalid = ['owner/../other/x', 'owner/./x', 'owner//x', 'owner/x/', 'Owner/X', 'owner/x:latest', `owner/${'a'.repeat(255)}`, 'owner/x\u0000'];
  const q = new URLSearchParams({ service: 'svc' });
  for (const name of invalid) q.append('scope', `repository:${name}:pull,push`);
  q.append('scope', 'repository:owner/ok:pull,push');
  const got = await call(tokenWharf.url, `/auth/token?${q}`, { headers: { Authorization: basic('owner', PASSWORDS.owner) } });
  t.is(got.status, 200, 'a partial grant is not an error');
  t.deepEqual(claims(got.json.token).access, [{ type: 'repository', name: 'owner/ok', actions: ['pull', 'push'] }]);
  t.is(got.json.scope, 'repository:owner/ok:pull,push');
  // The OAuth2 POST form grants the same.
  const posted = await call(tokenWharf.url, '/auth/token', {
    method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'password', username: 'owner', password: PASSWORDS.owner, client_id: 'c', service: 'svc',
      scope: 'repository:owner/../other/x:pull,push repository:owner/ok:pull' }).toString(),
  });
  t.is(posted.status, 200);
  t.deepEqual(claims(posted.json.token).access, [{ type: 'repository', name: 'owner/ok', actions: ['pull'] }]);
});

// ---- finding 9: refresh tokens die with the credential they were issued against ---------------------------------

test('finding 9: a changed password or a removed user ends refresh tokens; an unchanged entry keeps them', async (t) => {
  const hdir = await mkdtemp(join(tmpdir(), 'wharf-refresh-'));
  const htpasswd = join(hdir, 'htpasswd');
  const passwords = { keep: 'keep-pw-1', change: 'change-pw-1', gone: 'gone-pw-1' };
  await writeHtpasswd(htpasswd, passwords);
  const port = await freePort();
  const wharf = await startWharf({
    config: {
      http: { addr: `127.0.0.1:${port}` },
      auth: {
        token: { realm: `http://127.0.0.1:${port}/auth/token`, service: 'svc', issuer: 'iss' },
        tokenserver: { key: join(hdir, 'token.key'), certificate: join(hdir, 'token.crt'), htpasswd, service: 'svc', issuer: 'iss' },
      },
    },
  });
  try {
    const post = (fields: Record<string, string>) => call(wharf.url, '/auth/token', {
      method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ client_id: 'c', service: 'svc', ...fields }).toString(),
    });
    const login = async (user: string, password: string) => {
      const res = await post({ grant_type: 'password', username: user, password, access_type: 'offline' });
      t.is(res.status, 200, `${user} logs in`);
      return res.json.refresh_token as string;
    };
    const refresh = (token: string) => post({ grant_type: 'refresh_token', refresh_token: token, scope: 'repository:x/y:pull' });
    const tokens = {
      keep: await login('keep', passwords.keep),
      change: await login('change', passwords.change),
      gone: await login('gone', passwords.gone),
    };
    // The GET form's offline token is bound the same way.
    const viaGet = await call(wharf.url, '/auth/token?service=svc&offline_token=true', { headers: { Authorization: basic('change', passwords.change) } });
    t.is(viaGet.status, 200);
    for (const token of [...Object.values(tokens), viaGet.json.refresh_token]) t.is((await refresh(token)).status, 200, 'refreshes before the change');

    // Same entry for keep, a new password for change, no gone; a probe user shows when the reload has happened.
    const lines = (await readFile(htpasswd, 'utf8')).split('\n').filter((l) => l.startsWith('keep:'));
    await writeHtpasswd(join(hdir, 'next'), { change: 'change-pw-2', probe: 'probe-pw' });
    await writeFile(htpasswd, `${lines.join('\n')}\n${await readFile(join(hdir, 'next'), 'utf8')}`);
    wharf.process.kill('SIGHUP');
    let probe = 0;
    for (let i = 0; i < 400 && probe !== 200; i++) {
      probe = (await call(wharf.url, '/auth/token?service=svc', { headers: { Authorization: basic('probe', 'probe-pw') } })).status;
      if (probe !== 200) await new Promise((r) => setTimeout(r, 25));
    }
    t.is(probe, 200, 'the users file was reloaded');

    const changed = await refresh(tokens.change);
    t.is(changed.status, 400, 'a changed password ends the refresh token');
    t.is(changed.json.error, 'invalid_grant');
    t.is((await refresh(viaGet.json.refresh_token)).status, 400, 'also the one from the GET form');
    t.is((await refresh(tokens.gone)).status, 400, 'a removed user cannot refresh');
    const kept = await refresh(tokens.keep);
    t.is(kept.status, 200, 'an unchanged entry keeps its refresh token');
    t.deepEqual(claims(kept.json.access_token).access, [{ type: 'repository', name: 'x/y', actions: ['pull'] }]);
    t.is((await refresh(await login('change', 'change-pw-2'))).status, 200, 'a token issued after the change works');

    // A refresh token without the binding (as issued before it existed) is not accepted either.
    const key = createPrivateKey(await readFile(join(hdir, 'token.key')));
    const now = Math.floor(Date.now() / 1000);
    const unbound = await new SignJWT({ iss: 'iss', aud: 'svc:refresh', sub: 'keep', nbf: now - 5, exp: now + 300, access: [] })
      .setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: libtrustKeyId(createPublicKey(key)) })
      .sign(key);
    t.is((await refresh(unbound)).status, 400);
    t.false(wharf.output().includes(tokens.keep), 'no refresh token in the logs');
  } finally {
    await wharf.stop();
    await rm(hdir, { recursive: true, force: true });
  }
});

// ---- limits on open upload sessions ------------------------------------------------------------------------------

const startUpload = (base: string, repo: string, from: string, headers: Record<string, string> = {}) =>
  call(base, `/v2/${repo}/blobs/uploads/`, { method: 'POST', headers, from });
const idOf = (res: Answer) => res.headers['docker-upload-uuid'] as string;

function assertTooMany(t: import('ava').ExecutionContext, res: Answer, what: string): void {
  t.is(res.status, 429, what);
  t.is(res.json?.errors?.[0]?.code, 'TOOMANYREQUESTS', what);
  t.regex(res.json.errors[0].message, /too many open upload sessions/);
}

test('upload limits: open sessions per repository are counted in storage, across replicas, until finished or old', async (t) => {
  const limits = { storage: { maintenance: { uploadlimits: { perrepository: 3, peruser: 100 }, uploadpurging: { enabled: false } } } };
  const wharf = await startWharf({ config: limits });
  const replica = await startWharf({ config: limits, rootDirectory: wharf.rootDirectory });
  try {
    const opened: Answer[] = [];
    for (let i = 1; i <= 3; i++) opened.push(await startUpload(wharf.url, 'lim/repo', `127.0.1.${i}`));
    t.deepEqual(opened.map((r) => r.status), [202, 202, 202]);
    assertTooMany(t, await startUpload(wharf.url, 'lim/repo', '127.0.1.9'), 'a fourth session in the repository');
    assertTooMany(t, await startUpload(replica.url, 'lim/repo', '127.0.1.9'), 'the replica sees the same sessions');
    const blob = Buffer.from('monolithic');
    const mono = await call(wharf.url, `/v2/lim/repo/blobs/uploads/?digest=${sha256(blob)}`, {
      method: 'POST', headers: { 'Content-Type': 'application/octet-stream' }, body: blob.toString(), from: '127.0.1.9',
    });
    assertTooMany(t, mono, 'a monolithic upload opens a session too');
    t.is((await startUpload(wharf.url, 'lim/other', '127.0.1.9')).status, 202, 'other repositories are not affected');

    // Cancelled on the replica: the slot is free everywhere.
    t.is((await call(replica.url, `/v2/lim/repo/blobs/uploads/${idOf(opened[0]!)}`, { method: 'DELETE' })).status, 204);
    const again = await startUpload(wharf.url, 'lim/repo', '127.0.1.9');
    t.is(again.status, 202);
    assertTooMany(t, await startUpload(wharf.url, 'lim/repo', '127.0.1.9'), 'full again');
    // Completed: free.
    const data = Buffer.from('some layer');
    const put = await call(wharf.url, `/v2/lim/repo/blobs/uploads/${idOf(opened[1]!)}?digest=${sha256(data)}`, {
      method: 'PUT', headers: { 'Content-Type': 'application/octet-stream' }, body: data.toString(), from: '127.0.1.2',
    });
    t.is(put.status, 201);
    t.is((await startUpload(replica.url, 'lim/repo', '127.0.1.9')).status, 202);
    // A session older than the purge age (7 days by default) no longer counts, purged or not.
    const startedat = join(wharf.rootDirectory, 'docker/registry/v2/repositories/lim/repo/_uploads', idOf(opened[2]!), 'startedat');
    t.truthy(await readFile(startedat, 'utf8'));
    await writeFile(startedat, new Date(Date.now() - 8 * 24 * 3600_000).toISOString());
    // (A process that looked at the session already remembers its real start time, which never changes: ask a new one.)
    const later = await startWharf({ config: limits, rootDirectory: wharf.rootDirectory });
    try {
      t.is((await startUpload(later.url, 'lim/repo', '127.0.1.9')).status, 202, 'the old session left room');
      assertTooMany(t, await startUpload(later.url, 'lim/repo', '127.0.1.9'), 'and then it is full again');
    } finally {
      await later.stop();
    }
  } finally {
    await replica.stop();
    await wharf.stop();
  }
});

test('upload limits: open sessions per user, and per client address for anonymous pushers', async (t) => {
  const hdir = await mkdtemp(join(tmpdir(), 'wharf-uplimits-'));
  await writeHtpasswd(join(hdir, 'htpasswd'), { u1: 'u1-pw', u2: 'u2-pw' });
  const maintenance = { uploadlimits: { perrepository: 100, peruser: 2 }, uploadpurging: { enabled: false } };
  const [authed, open] = await Promise.all([
    startWharf({ config: { storage: { maintenance }, auth: { htpasswd: { realm: 'r', path: join(hdir, 'htpasswd') } } } }),
    startWharf({ config: { storage: { maintenance } } }),
  ]);
  try {
    const u1 = { Authorization: basic('u1', 'u1-pw') };
    const first = await startUpload(authed.url, 'u1/a', '127.0.2.1', u1);
    t.is(first.status, 202);
    t.is((await startUpload(authed.url, 'u1/b', '127.0.2.2', u1)).status, 202);
    assertTooMany(t, await startUpload(authed.url, 'u1/c', '127.0.2.3', u1), "the user's third session, from any address, in any repository");
    t.is((await startUpload(authed.url, 'u1/c', '127.0.2.3', { Authorization: basic('u2', 'u2-pw') })).status, 202, 'another user is not affected');
    // Finished elsewhere (here: removed from storage, as another replica or the purge would): noticed at the limit.
    await rm(join(authed.rootDirectory, 'docker/registry/v2/repositories/u1/a/_uploads', idOf(first)), { recursive: true });
    const third = await startUpload(authed.url, 'u1/c', '127.0.2.1', u1);
    t.is(third.status, 202, 'a session gone from storage stops counting');
    assertTooMany(t, await startUpload(authed.url, 'u1/d', '127.0.2.1', u1), 'full again');
    t.is((await call(authed.url, `/v2/u1/c/blobs/uploads/${idOf(third)}`, { method: 'DELETE', headers: u1 })).status, 204);
    t.is((await startUpload(authed.url, 'u1/d', '127.0.2.1', u1)).status, 202, 'a cancelled session stops counting');

    // Without credentials, each client address is one uploader.
    t.is((await startUpload(open.url, 'anon/a', '127.0.3.1')).status, 202);
    t.is((await startUpload(open.url, 'anon/b', '127.0.3.1')).status, 202);
    assertTooMany(t, await startUpload(open.url, 'anon/c', '127.0.3.1'), 'the address holds its limit');
    t.is((await startUpload(open.url, 'anon/c', '127.0.3.2')).status, 202, 'another address is not affected');
  } finally {
    await Promise.all([authed.stop(), open.stop()]);
    await rm(hdir, { recursive: true, force: true });
  }
});

test('upload limits: racing starts cannot share the last slot, and a refused start costs a bounded number of lookups', async (t) => {
  const driver = new InMemoryDriver();
  let stats = 0;
  const counting = new Proxy(driver, {
    get(target, prop, receiver) {
      if (prop === 'stat') return (path: string) => { stats++; return target.stat(path); };
      const value = Reflect.get(target, prop, receiver);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  }) as InMemoryDriver;
  const uploads = new UploadStore(counting, new BlobStore(counting));
  const limits = new UploadLimits(counting, { perRepository: 5, perUser: 40, maxAgeMs: 3600_000 });
  const begin = (name: string) => () => uploads.start(name);

  // Ten starts at once in one repository with room for five: exactly five get a session.
  const raced = await Promise.allSettled(Array.from({ length: 10 }, () => limits.start('race/repo', 'user:racer', begin('race/repo'))));
  t.is(raced.filter((r) => r.status === 'fulfilled').length, 5);
  t.is((await driver.list('/docker/registry/v2/repositories/race/repo/_uploads')).length, 5);
  for (const r of raced) if (r.status === 'rejected') t.is((r.reason as { code?: string }).code, 'TOOMANYREQUESTS');

  // A user at the limit with every session still open: each refused start looks up at most 16 of them.
  for (let i = 0; i < 40; i++) await limits.start(`many/r${i}`, 'user:busy', begin(`many/r${i}`));
  for (let round = 0; round < 3; round++) {
    stats = 0;
    await t.throwsAsync(limits.start('many/x', 'user:busy', begin('many/x')), { message: /too many open upload sessions for this user/ });
    t.true(stats <= 16, `round ${round}: ${stats} lookups`);
  }
  // The lookups take turns: the newest session, gone from storage, is found within a few refused starts.
  await driver.delete('/docker/registry/v2/repositories/many/r39/_uploads');
  let admitted = false;
  for (let i = 0; i < 3 && !admitted; i++) {
    admitted = await limits.start('many/x', 'user:busy', begin('many/x')).then(() => true, () => false);
  }
  t.true(admitted);
});
