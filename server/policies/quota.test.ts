/**
 * Quotas without Redis (./quota.ts, StorageQuotaLedger): the shared quota behaviour (testing/quota-scenarios.ts),
 * and what is particular to counting from storage: another process's links are seen after a refresh, and a refusal
 * is never decided on a figure older than the request.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { createDriver } from '../../storage-drivers/index.js';
import { pushBlob } from '../../testing/gc-helpers.js';
import { quotaConfig, quotaScenarios, world } from '../../testing/quota-scenarios.js';
import { formatBytes, StorageQuotaLedger } from './quota.js';
import { quotaCommand } from './quota-report.js';
import { RegistryError } from '../registry/errors.js';
import { parseDigest } from '../registry/reference.js';
import type { Policies } from './rules.js';

quotaScenarios('storage ledger', async (driver, policies, excluded) =>
  new StorageQuotaLedger(driver, () => policies.rules.quotas, { ...(excluded ? { excluded } : {}) }));

test('bytes are written as people read them', (t) => {
  t.is(formatBytes(100), '100 B');
  t.is(formatBytes(512 * 1024 * 1024), '512 MiB');
  t.is(formatBytes(Math.round(9.8 * 1024 ** 3)), '9.8 GiB');
  t.is(formatBytes(10 * 1024 ** 3), '10 GiB');
});

test('two processes over one storage: a refusal is decided on a fresh recount, and a figure is as old as the refresh interval at most', async (t) => {
  const driver = createDriver({ driver: 'inmemory' });
  const config = quotaConfig([{ repositories: ['team/**'], maxsize: 3000 }]);
  const make = (refreshMs: number) => async (d: typeof driver, policies: Policies) => new StorageQuotaLedger(d, () => policies.rules.quotas, { refreshMs });
  // Never refreshed by age in this test: only a refusal recounts.
  const a = await world(make(60_000), config, undefined, driver);
  const b = await world(make(60_000), config, undefined, driver);
  const rule = a.policies.rules.quotas[0]!;
  const first = await pushBlob(a.registry, 'team/a', randomBytes(1000));
  await pushBlob(b.registry, 'team/b', randomBytes(1500));
  t.is((b.ledger as StorageQuotaLedger).held(rule), 2500, 'b counted a\'s blob when it first counted');
  await a.registry.deleteBlob('team/a', parseDigest(first.digest));
  t.is((b.ledger as StorageQuotaLedger).held(rule), 2500, 'b has not seen the delete yet');
  // 2500 + 1000 > 3000 on b's figure, but b recounts before refusing: 1500 + 1000 fits.
  await pushBlob(b.registry, 'team/b', randomBytes(1000));
  t.is((b.ledger as StorageQuotaLedger).held(rule), 2500);
  const err = await t.throwsAsync(pushBlob(b.registry, 'team/b', randomBytes(600)), { instanceOf: RegistryError });
  t.like(err?.detail, { usage: 2500, size: 600, maxsize: 3000 });
  // A process whose figure is older than the refresh interval recounts before it decides.
  const c = await world(make(0), config, undefined, driver);
  await pushBlob(a.registry, 'team/a', randomBytes(100));
  t.deepEqual((await c.ledger.usage([rule])).get(rule.id), { usage: 2600, repositories: 2 });
});

test('wharf quota: usage errors exit 2; a registry is reported per rule (the storage count is the recount)', async (t) => {
  const config = quotaConfig([{ repositories: ['team/**'], maxsize: 2048 }]);
  const load = async () => ({ config });
  const write = process.stdout.write.bind(process.stdout);
  const errWrite = process.stderr.write.bind(process.stderr);
  let out = '';
  process.stderr.write = (() => true) as typeof process.stderr.write;
  try {
    t.is(await quotaCommand([], load), 2);
    t.is(await quotaCommand(['a.yml', 'b.yml'], load), 2);
    t.is(await quotaCommand(['--bogus', 'a.yml'], load), 2);
    process.stdout.write = ((chunk: string) => { out += chunk; return true; }) as typeof process.stdout.write;
    t.is(await quotaCommand(['a.yml', '--json'], load), 0);
  } finally {
    process.stdout.write = write;
    process.stderr.write = errWrite;
  }
  // storage: inmemory is empty in a new process: nothing counted.
  t.deepEqual(JSON.parse(out), { quotas: [{ rule: 'policies.quotas[0] (team/**)', maxsize: 2048, usage: 0, repositories: 0, mode: 'storage', running: 0 }] });
});

test('a revision written back after a racing delete released it is counted again, never refused', async (t) => {
  const make = async (d: ReturnType<typeof createDriver>, policies: Policies) => new StorageQuotaLedger(d, () => policies.rules.quotas);
  const w = await world(make, quotaConfig([{ repositories: ['team/**'], maxsize: 1000 }]));
  await pushBlob(w.registry, 'team/a', randomBytes(900));
  const quotas = w.registry.quotas!;
  await quotas.recharge('team/a', 'manifest', `sha256:${'cd'.repeat(32)}`, 500);
  const rule = w.policies.rules.quotas[0]!;
  t.is((w.ledger as StorageQuotaLedger).held(rule), 1400);
  t.deepEqual(w.refusals, []);
});
