/**
 * Adversarial tests of the HTTP surface against real Wharf processes (issue #13): what a manifest GET may serve and
 * with which headers, deeply nested JSON, held and idle connections, connections per client address, forwarded
 * headers from proxies that are (not) trusted, and the listing limits.
 */
import test from 'ava';
import { request as httpRequest } from 'node:http';
import { connect, type Socket } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startWharf, writeHtpasswd, type RunningWharf } from '../../testing/harness.js';
import { DISCARD_LIMIT } from './app.js';
import { InMemoryDriver } from '../../storage-drivers/index.js';
import { markRepository } from '../gc/mark.js';
import { scanRepository } from '../registry/scan.js';
import * as layout from '../registry/layout.js';
import { parseDigest } from '../registry/reference.js';
import { pushBlob, sha256, waitFor, waitForOutput } from '../../testing/helpers.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

interface ErrorBody { errors: { code: string; message: string; detail?: unknown }[] }

async function errorCode(res: Response): Promise<string> {
  return ((await res.json()) as ErrorBody).errors[0]!.code;
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
  const digest = await pushBlob(w.url, 'xss/blob', Buffer.from('<html><script>alert(1)</script></html>'), { 'Content-Type': 'text/html' });
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

// ---- finding 6: held connections -------------------------------------------------------------------------------

/** A raw connection from `localAddress` to the server; resolves once connected. */
function rawConnect(url: string, localAddress = '127.0.0.1'): Promise<Socket> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: hostname, port: Number(port), localAddress }, () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Resolves when the socket is closed, with everything it received. */
function closed(socket: Socket): Promise<string> {
  let received = '';
  socket.setEncoding('latin1');
  socket.on('data', (d: string) => { received += d; });
  socket.on('error', () => {});
  return new Promise((resolve) => socket.once('close', () => resolve(received)));
}

/** Send one keep-alive GET on a raw socket and resolve with the response head once it arrives. */
function rawGet(socket: Socket, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let received = '';
    const onData = (d: Buffer) => {
      received += d.toString('latin1');
      if (received.includes('\r\n\r\n')) { socket.off('data', onData); resolve(received); }
    };
    socket.on('data', onData);
    socket.once('close', () => reject(new Error(`closed before answering: ${JSON.stringify(received)}`)));
    socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
  });
}

const until = async (condition: () => boolean | Promise<boolean>): Promise<void> => {
  while (!(await condition())) await new Promise((r) => setTimeout(r, 50));
};

test('a request whose announced body stops coming is closed after http.timeouts.stall', async (t) => {
  const w = await startWharf({ config: { log: { level: 'info' }, http: { timeouts: { stall: '1s' } } } });
  t.teardown(() => w.stop());
  const socket = await rawConnect(w.url);
  const done = closed(socket);
  socket.write(`PUT /v2/held/app/manifests/latest HTTP/1.1\r\nHost: localhost\r\nContent-Type: ${OCI_MANIFEST}\r\nContent-Length: 1000\r\n\r\n{"schema`);
  const received = await done;
  t.false(/^HTTP\/1\.1 2/.test(received), 'no success for a body that never came');

  // A chunked upload that stops sending is closed too.
  const chunked = await rawConnect(w.url);
  const chunkedDone = closed(chunked);
  chunked.write('POST /v2/held/app/blobs/uploads/ HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n');
  // (A POST that starts a session is answered before its body ends: the rest is discarded, and waited for.)
  await chunkedDone;
  // Both were closed by the stall watch (not by some other limit).
  t.is(await waitForOutput(w, 'closing a stalled connection', 2), 2);
});

test('request headers that never finish are closed after http.timeouts.readheader', async (t) => {
  const w = await startWharf({ config: { http: { timeouts: { readheader: '1s' } } } });
  t.teardown(() => w.stop());
  const silent = await rawConnect(w.url);
  const partial = await rawConnect(w.url);
  const silentDone = closed(silent);
  const partialDone = closed(partial);
  partial.write('GET /v2/ HTTP/1.1\r\nHost: localhost\r\nX-Slow: ');
  // Node's own default would wait 60 s: a close well before that is the configured limit at work.
  const deadline = new Promise<string>((resolve) => setTimeout(() => resolve('still open after 30 s'), 30_000).unref());
  const answers = await Promise.all([silentDone, partialDone].map((d) => Promise.race([d, deadline])));
  for (const answer of answers) t.regex(answer, /^HTTP\/1\.1 408 /);
});

test('a kept-alive connection without a next request is closed after http.timeouts.idle', async (t) => {
  const w = await startWharf({ config: { http: { timeouts: { idle: '1s' } } } });
  t.teardown(() => w.stop());
  const socket = await rawConnect(w.url);
  t.regex(await rawGet(socket, '/v2/'), /^HTTP\/1\.1 200 /);
  // The server ends the connection (this side never does), sending nothing more.
  t.is(await closed(socket), '');
});

test('a slow upload that keeps moving is not cut by http.timeouts.stall', async (t) => {
  const w = await startWharf({ config: { http: { timeouts: { stall: '3s' } } } });
  t.teardown(() => w.stop());
  const start = await fetch(`${w.url}/v2/slow/app/blobs/uploads/`, { method: 'POST' });
  const location = new URL(start.headers.get('location')!, w.url);
  // Sixteen chunks 250 ms apart: longer than the stall limit in total, and never near it without a byte (the margin
  // keeps a loaded machine, whose timers run late, from making a real stall).
  const chunks = Array.from({ length: 16 }, (_, i) => Buffer.alloc(1024, i));
  const socket = await rawConnect(w.url);
  const done = closed(socket);
  socket.write(`PATCH ${location.pathname}${location.search} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: ${16 * 1024}\r\nConnection: close\r\n\r\n`);
  for (const chunk of chunks) {
    await new Promise((r) => setTimeout(r, 250));
    socket.write(chunk);
  }
  const received = await done;
  t.regex(received, /^HTTP\/1\.1 202 /);
  t.regex(received, /Range: 0-16383/i);
});

test('a response the client does not read is closed after http.timeouts.stall', async (t) => {
  const w = await startWharf({ config: { log: { level: 'info' }, http: { timeouts: { stall: '1s' } } } });
  t.teardown(() => w.stop());
  // Large enough to fill the socket buffers of loopback on both sides.
  const blob = Buffer.alloc(48 * 1024 * 1024, 7);
  const digest = await pushBlob(w.url, 'unread/app', blob);
  const socket = await rawConnect(w.url);
  socket.pause();
  socket.write(`GET /v2/unread/app/blobs/${digest} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
  await until(() => w.output().includes('closing a stalled connection'));
  // Reading now gets what was in flight, then the end: not the whole blob.
  let received = 0;
  socket.on('data', (d: Buffer) => { received += d.byteLength; });
  socket.on('error', () => {});
  socket.resume();
  await new Promise((r) => socket.once('close', r));
  t.true(received < blob.byteLength, `received ${received} of ${blob.byteLength}`);
});

test('one address may hold http.maxconnectionsperaddress connections; another address is still served', async (t) => {
  const w = await startWharf({ config: { http: { maxconnectionsperaddress: 3 } } });
  t.teardown(() => w.stop());
  const held = await Promise.all([1, 2, 3].map(() => rawConnect(w.url)));
  t.teardown(() => { for (const s of held) s.destroy(); });
  // Each of them is accepted and answered (so the server has counted all three).
  for (const s of held) t.regex(await rawGet(s, '/v2/'), /^HTTP\/1\.1 200 /);

  // A fourth from the same address is closed without an answer.
  const fourth = await rawConnect(w.url);
  const fourthDone = closed(fourth);
  fourth.write('GET /v2/ HTTP/1.1\r\nHost: localhost\r\n\r\n');
  t.is(await fourthDone, '');

  // Another client address is served meanwhile.
  const other = await rawConnect(w.url, '127.0.0.2');
  t.regex(await rawGet(other, '/v2/'), /^HTTP\/1\.1 200 /);
  other.destroy();

  // Once one of the three goes, the address may connect again.
  held[0]!.destroy();
  let answer = '';
  await until(async () => {
    const again = await rawConnect(w.url);
    try {
      answer = await rawGet(again, '/v2/');
    } catch {
      answer = '';
    } finally {
      again.destroy();
    }
    return answer !== '';
  });
  t.regex(answer, /^HTTP\/1\.1 200 /);
});

test('a trusted proxy is not limited by http.maxconnectionsperaddress', async (t) => {
  const w = await startWharf({ config: { http: { maxconnectionsperaddress: 1, trustedproxies: ['127.0.0.1'] } } });
  t.teardown(() => w.stop());
  const sockets = await Promise.all([1, 2, 3].map(() => rawConnect(w.url)));
  t.teardown(() => { for (const s of sockets) s.destroy(); });
  for (const s of sockets) t.regex(await rawGet(s, '/v2/'), /^HTTP\/1\.1 200 /);
});

// ---- finding 7: forwarded headers --------------------------------------------------------------------------------

/** POST an upload from `localAddress` with these headers; the Location header and the access-log address. */
async function startUploadFrom(w: RunningWharf, localAddress: string, headers: Record<string, string>): Promise<{ location: string; remote: unknown }> {
  const requestId = `fwd-${Math.random().toString(36).slice(2)}`;
  const { hostname, port } = new URL(w.url);
  const location = await new Promise<string>((resolve, reject) => {
    const req = httpRequest({
      host: hostname, port: Number(port), localAddress, agent: false, method: 'POST', path: '/v2/fwd/app/blobs/uploads/',
      headers: { ...headers, 'X-Request-Id': requestId },
    }, (res) => {
      res.resume();
      if (res.statusCode !== 202) reject(new Error(`upload start answered ${res.statusCode}`));
      else resolve(res.headers.location!);
    });
    req.on('error', reject);
    req.end();
  });
  // The access-log line of this request (written once it was answered).
  const line = () => w.output().split('\n').find((l) => l.includes(requestId) && l.includes('"msg":"request"'));
  await until(() => line() !== undefined);
  return { location, remote: (JSON.parse(line()!) as { remote?: unknown }).remote };
}

const SPOOFED = {
  'X-Forwarded-For': '198.51.100.7, 203.0.113.9',
  'X-Forwarded-Host': 'attacker.example',
  'X-Forwarded-Proto': 'https',
};

test('by default, X-Forwarded-* change neither the client address in logs nor the host of Location', async (t) => {
  const w = await startWharf({ config: { log: { level: 'info' } } });
  t.teardown(() => w.stop());
  const { location, remote } = await startUploadFrom(w, '127.0.0.1', SPOOFED);
  t.true(location.startsWith(`${w.url}/v2/fwd/app/blobs/uploads/`), location);
  t.is(remote, '127.0.0.1');
});

test('from a trusted proxy, the right-most untrusted X-Forwarded-For hop is the client, and its host and scheme count', async (t) => {
  const w = await startWharf({ config: { log: { level: 'info' }, http: { trustedproxies: ['127.0.0.1', '10.0.0.0/8'] } } });
  t.teardown(() => w.stop());
  // The client wrote 198.51.100.7 itself; the trusted proxy appended the address it saw, 203.0.113.9.
  const direct = await startUploadFrom(w, '127.0.0.1', SPOOFED);
  t.is(direct.remote, '203.0.113.9');
  t.true(direct.location.startsWith('https://attacker.example/v2/fwd/app/blobs/uploads/'), direct.location);

  // Through two trusted proxies (10.1.2.3 is one of them), the client is still the first untrusted hop from the right.
  const chained = await startUploadFrom(w, '127.0.0.1', { 'X-Forwarded-For': '198.51.100.7, 203.0.113.9, 10.1.2.3' });
  t.is(chained.remote, '203.0.113.9');

  // A malformed hop is not taken as an address: the proxy that passed it on is the client.
  const garbage = await startUploadFrom(w, '127.0.0.1', { 'X-Forwarded-For': 'not-an-address', 'X-Forwarded-Host': 'bad host/x' });
  t.is(garbage.remote, '127.0.0.1');
  t.true(garbage.location.startsWith(`${w.url}/`), garbage.location);

  // The same headers from an address that is not a trusted proxy are ignored.
  const untrusted = await startUploadFrom(w, '127.0.0.2', SPOOFED);
  t.is(untrusted.remote, '127.0.0.2');
  t.true(untrusted.location.startsWith(`${w.url}/`), untrusted.location);
});

// ---- listing limits ------------------------------------------------------------------------------------------------

test('tags.maxtags bounds every tags page, with or without n, and the Link header leads to the rest', async (t) => {
  const w = await startWharf({ config: { tags: { maxtags: 3 }, catalog: { maxentries: 2 } } });
  t.teardown(() => w.stop());
  const tags = ['a', 'b', 'c', 'd', 'e'];
  for (const tag of tags) await pushManifest(w.url, 'many/tags', tag);

  for (const query of ['', '?n=100']) {
    const res = await fetch(`${w.url}/v2/many/tags/tags/list${query}`);
    t.is(res.status, 200);
    t.deepEqual(((await res.json()) as { tags: string[] }).tags, ['a', 'b', 'c'], query);
    const link = res.headers.get('link');
    t.is(link, '</v2/many/tags/tags/list?last=c&n=3>; rel="next"', query);
    const next = await fetch(new URL(link!.slice(1, link!.indexOf('>')), w.url));
    t.deepEqual(((await next.json()) as { tags: string[] }).tags, ['d', 'e']);
    t.is(next.headers.get('link'), null);
  }
  // A smaller n is honoured as before.
  t.deepEqual(((await (await fetch(`${w.url}/v2/many/tags/tags/list?n=2`)).json()) as { tags: string[] }).tags, ['a', 'b']);

  // catalog.maxentries does the same for the catalog.
  await pushManifest(w.url, 'many/other', 'x');
  await pushManifest(w.url, 'many/third', 'x');
  const catalog = await fetch(`${w.url}/v2/_catalog?n=50`);
  t.deepEqual(((await catalog.json()) as { repositories: string[] }).repositories, ['many/other', 'many/tags']);
  t.regex(catalog.headers.get('link') ?? '', /last=many%2Ftags&n=2/);
});

// ---- body size -------------------------------------------------------------------------------------------------

test('a chunked manifest over validation.manifests.maxsize is answered 413 before its body ends', async (t) => {
  const w = await startWharf({ config: { validation: { manifests: { maxsize: 1024 } } } });
  t.teardown(() => w.stop());
  const socket = await rawConnect(w.url);
  t.teardown(() => socket.destroy());
  let received = '';
  const answered = new Promise<void>((resolve) => {
    socket.on('data', (d: Buffer) => {
      received += d.toString('latin1');
      if (/\r\n\r\n[\s\S]*}\s*$/.test(received)) resolve();
    });
    socket.once('close', () => resolve());
  });
  // No Content-Length, so the limit can only be applied while the body streams in; the body is never finished.
  socket.write(`PUT /v2/big/app/manifests/latest HTTP/1.1\r\nHost: localhost\r\nContent-Type: ${OCI_MANIFEST}\r\nTransfer-Encoding: chunked\r\n\r\n`);
  const chunk = `{"schemaVersion":2,"padding":"${'x'.repeat(4000)}`;
  socket.write(`${chunk.length.toString(16)}\r\n${chunk}\r\n`);
  await answered;
  t.regex(received, /^HTTP\/1\.1 413 /);
  t.regex(received, /MANIFEST_INVALID/);
  t.false(socket.destroyed, 'the connection is kept: the rest of the body is discarded, not reset');
});

test('a body nobody reads is discarded only up to a bound: an endless one from a client without credentials is cut', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-discard-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeHtpasswd(join(dir, 'htpasswd'), { someone: 'secret-pw-1' });
  const w = await startWharf({ config: { auth: { htpasswd: { realm: 'discard', path: join(dir, 'htpasswd') } } } });
  t.teardown(() => w.stop());
  const socket = await rawConnect(w.url);
  t.teardown(() => socket.destroy());
  let received = '';
  socket.on('data', (d: Buffer) => { received += d.toString('latin1'); });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('error', () => {});
  // Any path, any method: the answer is 401 before the body is looked at, and the body never ends.
  socket.write('PATCH /v2/victim/app/blobs/uploads/00000000-0000-4000-8000-000000000000 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n');
  const chunk = Buffer.alloc(1024 * 1024, 0x61);
  const framed = Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')]);
  let sent = 0;
  // Bounded: four times the discard limit at most; the server must cut the connection well before that.
  while (!socket.destroyed && sent < 4 * DISCARD_LIMIT) {
    const ok = socket.write(framed);
    sent += chunk.length;
    if (!ok) await Promise.race([new Promise((r) => socket.once('drain', r)), closed]);
  }
  await Promise.race([closed, new Promise((r) => setTimeout(r, 30_000))]);
  t.regex(received, /^HTTP\/1\.1 401 /, 'the client was answered first');
  t.true(socket.destroyed, 'the connection was cut');
  t.true(sent < 4 * DISCARD_LIMIT, `cut after ${sent} bytes`);
});

// ---- the garbage collector and manifests stored before the depth bound --------------------------------------------

test('the collector still follows a stored manifest nested deeper than the bound, and keeps its blobs', async (t) => {
  const driver = new InMemoryDriver();
  const config = Buffer.from('{"architecture":"amd64"}');
  const configDigest = parseDigest(sha256(config));
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest.value, size: config.byteLength },
    layers: [], x: JSON.parse(nested(100)),
  }));
  const manifestDigest = parseDigest(sha256(manifest));
  await driver.putContent(layout.blobDataPath(configDigest), config);
  await driver.putContent(layout.layerLinkPath('old/deep', configDigest), configDigest.value);
  await driver.putContent(layout.blobDataPath(manifestDigest), manifest);
  await driver.putContent(layout.revisionLinkPath('old/deep', manifestDigest), manifestDigest.value);
  await driver.putContent(layout.tagCurrentLinkPath('old/deep', 'v1'), manifestDigest.value);
  const scan = await scanRepository(driver, 'old/deep');
  // Every link counts as old, so only what the tagged manifest references is live.
  const marked = await markRepository(driver, scan, { deleteUntagged: true, cutoff: Date.now() + 3_600_000 });
  t.true(marked.manifests.has(manifestDigest.value));
  t.true(marked.blobs.has(configDigest.value));
});

test('a client-chosen X-Request-Id is kept only when short and plain: logs and events never carry a forged line', async (t) => {
  const w = await startWharf({ config: { log: { level: 'info', formatter: 'text' } } });
  t.teardown(() => w.stop());
  const plain = await fetch(`${w.url}/v2/`, { headers: { 'X-Request-Id': 'trace-42.a_b:c' } });
  t.is(plain.headers.get('x-request-id'), 'trace-42.a_b:c');
  const forged = 'x level=error msg="login succeeded" user=admin';
  for (const asked of [forged, 'y'.repeat(129)]) {
    const res = await fetch(`${w.url}/v2/`, { headers: { 'X-Request-Id': asked } });
    const given = res.headers.get('x-request-id') ?? '';
    t.not(given, asked);
    t.regex(given, /^[0-9a-f-]{36}$/);
  }
  await waitFor('the access log line of the plain id', async () => w.output().includes('trace-42.a_b:c') || undefined);
  t.false(w.output().includes('login succeeded'));
});
