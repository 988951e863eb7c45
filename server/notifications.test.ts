import test from 'ava';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { EVENTS_MEDIA_TYPE, Notifier, type EndpointConfig, type RegistryEvent } from './notifications.js';

interface Receiver {
  url: string;
  received: { headers: IncomingMessage['headers']; events: RegistryEvent[] }[];
  /** Status to answer with (default 200). */
  status: number;
  server: Server;
}

async function receiver(): Promise<Receiver> {
  const r: Receiver = { url: '', received: [], status: 200, server: createServer() };
  r.server.on('request', (req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => { body += d; });
    req.on('end', () => {
      if (r.status === 200) r.received.push({ headers: req.headers, events: (JSON.parse(body) as { events: RegistryEvent[] }).events });
      res.writeHead(r.status).end();
    });
  });
  await new Promise<void>((resolve) => r.server.listen(0, '127.0.0.1', resolve));
  r.url = `http://127.0.0.1:${(r.server.address() as AddressInfo).port}/events`;
  return r;
}

function endpoint(url: string, overrides: Partial<EndpointConfig> = {}): EndpointConfig {
  return {
    name: 'test', url, headers: { Authorization: ['Bearer s3cret'] }, timeout: 2000, threshold: 2, backoff: 20,
    ignoredmediatypes: [], ignore: { mediatypes: [], actions: [] }, disabled: false, ...overrides,
  };
}

async function until(what: string, condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const request = { id: 'req-1', addr: '127.0.0.1', host: 'registry.test', method: 'PUT', useragent: 'test' };

test('events arrive in order, in registry:2\'s envelope, with the configured headers', async (t) => {
  const r = await receiver();
  t.teardown(() => r.server.close());
  const notifier = new Notifier({ endpoints: [endpoint(r.url)] });
  t.teardown(() => notifier.close());
  for (let i = 0; i < 5; i++) {
    notifier.emit('push', { repository: 'team/app', digest: `sha256:${String(i).repeat(64)}`, tag: `v${i}`, mediaType: 'application/vnd.oci.image.manifest.v1+json' }, request, { name: 'alice' });
  }
  await until('five deliveries', () => r.received.length === 5);
  t.is(r.received[0]!.headers['content-type'], EVENTS_MEDIA_TYPE);
  t.is(r.received[0]!.headers.authorization, 'Bearer s3cret');
  t.deepEqual(r.received.map((x) => x.events[0]!.target.tag), ['v0', 'v1', 'v2', 'v3', 'v4']);
  const event = r.received[0]!.events[0]!;
  t.is(event.action, 'push');
  t.is(event.actor.name, 'alice');
  t.is(event.request.host, 'registry.test');
  t.regex(event.id, /^[0-9a-f-]{36}$/);
  t.truthy(Date.parse(event.timestamp));
  t.truthy(event.source.instanceID);
});

test('ignored actions and media types are not sent; disabled endpoints get nothing', async (t) => {
  const r = await receiver();
  t.teardown(() => r.server.close());
  const notifier = new Notifier({
    endpoints: [
      endpoint(r.url, { ignore: { mediatypes: ['application/octet-stream'], actions: ['pull'] } }),
      endpoint(r.url, { name: 'off', disabled: true }),
    ],
  });
  t.teardown(() => notifier.close());
  notifier.emit('pull', { repository: 'a', mediaType: 'application/vnd.oci.image.manifest.v1+json' }, request);
  notifier.emit('push', { repository: 'a', mediaType: 'application/octet-stream' }, request);
  notifier.emit('delete', { repository: 'a', digest: `sha256:${'d'.repeat(64)}` }, request);
  await until('the delete', () => r.received.length === 1);
  t.is(r.received[0]!.events[0]!.action, 'delete');
  t.deepEqual(notifier.stats().map((s) => s.name), ['test']);
});

test('a failing endpoint is retried until it recovers, without losing events', async (t) => {
  const r = await receiver();
  t.teardown(() => r.server.close());
  r.status = 503;
  const notifier = new Notifier({ endpoints: [endpoint(r.url)] });
  t.teardown(() => notifier.close());
  notifier.emit('push', { repository: 'a', tag: 'one' }, request);
  notifier.emit('push', { repository: 'a', tag: 'two' }, request);
  await until('the events to wait in the queue', () => notifier.stats()[0]!.pending === 2);
  r.status = 200;
  await until('delivery after recovery', () => r.received.length === 2);
  t.deepEqual(r.received.map((x) => x.events[0]!.target.tag), ['one', 'two']);
  await until('the queue to empty', () => notifier.stats()[0]!.pending === 0);
  t.is(notifier.stats()[0]!.delivered, 2);
});

test('a dead endpoint keeps at most maxQueue events: memory stays bounded', async (t) => {
  // Nothing listens on this port: every delivery fails fast with a refused connection.
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as AddressInfo).port;
  await new Promise((resolve) => probe.close(resolve));
  const notifier = new Notifier({ endpoints: [endpoint(`http://127.0.0.1:${port}/`, { backoff: 60_000 })], maxQueue: 100 });
  t.teardown(() => notifier.close());
  for (let i = 0; i < 1000; i++) notifier.emit('pull', { repository: 'a', tag: String(i) }, request);
  const [stats] = notifier.stats();
  t.is(stats!.pending, 100);
  t.is(stats!.dropped, 900);
  t.is(stats!.delivered, 0);
});

test('a running registry notifies pushes, pulls and deletes, as configured under notifications.endpoints', async (t) => {
  const { startWharf } = await import('../testing/harness.js');
  const { sha256 } = await import('../testing/helpers.js');
  const r = await receiver();
  t.teardown(() => r.server.close());
  const w = await startWharf({
    config: {
      notifications: {
        endpoints: [{ name: 'ci', url: r.url, headers: { 'X-Token': ['abc'] }, timeout: '10s', threshold: 3, backoff: '100ms',
          ignore: { actions: [] } }],
      },
    },
  });
  t.teardown(() => w.stop());
  const config = Buffer.from('{"architecture":"amd64","os":"linux"}');
  t.is((await fetch(`${w.url}/v2/events/app/blobs/uploads/?digest=${sha256(config)}`, { method: 'POST', body: config })).status, 201);
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
    layers: [],
  });
  const put = await fetch(`${w.url}/v2/events/app/manifests/v1`, {
    method: 'PUT', headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' }, body: manifest,
  });
  t.is(put.status, 201);
  t.is((await fetch(`${w.url}/v2/events/app/manifests/v1`)).status, 200);
  t.is((await fetch(`${w.url}/v2/events/app/manifests/v1`, { method: 'HEAD' })).status, 200);
  t.is((await fetch(`${w.url}/v2/events/app/manifests/v1`, { method: 'DELETE' })).status, 202);

  // Delivery is at least once: under load a delivery can time out after the receiver took it and come again, with
  // the same id. Each event counts once.
  const distinct = () => [...new Map(r.received.map((x) => [x.events[0]!.id, x] as const)).values()];
  await until('four events', () => distinct().length === 4);
  const events = distinct().map((x) => x.events[0]!);
  t.deepEqual(events.map((e) => e.action), ['push', 'push', 'pull', 'delete'], 'HEAD is not a pull');
  t.is(r.received[0]!.headers['x-token'], 'abc');
  t.like(events[0]!.target, { repository: 'events/app', digest: sha256(config), mediaType: 'application/octet-stream', size: config.length });
  t.like(events[1]!.target, { repository: 'events/app', digest: sha256(manifest), tag: 'v1', mediaType: 'application/vnd.oci.image.manifest.v1+json' });
  t.regex(events[1]!.target.url!, /\/v2\/events\/app\/manifests\/sha256:/);
  t.like(events[3]!.target, { repository: 'events/app', tag: 'v1' });
  t.is(events[1]!.request.method, 'PUT');
  t.is(events[1]!.source.addr, new URL(w.url).host);
});
