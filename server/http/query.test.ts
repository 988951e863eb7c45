/**
 * Query parameters an access decision depends on, against a real Wharf with htpasswd auth and access rules: the
 * check and the handler must read the same value. A repeated `mount`, `from` or `digest` is refused, so a client
 * cannot have the check read one repository and the mount use another (issue #13, finding 1).
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startWharf, writeHtpasswd, type RunningWharf } from '../../testing/harness.js';
import { sha256 } from '../../testing/helpers.js';

const PASSWORDS = { alice: 'alice-pw-M4', bob: 'bob-pw-T8' };
let dir: string;
let wharf: RunningWharf;

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wharf-query-'));
  await writeHtpasswd(join(dir, 'htpasswd'), PASSWORDS);
  wharf = await startWharf({
    config: {
      auth: {
        htpasswd: { realm: 'query-test', path: join(dir, 'htpasswd') },
        access: { rules: [{ users: ['*'], repositories: ['${user}/**'], actions: ['pull', 'push', 'delete'] }] },
      },
    },
  });
});

test.after.always(async () => {
  await wharf?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const as = (user: keyof typeof PASSWORDS) => ({ Authorization: `Basic ${Buffer.from(`${user}:${PASSWORDS[user]}`).toString('base64')}` });

async function call(path: string, user: keyof typeof PASSWORDS, init: { method?: string; body?: Buffer } = {}) {
  const res = await fetch(`${wharf.url}${path}`, { method: init.method ?? 'GET', headers: as(user), body: init.body });
  const text = await res.text();
  let json: any;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, json, location: res.headers.get('location') };
}

/** Alice's private layer: a blob only alice may pull. */
async function alicesLayer(): Promise<string> {
  const bytes = randomBytes(4096);
  const digest = sha256(bytes);
  const pushed = await call(`/v2/alice/private/blobs/uploads/?digest=${digest}`, 'alice', { method: 'POST', body: bytes });
  if (pushed.status !== 201) throw new Error(`setup push answered ${pushed.status}`);
  return digest;
}

/** Bob may neither read alice's layer directly nor through the repository he tried to mount it into. */
async function bobCannotRead(t: any, digest: string, into: string): Promise<void> {
  t.is((await call(`/v2/alice/private/blobs/${digest}`, 'bob')).status, 403);
  t.is((await call(`/v2/${into}/blobs/${digest}`, 'bob')).status, 404, 'the layer must not have been mounted');
}

test('a repeated from is refused, not checked on one copy and mounted from the other', async (t) => {
  const digest = await alicesLayer();
  for (const query of [
    `mount=${digest}&from=alice/private&from=bob/app`,
    `mount=${digest}&from=bob/app&from=alice/private`,
    // The same key spelled with an escape is the same parameter.
    `mount=${digest}&%66rom=alice/private&from=bob/app`,
  ]) {
    const res = await call(`/v2/bob/loot/blobs/uploads/?${query}`, 'bob', { method: 'POST' });
    t.is(res.status, 400, query);
    t.is(res.json?.errors?.[0]?.code, 'NAME_INVALID', query);
    t.deepEqual(res.json?.errors?.[0]?.detail, { parameter: 'from' });
  }
  await bobCannotRead(t, digest, 'bob/loot');
});

test('a repeated mount is refused', async (t) => {
  const digest = await alicesLayer();
  const other = sha256(randomBytes(16));
  const res = await call(`/v2/bob/loot2/blobs/uploads/?mount=${other}&mount=${digest}&from=alice/private`, 'bob', { method: 'POST' });
  t.is(res.status, 400);
  t.is(res.json?.errors?.[0]?.code, 'DIGEST_INVALID');
  await bobCannotRead(t, digest, 'bob/loot2');
});

test('a mount from a repository the caller cannot pull becomes a plain upload session', async (t) => {
  const digest = await alicesLayer();
  const res = await call(`/v2/bob/loot3/blobs/uploads/?mount=${digest}&from=alice/private`, 'bob', { method: 'POST' });
  t.is(res.status, 202);
  t.regex(res.location ?? '', /\/v2\/bob\/loot3\/blobs\/uploads\/[0-9a-f-]{36}$/);
  await bobCannotRead(t, digest, 'bob/loot3');
  // With pull on the source, the same request mounts.
  const own = await call(`/v2/alice/copy/blobs/uploads/?mount=${digest}&from=alice/private`, 'alice', { method: 'POST' });
  t.is(own.status, 201);
});

test('a repeated digest on a monolithic upload or a completion is refused', async (t) => {
  const bytes = randomBytes(64);
  const digest = sha256(bytes);
  const other = sha256(randomBytes(64));
  const mono = await call(`/v2/bob/mono/blobs/uploads/?digest=${other}&digest=${digest}`, 'bob', { method: 'POST', body: bytes });
  t.is(mono.status, 400);
  t.is(mono.json?.errors?.[0]?.code, 'DIGEST_INVALID');
  const started = await call('/v2/bob/mono/blobs/uploads/', 'bob', { method: 'POST' });
  t.is(started.status, 202);
  const session = new URL(started.location!, wharf.url);
  const put = await call(`${session.pathname}?digest=${digest}&digest=${other}`, 'bob', { method: 'PUT', body: bytes });
  t.is(put.status, 400);
  t.is(put.json?.errors?.[0]?.code, 'DIGEST_INVALID');
  t.is((await call(`/v2/bob/mono/blobs/${digest}`, 'bob', { method: 'HEAD' })).status, 404);
});
