/**
 * The mirror under attack (issue #13, findings 3 and 10), end to end with real processes: two real upstreams (A: a
 * Wharf with a token server requiring Bearer auth, reached through a loopback front that can be switched to fail;
 * B: a plain Wharf), a mirror with both, and anonymous clients.
 *
 * - `?ns=` must never write one upstream's content into the cache of a repository routed to another, nor have it
 *   served from there; a stale copy is served only while the upstream is unavailable, never for its 404 or 403.
 * - registry:2's single `proxy.remoteurl` ignores `?ns=` (containerd sends `?ns=docker.io` to any mirror).
 * - Credentials never appear in URLs, error bodies or logs, and never go to a token realm on another host.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { CLI_PATH, startRegistry2, startWharf, type RunningWharf } from '../../testing/harness.js';
import { NODE_FLAGS } from '../../server/node-flags.js';
import { findExecutable } from '../../testing/e2e/dockerd.js';
import { allBlobs, generateImage, writeOciLayout, type Image } from '../../testing/e2e/image.js';
import { run, tempDir } from '../../testing/e2e/target.js';
import { waitFor, waitForOutput } from '../../testing/helpers.js';
import { UPSTREAM_USERS as USERS, pushUpstream, skopeo, startTokenUpstream } from '../../testing/e2e/upstream.js';

/** The ctr test needs root and containerd's binaries (Debian package containerd). */
const canRunContainerd = process.getuid?.() === 0 && (await findExecutable('containerd')) !== undefined && (await findExecutable('ctr')) !== undefined;

let work: { path: string; remove: () => Promise<void> };
/** Upstream A (token auth), the mirror's default upstream, reached through `front`. */
let upA: RunningWharf;
/** Upstream B (no auth), the mirror's upstream for prefix `b` and `?ns=<B's host>`. */
let upB: RunningWharf;
let mirror: RunningWharf;
let front: Server;
let frontUrl: string;
/** What the front answers to manifest requests: pass them to A, or fail. */
let frontMode: 'pass' | '503' | '403' = 'pass';
const SECRET_TEXT = 'UPSTREAM-INTERNAL-DETAIL http://internal-admin:hunter2@10.0.0.7/';

function listen(server: Server): Promise<string> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as { port: number }).port}`)));
}

function close(server: Server | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (!server) return resolve();
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

async function layoutOf(image: Image): Promise<string> {
  const dir = join(work.path, `layout-${image.manifest.digest.slice(7, 19)}`);
  await writeOciLayout(dir, [{ tag: 'img', target: image.manifest }], allBlobs(image));
  return dir;
}

/** Push into B (no auth). */
async function pushB(image: Image, target: string): Promise<void> {
  const r = await skopeo('copy', '--dest-tls-verify=false', `oci:${await layoutOf(image)}:img`, `docker://${upB.host}/${target}`);
  if (r.code !== 0) throw new Error(`push ${target} failed: ${r.stderr}`);
}

interface Answer {
  status: number;
  digest: string | null;
  warning: string | null;
  body: string;
}

/** GET a manifest from the mirror, anonymously. */
async function manifest(base: string, path: string, image?: Image): Promise<Answer> {
  const res = await fetch(`${base}/v2/${path}`, { headers: { Accept: image?.manifest.mediaType ?? 'application/vnd.oci.image.manifest.v1+json' } });
  return { status: res.status, digest: res.headers.get('docker-content-digest'), warning: res.headers.get('warning'), body: await res.text() };
}

function errorOf(a: Answer): { code: string; message: string; detail?: unknown } {
  return (JSON.parse(a.body) as { errors: { code: string; message: string; detail?: unknown }[] }).errors[0]!;
}

function tagLink(registry: RunningWharf, name: string, tag: string): string {
  return join(registry.rootDirectory, 'docker/registry/v2/repositories', name, '_manifests/tags', tag, 'current/link');
}

test.before(async () => {
  work = await tempDir('wharf-e2e-mirror-security-');
  [upA, upB] = await Promise.all([startTokenUpstream(work.path), startWharf({ config: { log: { level: 'info' } } })]);
  front = createServer((req, res) => {
    const isManifest = /\/manifests\//.test(req.url ?? '');
    if (isManifest && frontMode !== 'pass') {
      res.writeHead(Number(frontMode), { 'Content-Type': 'text/plain' });
      res.end(SECRET_TEXT);
      return;
    }
    const up = new URL(upA.url);
    const fwd = httpRequest({ host: up.hostname, port: up.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    fwd.on('error', () => res.destroy());
    req.pipe(fwd);
  });
  frontUrl = await listen(front);
  mirror = await startWharf({
    config: {
      log: { level: 'debug' },
      proxy: {
        timeout: '5s',
        upstreams: [
          // The default upstream (no prefix), as Docker Hub would be: containerd's ?ns=docker.io means it.
          { name: 'a', url: frontUrl, username: 'puller', password: USERS.puller, namespaces: ['docker.io'] },
          // B under prefix b; its namespace is its host (the default).
          { name: 'b', url: upB.url, prefix: 'b' },
        ],
      },
    },
  });
});

test.after.always(async () => {
  await Promise.all([upA?.stop(), upB?.stop(), mirror?.stop()]);
  await close(front);
  await work?.remove();
});

test.serial('?ns= naming another upstream cannot poison a repository: nothing is written under its name, and its later pulls never get that content', async (t) => {
  frontMode = 'pass';
  const evil = generateImage({ layerCount: 1, firstLayerBytes: 2048 });
  await pushB(evil, 'foo/tool:latest');
  // An anonymous client asks for foo/tool as B has it: served (B's content is B's), but cached as B's.
  const poisoned = await manifest(mirror.url, `foo/tool/manifests/latest?ns=${upB.host}`, evil);
  t.is(poisoned.status, 200, poisoned.body);
  t.is(poisoned.digest, evil.manifest.digest);
  t.false(existsSync(tagLink(mirror, 'foo/tool', 'latest')), 'nothing was written into foo/tool, which routes to A');
  t.true(existsSync(tagLink(mirror, 'b/foo/tool', 'latest')), 'it is cached under B\'s prefix');
  const viaPrefix = await manifest(mirror.url, 'b/foo/tool/manifests/latest', evil);
  t.is(viaPrefix.digest, evil.manifest.digest);

  // A does not have foo/tool: its 404 is the answer, not B's content from the cache.
  const plain = await manifest(mirror.url, 'foo/tool/manifests/latest', evil);
  t.is(plain.status, 404, plain.body);
  t.is(errorOf(plain).code, 'MANIFEST_UNKNOWN');
  t.is(plain.warning, null);
  // A unavailable: still never B's content.
  frontMode = '503';
  try {
    const down = await manifest(mirror.url, 'foo/tool/manifests/latest', evil);
    t.is(down.status, 503, down.body);
    t.is(errorOf(down).code, 'UNAVAILABLE');
    t.false(down.body.includes(evil.manifest.digest));
  } finally {
    frontMode = 'pass';
  }
  // Blobs through ?ns= are linked under B's prefix only.
  const layer = evil.layers[0]!.blob.digest;
  const blob = await fetch(`${mirror.url}/v2/foo/tool/blobs/${layer}?ns=${upB.host}`);
  t.is(blob.status, 200);
  await blob.arrayBuffer();
  t.false(existsSync(join(mirror.rootDirectory, 'docker/registry/v2/repositories/foo/tool/_layers/sha256', layer.slice(7))));

  // The origin record beside the tag link leaves the layout registry:2's: it reads the cached tag as usual.
  const r2 = await startRegistry2({ rootDirectory: mirror.rootDirectory });
  try {
    t.true(existsSync(join(mirror.rootDirectory, 'docker/registry/v2/repositories/b/foo/tool/_manifests/tags/latest/wharf-origin')));
    t.is((await manifest(r2.url, 'b/foo/tool/manifests/latest', evil)).digest, evil.manifest.digest);
    t.deepEqual(await (await fetch(`${r2.url}/v2/b/foo/tool/tags/list`)).json(), { name: 'b/foo/tool', tags: ['latest'] });
  } finally {
    await r2.stop();
  }
});

test.serial('a repeated ?ns= is refused, not resolved on one copy and fetched with the other', async (t) => {
  frontMode = 'pass';
  const image = generateImage({ layerCount: 1, firstLayerBytes: 512 });
  await pushB(image, 'foo/twice:latest');
  const answer = await manifest(mirror.url, `foo/twice/manifests/latest?ns=${upB.host}&ns=${upB.host}`, image);
  t.is(answer.status, 400, answer.body);
  t.deepEqual(errorOf(answer).detail, { parameter: 'ns' });
  t.false(existsSync(tagLink(mirror, 'b/foo/twice', 'latest')));
  t.false(existsSync(tagLink(mirror, 'foo/twice', 'latest')));
});

test.serial('a tag cached from its own upstream is not overwritten through ?ns=, and is what an outage serves', async (t) => {
  const legit = generateImage({ layerCount: 1, firstLayerBytes: 2048 });
  const evil = generateImage({ layerCount: 1, firstLayerBytes: 2048 });
  await pushUpstream(upA, await layoutOf(legit), 'img', 'team/app:1');
  await pushB(evil, 'team/app:1');
  t.is((await manifest(mirror.url, 'team/app/manifests/1', legit)).digest, legit.manifest.digest);
  t.is((await manifest(mirror.url, `team/app/manifests/1?ns=${upB.host}`, evil)).digest, evil.manifest.digest);
  frontMode = '503';
  try {
    const stale = await manifest(mirror.url, 'team/app/manifests/1', legit);
    t.is(stale.status, 200, stale.body);
    t.is(stale.digest, legit.manifest.digest, 'the outage serves A\'s own content');
    t.regex(stale.warning ?? '', /served from cache/);
    // A namespace no upstream lists cannot read the name's cache either.
    const unknown = await manifest(mirror.url, 'team/app/manifests/1?ns=quay.example', legit);
    t.is(unknown.status, 404, unknown.body);
    t.is(errorOf(unknown).code, 'NAME_UNKNOWN');
  } finally {
    frontMode = 'pass';
  }
});

test.serial('a tag whose origin record names another upstream, or that has none (cached before records, or poisoned), is never served stale', async (t) => {
  const evil = generateImage({ layerCount: 1, firstLayerBytes: 2048 });
  await pushB(evil, 'foo/legacy:1');
  t.is((await manifest(mirror.url, 'b/foo/legacy/manifests/1', evil)).digest, evil.manifest.digest);
  // What an earlier Wharf's ?ns= left behind: B's content in foo/legacy (which routes to A), with B's origin record.
  const repos = join(mirror.rootDirectory, 'docker/registry/v2/repositories');
  await cp(join(repos, 'b/foo/legacy'), join(repos, 'foo/legacy'), { recursive: true });
  frontMode = '503';
  try {
    const recorded = await manifest(mirror.url, 'foo/legacy/manifests/1', evil);
    t.is(recorded.status, 503, recorded.body);
    // And without any record (as everything cached before records were written).
    await rm(join(repos, 'foo/legacy/_manifests/tags/1/wharf-origin'));
    const unrecorded = await manifest(mirror.url, 'foo/legacy/manifests/1', evil);
    t.is(unrecorded.status, 503, unrecorded.body);
    t.false(unrecorded.body.includes(evil.manifest.digest));
    // B's own copy, from B, is still served while B is up, and by digest from anywhere.
    t.is((await manifest(mirror.url, 'b/foo/legacy/manifests/1', evil)).status, 200);
  } finally {
    frontMode = 'pass';
  }
});

test.serial('a 404 or 403 from a reachable upstream is answered as such, not from the cache', async (t) => {
  const image = generateImage({ layerCount: 1, firstLayerBytes: 2048 });
  await pushB(image, 'team/gone:1');
  t.is((await manifest(mirror.url, 'b/team/gone/manifests/1', image)).digest, image.manifest.digest);
  // The tag is deleted upstream (B deletes the manifest and with it the tag).
  const del = await fetch(`${upB.url}/v2/team/gone/manifests/${image.manifest.digest}`, { method: 'DELETE' });
  t.is(del.status, 202);
  t.is((await manifest(upB.url, 'team/gone/manifests/1', image)).status, 404);
  const gone = await manifest(mirror.url, 'b/team/gone/manifests/1', image);
  t.is(gone.status, 404, gone.body);
  t.is(errorOf(gone).code, 'MANIFEST_UNKNOWN');
  t.is(gone.warning, null);
  // Content by digest never changes: the cached copy still serves.
  t.is((await manifest(mirror.url, `b/team/gone/manifests/${image.manifest.digest}`, image)).status, 200);

  // A refuses (403): not served stale either.
  const other = generateImage({ layerCount: 1, firstLayerBytes: 2048 });
  await pushUpstream(upA, await layoutOf(other), 'img', 'team/private:1');
  t.is((await manifest(mirror.url, 'team/private/manifests/1', other)).digest, other.manifest.digest);
  frontMode = '403';
  try {
    const denied = await manifest(mirror.url, 'team/private/manifests/1', other);
    t.is(denied.status, 404, denied.body);
    t.is(denied.warning, null);
  } finally {
    frontMode = 'pass';
  }
});

test.serial("registry:2's single proxy.remoteurl ignores ?ns= (containerd's docker.io) and mirrors, whatever the upstream's host", async (t) => {
  const single = await startWharf({ config: { proxy: { remoteurl: upB.url } } });
  try {
    const image = generateImage({ layerCount: 1, firstLayerBytes: 2048 });
    await pushB(image, 'library/busybox:1');
    const got = await manifest(single.url, 'library/busybox/manifests/1?ns=docker.io', image);
    t.is(got.status, 200, got.body);
    t.is(got.digest, image.manifest.digest);
    const blob = await fetch(`${single.url}/v2/library/busybox/blobs/${image.layers[0]!.blob.digest}?ns=docker.io`);
    t.is(blob.status, 200);
    await blob.arrayBuffer();
  } finally {
    await single.stop();
  }
});

/** A private containerd (its own root, state and sockets under one short /tmp directory), for `ctr`. */
async function startContainerd(): Promise<{ address: string; dir: string; stop: () => Promise<void> }> {
  const dir = await mkdtemp('/tmp/wc-');
  await writeFile(join(dir, 'config.toml'), [
    'version = 2',
    `root = "${dir}/root"`,
    `state = "${dir}/state"`,
    'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
    `[grpc]\n  address = "${dir}/c.sock"`,
    `[ttrpc]\n  address = "${dir}/t.sock"`,
    '',
  ].join('\n'));
  const child = spawn('containerd', ['--config', join(dir, 'config.toml')], { stdio: 'ignore' });
  const address = join(dir, 'c.sock');
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await waitFor('containerd to answer', async () => ((await run('ctr', ['--address', address, 'version'], { timeoutMs: 10_000 })).code === 0 ? true : undefined));
  } catch (err) {
    await stop();
    throw err;
  }
  return { address, dir, stop };
}

(canRunContainerd ? test.serial : test.skip)('ctr images pull --hosts-dir for docker.io through a single-remoteurl Wharf works, as through registry:2', async (t) => {
  const image = generateImage({ layerCount: 1, firstLayerBytes: 2048 });
  await pushB(image, 'library/ctrtool:1');
  const [viaWharf, viaRegistry2] = await Promise.all([
    startWharf({ config: { log: { level: 'info' }, proxy: { remoteurl: upB.url } } }),
    startRegistry2({ config: { proxy: { remoteurl: upB.url } } }),
  ]);
  const containerd = await startContainerd();
  try {
    // A new user's hosts.toml: docker.io through the mirror; the fallback server is unreachable, so only the mirror counts.
    const pullThrough = async (mirrorHost: string, n: number) => {
      const hostsDir = join(containerd.dir, `certs-${n}`);
      await mkdir(join(hostsDir, 'docker.io'), { recursive: true });
      await writeFile(join(hostsDir, 'docker.io', 'hosts.toml'), `server = "http://127.0.0.1:9"\n\n[host."http://${mirrorHost}"]\n  capabilities = ["pull", "resolve"]\n`);
      return run('ctr', ['--address', containerd.address, '--namespace', `n${n}`, 'images', 'pull', '--hosts-dir', hostsDir, '--snapshotter', 'native', 'docker.io/library/ctrtool:1'], { timeoutMs: 120_000 });
    };
    // Wharf first: containerd shares content between its namespaces, so the second pull only resolves the tag.
    const wharf = await pullThrough(viaWharf.host, 1);
    t.is(wharf.code, 0, `wharf: ${wharf.stdout}${wharf.stderr}`);
    // The blobs came through Wharf.
    await waitForOutput(viaWharf, /"method":"GET","path":"\/v2\/library\/ctrtool\/blobs\/[^"]+"[^\n]*"status":200/);
    const r2 = await pullThrough(viaRegistry2.host, 2);
    t.is(r2.code, 0, `registry:2: ${r2.stdout}${r2.stderr}`);
    t.is((await manifest(viaWharf.url, 'library/ctrtool/manifests/1', image)).digest, image.manifest.digest);
  } finally {
    await Promise.all([containerd.stop(), viaWharf.stop(), viaRegistry2.stop()]);
  }
});

/** `wharf config check` on a config, with the environment given; the exit code and all output. */
async function configCheck(config: string, env: Record<string, string> = {}): Promise<{ code: number | null; output: string }> {
  const path = join(work.path, `config-${Math.random().toString(36).slice(2)}.yml`);
  await writeFile(path, `version: 0.1\nstorage: {inmemory: {}}\n${config}`);
  const r = await run(process.execPath, [...NODE_FLAGS, CLI_PATH, 'config', 'check', path], { env, timeoutMs: 30_000 });
  return { code: r.code, output: r.stdout + r.stderr };
}

test.serial('credentials in an upstream or notification URL are refused, naming the key to use, without repeating them', async (t) => {
  const remote = await configCheck('proxy: {remoteurl: "http://hubuser:s3cr3t-pw@127.0.0.1:5999"}\n');
  t.is(remote.code, 2, remote.output);
  t.regex(remote.output, /proxy\.remoteurl: .*use proxy\.username and proxy\.password/);
  t.false(remote.output.includes('s3cr3t-pw'));

  const listed = await configCheck('proxy: {upstreams: [{url: "https://u:s3cr3t-pw@ghcr.io", prefix: ghcr}]}\n');
  t.is(listed.code, 2, listed.output);
  t.regex(listed.output, /proxy\.upstreams\.0\.url: .*use proxy\.upstreams\.0\.username and proxy\.upstreams\.0\.password/);
  t.false(listed.output.includes('s3cr3t-pw'));

  const env = await configCheck('', { REGISTRY_PROXY_REMOTEURL: 'http://hubuser:s3cr3t-pw@127.0.0.1:5999' });
  t.is(env.code, 2, env.output);
  t.regex(env.output, /proxy\.remoteurl/);
  t.false(env.output.includes('s3cr3t-pw'));

  const hook = await configCheck('notifications: {endpoints: [{name: audit, url: "https://hook:s3cr3t-pw@127.0.0.1:6000/events"}]}\n');
  t.is(hook.code, 2, hook.output);
  t.regex(hook.output, /notifications\.endpoints\.0\.url: .*notifications\.endpoints\.0\.headers\.Authorization/);
  t.false(hook.output.includes('s3cr3t-pw'));

  // The server refuses to start with it too.
  const serve = await startWharf({ config: { proxy: { remoteurl: 'http://hubuser:s3cr3t-pw@127.0.0.1:5999' } } }).then(
    async (w) => {
      await w.stop();
      return 'started';
    },
    (err: Error) => err.message,
  );
  t.regex(serve, /use proxy\.username and proxy\.password/);
  t.false(serve.includes('s3cr3t-pw'));
});

test.serial("an upstream failure's answer names only what was asked: no upstream URL, status text, body or credentials; nor do the logs", async (t) => {
  frontMode = '503';
  try {
    const failed = await manifest(mirror.url, 'team/never/manifests/1');
    t.is(failed.status, 503, failed.body);
    const error = errorOf(failed);
    t.is(error.code, 'UNAVAILABLE');
    t.deepEqual(error.detail, { name: 'team/never', reference: '1' });
    for (const leak of [new URL(frontUrl).host, SECRET_TEXT, 'hunter2', '/v2/']) t.false(failed.body.includes(leak), leak);
  } finally {
    frontMode = 'pass';
  }
  // A refused connection: the same generic answer.
  const closed = createServer();
  const deadUrl = await listen(closed);
  await close(closed);
  const dead = await startWharf({ config: { log: { level: 'debug' }, proxy: { remoteurl: deadUrl, username: 'puller', password: USERS.puller } } });
  try {
    const refused = await manifest(dead.url, 'team/x/manifests/1');
    t.is(refused.status, 503, refused.body);
    t.deepEqual(errorOf(refused).detail, { name: 'team/x', reference: '1' });
    t.false(refused.body.includes(new URL(deadUrl).host));
    await waitForOutput(dead, /upstream request failed/);
    t.false(dead.output().includes(USERS.puller));
  } finally {
    await dead.stop();
  }
  // The mirror's log: upstream names and hosts at most, never a credential or token.
  t.false(mirror.output().includes(USERS.puller));
  t.false(mirror.output().includes(Buffer.from(`puller:${USERS.puller}`).toString('base64')));
  t.notRegex(mirror.output(), /Bearer [A-Za-z0-9_-]{10,}/);
  t.false(mirror.output().includes(SECRET_TEXT));
});

/**
 * An upstream whose challenges send clients to a token realm of its choosing, and that realm, which records the
 * Authorization headers it receives. `tokenBody`: what the realm answers (default a small token).
 */
async function realmScene(realmHostname: string, tokenBody?: (res: ServerResponse) => void) {
  const seen: (string | undefined)[] = [];
  const realm = createServer((req: IncomingMessage, res) => {
    seen.push(req.headers.authorization);
    if (tokenBody) return tokenBody(res);
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ token: 'realm-issued-token-0123456789', expires_in: 300 }));
  });
  const realmUrl = (await listen(realm)).replace('127.0.0.1', realmHostname);
  const upstream = createServer((req, res) => {
    if (!req.headers.authorization?.startsWith('Bearer ')) {
      res.writeHead(401, { 'WWW-Authenticate': `Bearer realm="${realmUrl}/token",service="evil",scope="repository:team/x:pull"` });
      res.end();
      return;
    }
    res.writeHead(404, { 'Content-Type': 'application/json' });
    res.end('{"errors":[{"code":"MANIFEST_UNKNOWN","message":"no"}]}');
  });
  const upstreamUrl = await listen(upstream);
  return { seen, realmHost: new URL(realmUrl).host, upstreamUrl, close: () => Promise.all([close(realm), close(upstream)]) };
}

test.serial("a token realm on another host than the upstream's never receives the upstream credentials, unless realmhosts lists it", async (t) => {
  const scene = await realmScene('localhost');
  const proxy = { remoteurl: scene.upstreamUrl, username: 'puller', password: USERS.puller };
  const victim = await startWharf({ config: { proxy } });
  const allowed = await startWharf({ config: { proxy: { ...proxy, realmhosts: [scene.realmHost] } } });
  try {
    const r = await manifest(victim.url, 'team/x/manifests/1');
    t.is(r.status, 404, r.body);
    t.true(scene.seen.length > 0, 'the realm was asked for a token');
    t.deepEqual(scene.seen, scene.seen.map(() => undefined), 'anonymously');
    await waitForOutput(victim, /token realm is on another host/);
    t.false(victim.output().includes(USERS.puller));

    scene.seen.length = 0;
    t.is((await manifest(allowed.url, 'team/x/manifests/1')).status, 404);
    t.is(scene.seen[0], `Basic ${Buffer.from(`puller:${USERS.puller}`).toString('base64')}`, 'a listed realm host gets them');
  } finally {
    await Promise.all([victim.stop(), allowed.stop(), scene.close()]);
  }
});

test.serial('a token answer is read only up to a bound: an endless one fails the pull instead of filling memory', async (t) => {
  let written = 0;
  const scene = await realmScene('127.0.0.1', (res) => {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.write('{"token":"');
    const chunk = Buffer.alloc(64 * 1024, 'a');
    const pump = () => {
      while (written < 256 * 1024 * 1024) {
        written += chunk.length;
        if (!res.write(chunk)) return void res.once('drain', pump);
      }
      res.end('"}');
    };
    res.on('close', () => res.removeAllListeners('drain'));
    pump();
  });
  const victim = await startWharf({ config: { proxy: { remoteurl: scene.upstreamUrl, username: 'puller', password: USERS.puller } } });
  try {
    const r = await manifest(victim.url, 'team/x/manifests/1');
    t.is(r.status, 502, r.body);
    t.true(written < 64 * 1024 * 1024, `the realm could send ${written} bytes`);
  } finally {
    await Promise.all([victim.stop(), scene.close()]);
  }
});

test.serial("a notification endpoint's answer is never read: one that answers without end costs nothing", async (t) => {
  let written = 0;
  let closed = false;
  const endpoint = createServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
    const chunk = Buffer.alloc(64 * 1024, 'x');
    const pump = () => {
      while (written < 1024 * 1024 * 1024 && !closed) {
        written += chunk.length;
        if (!res.write(chunk)) return void res.once('drain', pump);
      }
      res.end();
    };
    res.on('close', () => {
      closed = true;
      res.removeAllListeners('drain');
    });
    pump();
  });
  const url = await listen(endpoint);
  const registry = await startWharf({ config: { notifications: { endpoints: [{ name: 'audit', url: `${url}/events`, timeout: '5s' }] } } });
  try {
    const blob = Buffer.from('a pushed blob');
    const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
    const push = await fetch(`${registry.url}/v2/team/events/blobs/uploads/?digest=${digest}`, { method: 'POST', body: blob, headers: { 'Content-Type': 'application/octet-stream' } });
    t.is(push.status, 201);
    await waitFor('the endpoint connection to close', async () => (closed ? true : undefined), 30_000);
    t.true(written < 64 * 1024 * 1024, `the endpoint could send ${written} bytes`);
  } finally {
    await registry.stop();
    await close(endpoint);
  }
});
