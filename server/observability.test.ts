/**
 * Metrics on the debug listener, the health probes, and registry:2's health.storagedriver behaviour, against a real
 * Wharf process.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rename, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startWharf } from '../testing/harness.js';
import { sha256 } from '../testing/helpers.js';
import { debugUrl, sample } from '../testing/metrics.js';

async function waitFor(what: string, condition: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('Prometheus metrics count requests, bytes and storage operations', async (t) => {
  const w = await startWharf({ config: { http: { debug: { addr: '127.0.0.1:0', prometheus: { enabled: true } } } } });
  t.teardown(() => w.stop());
  const data = randomBytes(50_000);
  const put = await fetch(`${w.url}/v2/metrics/app/blobs/uploads/?digest=${sha256(data)}`, { method: 'POST', body: data });
  t.is(put.status, 201);
  for (let i = 0; i < 3; i++) {
    const get = await fetch(`${w.url}/v2/metrics/app/blobs/${sha256(data)}`);
    t.is((await get.arrayBuffer()).byteLength, data.length);
  }
  await fetch(`${w.url}/v2/metrics/app/manifests/nope`);

  const scrape = await fetch(`${debugUrl(w)}/metrics`);
  t.is(scrape.status, 200);
  t.regex(scrape.headers.get('content-type')!, /text\/plain/);
  const text = await scrape.text();
  t.is(sample(text, 'wharf_http_requests_total', { route: 'blob', method: 'GET', status: '200' }), 3);
  t.is(sample(text, 'wharf_http_requests_total', { route: 'uploadStart', method: 'POST', status: '201' }), 1);
  t.is(sample(text, 'wharf_http_requests_total', { route: 'manifest', method: 'GET', status: '404' }), 1);
  t.true(sample(text, 'wharf_http_sent_bytes_total', { route: 'blob' })! >= 3 * data.length);
  t.true(sample(text, 'wharf_http_received_bytes_total', { route: 'uploadStart' })! >= data.length);
  t.is(sample(text, 'wharf_http_request_duration_seconds_count', { route: 'blob', method: 'GET' }), 3);
  t.true(sample(text, 'wharf_storage_operation_duration_seconds_count', { driver: 'filesystem', operation: 'reader' })! >= 3);
  t.is(sample(text, 'wharf_storage_operation_errors_total', { driver: 'filesystem', operation: 'stat' }) ?? 0, 0);
  t.is(sample(text, 'wharf_uploads_in_progress'), 0);
  t.true(sample(text, 'wharf_process_resident_memory_bytes')! > 0);
});

test('probes: /healthz, /readyz and /debug/health', async (t) => {
  const w = await startWharf({ config: { http: { debug: { addr: '127.0.0.1:0' } } } });
  t.teardown(() => w.stop());
  const live = await fetch(`${w.url}/healthz`);
  t.is(live.status, 200);
  const ready = await fetch(`${w.url}/readyz`);
  t.is(ready.status, 200);
  t.deepEqual(await ready.json(), { status: 'ok', checks: { storagedriver_filesystem: 'ok' } });
  const debug = await fetch(`${debugUrl(w)}/debug/health`);
  t.is(debug.status, 200);
  t.deepEqual(await debug.json(), {});
  // Without prometheus.enabled, there is no metrics endpoint.
  t.is((await fetch(`${debugUrl(w)}/metrics`)).status, 404);
});

test('health.storagedriver: failing storage turns the API to 503 until it recovers', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-health-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const root = join(dir, 'data');
  await mkdir(root);
  const w = await startWharf({
    rootDirectory: root,
    config: { health: { storagedriver: { enabled: true, interval: '50ms', threshold: 2 } } },
  });
  t.teardown(() => w.stop());
  t.is((await fetch(`${w.url}/v2/`)).status, 200);

  // Break the storage root: a symlink pointing at itself makes every access fail with ELOOP.
  await rename(root, `${root}.away`);
  await symlink(root, root);
  await waitFor('the API to answer 503', async () => (await fetch(`${w.url}/v2/`)).status === 503);
  const res = await fetch(`${w.url}/v2/some/repo/tags/list`);
  t.is(res.status, 503);
  const text = await res.text();
  t.is((JSON.parse(text) as { errors: { code: string }[] }).errors[0]!.code, 'UNAVAILABLE');
  // The driver's error names the storage root: it goes to the log, never to whoever asks.
  t.false(text.includes(dir), text);
  const ready = await fetch(`${w.url}/readyz`);
  t.is(ready.status, 503);
  const readyText = await ready.text();
  t.deepEqual(JSON.parse(readyText), { status: 'unavailable', checks: { storagedriver_filesystem: 'unavailable' } });
  t.false(readyText.includes(dir));
  t.is((await fetch(`${w.url}/healthz`)).status, 200, 'liveness does not depend on storage');

  await rm(root);
  await rename(`${root}.away`, root);
  await waitFor('the API to recover', async () => (await fetch(`${w.url}/v2/`)).status === 200);
  t.is((await fetch(`${w.url}/readyz`)).status, 200);
});

test('metrics count cache hits, refused requests, and show the last garbage collection', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-metrics-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const root = join(dir, 'data');
  const htpasswd = join(process.cwd(), 'docs/examples/auth/htpasswd');
  const w = await startWharf({
    rootDirectory: root,
    config: {
      http: { debug: { addr: '127.0.0.1:0', prometheus: { enabled: true } } },
      storage: { cache: { blobdescriptor: 'inmemory' } },
      auth: { htpasswd: { realm: 'test', path: htpasswd } },
    },
  });
  t.teardown(() => w.stop());
  // No credentials: refused, and counted.
  t.is((await fetch(`${w.url}/v2/private/app/tags/list`)).status, 401);
  t.is((await fetch(`${w.url}/v2/private/app/tags/list`, { headers: { Authorization: 'Basic bm9ib2R5Om5vcGU=' } })).status, 401);
  // The last collection's figures, as the garbage collector leaves them in storage.
  const gcMetrics = join(root, 'docker/registry/v2/_wharf/gc');
  await mkdir(gcMetrics, { recursive: true });
  const { writeFile } = await import('node:fs/promises');
  await writeFile(join(gcMetrics, 'metrics.prom'), '# HELP wharf_gc_blobs_deleted Blobs deleted.\n# TYPE wharf_gc_blobs_deleted gauge\nwharf_gc_blobs_deleted 42\n');

  const text = await (await fetch(`${debugUrl(w)}/metrics`)).text();
  t.is(sample(text, 'wharf_auth_failures_total', { code: 'UNAUTHORIZED' }), 2);
  t.is(sample(text, 'wharf_gc_blobs_deleted'), 42);
});

test('the blob-descriptor cache reports hits and misses', async (t) => {
  const w = await startWharf({
    config: {
      http: { debug: { addr: '127.0.0.1:0', prometheus: { enabled: true } } },
      storage: { cache: { blobdescriptor: 'inmemory' } },
    },
  });
  t.teardown(() => w.stop());
  const data = randomBytes(1000);
  t.is((await fetch(`${w.url}/v2/cached/blobs/uploads/?digest=${sha256(data)}`, { method: 'POST', body: data })).status, 201);
  for (let i = 0; i < 3; i++) t.is((await fetch(`${w.url}/v2/cached/blobs/${sha256(data)}`, { method: 'HEAD' })).status, 200);
  const text = await (await fetch(`${debugUrl(w)}/metrics`)).text();
  const hits = (sample(text, 'wharf_blob_descriptor_cache_requests_total', { backend: 'inmemory', kind: 'stat', result: 'hit' }) ?? 0)
    + (sample(text, 'wharf_blob_descriptor_cache_requests_total', { backend: 'inmemory', kind: 'link', result: 'hit' }) ?? 0);
  t.true(hits >= 2, text.split('\n').filter((l) => l.includes('cache_requests')).join('\n'));
});

test('the access log names the route, repository, digest and user of each request, never the password', async (t) => {
  const w = await startWharf({
    config: {
      log: { level: 'info', formatter: 'json' },
      auth: { htpasswd: { realm: 'test', path: join(process.cwd(), 'docs/examples/auth/htpasswd') } },
    },
  });
  t.teardown(() => w.stop());
  const password = 'alice-example-password';
  const auth = { Authorization: `Basic ${Buffer.from(`alice:${password}`).toString('base64')}` };
  const data = randomBytes(100);
  const put = await fetch(`${w.url}/v2/logged/app/blobs/uploads/?digest=${sha256(data)}`, { method: 'POST', body: data, headers: auth });
  t.is(put.status, 201);
  const requestId = put.headers.get('x-request-id')!;
  const line = await (async () => {
    for (let i = 0; i < 200; i++) {
      const found = w.output().split('\n').find((l) => l.includes(requestId) && l.includes('"msg":"request"'));
      if (found) return found;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`no access-log line for ${requestId}:\n${w.output()}`);
  })();
  t.like(JSON.parse(line), { route: 'uploadStart', repository: 'logged/app', digest: sha256(data), user: 'alice', status: 201 });
  t.false(w.output().includes(password));
});

test('/readyz reports Redis without making the replica unready when it is down', async (t) => {
  const { startRedis } = await import('../testing/redis-test-server.js');
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const w = await startWharf({
    config: { redis: { addr: `127.0.0.1:${redis.port}` }, storage: { cache: { blobdescriptor: 'redis' } } },
  });
  t.teardown(() => w.stop());
  const ready = async () => {
    const res = await fetch(`${w.url}/readyz`);
    return { status: res.status, body: (await res.json()) as { checks: Record<string, string> } };
  };
  t.deepEqual(await ready(), { status: 200, body: { status: 'ok', checks: { storagedriver_filesystem: 'ok', redis: 'ok' } } as never });

  await redis.stop();
  // Make the registry use the cache so it notices, then wait for /readyz to say so.
  await waitFor('readyz to report Redis down', async () => {
    await fetch(`${w.url}/v2/ready/blobs/sha256:${'0'.repeat(64)}`, { method: 'HEAD' });
    return (await ready()).body.checks.redis !== 'ok';
  });
  const down = await ready();
  t.is(down.status, 200, 'still ready: the registry serves from storage');
  // The public probe says only that: the error text (Redis's host and port) is for the operators' listener.
  t.is(down.body.checks.redis, 'unavailable');
});
