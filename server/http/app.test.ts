/**
 * HTTP behaviour that depends on configuration or on the process (the spec conformance suite covers the API itself):
 * read-only mode, deletion disabled, prefix, relative URLs, extra headers, the manifest size limit, error envelopes
 * for unknown paths and methods, HEAD without bodies, and graceful shutdown with a request in flight.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { request } from 'node:http';
import { get as httpsGet } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startWharf, type RunningWharf } from '../../testing/harness.js';
import { postBlob, sha256 } from '../../testing/helpers.js';

async function errorCode(res: Response): Promise<string> {
  const body = (await res.json()) as { errors: { code: string }[] };
  return body.errors[0]!.code;
}

test('read-only mode refuses writes with 405 UNSUPPORTED and keeps serving reads', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'wharf-ro-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const writable = await startWharf({ rootDirectory: root });
  const data = randomBytes(100);
  t.is((await postBlob(writable.url, 'ro/app', data)).status, 201);
  await writable.stop();

  // Same storage, now read-only through the registry:2 key.
  const ro = await startWharf({
    rootDirectory: root,
    config: { storage: { maintenance: { readonly: { enabled: true } } } },
  });
  t.teardown(() => ro.stop());
  const get = await fetch(`${ro.url}/v2/ro/app/blobs/${sha256(data)}`);
  t.is(get.status, 200);
  t.deepEqual(Buffer.from(await get.arrayBuffer()), data);
  for (const [method, path] of [
    ['POST', '/v2/ro/app/blobs/uploads/'],
    ['PUT', '/v2/ro/app/manifests/latest'],
    ['DELETE', `/v2/ro/app/blobs/${sha256(data)}`],
  ] as const) {
    const res = await fetch(`${ro.url}${path}`, { method, body: method === 'PUT' ? '{}' : undefined });
    t.is(res.status, 405, `${method} ${path}`);
    t.is(await errorCode(res), 'UNSUPPORTED');
  }
});

test('with deletion disabled, DELETE is 405 UNSUPPORTED and nothing is removed', async (t) => {
  const w = await startWharf({ config: { storage: { delete: { enabled: false } } } });
  t.teardown(() => w.stop());
  const data = randomBytes(64);
  await postBlob(w.url, 'nodelete', data);
  const res = await fetch(`${w.url}/v2/nodelete/blobs/${sha256(data)}`, { method: 'DELETE' });
  t.is(res.status, 405);
  t.is(await errorCode(res), 'UNSUPPORTED');
  t.is((await fetch(`${w.url}/v2/nodelete/blobs/${sha256(data)}`, { method: 'HEAD' })).status, 200);
});

test('http.prefix, http.relativeurls and http.headers shape every response', async (t) => {
  const w = await startWharf({
    config: { http: { prefix: '/registry/', relativeurls: true, headers: { 'X-Content-Type-Options': ['nosniff'] } } },
  });
  t.teardown(() => w.stop());
  const base = await fetch(`${w.url}/registry/v2/`);
  t.is(base.status, 200);
  t.is(base.headers.get('x-content-type-options'), 'nosniff');
  t.is(base.headers.get('docker-distribution-api-version'), 'registry/2.0');
  const start = await fetch(`${w.url}/registry/v2/pre/fix/blobs/uploads/`, { method: 'POST' });
  t.is(start.status, 202);
  t.regex(start.headers.get('location')!, /^\/registry\/v2\/pre\/fix\/blobs\/uploads\/[0-9a-f-]{36}$/);
  const outside = await fetch(`${w.url}/v2/`);
  t.is(outside.status, 404);
  t.is(await errorCode(outside), 'NAME_UNKNOWN');
});

test('http.host makes Location URLs absolute with the external address', async (t) => {
  const w = await startWharf({ config: { http: { host: 'https://registry.example.com' } } });
  t.teardown(() => w.stop());
  const start = await fetch(`${w.url}/v2/abs/blobs/uploads/`, { method: 'POST' });
  t.regex(start.headers.get('location')!, /^https:\/\/registry\.example\.com\/v2\/abs\/blobs\/uploads\//);
});

test('unknown paths and methods answer the JSON error envelope; HEAD errors have no body', async (t) => {
  const w = await startWharf();
  t.teardown(() => w.stop());
  const unknown = await fetch(`${w.url}/v2/x/nothing-here`);
  t.is(unknown.status, 404);
  t.is(await errorCode(unknown), 'NAME_UNKNOWN');
  // `/` and `/ui/…` belong to the web UI (server/ui/, ui.enabled); any other path outside /v2/ is unknown.
  const root = await fetch(`${w.url}/nothing-here`);
  t.is(root.status, 404);
  t.is(await errorCode(root), 'NAME_UNKNOWN');

  const wrongMethod = await fetch(`${w.url}/v2/x/tags/list`, { method: 'POST' });
  t.is(wrongMethod.status, 405);
  t.is(wrongMethod.headers.get('allow'), 'GET, HEAD');
  t.is(await errorCode(wrongMethod), 'UNSUPPORTED');

  const badName = await fetch(`${w.url}/v2/UPPER/tags/list`);
  t.is(badName.status, 400);
  t.is(await errorCode(badName), 'NAME_INVALID');
  const traversal = await fetch(`${w.url}/v2/a/..%2F..%2Fetc/manifests/latest`);
  t.is(traversal.status, 400);
  t.is(await errorCode(traversal), 'NAME_INVALID');

  const head = await fetch(`${w.url}/v2/x/manifests/missing`, { method: 'HEAD' });
  t.is(head.status, 404);
  t.is((await head.arrayBuffer()).byteLength, 0);
});

test('a manifest over validation.manifests.maxsize is refused with 413 before it is read whole', async (t) => {
  const w = await startWharf({ config: { validation: { manifests: { maxsize: 1024 } } } });
  t.teardown(() => w.stop());
  const big = JSON.stringify({ schemaVersion: 2, padding: 'x'.repeat(2048) });
  const res = await fetch(`${w.url}/v2/limits/manifests/big`, {
    method: 'PUT',
    headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
    body: big,
  });
  t.is(res.status, 413);
  t.is(await errorCode(res), 'MANIFEST_INVALID');
});

test('SIGTERM lets an in-flight upload finish, then the process exits 0', async (t) => {
  const w: RunningWharf = await startWharf({ config: { log: { level: 'info' } } });
  const start = await fetch(`${w.url}/v2/drain/blobs/uploads/`, { method: 'POST' });
  const location = start.headers.get('location')!;
  const data = randomBytes(256 * 1024);

  // Send half the body, signal the server, then send the rest: the request must still succeed.
  const url = new URL(location);
  const result = new Promise<number>((resolve, reject) => {
    const req = request(
      { host: url.hostname, port: url.port, path: `${url.pathname}?digest=${sha256(data)}`, method: 'PUT',
        headers: { 'Content-Length': data.length, 'Content-Type': 'application/octet-stream' } },
      (res) => { res.resume(); res.on('end', () => resolve(res.statusCode!)); },
    );
    req.on('error', reject);
    req.write(data.subarray(0, data.length / 2), () => {
      w.process.kill('SIGTERM');
      // Wait until the server has begun shutting down (it logs it), then finish the body.
      const waitForDrain = setInterval(() => {
        if (/shutting down/.test(w.output())) {
          clearInterval(waitForDrain);
          req.end(data.subarray(data.length / 2));
        }
      }, 10);
    });
  });
  t.is(await result, 201);
  t.is(await w.stop(), 0);
});

test('http.tls serves the API over HTTPS with the configured certificate', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-tls-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1',
    '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
  const w = await startWharf({ config: { http: { tls: { certificate: cert, key } } } });
  t.teardown(() => w.stop());
  t.true(w.url.startsWith('https://'));
  const status = await new Promise<{ code: number; api: string | undefined }>((resolve, reject) => {
    httpsGet(`${w.url}/v2/`, { ca: readFileSync(cert) }, (res) => {
      res.resume();
      resolve({ code: res.statusCode!, api: res.headers['docker-distribution-api-version'] as string | undefined });
    }).on('error', reject);
  });
  t.deepEqual(status, { code: 200, api: 'registry/2.0' });
});
