/**
 * Adversarial tests of the HTTP surface against real Wharf processes (issue #13): what a manifest GET may serve and
 * with which headers, deeply nested JSON, held and idle connections, connections per client address, forwarded
 * headers from proxies that are (not) trusted, and the listing limits.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { startWharf, type RunningWharf } from '../../conformance/harness.js';

const sha256 = (b: Uint8Array | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

interface ErrorBody { errors: { code: string; message: string; detail?: unknown }[] }

async function errorCode(res: Response): Promise<string> {
  return ((await res.json()) as ErrorBody).errors[0]!.code;
}

async function pushBlob(base: string, name: string, data: Buffer, contentType = 'application/octet-stream'): Promise<string> {
  const digest = sha256(data);
  const res = await fetch(`${base}/v2/${name}/blobs/uploads/?digest=${digest}`, {
    method: 'POST',
    body: data,
    headers: { 'Content-Type': contentType },
  });
  if (res.status !== 201) throw new Error(`blob push answered ${res.status}: ${await res.text()}`);
  return digest;
}

/** Push a config blob and a manifest naming it; extra fields go into the manifest. Returns the manifest's bytes. */
async function pushManifest(base: string, name: string, ref: string, extra: Record<string, unknown> = {}): Promise<Buffer> {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
  const configDigest = await pushBlob(base, name, config);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.byteLength },
    layers: [],
    ...extra,
  }));
  const res = await fetch(`${base}/v2/${name}/manifests/${ref}`, { method: 'PUT', body: manifest, headers: { 'Content-Type': OCI_MANIFEST } });
  if (res.status !== 201) throw new Error(`manifest push answered ${res.status}: ${await res.text()}`);
  return manifest;
}

/** A server shared by the tests that need no special configuration. */
let shared: Promise<RunningWharf> | undefined;
function sharedServer(): Promise<RunningWharf> {
  shared ??= startWharf();
  return shared;
}
test.after.always(async () => {
  if (shared) await (await shared).stop();
});

// ---- finding 4: what a manifest GET serves, and the headers every answer carries ------------------------------

test('a blob that declares a text/html mediaType is not served from the manifests endpoint', async (t) => {
  const w = await sharedServer();
  // A plain blob upload links the blob into the repository; registry:2's legacy layout lets a manifest GET find it.
  const page = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'text/html', x: '<script>alert(document.domain)</script>' }));
  const digest = await pushBlob(w.url, 'xss/app', page);
  for (const method of ['GET', 'HEAD']) {
    const res = await fetch(`${w.url}/v2/xss/app/manifests/${digest}`, { method });
    t.is(res.status, 404, method);
    t.not(res.headers.get('content-type'), 'text/html', method);
    if (method === 'GET') t.is(await errorCode(res), 'MANIFEST_UNKNOWN');
  }
});

test('bytes that claim an accepted manifest type without its structure are not served as a manifest', async (t) => {
  const w = await sharedServer();
  for (const doc of [
    // An index without a manifests list, an image manifest without a config, and a schema 1 look-alike.
    { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', html: '<script>1</script>' },
    { schemaVersion: 2, mediaType: OCI_MANIFEST, html: '<script>2</script>' },
    { schemaVersion: 1, mediaType: 'text/html', fsLayers: [] },
    { schemaVersion: 3, config: {}, html: '<script>3</script>' },
  ]) {
    const digest = await pushBlob(w.url, 'xss/shape', Buffer.from(JSON.stringify(doc)));
    const res = await fetch(`${w.url}/v2/xss/shape/manifests/${digest}`);
    t.is(res.status, 404, JSON.stringify(doc));
    t.is(await errorCode(res), 'MANIFEST_UNKNOWN');
  }
});

test('a pushed manifest is still served with its own media type', async (t) => {
  const w = await sharedServer();
  const manifest = await pushManifest(w.url, 'xss/good', 'v1');
  for (const ref of ['v1', sha256(manifest)]) {
    const res = await fetch(`${w.url}/v2/xss/good/manifests/${ref}`);
    t.is(res.status, 200);
    t.is(res.headers.get('content-type'), OCI_MANIFEST);
    t.deepEqual(Buffer.from(await res.arrayBuffer()), manifest);
  }
});

test('a blob is served as application/octet-stream whatever type it was uploaded with', async (t) => {
  const w = await sharedServer();
  const digest = await pushBlob(w.url, 'xss/blob', Buffer.from('<html><script>alert(1)</script></html>'), 'text/html');
  const res = await fetch(`${w.url}/v2/xss/blob/blobs/${digest}`);
  t.is(res.status, 200);
  t.is(res.headers.get('content-type'), 'application/octet-stream');
  t.is(res.headers.get('x-content-type-options'), 'nosniff');
});

test('every answer, errors included, carries nosniff and a restrictive Content-Security-Policy', async (t) => {
  const w = await sharedServer();
  const answers = [
    await fetch(`${w.url}/v2/`),
    await fetch(`${w.url}/v2/nothing/here/manifests/latest`),
    await fetch(`${w.url}/v2/nothing/tags/list?n=x`),
    await fetch(`${w.url}/not-the-api`),
    await fetch(`${w.url}/v2/`, { method: 'PATCH' }),
  ];
  for (const res of answers) {
    t.is(res.headers.get('x-content-type-options'), 'nosniff', res.url);
    const csp = res.headers.get('content-security-policy') ?? '';
    t.regex(csp, /default-src 'none'/, res.url);
    t.regex(csp, /frame-ancestors 'none'/, res.url);
    t.regex(csp, /sandbox/, res.url);
    await res.arrayBuffer();
  }
});

// ---- finding 5: nesting depth ----------------------------------------------------------------------------------

/** JSON text of `depth` nested arrays. */
const nested = (depth: number) => `${'['.repeat(depth)}${']'.repeat(depth)}`;

test('a manifest nested deeper than 64 levels is refused with MANIFEST_INVALID; 64 levels are accepted', async (t) => {
  const w = await sharedServer();
  // Valid JSON and an otherwise valid manifest: only the depth of an extra field is wrong. The manifest object holds
  // the field, so the field's own nesting adds one level.
  const deep = await fetch(`${w.url}/v2/deep/app/manifests/deep`, {
    method: 'PUT',
    headers: { 'Content-Type': OCI_MANIFEST },
    body: JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: {}, layers: [], x: JSON.parse(nested(64)) }),
  });
  t.is(deep.status, 400);
  const body = (await deep.json()) as ErrorBody;
  t.is(body.errors[0]!.code, 'MANIFEST_INVALID');
  t.regex(body.errors[0]!.message, /deeper than 64/);

  // Brackets inside strings, escaped quotes included, do not count.
  const ok = await pushManifest(w.url, 'deep/app', 'shallow', { x: JSON.parse(nested(63)), s: `\\"${'['.repeat(500)}` });
  t.is((await fetch(`${w.url}/v2/deep/app/manifests/shallow`)).status, 200);
  t.true(ok.byteLength > 0);
});

/** Start a PUT with a raw socket: headers announcing `length` bytes, then `prefix`; the rest is not sent. */
function startHeldPut(url: string, path: string, length: number, prefix: Buffer): { socket: Socket; response: Promise<string> } {
  const { hostname, port } = new URL(url);
  const socket = connect({ host: hostname, port: Number(port) });
  socket.write(`PUT ${path} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nContent-Type: ${OCI_MANIFEST}\r\nContent-Length: ${length}\r\n\r\n`);
  socket.write(prefix);
  let received = '';
  const response = new Promise<string>((resolve) => {
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      received += d;
      if (received.includes('\r\n\r\n') && /}\s*$/.test(received)) resolve(received);
    });
    socket.on('close', () => resolve(received));
    socket.on('error', () => {});
  });
  return { socket, response };
}

test('deep manifests are refused as soon as the nesting is too deep, while other requests keep being answered', async (t) => {
  const w = await sharedServer();
  // Four pushes announcing 3 MB manifests nested 1.5 million levels deep, of which only the first 64 KiB are sent.
  // A server that waited for the whole body and parsed it would hold its event loop for seconds per request; the
  // depth is known to be too deep after 65 bytes, so each is answered while its body is still incomplete.
  const depth = 1_500_000;
  const puts = Array.from({ length: 4 }, (_, i) =>
    startHeldPut(w.url, `/v2/deep/held/manifests/t${i}`, depth * 2, Buffer.from('['.repeat(64 * 1024))));
  t.teardown(() => { for (const p of puts) p.socket.destroy(); });

  // Meanwhile the API answers.
  const base = await fetch(`${w.url}/v2/`);
  t.is(base.status, 200);

  // Ordering, not timing: every push is answered before its client has sent the rest of its body.
  const answers = await Promise.all(puts.map((p) => p.response));
  for (const answer of answers) {
    t.regex(answer, /^HTTP\/1\.1 400 /);
    t.regex(answer, /MANIFEST_INVALID/);
  }
  // The connections are still usable: Node discards the rest of each body and keeps them.
  for (const p of puts) t.false(p.socket.destroyed);
});
