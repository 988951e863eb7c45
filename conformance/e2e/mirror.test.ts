/**
 * The pull-through cache end to end: the upstream is a Wharf with its built-in token server requiring Bearer auth
 * the way Docker Hub does; the mirror is another Wharf with `proxy` pointing at it and the upstream credentials.
 * skopeo pushes into the upstream and pulls through the mirror. The upstream's access log (JSON lines) tells which
 * requests reached it.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createServer, request as httpRequest, type Server } from 'node:http';
import { join } from 'node:path';
import { freePort, startRegistry2, startWharf, type RunningWharf } from '../../testing/harness.js';
import { allBlobs, generateImage, generateMultiArch, writeOciLayout, type Image } from '../../testing/e2e/image.js';
import { tempDir } from '../../testing/e2e/target.js';
import { waitFor, waitForOutput } from '../../testing/helpers.js';
import { UPSTREAM_USERS as USERS, pushUpstream as pushTo, skopeo, startTokenUpstream, upstreamBlobGets as blobGetsOf } from '../../testing/e2e/upstream.js';

let work: { path: string; remove: () => Promise<void> };
let upstream: RunningWharf;
let mirror: RunningWharf;
/** A mirror whose upstream is the 429 front below. */
let limitedMirror: RunningWharf;
let front: Server;
/** The mirror's debug listener (Prometheus metrics). */
let debugPort: number;
let frontLimited = false;
/** When set, the front flips one byte of every blob body (a corrupting upstream or middlebox). */
let frontCorrupt = false;
let frontBlobGets = 0;

/** Push an OCI layout ref into the upstream as admin. */
function pushUpstream(layoutDir: string, ref: string, target: string, all = false) {
  return pushTo(upstream, layoutDir, ref, target, all);
}

/** Pull through a registry (anonymous, the mirror has no auth) into a fresh OCI layout; returns the skopeo result. */
let pulls = 0;
async function pull(host: string, ref: string, all = false) {
  const dir = join(work.path, `pulled-${pulls++}`);
  return { dir, ...(await skopeo('copy', ...(all ? ['--all'] : []), '--src-tls-verify=false', `docker://${host}/${ref}`, `oci:${dir}:x`)) };
}

/** The digest of the manifest a registry serves for `ref` (skopeo inspect --raw, hashed). */
async function servedDigest(host: string, ref: string): Promise<string> {
  const r = await skopeo('inspect', '--raw', '--tls-verify=false', `docker://${host}/${ref}`);
  if (r.code !== 0) throw new Error(`inspect ${ref} failed: ${r.stderr}`);
  return `sha256:${createHash('sha256').update(r.stdout).digest('hex')}`;
}

function upstreamBlobGets(name: string): number {
  return blobGetsOf(upstream, name);
}

async function layoutOf(image: Image, tag = 'img'): Promise<string> {
  const dir = join(work.path, `layout-${image.manifest.digest.slice(7, 19)}`);
  await writeOciLayout(dir, [{ tag, target: image.manifest }], allBlobs(image));
  return dir;
}

test.before(async () => {
  work = await tempDir('wharf-e2e-mirror-');
  upstream = await startTokenUpstream(work.path);
  // A loopback front for the upstream that can be switched to answer 429 to everything (Docker Hub's rate limit).
  front = createServer((req, res) => {
    if (frontLimited) {
      res.writeHead(429, { 'Content-Type': 'application/json' });
      res.end('{"errors":[{"code":"TOOMANYREQUESTS","message":"rate limit"}]}');
      return;
    }
    if (req.method === 'GET' && /\/blobs\//.test(req.url ?? '')) frontBlobGets++;
    const up = new URL(upstream.url);
    const corrupt = frontCorrupt && req.method === 'GET' && /\/blobs\//.test(req.url ?? '');
    const fwd = httpRequest({ host: up.hostname, port: up.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      let first = corrupt && r.statusCode === 200;
      r.on('data', (chunk: Buffer) => {
        if (first) {
          chunk = Buffer.from(chunk);
          chunk[0] = chunk[0]! ^ 0xff;
          first = false;
        }
        res.write(chunk);
      });
      r.on('end', () => res.end());
    });
    fwd.on('error', () => res.destroy());
    req.pipe(fwd);
  });
  await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
  const frontUrl = `http://127.0.0.1:${(front.address() as { port: number }).port}`;
  const proxy = (url: string) => ({ proxy: { remoteurl: url, username: 'puller', password: USERS.puller, librarymapping: true, timeout: '5s', localnamespaces: ['mine'] } });
  debugPort = await freePort();
  const debug = { log: { level: 'debug' }, http: { debug: { addr: `127.0.0.1:${debugPort}`, prometheus: { enabled: true } } } };
  [mirror, limitedMirror] = await Promise.all([startWharf({ config: { ...proxy(upstream.url), ...debug } }), startWharf({ config: proxy(frontUrl) })]);
});

test.after.always(async () => {
  await Promise.all([upstream?.stop(), mirror?.stop(), limitedMirror?.stop()]);
  await new Promise((resolve) => (front ? front.close(resolve) : resolve(undefined)));
  await work?.remove();
});

const single = generateImage();

test.serial('a single-arch image pulls through the mirror byte-identical; library/ is mapped; the second pull is local', async (t) => {
  await pushUpstream(await layoutOf(single), 'img', 'library/alpine:1');
  const first = await pull(mirror.host, 'alpine:1');
  t.is(first.code, 0, first.stderr);
  t.is(await servedDigest(mirror.host, 'alpine:1'), single.manifest.digest);
  const blobGets = upstreamBlobGets('library/alpine');
  t.is(blobGets, single.blobs.length, 'each blob fetched from the upstream once');
  const second = await pull(mirror.host, 'alpine:1');
  t.is(second.code, 0, second.stderr);
  t.is(upstreamBlobGets('library/alpine'), blobGets, 'the second pull fetched no blob from the upstream');
  // Stored in the normal layout: the tag link names the manifest.
  const res = await fetch(`${mirror.url}/v2/alpine/manifests/${single.manifest.digest}`, { method: 'HEAD' });
  t.is(res.status, 200);
  // Last pulls are recorded for TTL expiry, under a path registry:2 ignores.
  const record = join(mirror.rootDirectory, 'docker/registry/v2/_wharf/proxy/lastpull/alpine/sha256', single.layers[0]!.blob.digest.slice(7));
  await waitFor('the last-pull record', async () => (existsSync(record) ? true : undefined));
  const [date = '', upstream] = readFileSync(record, 'utf8').split(' ');
  t.false(Number.isNaN(Date.parse(date)), 'the time of the pull');
  t.is(upstream, 'default', 'and the upstream it came from (registry:2\'s proxy.remoteurl is "default")');
});

test.serial('a multi-arch image pulls with --all and keeps its index digest', async (t) => {
  const multi = generateMultiArch();
  const dir = join(work.path, 'layout-multi');
  await writeOciLayout(dir, [{ tag: 'multi', target: multi.index }], allBlobs(multi));
  await pushUpstream(dir, 'multi', 'team/multi:1', true);
  const pulled = await pull(mirror.host, 'team/multi:1', true);
  t.is(pulled.code, 0, pulled.stderr);
  t.is(await servedDigest(mirror.host, 'team/multi:1'), multi.index.digest);
  for (const img of multi.images) t.is(await servedDigest(mirror.host, `team/multi@${img.manifest.digest}`), img.manifest.digest);
});

test.serial('a changed upstream tag is picked up', async (t) => {
  const a = generateImage({ layerCount: 1, firstLayerBytes: 4096 });
  const b = generateImage({ layerCount: 1, firstLayerBytes: 4096 });
  await pushUpstream(await layoutOf(a), 'img', 'team/moving:latest');
  t.is(await servedDigest(mirror.host, 'team/moving:latest'), a.manifest.digest);
  await pushUpstream(await layoutOf(b), 'img', 'team/moving:latest');
  t.is(await servedDigest(mirror.host, 'team/moving:latest'), b.manifest.digest);
  const pulled = await pull(mirror.host, 'team/moving:latest');
  t.is(pulled.code, 0, pulled.stderr);
});

test.serial('concurrent requests for one blob make one upstream request', async (t) => {
  const image = generateImage({ layerCount: 1, firstLayerBytes: 2 * 1024 * 1024 });
  await pushUpstream(await layoutOf(image), 'img', 'team/concurrent:1');
  const layer = image.layers[0]!.blob;
  const bodies = await Promise.all(
    Array.from({ length: 6 }, async () => {
      const res = await fetch(`${mirror.url}/v2/team/concurrent/blobs/${layer.digest}`);
      return { status: res.status, digest: `sha256:${createHash('sha256').update(Buffer.from(await res.arrayBuffer())).digest('hex')}` };
    }),
  );
  for (const b of bodies) t.deepEqual(b, { status: 200, digest: layer.digest });
  t.is(upstreamBlobGets('team/concurrent'), 1);
});

test.serial('a client that disconnects mid-blob does not abort the fetch: the blob is cached once', async (t) => {
  const image = generateImage({ layerCount: 1, firstLayerBytes: 8 * 1024 * 1024 });
  await pushUpstream(await layoutOf(image), 'img', 'team/abandoned:1');
  const layer = image.layers[0]!.blob;
  const controller = new AbortController();
  const res = await fetch(`${mirror.url}/v2/team/abandoned/blobs/${layer.digest}`, { signal: controller.signal });
  t.is(res.status, 200);
  const reader = res.body!.getReader();
  await reader.read();
  controller.abort();
  await reader.cancel().catch(() => undefined);
  // The fetch goes on; once it is done the blob is served from storage, and the upstream was asked once.
  const cached = await waitFor('the abandoned blob to be cached', async () => {
    const r = await fetch(`${mirror.url}/v2/team/abandoned/blobs/${layer.digest}`);
    const body = Buffer.from(await r.arrayBuffer());
    return r.status === 200 ? `sha256:${createHash('sha256').update(body).digest('hex')}` : undefined;
  });
  t.is(cached, layer.digest);
  t.is(upstreamBlobGets('team/abandoned'), 1);
});

test.serial('a client that stops reading does not hold up the fetch for others', async (t) => {
  const image = generateImage({ layerCount: 1, firstLayerBytes: 32 * 1024 * 1024 });
  await pushUpstream(await layoutOf(image), 'img', 'team/stalled:1');
  const layer = image.layers[0]!.blob;
  // A client that reads the headers and then nothing.
  const stalled = httpRequest(`${mirror.url}/v2/team/stalled/blobs/${layer.digest}`);
  const response = await new Promise<import('node:http').IncomingMessage>((resolve, reject) => {
    stalled.on('response', resolve).on('error', reject).end();
  });
  response.pause();
  response.on('error', () => undefined);
  stalled.on('error', () => undefined);
  try {
    // Another client asks for the same blob: it waits for the shared fetch, which finishes despite the stalled one.
    const res = await fetch(`${mirror.url}/v2/team/stalled/blobs/${layer.digest}`);
    t.is(res.status, 200);
    t.is(`sha256:${createHash('sha256').update(Buffer.from(await res.arrayBuffer())).digest('hex')}`, layer.digest);
    t.is(upstreamBlobGets('team/stalled'), 1);
  } finally {
    stalled.destroy();
  }
});

test.serial("containerd's ?ns= with registry:2's single proxy.remoteurl: ignored, as registry:2 does", async (t) => {
  const image = generateImage({ layerCount: 1, firstLayerBytes: 4096 });
  await pushUpstream(await layoutOf(image), 'img', 'team/ns:1');
  const accept = { Accept: image.manifest.mediaType };
  const other = await fetch(`${mirror.url}/v2/team/ns/manifests/1?ns=elsewhere.example`, { headers: accept });
  t.is(other.status, 200);
  t.is(other.headers.get('docker-content-digest'), image.manifest.digest);
  const routed = await fetch(`${mirror.url}/v2/team/ns/manifests/1?ns=${upstream.host}`, { headers: accept });
  t.is(routed.status, 200);
  t.is(routed.headers.get('docker-content-digest'), image.manifest.digest);
});

test.serial('registry:2 works as the upstream too', async (t) => {
  const r2 = await startRegistry2();
  const viaR2 = await startWharf({ config: { proxy: { remoteurl: r2.url } } });
  try {
    const image = generateImage({ layerCount: 1, firstLayerBytes: 4096 });
    const push = await skopeo('copy', '--dest-tls-verify=false', `oci:${await layoutOf(image)}:img`, `docker://${r2.host}/team/r2:1`);
    t.is(push.code, 0, push.stderr);
    const pulled = await pull(viaR2.host, 'team/r2:1');
    t.is(pulled.code, 0, pulled.stderr);
    t.is(await servedDigest(viaR2.host, 'team/r2:1'), image.manifest.digest);
  } finally {
    await Promise.all([viaR2.stop(), r2.stop()]);
  }
});

test.serial('pushes to mirrored repositories are refused with UNSUPPORTED; local namespaces take them', async (t) => {
  // Bad references are refused before anything is asked of the upstream.
  const badTag = await fetch(`${mirror.url}/v2/team/x/manifests/-bad-tag`);
  t.is(badTag.status, 400);
  const badDigest = await fetch(`${mirror.url}/v2/team/x/blobs/sha256:zz`);
  t.is(badDigest.status, 400);
  t.notRegex(upstream.output(), /team\/x\//);
  const res = await fetch(`${mirror.url}/v2/team/x/blobs/uploads/`, { method: 'POST' });
  t.is(res.status, 405);
  t.is(((await res.json()) as { errors: { code: string }[] }).errors[0]!.code, 'UNSUPPORTED');
  const local = await skopeo('copy', '--dest-tls-verify=false', `oci:${await layoutOf(single)}:img`, `docker://${mirror.host}/mine/app:1`);
  t.is(local.code, 0, local.stderr);
});

test.serial('a blob that does not match its digest is never stored, and the client gets no complete body', async (t) => {
  const image = generateImage({ layerCount: 1, firstLayerBytes: 256 * 1024 });
  await pushUpstream(await layoutOf(image), 'img', 'team/corrupt:1');
  const layer = image.layers[0]!.blob;
  frontCorrupt = true;
  try {
    const url = `${limitedMirror.url}/v2/team/corrupt/blobs/${layer.digest}`;
    const body = await fetch(url).then(async (r) => Buffer.from(await r.arrayBuffer())).catch(() => undefined);
    t.true(body === undefined || body.length < 256 * 1024, 'the transfer broke before the end');
    // Nothing visible: no bytes in the content store, no layer link, no upload left behind.
    const hex = layer.digest.slice('sha256:'.length);
    const v2 = join(limitedMirror.rootDirectory, 'docker/registry/v2');
    await waitFor('the failed upload to be cleaned up', async () => (existsSync(join(v2, 'repositories/team/corrupt/_uploads')) && readdirSync(join(v2, 'repositories/team/corrupt/_uploads')).length > 0 ? undefined : true));
    t.false(existsSync(join(v2, 'blobs/sha256', hex.slice(0, 2), hex)));
    t.false(existsSync(join(v2, 'repositories/team/corrupt/_layers/sha256', hex)));
  } finally {
    frontCorrupt = false;
  }
  // Once the upstream behaves, the blob is fetched and verified normally.
  const ok = await fetch(`${limitedMirror.url}/v2/team/corrupt/blobs/${layer.digest}`);
  t.is(`sha256:${createHash('sha256').update(Buffer.from(await ok.arrayBuffer())).digest('hex')}`, layer.digest);
});

test.serial('an upstream answering 429 still serves cached tags and digests, with a Warning header', async (t) => {
  const image = generateImage({ layerCount: 1, firstLayerBytes: 8192 });
  await pushUpstream(await layoutOf(image), 'img', 'team/limited:1');
  const first = await pull(limitedMirror.host, 'team/limited:1');
  t.is(first.code, 0, first.stderr);
  const gets = frontBlobGets;
  frontLimited = true;
  try {
    const again = await pull(limitedMirror.host, 'team/limited:1');
    t.is(again.code, 0, again.stderr);
    t.is(frontBlobGets, gets);
    const res = await fetch(`${limitedMirror.url}/v2/team/limited/manifests/1`, { headers: { Accept: image.manifest.mediaType } });
    t.is(res.status, 200);
    t.regex(res.headers.get('warning') ?? '', /served from cache/);
    await waitForOutput(limitedMirror, /serving cached manifest/);
    // Not cached and rate limited: 429 with the OCI envelope.
    const missing = await fetch(`${limitedMirror.url}/v2/team/never/manifests/1`);
    t.is(missing.status, 429);
    t.is(((await missing.json()) as { errors: { code: string }[] }).errors[0]!.code, 'TOOMANYREQUESTS');
  } finally {
    frontLimited = false;
  }
});

test.serial('metrics count cache hits, misses and upstream bytes by upstream', async (t) => {
  const text = await (await fetch(`http://127.0.0.1:${debugPort}/metrics`)).text();
  const value = (name: string) => Number(new RegExp(`^${name}\\{upstream="default"\\} (\\d+)`, 'm').exec(text)?.[1] ?? 0);
  t.true(value('wharf_proxy_cache_hits_total') > 0, text);
  t.true(value('wharf_proxy_cache_misses_total') > 0);
  t.true(value('wharf_proxy_upstream_bytes_total') > 1024 * 1024);
});

test.serial('with the upstream stopped, cached tags and digests still pull', async (t) => {
  await upstream.stop();
  await waitFor('the upstream to stop', async () => (await fetch(`${upstream.url}/v2/`).then(() => undefined, () => true)));
  const byTag = await pull(mirror.host, 'alpine:1');
  t.is(byTag.code, 0, byTag.stderr);
  const byDigest = await pull(mirror.host, `team/multi@${(await servedDigest(mirror.host, 'team/multi:1'))}`, true);
  t.is(byDigest.code, 0, byDigest.stderr);
  const unknown = await fetch(`${mirror.url}/v2/team/unknown/manifests/1`);
  t.is(unknown.status, 503);
  // Logged at debug level throughout, and still no credential or token in the mirror's output.
  await waitForOutput(mirror, /cached blob from upstream/);
  t.false(mirror.output().includes(USERS.puller));
  t.notRegex(mirror.output(), /Bearer [A-Za-z0-9_-]{10,}/);
});
