/**
 * Errors as designed (issue #14): the registry's errors carry what went wrong and its data, server/http/errors.ts maps
 * them to statuses and headers, distinct codes replace the UNSUPPORTED catch-all, and the token endpoint answers with
 * OAuth2 errors (RFC 6749 §5.2). The mapping is checked directly and against a real Wharf process.
 */
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidPathError, StorageError } from '../../storage-drivers/driver.js';
import { freePort, startWharf, writeHtpasswd, type RunningWharf } from '../../testing/harness.js';
import { ERROR_MESSAGES, RegistryError, type ErrorCode } from '../registry/errors.js';
import { ERROR_STATUS, OAuthError, asOAuthError, errorResponse } from './errors.js';

test('every code has its status in the HTTP table, and the table holds the spec\'s statuses', (t) => {
  for (const code of Object.keys(ERROR_MESSAGES) as ErrorCode[]) t.is(typeof ERROR_STATUS[code], 'number', code);
  t.is(ERROR_STATUS.BLOB_UNKNOWN, 404);
  t.is(ERROR_STATUS.UNAUTHORIZED, 401);
  t.is(ERROR_STATUS.UNSUPPORTED, 405);
  t.is(ERROR_STATUS.PAGINATION_NUMBER_INVALID, 400);
  t.false('status' in new RegistryError('BLOB_UNKNOWN'), 'the domain error names no status');
  t.false('headers' in new RegistryError('BLOB_UNKNOWN'), 'nor headers');
});

test('each reason is answered with its status and headers', (t) => {
  const answer = (reason: ConstructorParameters<typeof RegistryError>[2]) => errorResponse(new RegistryError('BLOB_UPLOAD_INVALID', 'x', reason));
  t.like(answer({ reason: { kind: 'upload-out-of-order', uuid: 'u', offset: 10 } }), { status: 416, headers: { Range: '0-9' } });
  t.like(answer({ reason: { kind: 'upload-busy', uuid: 'u', offset: 0 } }), { status: 416, headers: { Range: '0-0' } });
  t.like(answer({ reason: { kind: 'range-not-satisfiable', size: 42 } }), { status: 416, headers: { 'Content-Range': 'bytes */42' } });
  t.like(answer({ reason: { kind: 'content-range-invalid' } }), { status: 416 });
  t.like(answer({ reason: { kind: 'body-too-large', limit: 1 } }), { status: 413 });
  t.like(answer({ reason: { kind: 'too-many-tags', limit: 1 } }), { status: 414 });
  t.like(answer({ reason: { kind: 'method-not-allowed', allowed: ['GET', 'HEAD'] } }), { status: 405, headers: { Allow: 'GET, HEAD' } });
  t.like(answer({ reason: { kind: 'authentication-required', challenge: 'Basic realm="r"' } }), { status: 401, headers: { 'WWW-Authenticate': 'Basic realm="r"' } });
  t.like(answer({ reason: { kind: 'upstream-failed' } }), { status: 502 });
  t.like(answer({}), { status: 400, headers: {} });
  const body = answer({ detail: { uuid: 'u' } }).body as { errors: { code: string; detail: unknown }[] };
  t.deepEqual(body.errors[0], { code: 'BLOB_UPLOAD_INVALID', message: 'x', detail: { uuid: 'u' } });
});

test('DENIED is an authorization failure for the metrics, except a content policy\'s refusal', (t) => {
  t.like(errorResponse(new RegistryError('DENIED', 'no')), { status: 403, authFailure: 'DENIED' });
  for (const policy of ['immutabletags', 'quotas'] as const) {
    const refusal = errorResponse(new RegistryError('DENIED', 'quota', { reason: { kind: 'policy-refused', policy } }));
    t.like(refusal, { status: 403, code: 'DENIED', authFailure: undefined });
  }
});

test('driver errors and bugs map to their registry errors', (t) => {
  t.like(errorResponse(new InvalidPathError('/a/../b')), { status: 400, code: 'NAME_INVALID' });
  t.like(errorResponse(new StorageError('boom')), { status: 503, code: 'UNKNOWN' });
  const bug = errorResponse(new TypeError('x is undefined'));
  t.like(bug, { status: 500, code: 'UNKNOWN' });
  t.false(JSON.stringify(bug.body).includes('x is undefined'), 'a bug\'s text stays in the log');
});

test('OAuth errors: 400 with the RFC 6749 body, 401 with a challenge for client credentials', (t) => {
  t.deepEqual(errorResponse(new OAuthError('unsupported_grant_type', 'no')), {
    status: 400, headers: { 'Cache-Control': 'no-store' }, body: { error: 'unsupported_grant_type', error_description: 'no' },
    code: 'unsupported_grant_type', authFailure: undefined,
  });
  t.like(errorResponse(new OAuthError('invalid_client', 'no', { kind: 'authentication-required', challenge: 'Basic realm="w"' })), {
    status: 401, headers: { 'WWW-Authenticate': 'Basic realm="w"' }, authFailure: 'UNAUTHORIZED',
  });
});

test('a failure inside the token endpoint is OAuth2\'s server_error (500), its text kept out of the body', (t) => {
  const bug = new TypeError('cannot read properties of undefined (secret-key-path)');
  const wrapped = asOAuthError(bug);
  t.true(wrapped instanceof OAuthError);
  t.is((wrapped as Error).cause, bug, 'the cause stays for the log');
  const answer = errorResponse(wrapped);
  t.like(answer, { status: 500, code: 'server_error', body: { error: 'server_error' } });
  t.false(JSON.stringify(answer.body).includes('secret-key-path'));
  // The endpoint's own errors pass as they are.
  const own = new OAuthError('invalid_grant', 'no');
  t.is(asOAuthError(own), own);
});

let dir: string;
let wharf: RunningWharf;
const PASSWORD = 'errors-pw-1';

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wharf-errors-'));
  await writeHtpasswd(join(dir, 'htpasswd'), { eve: PASSWORD });
  const port = await freePort();
  wharf = await startWharf({
    config: {
      http: { addr: `127.0.0.1:${port}` },
      auth: {
        token: { realm: `http://127.0.0.1:${port}/auth/token`, service: 'errors-test', issuer: 'errors-issuer' },
        tokenserver: { key: join(dir, 'token.key'), certificate: join(dir, 'token.crt'), htpasswd: join(dir, 'htpasswd') },
        access: { anonymous: ['**'], rules: [{ users: ['*'], repositories: ['**'], actions: ['*'], catalog: true }] },
      },
    },
  });
});

test.after.always(async () => {
  await wharf?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

async function call(path: string, init: RequestInit = {}) {
  const res = await fetch(`${wharf.url}${path}`, init);
  const text = await res.text();
  let json: any;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, headers: res.headers, json };
}

const form = (fields: Record<string, string>): RequestInit => ({
  method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(fields).toString(),
});

test('the token endpoint answers its errors as OAuth2 does', async (t) => {
  const badClient = await call('/auth/token?service=errors-test', { headers: { Authorization: basic('eve', 'wrong') } });
  t.is(badClient.status, 401);
  t.is(badClient.json.error, 'invalid_client');
  t.is(typeof badClient.json.error_description, 'string');
  t.regex(badClient.headers.get('www-authenticate') ?? '', /^Basic realm=/);
  t.is(badClient.headers.get('cache-control'), 'no-store');
  t.is(badClient.json.errors, undefined, 'no OCI envelope');

  const unknownService = await call('/auth/token?service=elsewhere', { headers: { Authorization: basic('eve', PASSWORD) } });
  t.deepEqual([unknownService.status, unknownService.json.error], [400, 'invalid_request']);

  const badPassword = await call('/auth/token', form({ grant_type: 'password', username: 'eve', password: 'wrong', client_id: 'c' }));
  t.deepEqual([badPassword.status, badPassword.json.error], [400, 'invalid_grant']);
  const badRefresh = await call('/auth/token', form({ grant_type: 'refresh_token', refresh_token: 'not-a-token', client_id: 'c' }));
  t.deepEqual([badRefresh.status, badRefresh.json.error], [400, 'invalid_grant']);
  const grant = await call('/auth/token', form({ grant_type: 'client_credentials', client_id: 'c' }));
  t.deepEqual([grant.status, grant.json.error], [400, 'unsupported_grant_type']);
  const noClient = await call('/auth/token', form({ grant_type: 'password', username: 'eve', password: PASSWORD }));
  t.deepEqual([noClient.status, noClient.json.error], [400, 'invalid_request']);
  const notForm = await call('/auth/token', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' });
  t.deepEqual([notForm.status, notForm.json.error], [400, 'invalid_request']);
  const huge = await call('/auth/token', form({ grant_type: 'password', client_id: 'c', username: 'a'.repeat(100_000) }));
  t.deepEqual([huge.status, huge.json.error], [413, 'invalid_request']);
  const method = await call('/auth/token', { method: 'DELETE' });
  t.deepEqual([method.status, method.json.error, method.headers.get('allow')], [405, 'invalid_request', 'GET, POST']);

  // The right credentials still get a token, by either form.
  t.is((await call('/auth/token?service=errors-test', { headers: { Authorization: basic('eve', PASSWORD) } })).status, 200);
  t.is((await call('/auth/token', form({ grant_type: 'password', username: 'eve', password: PASSWORD, client_id: 'c' }))).status, 200);
});

test('distinct codes where UNSUPPORTED was a catch-all', async (t) => {
  const n = await call('/v2/any/repo/tags/list?n=abc');
  t.deepEqual([n.status, n.json.errors[0].code], [400, 'PAGINATION_NUMBER_INVALID']);
  const login = await call('/auth/token?service=errors-test&scope=registry:catalog:*', { headers: { Authorization: basic('eve', PASSWORD) } });
  const twice = await call('/v2/_catalog?n=1&n=2', { headers: { Authorization: `Bearer ${login.json.token}` } });
  t.deepEqual([twice.status, twice.json.errors[0].code], [400, 'PAGINATION_NUMBER_INVALID']);
  const nowhere = await call('/v2/any/repo/nothing-here');
  t.deepEqual([nowhere.status, nowhere.json.errors[0].code], [404, 'NAME_UNKNOWN']);
  // What clients depend on is unchanged: a method an endpoint does not take is 405 UNSUPPORTED with Allow.
  const method = await call('/v2/any/repo/tags/list', { method: 'POST' });
  t.deepEqual([method.status, method.json.errors[0].code, method.headers.get('allow')], [405, 'UNSUPPORTED', 'GET, HEAD']);
});
