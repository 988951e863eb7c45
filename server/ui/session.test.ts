/**
 * The web UI's session tokens and cookies without a server: signing, expiry, tampering, the binding to the user's
 * entry, the cookie's flags and parsing, and the key shared through storage. Also the status page's GC figures.
 */
import test from 'ava';
import { SignJWT } from 'jose';
import pino from 'pino';
import { UnsupportedOperationError } from '../../storage-drivers/driver.js';
import { InMemoryDriver } from '../../storage-drivers/inmemory.js';
import { createDriver } from '../../storage-drivers/index.js';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { UI_SESSION_KEY_PATH } from '../registry/layout.js';
import { parseGcMetrics } from './index.js';
import { COOKIE_NAME, loadSessionKey, readSessionCookie, SessionKeys, sessionCookie, SharedSessionKey } from './session.js';

const logger = pino({ level: 'silent' });
const key = new Uint8Array(32).fill(7);

test('a token issued for a user verifies, names them and carries the credential binding', async (t) => {
  const keys = new SessionKeys(key, 3600);
  const token = await keys.issue('alice', '$2y$04$hash');
  const session = await keys.verify(token);
  t.deepEqual(session, { user: 'alice', cred: keys.credentialTag('alice', '$2y$04$hash') });
  t.not(keys.credentialTag('alice', '$2y$04$other'), session!.cred, 'a new password changes the binding');
  t.false(token.includes('$2y$'), 'the credential itself is not in the token');
});

test('an expired, tampered, foreign-key or unsigned token is no session', async (t) => {
  const keys = new SessionKeys(key, 3600);
  const expired = await new SignJWT({ cred: 'x' }).setProtectedHeader({ alg: 'HS256' }).setSubject('alice')
    .setIssuer('wharf-ui').setAudience('wharf-ui').setIssuedAt(1_000).setExpirationTime(2_000).sign(key);
  t.is(await keys.verify(expired), undefined);
  const other = await new SessionKeys(new Uint8Array(32).fill(8), 3600).issue('alice', 'c');
  t.is(await keys.verify(other), undefined);
  const good = await keys.issue('alice', 'c');
  const [h, p, s] = good.split('.');
  const payload = JSON.parse(Buffer.from(p!, 'base64url').toString());
  t.is(await keys.verify(`${h}.${Buffer.from(JSON.stringify({ ...payload, sub: 'root' })).toString('base64url')}.${s}`), undefined);
  const none = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${p}.`;
  t.is(await keys.verify(none), undefined);
  t.is(await keys.verify('x'.repeat(5000)), undefined);
  t.is(await keys.verify(undefined), undefined);
});

test('the cookie: HttpOnly, SameSite=Strict, Path=/, Max-Age, Secure only when asked; cleared with Max-Age=0', (t) => {
  t.is(sessionCookie('abc', 600, false), `${COOKIE_NAME}=abc; HttpOnly; SameSite=Strict; Path=/; Max-Age=600`);
  t.is(sessionCookie('abc', 600, true), `${COOKIE_NAME}=abc; HttpOnly; SameSite=Strict; Path=/; Max-Age=600; Secure`);
  t.is(sessionCookie(null, 600, false), `${COOKIE_NAME}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0`);
});

test('the Cookie header is read for our cookie only, and only a token-shaped value', (t) => {
  t.is(readSessionCookie(`a=1; ${COOKIE_NAME}=e30.e30.sig; b=2`), 'e30.e30.sig');
  t.is(readSessionCookie(`x${COOKIE_NAME}=zzz`), undefined);
  t.is(readSessionCookie(`${COOKIE_NAME}=a b`), undefined);
  t.is(readSessionCookie(`${COOKIE_NAME}="quoted"`), undefined);
  t.is(readSessionCookie(undefined), undefined);
  t.is(readSessionCookie(`${COOKIE_NAME}=${'a'.repeat(20_000)}`), undefined);
});

test('the session key is created once in storage and every process reads the same one', async (t) => {
  const driver = new InMemoryDriver();
  const keys = await Promise.all([loadSessionKey(driver, logger), loadSessionKey(driver, logger), loadSessionKey(driver, logger)]);
  t.is(keys[0]!.byteLength, 32);
  t.deepEqual(keys[1], keys[0]);
  t.deepEqual(keys[2], keys[0]);
  t.deepEqual(new Uint8Array(await driver.getContent(UI_SESSION_KEY_PATH)), keys[0]);
  // A damaged key file is replaced.
  await driver.putContent(UI_SESSION_KEY_PATH, Buffer.from('short'));
  const replaced = await loadSessionKey(driver, logger);
  t.is(replaced.byteLength, 32);
  t.deepEqual(await loadSessionKey(driver, logger), replaced);
});

test('the shared key is written at the first login, not before; a cookie is checked against it on every process', async (t) => {
  const driver = new InMemoryDriver();
  const one = new SessionKeys(new SharedSessionKey(driver, logger), 3600);
  const two = new SessionKeys(new SharedSessionKey(driver, logger), 3600);
  // Checking a cookie before anybody logged in writes nothing and accepts nothing.
  const foreign = await new SessionKeys(new Uint8Array(32).fill(9), 3600).issue('alice', 'c');
  t.is(await one.verify(foreign), undefined);
  t.is(one.credentialTag('alice', 'c'), '', 'no key, no binding');
  await t.throwsAsync(driver.getContent(UI_SESSION_KEY_PATH), undefined, 'no key in storage yet');
  // The first login creates it; the other process, which read "none" before, finds it now.
  const token = await one.issue('alice', 'c');
  t.is((await driver.getContent(UI_SESSION_KEY_PATH)).byteLength, 32);
  const seen = await two.verify(token);
  t.deepEqual(seen, { user: 'alice', cred: two.credentialTag('alice', 'c') });
  t.is(seen!.cred, one.credentialTag('alice', 'c'));
  t.is(await two.verify(foreign), undefined);
});

test('GC figures: read from the collector\'s Prometheus text; none before any run', (t) => {
  t.is(parseGcMetrics(''), null);
  const text = [
    '# HELP wharf_gc_last_run_success x', '# TYPE wharf_gc_last_run_success gauge', 'wharf_gc_last_run_success 1',
    'wharf_gc_last_run_timestamp_seconds 1700000000', 'wharf_gc_last_run_duration_seconds 2.5', 'wharf_gc_last_run_dry_run 0',
    'wharf_gc_blobs_deleted 4', 'wharf_gc_bytes_freed 1024', 'wharf_gc_manifests_deleted 1',
  ].join('\n');
  t.deepEqual(parseGcMetrics(text), {
    lastRun: '2023-11-14T22:13:20.000Z', durationSeconds: 2.5, success: true, dryRun: false,
    blobsDeleted: 4, bytesFreed: 1024, manifestsDeleted: 1,
  });
});

test('without exclusive create, the key is written plainly and read back', async (t) => {
  const driver = new InMemoryDriver();
  driver.putContentIfAbsent = async () => { throw new UnsupportedOperationError('inmemory', 'putContentIfAbsent', 'no conditional writes'); };
  const first = await loadSessionKey(driver, logger);
  t.is(first.byteLength, 32);
  t.deepEqual(await loadSessionKey(driver, logger), first);
});

test('a process whose create of the key lost uses the winner\'s key once written, never the empty file', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'wharf-session-key-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const driver = createDriver({ driver: 'filesystem', rootDirectory: root });
  const file = join(root, UI_SESSION_KEY_PATH);
  const winner = randomBytes(32);
  let written: Promise<void> | undefined;
  // The other process creates the file (empty, as the filesystem's exclusive create does) just before this one tries,
  // and writes its key a moment later.
  const racing = new Proxy(driver, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (prop !== 'putContentIfAbsent') return typeof value === 'function' ? value.bind(target) : value;
      return async (path: string, content: Uint8Array | string) => {
        await mkdir(dirname(file), { recursive: true });
        await writeFile(file, '');
        written = (async () => {
          await new Promise((resolve) => setTimeout(resolve, 150));
          await writeFile(file, winner);
        })();
        return target.putContentIfAbsent(path, content);
      };
    },
  });
  const key = await loadSessionKey(racing, logger);
  await written;
  t.deepEqual(key, new Uint8Array(winner));
});
