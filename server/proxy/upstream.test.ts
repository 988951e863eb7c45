/**
 * The upstream client against a small loopback registry double: the Bearer challenge flow with Basic credentials at
 * the realm, token caching, Basic auth, 404/429/5xx told apart, and a timeout when the upstream does not answer.
 */
import test from 'ava';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { parseChallenge, UpstreamClient, UpstreamError } from './upstream.js';

interface Double {
  url: string;
  server: Server;
  log: string[];
  tokenRequests: URL[];
}

async function start(handler: (req: IncomingMessage, res: ServerResponse, d: Double) => void): Promise<Double> {
  const d: Double = { url: '', server: undefined as unknown as Server, log: [], tokenRequests: [] };
  d.server = createServer((req, res) => {
    d.log.push(`${req.method} ${req.url} ${req.headers.authorization ?? '-'}`);
    handler(req, res, d);
  });
  await new Promise<void>((resolve) => d.server.listen(0, '127.0.0.1', resolve));
  d.url = `http://127.0.0.1:${(d.server.address() as { port: number }).port}`;
  return d;
}

function stop(d: Double): Promise<void> {
  d.server.closeAllConnections();
  return new Promise((resolve) => d.server.close(() => resolve()));
}

const MANIFEST = Buffer.from('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}');
const BASIC = `Basic ${Buffer.from('u:p').toString('base64')}`;

/** A registry like Docker Hub: 401 with a Bearer challenge unless the token is `tok-<n>`; tokens need Basic u:p. */
function tokenRegistry(req: IncomingMessage, res: ServerResponse, d: Double): void {
  const url = new URL(req.url!, d.url);
  if (url.pathname === '/token') {
    d.tokenRequests.push(url);
    if (req.headers.authorization !== BASIC) {
      res.writeHead(401).end();
      return;
    }
    res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ token: `tok-${d.tokenRequests.length}`, expires_in: 300 }));
    return;
  }
  if (!req.headers.authorization?.startsWith('Bearer tok-')) {
    res.writeHead(401, { 'WWW-Authenticate': `Bearer realm="${d.url}/token",service="hub",scope="repository:library/alpine:pull"` }).end();
    return;
  }
  if (url.pathname === '/v2/library/alpine/manifests/1') {
    res.writeHead(200, { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json', 'Docker-Content-Digest': 'sha256:abc', 'Content-Length': MANIFEST.length });
    res.end(req.method === 'HEAD' ? undefined : MANIFEST);
    return;
  }
  if (url.pathname.includes('/ratelimited/')) res.writeHead(429).end();
  else if (url.pathname.includes('/broken/')) res.writeHead(503).end();
  else res.writeHead(404).end();
}

test('parseChallenge reads quoted and bare parameters', (t) => {
  t.deepEqual(parseChallenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push"'), {
    scheme: 'bearer',
    params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:a/b:pull,push' },
  });
  t.deepEqual(parseChallenge('Basic realm=wharf'), { scheme: 'basic', params: { realm: 'wharf' } });
});

test('the Bearer flow fetches a token with Basic credentials, caches it, and HEAD/GET manifests', async (t) => {
  const d = await start(tokenRegistry);
  t.teardown(() => stop(d));
  const client = new UpstreamClient({ url: d.url, username: 'u', password: 'p', timeoutMs: 5000 });
  const head = await client.headManifest('library/alpine', '1');
  t.like(head, { digest: 'sha256:abc', mediaType: 'application/vnd.oci.image.manifest.v1+json', size: MANIFEST.length });
  const got = await client.getManifest('library/alpine', '1', 1024);
  t.deepEqual(got.content, MANIFEST);
  t.is(d.tokenRequests.length, 1, 'the token is cached for the second request');
  t.is(d.tokenRequests[0]!.searchParams.get('service'), 'hub');
  t.is(d.tokenRequests[0]!.searchParams.get('scope'), 'repository:library/alpine:pull');
  t.true(d.log.some((l) => l.startsWith('GET /v2/library/alpine/manifests/1 Bearer tok-1')));
});

test('errors say what happened: 404 notfound, 429 ratelimited, 5xx unavailable, bad credentials denied', async (t) => {
  const d = await start(tokenRegistry);
  t.teardown(() => stop(d));
  const client = new UpstreamClient({ url: d.url, username: 'u', password: 'p', timeoutMs: 5000 });
  const kind = async (p: Promise<unknown>) => ((await t.throwsAsync(p, { instanceOf: UpstreamError })) as UpstreamError).kind;
  t.is(await kind(client.headManifest('library/missing', '1')), 'notfound');
  t.is(await kind(client.headManifest('library/ratelimited', '1')), 'ratelimited');
  t.is(await kind(client.getBlob('library/broken', 'sha256:abc')), 'unavailable');
  const wrong = new UpstreamClient({ url: d.url, username: 'u', password: 'nope', timeoutMs: 5000 });
  t.is(await kind(wrong.headManifest('library/alpine', '1')), 'denied');
});

test('Basic auth is sent after a Basic challenge', async (t) => {
  const d = await start((req, res) => {
    if (req.headers.authorization !== BASIC) res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="x"' }).end();
    else res.writeHead(200, { 'Content-Length': '3' }).end('abc');
  });
  t.teardown(() => stop(d));
  const client = new UpstreamClient({ url: d.url, username: 'u', password: 'p', timeoutMs: 5000 });
  const blob = await client.getBlob('a/b', 'sha256:x');
  t.is(blob.size, 3);
  const chunks: Buffer[] = [];
  for await (const c of blob.body) chunks.push(c as Buffer);
  t.is(Buffer.concat(chunks).toString(), 'abc');
  await client.headBlob('a/b', 'sha256:x');
  t.is(d.log.at(-1), `HEAD /v2/a/b/blobs/sha256:x ${BASIC}`, 'credentials sent up front once Basic was asked for');
});

test('an upstream that does not answer times out as unavailable', async (t) => {
  const d = await start(() => undefined);
  t.teardown(() => stop(d));
  const client = new UpstreamClient({ url: d.url, timeoutMs: 200 });
  const err = await t.throwsAsync(client.headManifest('a/b', '1'), { instanceOf: UpstreamError });
  t.is(err!.kind, 'unavailable');
  t.regex(err!.message, /did not answer within 200 ms/);
  t.false(await client.ping());
});

test('credentials go to a token realm on the upstream\'s host (any port), auth.docker.io for Docker Hub, or a listed host; never https to http', (t) => {
  const client = (url: string, realmHosts?: string[]) => new UpstreamClient({ url, timeoutMs: 1000, username: 'u', password: 'p', ...(realmHosts ? { realmHosts } : {}) });
  const hub = client('https://registry-1.docker.io');
  t.true(hub.realmMayReceiveCredentials(new URL('https://auth.docker.io/token')));
  t.false(hub.realmMayReceiveCredentials(new URL('http://auth.docker.io/token')), 'no downgrade to plain http');
  t.false(hub.realmMayReceiveCredentials(new URL('https://auth.docker.io.evil.example/token')));
  const own = client('https://registry.example.com:5000');
  t.true(own.realmMayReceiveCredentials(new URL('https://registry.example.com:5001/auth')));
  t.false(own.realmMayReceiveCredentials(new URL('https://auth.example.com/auth')));
  t.false(client('https://ghcr.io').realmMayReceiveCredentials(new URL('https://auth.docker.io/token')), 'the Docker Hub pair only for Docker Hub');
  const listed = client('https://registry.example.com', ['gitlab.example.com', 'auth.example.com:5001']);
  t.true(listed.realmMayReceiveCredentials(new URL('https://gitlab.example.com/jwt/auth')));
  t.true(listed.realmMayReceiveCredentials(new URL('https://auth.example.com:5001/auth')));
  t.false(listed.realmMayReceiveCredentials(new URL('https://auth.example.com:5002/auth')));
  t.true(client('http://127.0.0.1:5000').realmMayReceiveCredentials(new URL('http://127.0.0.1:5001/token')));
});

test('an error never quotes a URL: a refused connection is described by its code', async (t) => {
  const d = await start((_req, res) => res.end());
  await stop(d);
  const err = await t.throwsAsync(new UpstreamClient({ url: d.url, timeoutMs: 2000 }).headManifest('a/b', '1'), { instanceOf: UpstreamError });
  t.is(err?.kind, 'unavailable');
  t.is(err?.message, 'upstream unreachable (ECONNREFUSED)');
});

test('a token answer larger than the bound fails as invalid', async (t) => {
  const d = await start((req, res) => {
    if (req.url!.startsWith('/token')) {
      res.writeHead(200, { 'Content-Type': 'application/json' }).end(`{"token":"${'a'.repeat(2 << 20)}"}`);
      return;
    }
    res.writeHead(401, { 'WWW-Authenticate': `Bearer realm="${d.url}/token",service="s"` }).end();
  });
  t.teardown(() => stop(d));
  const err = await t.throwsAsync(new UpstreamClient({ url: d.url, timeoutMs: 2000 }).headManifest('a/b', '1'), { instanceOf: UpstreamError });
  t.is(err?.kind, 'invalid');
  t.regex(err?.message ?? '', /token server answer is larger than/);
});

test('a manifest trickling in byte by byte fails once the whole body takes longer than the idle timeout', async (t) => {
  const d = await start((_req, res) => {
    const body = Buffer.alloc(600, ' ');
    res.writeHead(200, { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json', 'Content-Length': body.length });
    let i = 0;
    const timer = setInterval(() => {
      if (i === body.length) {
        clearInterval(timer);
        res.end();
        return;
      }
      res.write(body.subarray(i, ++i));
    }, 50);
    res.on('close', () => clearInterval(timer));
  });
  t.teardown(() => stop(d));
  const client = new UpstreamClient({ url: d.url, timeoutMs: 5000, idleTimeoutMs: 1000 });
  const err = await t.throwsAsync(client.getManifest('a/b', '1', 1 << 20), { instanceOf: UpstreamError });
  t.is(err?.kind, 'unavailable');
  t.regex(err?.message ?? '', /manifest took longer than 1000 ms/);
});
