/**
 * Several replicas behave as one registry: two real `wharf serve` processes on the same storage (a shared
 * directory, as on NFS; and one S3 bucket on a real Ceph RGW) and one real Redis holding the blob-descriptor cache.
 * Every step is done half on one replica and half on the other.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from 'redis';
import { startWharf, type RunningWharf } from '../testing/harness.js';
import { startRedis } from '../testing/redis-test-server.js';
import { pushBlob, sha256 } from '../testing/helpers.js';

interface Storage {
  config: Record<string, unknown>;
  /** For the filesystem: the shared directory. */
  rootDirectory?: string;
  cleanup(): Promise<void>;
}

async function filesystemStorage(): Promise<Storage> {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-replicas-'));
  return {
    config: {},
    rootDirectory: join(dir, 'data'),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

async function s3Storage(): Promise<Storage> {
  const { startS3TestServer } = await import('../testing/s3-test-server.js');
  const s3 = await startS3TestServer();
  return {
    config: {
      storage: {
        filesystem: null,
        s3: s3.storageConfig({ secure: false }),
        redirect: { disable: true },
      },
    },
    cleanup: () => s3.stop(),
  };
}

/** Two replicas on `storage` with one Redis cache; everything is stopped when the test ends. */
async function cluster(t: ExecutionContext, storage: Storage) {
  const redis = await startRedis();
  const config = {
    ...storage.config,
    storage: { ...(storage.config.storage as object), cache: { blobdescriptor: 'redis' }, delete: { enabled: true } },
    redis: { addr: redis.host, readtimeout: '1s', writetimeout: '1s', dialtimeout: '2s' },
  };
  const replicas: RunningWharf[] = [];
  t.teardown(async () => {
    await Promise.all(replicas.map((r) => r.stop()));
    await redis.stop();
    await storage.cleanup();
  });
  const options = storage.rootDirectory ? { rootDirectory: storage.rootDirectory, config } : { config };
  replicas.push(await startWharf(options), await startWharf(options));
  const [a, b] = replicas as [RunningWharf, RunningWharf];
  return { a, b, redis };
}

/** The path and query of a Location header, to send to whichever replica. */
const pathOf = (location: string | null) => {
  if (!location) throw new Error('no Location header');
  const u = new URL(location, 'http://x');
  return u.pathname + u.search;
};

async function replicaScenario(t: ExecutionContext, storage: Storage): Promise<void> {
  const { a, b, redis } = await cluster(t, storage);
  const repo = `team/app-${randomBytes(3).toString('hex')}`;

  // 1. A chunked upload: started on A, first chunk on B, second chunk and commit on A (A's running hash is stale
  //    after B's chunk, so A rebuilds it from the stored bytes).
  const layer = randomBytes(3 * 1024 * 1024 + 17);
  const layerDigest = sha256(layer);
  const cut = 1024 * 1024 + 5;
  let res = await fetch(`${a.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  t.is(res.status, 202);
  let location = pathOf(res.headers.get('location'));
  res = await fetch(`${b.url}${location}`, {
    method: 'PATCH',
    headers: { 'content-type': 'application/octet-stream', 'content-range': `0-${cut - 1}` },
    body: layer.subarray(0, cut),
  });
  t.is(res.status, 202, 'the first chunk lands on replica B');
  t.is(res.headers.get('range'), `0-${cut - 1}`);
  location = pathOf(res.headers.get('location'));
  res = await fetch(`${a.url}${location}`);
  t.is(res.status, 204, 'A sees the offset B wrote');
  t.is(res.headers.get('range'), `0-${cut - 1}`);
  res = await fetch(`${a.url}${location}`, {
    method: 'PATCH',
    headers: { 'content-type': 'application/octet-stream', 'content-range': `${cut}-${layer.length - 1}` },
    body: layer.subarray(cut),
  });
  t.is(res.status, 202, 'the second chunk lands on replica A');
  location = pathOf(res.headers.get('location'));
  const sep = location.includes('?') ? '&' : '?';
  res = await fetch(`${a.url}${location}${sep}digest=${layerDigest}`, { method: 'PUT' });
  t.is(res.status, 201, 'A commits with the right digest');
  res = await fetch(`${b.url}/v2/${repo}/blobs/${layerDigest}`);
  t.is(res.status, 200);
  t.true(Buffer.from(await res.arrayBuffer()).equals(layer), 'B serves the bytes the upload assembled');

  // 2. A manifest pushed to A is served by B, by tag and by digest.
  const configBlob = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
  const configDigest = await pushBlob(a.url, repo, configBlob);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: configBlob.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layerDigest, size: layer.length }],
    }),
  );
  const manifestDigest = sha256(manifest);
  res = await fetch(`${a.url}/v2/${repo}/manifests/v1`, {
    method: 'PUT',
    headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
    body: manifest,
  });
  t.is(res.status, 201);
  for (const ref of ['v1', manifestDigest]) {
    res = await fetch(`${b.url}/v2/${repo}/manifests/${ref}`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
    t.is(res.status, 200, `B serves the manifest by ${ref}`);
    t.true(Buffer.from(await res.arrayBuffer()).equals(manifest));
    t.is(res.headers.get('docker-content-digest'), manifestDigest);
  }

  // 3. Cross-replica mount: the blob A received is mounted into another repository through B.
  const other = `${repo}-copy`;
  res = await fetch(`${b.url}/v2/${other}/blobs/uploads/?mount=${layerDigest}&from=${repo}`, { method: 'POST' });
  await res.arrayBuffer();
  t.is(res.status, 201, 'B mounts the blob from the repository A wrote');
  res = await fetch(`${a.url}/v2/${other}/blobs/${layerDigest}`, { method: 'HEAD' });
  t.is(res.status, 200, 'A serves the mounted blob');
  t.is(res.headers.get('content-length'), String(layer.length));

  // 4. Deletes are seen by the other replica at once, although both have the blob in the shared cache.
  for (const r of [a, b]) {
    res = await fetch(`${r.url}/v2/${other}/blobs/${layerDigest}`, { method: 'HEAD' });
    t.is(res.status, 200, 'warm the cache through both replicas');
  }
  const client = createClient({ url: redis.url });
  await client.connect();
  try {
    const keys = await client.keys('wharf:blobdescriptor:*');
    t.true(keys.some((k) => k.endsWith(layerDigest)), 'the descriptor is in the shared Redis cache');
  } finally {
    await client.close();
  }
  res = await fetch(`${a.url}/v2/${other}/blobs/${layerDigest}`, { method: 'DELETE' });
  t.is(res.status, 202, 'A deletes the blob from the repository');
  res = await fetch(`${b.url}/v2/${other}/blobs/${layerDigest}`, { method: 'HEAD' });
  t.is(res.status, 404, 'B stops serving it at once');
  res = await fetch(`${b.url}/v2/${repo}/blobs/${layerDigest}`, { method: 'HEAD' });
  t.is(res.status, 200, 'the repository that still links it is unaffected');

  res = await fetch(`${b.url}/v2/${repo}/manifests/${manifestDigest}`, { method: 'DELETE' });
  t.is(res.status, 202, 'B deletes the manifest');
  for (const ref of ['v1', manifestDigest]) {
    res = await fetch(`${a.url}/v2/${repo}/manifests/${ref}`);
    await res.arrayBuffer();
    t.is(res.status, 404, `A no longer serves the manifest by ${ref}`);
  }
}

test('two replicas on a shared directory with one Redis behave as one registry', async (t) => {
  await replicaScenario(t, await filesystemStorage());
});

test('two replicas on one S3 bucket (Ceph RGW) with one Redis behave as one registry', async (t) => {
  await replicaScenario(t, await s3Storage());
});
