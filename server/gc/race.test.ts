/**
 * The race the collector is built for: a real Wharf server process takes pushes (fresh layers, layers shared through
 * cross-repository mounts, slow uploads that finish while a collection runs) while the collector runs again and
 * again with a short grace period over the same storage. Every tag whose push the server acknowledged must pull
 * completely afterwards, and still after one more collection once the pushing stopped. Run twice: with the lock and
 * live set in storage, and in Redis (server and worker both configured with it).
 *
 * Pushes behave like real clients: a mount that is refused becomes an upload, and a manifest refused with
 * MANIFEST_BLOB_UNKNOWN (its blobs were collected between upload and manifest, which a grace period shorter than
 * the push allows) is retried after uploading the missing blobs again.
 */
import test, { type ExecutionContext } from 'ava';
import type { StorageDriver } from '../../storage-drivers/driver.js';
import { createDriver } from '../../storage-drivers/index.js';
import { startWharf, type RunningWharf } from '../../testing/harness.js';
import { createDescriptorCache } from '../cache/index.js';
import { startRedis } from '../../testing/redis-test-server.js';
import { parseConfig } from '../config/index.js';
import { GC_LOCK_PATH } from '../registry/layout.js';
import { sharedStateOptions } from './command.js';
import { workerGcState } from './redis-state.js';
import type { GcStats } from './report.js';
import { OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, randomBlob, sha256 } from '../../testing/gc-helpers.js';
import { collectGarbage, type GcOptions } from './worker.js';

const GC_RUNS = 3;
/** Pushes go on until the collections are over, but never more than this. */
const MAX_PUSHES = 150;

interface Blob { digest: string; size: number; bytes: Buffer; mediaType: string }

function blob(bytes: Buffer, mediaType = OCI_LAYER): Blob {
  return { digest: sha256(bytes), size: bytes.byteLength, bytes, mediaType };
}

async function expectStatus(res: Response, ...ok: number[]): Promise<Response> {
  if (!ok.includes(res.status)) throw new Error(`${res.url}: ${res.status} ${await res.text()}`);
  return res;
}

class Pusher {
  mountFallbacks = 0;
  manifestRetries = 0;
  constructor(private readonly server: RunningWharf) {}

  private url(path: string): string {
    return `${this.server.url}${path}`;
  }

  /** Monolithic upload (POST then PUT), or in two PATCHes with `between` awaited in the middle (a slow client). */
  async upload(repo: string, b: Blob, between?: () => Promise<void>): Promise<void> {
    const start = await expectStatus(await fetch(this.url(`/v2/${repo}/blobs/uploads/`), { method: 'POST' }), 202);
    let location = new URL(start.headers.get('location')!, this.server.url).toString();
    if (between) {
      const half = Math.floor(b.size / 2);
      const patch = await expectStatus(await fetch(location, {
        method: 'PATCH', body: b.bytes.subarray(0, half), headers: { 'Content-Type': 'application/octet-stream' },
      }), 202);
      location = new URL(patch.headers.get('location')!, this.server.url).toString();
      await between();
      const rest = await expectStatus(await fetch(location, {
        method: 'PATCH', body: b.bytes.subarray(half), headers: { 'Content-Type': 'application/octet-stream' },
      }), 202);
      location = new URL(rest.headers.get('location')!, this.server.url).toString();
      const sep = location.includes('?') ? '&' : '?';
      await expectStatus(await fetch(`${location}${sep}digest=${b.digest}`, { method: 'PUT' }), 201);
      return;
    }
    const sep = location.includes('?') ? '&' : '?';
    await expectStatus(await fetch(`${location}${sep}digest=${b.digest}`, {
      method: 'PUT', body: b.bytes, headers: { 'Content-Type': 'application/octet-stream' },
    }), 201);
  }

  /** Mount from `from`, falling back to an upload when the registry starts a session instead. */
  async mountOrUpload(repo: string, from: string, b: Blob): Promise<void> {
    const res = await fetch(this.url(`/v2/${repo}/blobs/uploads/?mount=${b.digest}&from=${from}`), { method: 'POST' });
    await expectStatus(res, 201, 202);
    if (res.status === 202) {
      this.mountFallbacks++;
      await fetch(new URL(res.headers.get('location')!, this.server.url), { method: 'DELETE' });
      await this.upload(repo, b);
    }
  }

  /** PUT the manifest; on MANIFEST_BLOB_UNKNOWN upload what is missing and try again (at most 3 times). */
  async putManifest(repo: string, tag: string, blobs: Blob[], manifest: Buffer): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const res = await fetch(this.url(`/v2/${repo}/manifests/${tag}`), {
        method: 'PUT', body: manifest, headers: { 'Content-Type': OCI_MANIFEST },
      });
      if (res.status === 201) return;
      const body = await res.text();
      if (res.status !== 400 || !body.includes('MANIFEST_BLOB_UNKNOWN') || attempt >= 3) {
        throw new Error(`manifest ${repo}:${tag}: ${res.status} ${body}`);
      }
      this.manifestRetries++;
      for (const b of blobs) await this.upload(repo, b);
    }
  }

  /** GET the manifest and every blob; true when all bytes hash to their digests. */
  async pulls(repo: string, tag: string): Promise<string | undefined> {
    const m = await fetch(this.url(`/v2/${repo}/manifests/${tag}`), { headers: { Accept: OCI_MANIFEST } });
    if (m.status !== 200) return `manifest ${m.status}`;
    const doc = JSON.parse(await m.text()) as { config: { digest: string }; layers: { digest: string }[] };
    for (const d of [doc.config.digest, ...doc.layers.map((l) => l.digest)]) {
      const res = await fetch(this.url(`/v2/${repo}/blobs/${d}`));
      if (res.status !== 200) return `blob ${d}: ${res.status}`;
      if (sha256(Buffer.from(await res.arrayBuffer())) !== d) return `blob ${d}: wrong bytes`;
    }
    return undefined;
  }
}

/**
 * Where the collector keeps its lock and live set: storage, or Redis (which the server then also uses for its
 * descriptor cache, so the worker's invalidations are exercised too).
 */
interface Backend {
  serverConfig: Record<string, unknown>;
  /** A collection over the server's storage, as `wharf garbage-collect` wires it. */
  collector(driver: StorageDriver): Promise<{ collect(options: GcOptions): Promise<GcStats>; close(): Promise<void> }>;
  close(): Promise<void>;
}

const storageBackend = async (): Promise<Backend> => ({
  serverConfig: { storage: { cache: { blobdescriptor: 'inmemory' } } },
  collector: async (driver) => ({ collect: (options) => collectGarbage(driver, options), close: async () => {} }),
  close: async () => {},
});

const redisBackend = async (): Promise<Backend> => {
  const redis = await startRedis();
  return {
    serverConfig: { storage: { cache: { blobdescriptor: 'redis' } }, redis: { addr: redis.host } },
    collector: async (driver) => {
      const config = parseConfig(`version: 0.1\nstorage: { inmemory: {}, cache: { blobdescriptor: redis } }\nredis: { addr: '${redis.host}' }\n`).config;
      const cache = await createDescriptorCache(config);
      const gc = await workerGcState(config, driver);
      return {
        collect: (options) => collectGarbage(driver, { ...options, ...sharedStateOptions(gc, cache) }),
        close: async () => {
          await gc.close();
          await cache?.close();
        },
      };
    },
    close: () => redis.stop(),
  };
};

for (const [name, makeBackend] of [['storage', storageBackend], ['redis', redisBackend]] as const) {
  test(`pushes racing repeated collections (lock and live set in ${name}): every acknowledged tag pulls completely`, async (t) => {
    const backend = await makeBackend();
    t.teardown(() => backend.close());
    await race(t, backend);
  });
}

async function race(t: ExecutionContext, backend: Backend): Promise<void> {
  const server = await startWharf({ config: backend.serverConfig });
  t.teardown(() => server.stop());
  const driver = createDriver({ driver: 'filesystem', rootDirectory: server.rootDirectory });
  const collector = await backend.collector(driver);
  t.teardown(() => collector.close());
  const pusher = new Pusher(server);

  // A pool of layers uploaded once and never referenced there: older than the grace period, they are garbage the
  // collector may take at any moment while other repositories mount them.
  const shared = Array.from({ length: 4 }, () => blob(randomBlob(2048)));
  for (const b of shared) await pusher.upload('pool', b);

  let gcDone = false;
  let gcRuns = 0;
  const gcLoop = (async () => {
    try {
      for (let i = 0; i < GC_RUNS; i++) {
        await collector.collect({ graceMs: 200, deleteUntagged: i % 2 === 1 });
        gcRuns++;
      }
    } finally {
      gcDone = true;
    }
  })();

  const pushed: string[] = [];
  const lockHeld = async () => {
    // A slow client: its second half arrives once a collection holds the lock (or they are all over).
    while (!gcDone && !(await driver.stat(GC_LOCK_PATH).then(() => true, () => false))) await new Promise((r) => setTimeout(r, 20));
  };
  const lockFree = async () => {
    while (!gcDone && (await driver.stat(GC_LOCK_PATH).then(() => true, () => false))) await new Promise((r) => setTimeout(r, 20));
  };
  // Two clients: a fast one, and a slow one whose uploads and manifests straddle collections.
  let count = 0;
  const pushLoop = async (slow: boolean) => {
    while (count < MAX_PUSHES && !gcDone) {
      const i = count++;
      const repo = `race/r${i % 3}`;
      const fresh = blob(randomBlob(1024 + i));
      const config = blob(Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', i })), OCI_CONFIG);
      const sharedLayer = shared[i % shared.length]!;
      await pusher.upload(repo, fresh, slow && i % 2 === 0 ? lockHeld : undefined);
      await pusher.mountOrUpload(repo, 'pool', sharedLayer);
      await pusher.upload(repo, config);
      const layers = [fresh, sharedLayer];
      const manifest = Buffer.from(JSON.stringify({
        schemaVersion: 2, mediaType: OCI_MANIFEST,
        config: { mediaType: OCI_CONFIG, digest: config.digest, size: config.size },
        layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
      }));
      // A client slower between its blobs and its manifest than the grace period: a whole collection may pass.
      if (slow && i % 2 === 1) {
        await lockHeld();
        await lockFree();
      }
      await pusher.putManifest(repo, `v${i}`, [config, ...layers], manifest);
      pushed.push(`${repo}:v${i}`);
    }
  };

  await Promise.all([gcLoop, pushLoop(false), pushLoop(true)]);
  t.is(gcRuns, GC_RUNS);
  t.true(pushed.length > 0);
  for (const ref of pushed) {
    const [repo, tag] = ref.split(':');
    t.is(await pusher.pulls(repo!, tag!), undefined, ref);
  }
  // Once more with nothing pushing: what the tags need is all that is left, and it is all still there.
  const leftover = blob(randomBlob(512));
  await pusher.upload('race/r0', leftover);
  const written = (await driver.stat(`/docker/registry/v2/repositories/race/r0/_layers/sha256/${leftover.digest.slice(7)}/link`)).modTime.getTime();
  while (Date.now() <= written) await new Promise((r) => setTimeout(r, 5));
  const last = await collector.collect({ graceMs: 0, deleteUntagged: true });
  t.true(last.blobsDeleted >= 1, 'an unreferenced upload is collected');
  t.is((await fetch(`${server.url}/v2/race/r0/blobs/${leftover.digest}`, { method: 'HEAD' })).status, 404);
  for (const ref of pushed) {
    const [repo, tag] = ref.split(':');
    t.is(await pusher.pulls(repo!, tag!), undefined, `${ref} after the final collection`);
  }
  t.log(`${pushed.length} pushes during ${GC_RUNS} collections; ${pusher.mountFallbacks} mounts refused, ${pusher.manifestRetries} manifests retried`);
}
