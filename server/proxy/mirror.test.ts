/**
 * The mirror's config and routing: registry:2's `proxy` keys, Wharf's `proxy.upstreams` (prefix and `?ns=`
 * routing, `library/` mapping), local namespaces, and config problems named by key. And the mirror as a `Registry`
 * wrapping the local one, against an upstream answered by a stand-in `fetch`.
 */
import test from 'ava';
import pino from 'pino';
import { InMemoryDriver } from '../../storage-drivers/inmemory.js';
import { parseConfig } from '../config/load.js';
import { RegistryError } from '../registry/errors.js';
import { MediaType } from '../registry/manifest-format.js';
import { digestOf, parseDigest, parseReference } from '../registry/reference.js';
import { LocalRegistry } from '../registry/registry.js';
import { Mirror, STALE_WARNING } from './mirror.js';

const MINIMAL = 'version: 0.1\nstorage: inmemory\n';

function mirrorOf(yaml: string): Mirror {
  const { config } = parseConfig(`${MINIMAL}${yaml}`, {}, 'x');
  return new Mirror(config.proxy!, new LocalRegistry(new InMemoryDriver()), pino({ level: 'silent' }), { manifestMaxSize: 1 << 20 });
}

test("registry:2's proxy keys make one upstream for every repository; Docker Hub maps single names to library/", (t) => {
  const { config, warnings } = parseConfig(`${MINIMAL}proxy:\n  remoteurl: https://registry-1.docker.io\n  username: u\n  password: p\n  ttl: 24h\n`, {}, 'x');
  t.deepEqual(warnings, []);
  t.deepEqual(config.proxy, {
    upstreams: [{ name: 'default', url: 'https://registry-1.docker.io', username: 'u', password: 'p', ttl: 24 * 3600_000, namespaces: ['registry-1.docker.io', 'docker.io'], librarymapping: true }],
    localnamespaces: [],
    timeout: 10_000,
    ignoresNamespace: true,
  });
  const m = mirrorOf('proxy: {remoteurl: https://registry-1.docker.io}\n');
  t.is(m.route('alpine')?.remote, 'library/alpine');
  t.is(m.route('bitnami/redis')?.remote, 'bitnami/redis');
});

test('a ttl of 0 (cached content never expires) is accepted, per upstream too', (t) => {
  const { config } = parseConfig(`${MINIMAL}proxy:\n  remoteurl: http://a\n  ttl: 0\n  upstreams: [{url: http://b, prefix: b, ttl: 2h}]\n`, {}, 'x');
  t.deepEqual(config.proxy?.upstreams.map((u) => u.ttl), [0, 2 * 3600_000]);
});

test('REGISTRY_PROXY_REMOTEURL configures the mirror', (t) => {
  const { config } = parseConfig(MINIMAL, { REGISTRY_PROXY_REMOTEURL: 'http://127.0.0.1:5001' }, 'x');
  t.is(config.proxy?.upstreams[0]?.url, 'http://127.0.0.1:5001');
  t.false(config.proxy?.upstreams[0]?.librarymapping);
});

test('upstreams are chosen by repository prefix, by ?ns=, or by default; local namespaces are not mirrored', (t) => {
  const m = mirrorOf(`proxy:
  remoteurl: https://registry-1.docker.io
  localnamespaces: [mycompany]
  upstreams:
    - {name: ghcr, url: https://ghcr.io, prefix: ghcr}
    - {url: https://quay.io, prefix: quay/io, namespaces: [quay.io]}
`);
  t.like(m.route('ghcr/owner/app'), { remote: 'owner/app', upstream: { config: { name: 'ghcr' } } });
  t.like(m.route('quay/io/x/y'), { remote: 'x/y', upstream: { config: { name: 'quay/io' } } });
  t.like(m.route('nginx'), { remote: 'library/nginx', upstream: { config: { name: 'default' } } });
  // containerd's ?ns= chooses the local repository: the name itself when it routes there, else under the prefix.
  t.is(m.localName('owner/app', 'ghcr.io'), 'ghcr/owner/app');
  t.like(m.route('ghcr/owner/app'), { remote: 'owner/app', upstream: { config: { name: 'ghcr' } } });
  t.is(m.localName('library/nginx', 'docker.io'), 'library/nginx');
  t.is(m.localName('x/y', 'quay.io'), 'quay/io/x/y');
  // A namespace no upstream lists, or one that contradicts the name's route without a local name for it: refused.
  t.is(m.localName('owner/app', 'unknown.example'), undefined);
  t.is(m.localName('ghcr/owner/app', 'docker.io'), undefined);
  t.is(m.localName('mycompany/app', 'ghcr.io'), 'mycompany/app', 'a local namespace stays local');
  t.is(m.route('mycompany/app'), undefined);
  t.false(m.isMirrored('mycompany/app'));
  t.true(m.isMirrored('ghcr/owner/app'));
});

test('config problems name the key', (t) => {
  const problems = (yaml: string) => {
    try {
      parseConfig(`${MINIMAL}${yaml}`, {}, 'x');
      return '';
    } catch (err) {
      return (err as Error).message;
    }
  };
  t.regex(problems('proxy: {remoteurl: ftp://x}\n'), /proxy\.remoteurl: expected an http or https URL/);
  t.regex(problems('proxy: {remoteurl: http://x, username: u}\n'), /username and password go together/);
  t.regex(problems('proxy: {upstreams: [{url: http://a}, {url: http://b}]}\n'), /only one upstream may take every repository/);
  t.regex(problems('proxy: {ttl: 1h}\n'), /needs proxy\.remoteurl or proxy\.upstreams/);
  t.regex(problems('proxy: {remoteurl: http://x, ttl: -1h}\n'), /proxy\.ttl: must be zero or more/);
  t.regex(problems('proxy: {upstreams: [{url: http://a, prefix: "Bad Prefix"}]}\n'), /proxy\.upstreams\.0\.prefix/);
  t.regex(problems('proxy: {remoteurl: "http://u:pw@x"}\n'), /proxy\.remoteurl: credentials in the URL are not accepted .*use proxy\.username and proxy\.password/);
  t.regex(problems('proxy: {upstreams: [{url: "http://u@a", prefix: a}]}\n'), /proxy\.upstreams\.0\.url: .*use proxy\.upstreams\.0\.username/);
  t.notRegex(problems('proxy: {remoteurl: "ftp://u:pw@x"}\n'), /pw/, 'an invalid URL is not repeated with its credentials');
  t.regex(problems('proxy: {remoteurl: http://x, realmhosts: ["https://auth.example.com"]}\n'), /proxy\.realmhosts: expected host names/);
  t.regex(problems('notifications: {endpoints: [{name: a, url: "https://u:pw@hook.example"}]}\n'), /notifications\.endpoints\.0\.url: .*headers\.Authorization/);
});

test('realmhosts, per upstream and for proxy.remoteurl; ?ns= is honoured only with the upstreams list', (t) => {
  const { config } = parseConfig(`${MINIMAL}proxy:\n  remoteurl: https://registry.example.com\n  realmhosts: [GitLab.example.com, "auth.example.com:5001"]\n`, {}, 'x');
  t.deepEqual(config.proxy?.upstreams[0]?.realmhosts, ['gitlab.example.com', 'auth.example.com:5001']);
  t.true(config.proxy?.ignoresNamespace);
  const listed = parseConfig(`${MINIMAL}proxy:\n  upstreams: [{url: https://registry.example.com, realmhosts: [auth.example.com]}]\n`, {}, 'x').config.proxy!;
  t.deepEqual(listed.upstreams[0]?.realmhosts, ['auth.example.com']);
  t.is(listed.ignoresNamespace, undefined);
  t.is(parseConfig(`${MINIMAL}proxy: {remoteurl: http://a}\n`, {}, 'x').config.proxy?.upstreams[0]?.realmhosts, undefined, 'default: none');
  const single = mirrorOf('proxy: {remoteurl: http://127.0.0.1:5000}\n');
  t.is(single.localName('team/app', 'docker.io'), 'team/app', 'registry:2 ignores ?ns=');
});

/** An upstream serving `team/app:1` (a manifest and its layer), answered by a stand-in `fetch`; `down` fails it. */
function upstreamDouble() {
  const layer = Buffer.from('layer bytes');
  const config = Buffer.from('{}');
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: digestOf(config), size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: digestOf(layer), size: layer.length }],
  }));
  const double = { layer, config, manifest, down: false, requests: [] as string[] };
  const fetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const method = init?.method ?? 'GET';
    const path = new URL(String(input)).pathname;
    double.requests.push(`${method} ${path}`);
    if (double.down) throw new TypeError('fetch failed');
    const answer = (body: Buffer, headers: Record<string, string>) =>
      new Response(method === 'HEAD' ? null : new Uint8Array(body), { headers: { 'Content-Length': String(body.length), ...headers } });
    if (path === '/v2/team/app/manifests/1') {
      return answer(manifest, { 'Content-Type': MediaType.OCI_MANIFEST, 'Docker-Content-Digest': digestOf(manifest) });
    }
    for (const blob of [layer, config]) {
      if (path === `/v2/team/app/blobs/${digestOf(blob)}`) return answer(blob, { 'Content-Type': 'application/octet-stream' });
    }
    return new Response(null, { status: 404 });
  };
  return { double, fetch };
}

function mirrorWith(fetch: typeof globalThis.fetch): { mirror: Mirror; local: LocalRegistry } {
  const { config } = parseConfig(`${MINIMAL}proxy: {remoteurl: "http://127.0.0.1:9", localnamespaces: [mine]}\n`, {}, 'x');
  const local = new LocalRegistry(new InMemoryDriver());
  return { mirror: new Mirror(config.proxy!, local, pino({ level: 'silent' }), { manifestMaxSize: 1 << 20, fetch }), local };
}

async function read(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks);
}

test('as a Registry: a manifest is filled from upstream, and served stale with a warning when the upstream is down', async (t) => {
  const { double, fetch } = upstreamDouble();
  const { mirror, local } = mirrorWith(fetch);
  const tag = parseReference('1');
  const fresh = await mirror.getManifest('team/app', tag);
  t.deepEqual(fresh.content, double.manifest);
  t.is(fresh.digest, digestOf(double.manifest));
  t.is(fresh.warning, undefined);
  t.is((await local.getManifest('team/app', tag)).digest, fresh.digest, 'stored in the local registry');

  double.down = true;
  const stale = await mirror.getManifest('team/app', tag);
  t.deepEqual(stale.content, double.manifest);
  t.is(stale.warning, STALE_WARNING);
  // Another tag has no cached copy: the upstream's failure is the answer.
  const err = await t.throwsAsync(mirror.getManifest('team/app', parseReference('2')), { instanceOf: RegistryError });
  t.is(err.code, 'UNAVAILABLE');
});

test('as a Registry: a blob not cached is streamed while stored; a range or a HEAD does not stream', async (t) => {
  const { double, fetch } = upstreamDouble();
  const { mirror } = mirrorWith(fetch);
  const layer = parseDigest(digestOf(double.layer));
  const head = await mirror.statBlob('team/app', layer, { head: true });
  t.deepEqual(head, { kind: 'upstream', size: double.layer.length }, 'a HEAD answers what the upstream said');

  const first = await mirror.statBlob('team/app', layer);
  if (first.kind !== 'upstream' || !first.body) return t.fail('expected the upstream stream');
  t.is(first.size, double.layer.length);
  t.deepEqual(await read(first.body), double.layer);
  t.deepEqual(await mirror.statBlob('team/app', layer), { kind: 'stored', digest: layer.value, size: double.layer.length });
  t.deepEqual(await read(await mirror.readBlob('team/app', layer, 6, 5)), Buffer.from('bytes'));

  const config = parseDigest(digestOf(double.config));
  t.deepEqual(await mirror.statBlob('team/app', config, { range: true }), { kind: 'stored', digest: config.value, size: 2 },
    'a range waits for the fetch and reads from storage');
  t.is(double.requests.filter((r) => r.startsWith('GET /v2/team/app/blobs/')).length, 2, 'one fetch per blob');
});

test('as a Registry: writes to a mirrored repository are refused; local names pass through without the upstream', async (t) => {
  const { double, fetch } = upstreamDouble();
  const { mirror } = mirrorWith(fetch);
  const refused = await t.throwsAsync(mirror.startUpload('team/app', 'sha256'), { instanceOf: RegistryError });
  t.is(refused.code, 'UNSUPPORTED');
  await t.throwsAsync(mirror.putManifest('team/app', parseReference('1'), double.manifest, MediaType.OCI_MANIFEST, []), { instanceOf: RegistryError });
  await t.throwsAsync(mirror.deleteBlob('team/app', parseDigest(digestOf(double.layer))), { message: /mirror of an upstream/ });

  const session = await mirror.startUpload('mine/app', 'sha256');
  const blob = await mirror.completeUpload('mine/app', session.id, parseDigest(digestOf(double.layer)), (async function* () {
    yield double.layer;
  })());
  t.is(blob.size, double.layer.length);
  const missing = await t.throwsAsync(mirror.getManifest('mine/app', parseReference('1')), { instanceOf: RegistryError });
  t.is(missing.code, 'MANIFEST_UNKNOWN');
  t.deepEqual(double.requests, [], 'the upstream was never asked');
});
