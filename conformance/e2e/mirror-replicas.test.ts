/**
 * The pull-through cache with two replicas: two Wharf mirror processes on one filesystem storage and one real
 * redis-server, in front of an upstream Wharf that requires Bearer token auth. Between the mirrors and the upstream
 * sits a loopback front that counts the upstream's blob and manifest answers and can hold them (a blob after its first
 * chunk, a manifest before its response starts), so a fetch is caught in the middle: while one replica holds the fetch
 * the other is seen waiting (its debug log), and only then is the body let through, or the holder killed.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { createServer, request as httpRequest, type Server } from 'node:http';
import { join } from 'node:path';
import { startRedis, type RunningRedis } from '../../testing/redis-test-server.js';
import { startWharf, type RunningWharf } from '../../testing/harness.js';
import { allBlobs, generateImage, writeOciLayout, type Image } from '../../testing/e2e/image.js';
import { tempDir } from '../../testing/e2e/target.js';
import { waitFor, waitForOutput } from '../../testing/helpers.js';
import { UPSTREAM_USERS, pushUpstream, startTokenUpstream } from '../../testing/e2e/upstream.js';

let work: { path: string; remove: () => Promise<void> };
let upstream: RunningWharf;
let redis: RunningRedis;
let front: Server;
let replicas: RunningWharf[] = [];
/** Blob and manifest GETs the upstream answered 200 to, through the front. */
let blobGets = 0;
let manifestGets = 0;
/** While set, a blob body stops after its first chunk, a manifest response before it starts, until `release` is called. */
let holding = false;
let held: (() => void)[] = [];
const release = () => {
  holding = false;
  for (const go of held.splice(0)) go();
};

test.before(async () => {
  work = await tempDir('wharf-e2e-replicas-');
  upstream = await startTokenUpstream(work.path);
  redis = await startRedis();
  front = createServer((req, res) => {
    const up = new URL(upstream.url);
    const fwd = httpRequest({ host: up.hostname, port: up.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
      const isBlob = req.method === 'GET' && /\/blobs\//.test(req.url ?? '') && r.statusCode === 200;
      const isManifest = req.method === 'GET' && /\/manifests\//.test(req.url ?? '') && r.statusCode === 200;
      if (isBlob) blobGets++;
      if (isManifest) manifestGets++;
      const forward = () => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        let hold = isBlob && holding;
        r.on('data', (chunk: Buffer) => {
          res.write(chunk);
          if (hold) {
            hold = false;
            r.pause();
            held.push(() => r.resume());
          }
        });
        r.on('end', () => res.end());
      };
      r.on('error', () => res.destroy());
      // A manifest usually fits in one chunk, and a client holding its Content-Length of bytes is done: a manifest
      // is held before its response starts. A blob is held after its first chunk, caught mid-transfer.
      if (isManifest && holding) held.push(forward);
      else forward();
    });
    fwd.on('error', () => res.destroy());
    res.on('close', () => fwd.destroy());
    req.pipe(fwd);
  });
  await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
  const frontUrl = `http://127.0.0.1:${(front.address() as { port: number }).port}`;
  const config = {
    log: { level: 'debug' },
    redis: { addr: redis.host },
    proxy: { remoteurl: frontUrl, username: 'puller', password: UPSTREAM_USERS.puller, timeout: '30s' },
  };
  const rootDirectory = join(work.path, 'shared-storage');
  replicas = await Promise.all([startWharf({ rootDirectory, config }), startWharf({ rootDirectory, config })]);
});

test.after.always(async () => {
  release();
  await Promise.all([upstream?.stop(), ...replicas.map((r) => r.stop()), redis?.stop()]);
  await new Promise((resolve) => (front ? front.close(resolve) : resolve(undefined)));
  await work?.remove();
});

async function pushImage(repository: string): Promise<Image> {
  const image = generateImage({ layerCount: 1, firstLayerBytes: 4 * 1024 * 1024 });
  const dir = join(work.path, `layout-${repository.replace(/\//g, '-')}`);
  await writeOciLayout(dir, [{ tag: 'img', target: image.manifest }], allBlobs(image));
  await pushUpstream(upstream, dir, 'img', `${repository}:1`);
  return image;
}

async function pushLayer(repository: string): Promise<string> {
  return (await pushImage(repository)).layers[0]!.blob.digest;
}

/** GET a blob through a replica: status and the digest of the bytes received. */
async function pullBlob(replica: RunningWharf, repository: string, digest: string) {
  const res = await fetch(`${replica.url}/v2/${repository}/blobs/${digest}`);
  const body = Buffer.from(await res.arrayBuffer());
  return { status: res.status, digest: `sha256:${createHash('sha256').update(body).digest('hex')}` };
}

const WAITING = /"msg":"waiting for another replica to fetch from the upstream"/g;
const waits = (r: RunningWharf) => r.output().match(WAITING)?.length ?? 0;

test.serial('concurrent pulls of one blob through both replicas make one upstream fetch; both get the right bytes', async (t) => {
  const digest = await pushLayer('team/shared');
  const before = blobGets;
  const waitsBefore = replicas.map(waits);
  holding = true;
  const pulls = Promise.all(replicas.map((r) => pullBlob(r, 'team/shared', digest)));
  // One replica is fetching (the front holds its body) and the other is waiting for it.
  await waitFor('one replica fetching and the other waiting', async () =>
    blobGets === before + 1 && replicas.some((r, i) => waits(r) > waitsBefore[i]!) ? true : undefined);
  release();
  const results = await pulls;
  t.deepEqual(results, [{ status: 200, digest }, { status: 200, digest }]);
  t.is(blobGets, before + 1, 'exactly one blob GET reached the upstream');
});

test.serial("a changed tag's manifest GET is shared too (the HEAD that finds the change is per replica)", async (t) => {
  const image = await pushImage('team/tagged');
  const before = manifestGets;
  const waitsBefore = replicas.map(waits);
  holding = true;
  const gets = Promise.all(replicas.map(async (r) => {
    const res = await fetch(`${r.url}/v2/team/tagged/manifests/1`, { headers: { Accept: image.manifest.mediaType } });
    const body = Buffer.from(await res.arrayBuffer());
    return { status: res.status, digest: `sha256:${createHash('sha256').update(body).digest('hex')}` };
  }));
  await waitFor('one replica fetching the manifest and the other waiting', async () =>
    manifestGets === before + 1 && replicas.some((r, i) => waits(r) > waitsBefore[i]!) ? true : undefined);
  release();
  t.deepEqual(await gets, [{ status: 200, digest: image.manifest.digest }, { status: 200, digest: image.manifest.digest }]);
  t.is(manifestGets, before + 1, 'exactly one manifest GET reached the upstream');
});

test.serial('when the replica holding the fetch is killed, the other takes over and the pull completes', async (t) => {
  const digest = await pushLayer('team/takeover');
  const [holder, waiter] = replicas as [RunningWharf, RunningWharf];
  const before = blobGets;
  holding = true;
  const doomed = pullBlob(holder, 'team/takeover', digest).catch(() => undefined);
  await waitFor('the holder to be mid-fetch', async () => (blobGets === before + 1 ? true : undefined));
  const waitsBefore = waits(waiter);
  const pull = pullBlob(waiter, 'team/takeover', digest);
  await waitFor('the other replica to wait', async () => (waits(waiter) > waitsBefore ? true : undefined));
  t.is(blobGets, before + 1, 'the waiting replica did not fetch');
  holder.process.kill('SIGKILL');
  release();
  t.deepEqual(await pull, { status: 200, digest });
  t.is(blobGets, before + 2, 'the upstream was asked once more, by the replica that took over');
  await waitForOutput(waiter, /proxy fetch taken over from another replica/);
  await doomed;
  // Served from the shared storage from now on.
  t.deepEqual(await pullBlob(waiter, 'team/takeover', digest), { status: 200, digest });
  t.is(blobGets, before + 2);
});
