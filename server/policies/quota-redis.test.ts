/**
 * Quotas with Redis (./quota-redis.ts) on a real redis-server: the shared quota behaviour (testing/quota-scenarios.ts),
 * the count built from storage when Redis has none, two ledgers (two replicas) racing for the last bytes, and Redis
 * going away (503, never a hang).
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { createDriver } from '../../storage-drivers/index.js';
import { pushBlob } from '../../testing/gc-helpers.js';
import { quotaConfig, quotaScenarios, world } from '../../testing/quota-scenarios.js';
import { startRedis, type RunningRedis } from '../../testing/redis-test-server.js';
import { RegistryError } from '../registry/errors.js';
import { RedisQuotaLedger } from './quota-redis.js';
import { comparisonText, compareQuotas } from './quota-report.js';

let redis: RunningRedis;
let n = 0;
test.before(async () => {
  redis = await startRedis();
});
test.after.always(async () => {
  await redis?.stop();
});

/** A ledger on its own key prefix (each test its own count). */
function maker(prefix = `t${n++}:`, commandTimeoutMs = 1000) {
  return async (driver: import('../../storage-drivers/driver.js').StorageDriver, _p: unknown, excluded?: (name: string) => boolean) => {
    const ledger = new RedisQuotaLedger(driver, { url: redis.url, prefix, commandTimeoutMs, ...(excluded ? { excluded } : {}) });
    await ledger.connect();
    return ledger;
  };
}

quotaScenarios('redis ledger', (driver, policies, excluded) => maker()(driver, policies, excluded));

test('the count is built from storage when Redis has none (first start, or Redis emptied)', async (t) => {
  const driver = createDriver({ driver: 'inmemory' });
  const config = quotaConfig([{ repositories: ['team/**'], maxsize: 10_000 }]);
  const prefix = `build${n++}:`;
  // Links written before quotas were counted (no quotas in force then).
  const plain = await world(async (d) => new RedisQuotaLedger(d, { url: redis.url, prefix: 'unused:' }), quotaConfig([]), undefined, driver);
  await pushBlob(plain.registry, 'team/a', randomBytes(3000));
  await pushBlob(plain.registry, 'team/b', randomBytes(2000));
  await plain.ledger.close();
  const w = await world(maker(prefix), config, undefined, driver);
  await pushBlob(w.registry, 'team/c', randomBytes(1000));
  const rule = w.policies.rules.quotas[0]!;
  t.deepEqual((await w.ledger.usage([rule])).get(rule.id), { usage: 6000 });
  // Redis emptied: rebuilt from storage on the next push.
  const { createClient } = await import('redis');
  const c = createClient({ url: redis.url });
  await c.connect();
  for (const k of await c.keys(`${prefix}*`)) await c.del(k);
  await c.quit();
  t.is((await w.ledger.usage([rule])).get(rule.id), undefined);
  await pushBlob(w.registry, 'team/d', randomBytes(500));
  t.deepEqual((await w.ledger.usage([rule])).get(rule.id), { usage: 6500 });
  await w.ledger.close();
});

test('two replicas racing for the last bytes never exceed maxsize together', async (t) => {
  const driver = createDriver({ driver: 'inmemory' });
  const config = quotaConfig([{ repositories: ['team/**'], maxsize: 20_000 }]);
  const prefix = `race${n++}:`;
  const a = await world(maker(prefix), config, undefined, driver);
  const b = await world(maker(prefix), config, undefined, driver);
  const pushes = Array.from({ length: 40 }, (_, i) => pushBlob((i % 2 ? a : b).registry, `team/r${i % 5}`, randomBytes(1000)));
  const results = await Promise.allSettled(pushes);
  t.is(results.filter((r) => r.status === 'fulfilled').length, 20);
  for (const r of results) if (r.status === 'rejected') t.is((r.reason as RegistryError).code, 'DENIED');
  const rule = a.policies.rules.quotas[0]!;
  t.deepEqual((await b.ledger.usage([rule])).get(rule.id), { usage: 20_000 });
  await a.ledger.close();
  await b.ledger.close();
});

test('a build asked for by a replica that saw no count does nothing once another replica built it', async (t) => {
  // The race behind it: replica B finds the count not built and goes to build it; meanwhile replica A builds it and
  // charges pushes whose links are not written yet. B's recount from storage would not see those charges.
  const driver = createDriver({ driver: 'inmemory' });
  const config = quotaConfig([{ repositories: ['team/**'], maxsize: 20_000 }]);
  const prefix = `late${n++}:`;
  const a = await world(maker(prefix), config, undefined, driver);
  const b = await world(maker(prefix), config, undefined, driver);
  const rule = a.policies.rules.quotas[0]!;
  // A builds the count and charges a link that is not in storage yet (a push between its charge and its link).
  const charged = await a.ledger.charge([rule], { repository: 'team/x', kind: 'layer', digest: `sha256:${'a'.repeat(64)}` }, 7000);
  t.like(charged, { ok: true });
  // B goes on with the build it decided on before A's count was there.
  const late = b.ledger as unknown as { rulesById(rules: unknown[]): unknown; build(id: string): Promise<void> };
  late.rulesById([rule]);
  await late.build(rule.id);
  t.deepEqual((await b.ledger.usage([rule])).get(rule.id), { usage: 7000 }, 'the charge in flight is still counted');
  await a.ledger.close();
  await b.ledger.close();
});

test('Redis not answering: a push under a quota is answered UNAVAILABLE within the timeout, never hangs', async (t) => {
  const driver = createDriver({ driver: 'inmemory' });
  const w = await world(maker(`down${n++}:`, 300), quotaConfig([{ repositories: ['team/**'], maxsize: 10_000 }]), undefined, driver);
  await pushBlob(w.registry, 'team/a', randomBytes(100));
  redis.pause();
  try {
    const err = await t.throwsAsync(pushBlob(w.registry, 'team/a', randomBytes(100)), { instanceOf: RegistryError });
    t.is(err?.code, 'UNAVAILABLE');
    await t.notThrowsAsync(pushBlob(w.registry, 'free/a', randomBytes(100)), 'repositories without a quota are not affected');
  } finally {
    redis.resume();
  }
  await w.ledger.close();
});

test('the GC recount corrects a drifted count only when nothing changed it meanwhile', async (t) => {
  const driver = createDriver({ driver: 'inmemory' });
  const w = await world(maker(`drift${n++}:`), quotaConfig([{ repositories: ['team/**'], maxsize: 100_000 }]), undefined, driver);
  await pushBlob(w.registry, 'team/a', randomBytes(1000));
  const rule = w.policies.rules.quotas[0]!;
  // Drift: a charge whose link never reached storage (a crash between the two).
  await w.ledger.charge([rule], { repository: 'team/a', kind: 'layer', digest: `sha256:${'ab'.repeat(32)}` }, 500);
  // A push between the two recounts moves the version: reported, not corrected.
  const [moved] = await compareQuotas(driver, [rule], w.ledger, {
    correct: true,
    settle: async () => { await pushBlob(w.registry, 'team/b', randomBytes(100)); },
  });
  t.like(moved, { running: 1500, usage: 1000, changedDuring: false, corrected: false });
  t.deepEqual((await w.ledger.usage([rule])).get(rule.id), { usage: 1600 });
  // Nothing moving: corrected to the recount.
  const [fixed] = await compareQuotas(driver, [rule], w.ledger, { correct: true, settle: async () => {} });
  t.like(fixed, { running: 1600, usage: 1100, corrected: true });
  t.deepEqual((await w.ledger.usage([rule])).get(rule.id), { usage: 1100 });
  const [again] = await compareQuotas(driver, [rule], w.ledger, { correct: true, settle: async () => {} });
  t.like(again, { running: 1100, usage: 1100, corrected: false });
  t.true(comparisonText([moved!]).includes('differs: running count 1500 bytes, recount 1000 bytes (+500)'));
  await w.ledger.close();
});
