/**
 * Quota behaviour every ledger must show (server/policies/quota.ts: the storage ledger; quota-redis.ts: Redis),
 * against an in-process LocalRegistry: registered as ava tests by `quotaScenarios(title, make)`.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import type { StorageDriver } from '../storage-drivers/driver.js';
import { createDriver } from '../storage-drivers/index.js';
import { parseConfig, type WharfConfig } from '../server/config/index.js';
import { Quotas, type QuotaLedger } from '../server/policies/quota.js';
import { Policies } from '../server/policies/rules.js';
import { RegistryError } from '../server/registry/errors.js';
import { parseDigest, parseReference } from '../server/registry/reference.js';
import { LocalRegistry } from '../server/registry/registry.js';
import { pushBlob, pushImage, sha256 } from './gc-helpers.js';

export function quotaConfig(rules: Array<{ repositories: string[]; maxsize: number | string }>, extra = ''): WharfConfig {
  const list = rules.map((r) => `    - repositories: [${r.repositories.map((x) => `'${x}'`).join(', ')}]\n      maxsize: ${r.maxsize}`).join('\n');
  return parseConfig(`version: 0.1\nstorage: inmemory\n${extra}policies:\n  quotas:\n${list}\n`).config;
}

export interface QuotaWorld {
  driver: StorageDriver;
  policies: Policies;
  registry: LocalRegistry;
  ledger: QuotaLedger;
  refusals: string[];
}

/** Makes a ledger over `driver` for `policies`; `excluded` are mirrored repositories. */
export type MakeLedger = (driver: StorageDriver, policies: Policies, excluded?: (name: string) => boolean) => Promise<QuotaLedger>;

export async function world(make: MakeLedger, config: WharfConfig, excluded?: (name: string) => boolean, driver?: StorageDriver): Promise<QuotaWorld> {
  const d = driver ?? createDriver({ driver: 'inmemory' });
  const policies = new Policies(config);
  const ledger = await make(d, policies, excluded);
  const refusals: string[] = [];
  const quotas = new Quotas(policies, ledger, { ...(excluded ? { excluded } : {}), onRefused: (r) => refusals.push(r.name) });
  return { driver: d, policies, ledger, refusals, registry: new LocalRegistry(d, { policies, quotas }) };
}

async function usageOf(w: QuotaWorld, index = 0): Promise<number | undefined> {
  const rule = w.policies.rules.quotas[index]!;
  return (await w.ledger.usage([rule])).get(rule.id)?.usage;
}

const bytes = (n: number) => randomBytes(n);
const denied = { instanceOf: RegistryError, message: /^quota policies\.quotas\[\d\] \(.*\) exceeded: / };

export function quotaScenarios(title: string, make: MakeLedger): void {
  test(`${title}: a blob shared by two repositories of a rule is counted once; manifests count their own bytes`, async (t) => {
    const w = await world(make, quotaConfig([{ repositories: ['team/**'], maxsize: 100_000 }]));
    const layer = bytes(1000);
    const a = await pushImage(w.registry, 'team/a', 'v1', [layer]);
    const b = await pushImage(w.registry, 'team/b', 'v1', [a.layers[0]!]);
    const expected = 1000 + a.config.size + a.manifest.size + b.config.size + b.manifest.size;
    t.is(await usageOf(w), expected);
    await pushBlob(w.registry, 'elsewhere', bytes(5000));
    t.is(await usageOf(w), expected, 'a repository outside the rule is not counted');
    await w.ledger.close();
  });

  test(`${title}: a push past the limit is refused with DENIED and the figures, nothing linked, the session gone`, async (t) => {
    const w = await world(make, quotaConfig([{ repositories: ['team/**'], maxsize: 1500 }]));
    await pushBlob(w.registry, 'team/a', bytes(1000));
    const big = bytes(600);
    const session = await w.registry.uploads.start('team/a');
    const err = await t.throwsAsync(
      w.registry.uploads.complete('team/a', session.id, parseDigest(sha256(big)), (async function* () { yield big; })()),
      denied,
    );
    t.is(err?.code, 'DENIED');
    t.deepEqual(err?.detail, { rule: 'policies.quotas[0] (team/**)', maxsize: 1500, usage: 1000, size: 600 });
    t.regex(err!.message, /1000 B of 1.5 KiB used, this blob needs 600 B$/);
    t.false(await w.registry.blobs.isLinked('team/a', parseDigest(sha256(big))));
    await t.throwsAsync(w.registry.uploads.status('team/a', session.id), { message: /upload unknown/ });
    t.is(await usageOf(w), 1000);
    t.deepEqual(w.refusals, ['policies.quotas[0] (team/**)']);
    // What fits still goes in; a digest already counted costs nothing.
    await pushBlob(w.registry, 'team/b', bytes(500));
    t.is(await usageOf(w), 1500);
    await w.ledger.close();
  });

  test(`${title}: uploads are refused before bytes are stored: start when full, a chunk that cannot fit`, async (t) => {
    const w = await world(make, quotaConfig([{ repositories: ['team/**'], maxsize: 1000 }]));
    const first = bytes(400);
    await pushBlob(w.registry, 'team/a', first);
    // A monolithic POST's digest and length: refused before a session exists.
    await t.throwsAsync(w.registry.startUpload('team/a', 'sha256', { digest: parseDigest(sha256(bytes(700))), length: 700 }), denied);
    // The same length for a digest already counted fits (it costs nothing).
    await t.notThrowsAsync(w.registry.startUpload('team/a', 'sha256', { digest: parseDigest(sha256(first)), length: 700 }));
    const session = await w.registry.startUpload('team/a', 'sha256');
    await t.throwsAsync(w.registry.appendUpload('team/a', session.id, (async function* () { yield bytes(700); })(), { length: 700 }), denied);
    t.is((await w.registry.uploadStatus('team/a', session.id)).offset, 0, 'nothing stored');
    await pushBlob(w.registry, 'team/a', bytes(600));
    await t.throwsAsync(w.registry.startUpload('team/b', 'sha256'), denied, 'a full rule refuses a new session');
    await w.ledger.close();
  });

  test(`${title}: deletes free the bytes (blob unlink, manifest delete by digest)`, async (t) => {
    const w = await world(make, quotaConfig([{ repositories: ['team/**'], maxsize: 100_000 }]));
    const img = await pushImage(w.registry, 'team/a', 'v1', [bytes(2000)]);
    const before = (await usageOf(w))!;
    await w.registry.deleteManifest('team/a', parseReference(img.manifest.digest));
    t.is(await usageOf(w), before - img.manifest.size);
    await w.registry.deleteBlob('team/a', parseDigest(img.layers[0]!.digest));
    t.is(await usageOf(w), img.config.size);
    await w.ledger.close();
  });

  test(`${title}: a mount is charged (refused with DENIED when it does not fit; free when the digest is counted)`, async (t) => {
    const w = await world(make, quotaConfig([{ repositories: ['team/**'], maxsize: 1500 }, { repositories: ['team/x/**'], maxsize: 1000 }]));
    const blob = await pushBlob(w.registry, 'other', bytes(1200));
    const small = await pushBlob(w.registry, 'other', bytes(900));
    await t.throwsAsync(w.registry.mount('team/x/a', parseDigest(blob.digest), 'other'), denied);
    t.false(await w.registry.blobs.isLinked('team/x/a', parseDigest(blob.digest)));
    t.truthy(await w.registry.mount('team/x/a', parseDigest(small.digest), 'other'));
    t.truthy(await w.registry.mount('team/x/b', parseDigest(small.digest), 'other'), 'counted already: costs nothing');
    t.is(await usageOf(w, 0), 900);
    t.is(await usageOf(w, 1), 900);
    // Nested rules: the outer one has room for 600 more, the inner one has not.
    const err = await t.throwsAsync(pushBlob(w.registry, 'team/x/a', bytes(200)), denied);
    t.regex(err!.message, /policies\.quotas\[1\]/);
    await pushBlob(w.registry, 'team/y', bytes(200));
    t.is(await usageOf(w, 0), 1100);
    t.is(await usageOf(w, 1), 900);
    await w.ledger.close();
  });

  test(`${title}: a manifest push that does not fit is refused and leaves no revision`, async (t) => {
    const w = await world(make, quotaConfig([{ repositories: ['team/**'], maxsize: 1500 }]));
    const layer = bytes(1000);
    const img = await pushImage(w.registry, 'team/a', 'v1', [layer]);
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: img.config.digest, size: img.config.size },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: img.layers[0]!.digest, size: 1000 }],
      annotations: { pad: 'x'.repeat(400) },
    }));
    await t.throwsAsync(w.registry.putManifest('team/a', parseReference('v2'), manifest, 'application/vnd.oci.image.manifest.v1+json', []), {
      ...denied, message: /this manifest needs/,
    });
    await t.throwsAsync(w.registry.getManifest('team/a', parseReference(sha256(manifest))), { message: /manifest unknown/ });
    await w.ledger.close();
  });

  test(`${title}: concurrent pushes in one process never exceed maxsize`, async (t) => {
    const w = await world(make, quotaConfig([{ repositories: ['team/**'], maxsize: 10_000 }]));
    const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => pushBlob(w.registry, `team/r${i % 3}`, bytes(1000))));
    const ok = results.filter((r) => r.status === 'fulfilled').length;
    t.is(ok, 10);
    t.is(await usageOf(w), 10_000);
    await w.ledger.close();
  });

  test(`${title}: a reload changing maxsize applies to the next push; mirrored repositories are neither counted nor refused`, async (t) => {
    const w = await world(make, quotaConfig([{ repositories: ['team/**', 'hub/**'], maxsize: 1000 }]), (name) => name.startsWith('hub/'));
    await pushBlob(w.registry, 'team/a', bytes(800));
    await t.throwsAsync(pushBlob(w.registry, 'team/a', bytes(400)), denied);
    w.policies.reload(quotaConfig([{ repositories: ['team/**', 'hub/**'], maxsize: 2000 }]));
    await t.notThrowsAsync(pushBlob(w.registry, 'team/a', bytes(400)));
    t.is(await usageOf(w), 1200, 'the count survived the reload (same patterns, same rule id)');
    await t.notThrowsAsync(pushBlob(w.registry, 'hub/library/x', bytes(5000)));
    t.is(await usageOf(w), 1200);
    await w.ledger.close();
  });
}
