/**
 * Single-flight across processes through a real redis-server: one claim per key, waiters served once the holder is
 * done, takeover when a claim expires, release by the owner only, and fetching without Redis when it is down.
 */
import test from 'ava';
import { createClient } from 'redis';
import { freePort } from '../../testing/harness.js';
import { startRedis, type RunningRedis } from '../../testing/redis-test-server.js';
import { SharedFlights, type SharedFlightLogger } from './shared-flight.js';

let redis: RunningRedis;
let admin: ReturnType<typeof createClient>;

test.before(async () => {
  redis = await startRedis();
  admin = createClient({ url: redis.url });
  await admin.connect();
});

test.after.always(async () => {
  await admin?.close();
  await redis?.stop();
});

/** A logger that keeps its messages, and lets a test wait for one. */
function recorder() {
  const lines: string[] = [];
  const waiters: { re: RegExp; resolve: () => void }[] = [];
  const log = (msg: string) => {
    lines.push(msg);
    for (const w of waiters.filter((x) => x.re.test(msg))) w.resolve();
  };
  const logger: SharedFlightLogger = { warn: (_o, m) => log(m), info: (_o, m) => log(m), debug: (_o, m) => log(m) };
  const seen = (re: RegExp) =>
    lines.some((l) => re.test(l)) ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ re, resolve }));
  return { lines, logger, seen };
}

function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { open, opened };
}

/** A fetch that starts (`entered`), then waits for `release.open()` before it finishes with `finish()`. */
function heldFetch<T>(finish: () => T) {
  const release = gate();
  const entered = gate();
  const fetch = async () => {
    entered.open();
    await release.opened;
    return finish();
  };
  return { fetch, entered: entered.opened, release: release.open };
}

async function flights(t: { teardown(fn: () => Promise<void>): void }, options: Partial<ConstructorParameters<typeof SharedFlights>[0]> = {}) {
  const f = new SharedFlights({ url: redis.url, ...options });
  await f.connect();
  t.teardown(() => f.close());
  return f;
}

test('a second process waits for the holder and is served from storage; one fetch in all', async (t) => {
  const a = await flights(t);
  const waiting = recorder();
  const b = await flights(t, { logger: waiting.logger });
  let stored = false;
  let fetches = 0;
  const held = heldFetch(() => {
    stored = true;
    return 'bytes';
  });
  const first = a.run('k1', async () => stored, () => {
    fetches++;
    return held.fetch();
  });
  await held.entered;
  const second = b.run('k1', async () => stored, async () => {
    fetches++;
    return 'again';
  });
  await waiting.seen(/waiting for another replica/);
  held.release();
  t.deepEqual(await first, { fetched: true, value: 'bytes' });
  t.deepEqual(await second, { fetched: false });
  t.is(fetches, 1);
  t.is(await admin.exists('wharf:proxy:flight:k1'), 0, 'the claim is released');
});

test('a claim whose holder died expires and a waiter takes over', async (t) => {
  const log = recorder();
  const b = await flights(t, { logger: log.logger });
  // A holder that claimed and then died: it never renews, never releases.
  await admin.set('wharf:proxy:flight:k2', 'dead-holder', { PX: 300 });
  let fetches = 0;
  const outcome = await b.run('k2', async () => false, async () => {
    fetches++;
    return 'fetched';
  });
  t.deepEqual(outcome, { fetched: true, value: 'fetched' });
  t.is(fetches, 1);
  t.true(log.lines.some((l) => /waiting for another replica/.test(l)));
  t.true(log.lines.some((l) => /taken over/.test(l)));
});

test('a failed fetch releases the claim and the error reaches only its caller; a waiter then tries itself', async (t) => {
  const a = await flights(t);
  const waiting = recorder();
  const b = await flights(t, { logger: waiting.logger });
  const held = heldFetch(() => {
    throw new Error('upstream broke');
  });
  const first = a.run('k3', async () => false, held.fetch);
  await held.entered;
  const second = b.run('k3', async () => false, async () => 'second try');
  await waiting.seen(/waiting for another replica/);
  held.release();
  await t.throwsAsync(first, { message: 'upstream broke' });
  t.deepEqual(await second, { fetched: true, value: 'second try' });
});

test('only the owner releases or renews a claim: an expired claim taken by another is left alone', async (t) => {
  const a = await flights(t, { claimTtlMs: 60_000 });
  const held = heldFetch(() => 'done');
  const first = a.run('k4', async () => false, held.fetch);
  await held.entered;
  // The claim expired (say Redis was stalled) and another process took it.
  await admin.set('wharf:proxy:flight:k4', 'someone-else', { PX: 60_000 });
  held.release();
  t.deepEqual(await first, { fetched: true, value: 'done' });
  t.is(await admin.get('wharf:proxy:flight:k4'), 'someone-else');
});

test('a claim is renewed while its fetch runs longer than the claim lives', async (t) => {
  const a = await flights(t, { claimTtlMs: 1500 });
  const held = heldFetch(() => 'slow');
  const first = a.run('k5', async () => false, held.fetch);
  await held.entered;
  const token = await admin.get('wharf:proxy:flight:k5');
  t.truthy(token);
  // Watch the claim through several renewal periods: its time to live keeps being pushed back up, still ours.
  let renewals = 0;
  let last = await admin.pTTL('wharf:proxy:flight:k5');
  while (renewals < 3) {
    await new Promise((r) => setTimeout(r, 20));
    const [owner, ttl] = [await admin.get('wharf:proxy:flight:k5'), await admin.pTTL('wharf:proxy:flight:k5')];
    if (owner === token && ttl > last) renewals++;
    last = ttl;
  }
  held.release();
  t.deepEqual(await first, { fetched: true, value: 'slow' });
  t.is(await admin.exists('wharf:proxy:flight:k5'), 0, 'released when done');
});

test('without Redis every process fetches itself, and the outage is logged once', async (t) => {
  const log = recorder();
  const nowhere = await flights(t, { url: `redis://127.0.0.1:${await freePort()}`, logger: log.logger, dialTimeoutMs: 200 });
  t.deepEqual(await nowhere.run('k6', async () => false, async () => 1), { fetched: true, value: 1 });
  t.deepEqual(await nowhere.run('k6', async () => false, async () => 2), { fetched: true, value: 2 });
  t.is(log.lines.filter((l) => /redis unavailable/.test(l)).length, 1);
});

test('a waiter whose Redis goes away stops waiting and fetches itself', async (t) => {
  const own = await startRedis();
  t.teardown(() => own.stop());
  const log = recorder();
  const b = await flights(t, { url: own.url, logger: log.logger, commandTimeoutMs: 500 });
  const setter = createClient({ url: own.url });
  await setter.connect();
  await setter.set('wharf:proxy:flight:k7', 'holder', { PX: 600_000 });
  await setter.close();
  const outcome = b.run('k7', async () => false, async () => 'myself');
  await log.seen(/waiting for another replica/);
  await own.stop();
  t.deepEqual(await outcome, { fetched: true, value: 'myself' });
  t.true(log.lines.some((l) => /redis unavailable/.test(l)));
});
