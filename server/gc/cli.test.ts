/**
 * `wharf garbage-collect` as an operator runs it: the compiled CLI in its own process over a filesystem tree.
 * Covers the summary, dry-run listing, exit codes and the metrics file (a worker killed mid-sweep is a scenario of
 * ./scenarios.ts, run for every driver).
 */
import test from 'ava';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseReference } from '../registry/reference.js';
import {
  ageAll, configFileFor, fixture, pushImage, randomBlob, runWharf, storedBlobs, type Fixture,
} from '../../testing/gc-helpers.js';

const HOUR = 3_600_000;

async function configFor(f: Fixture): Promise<string> {
  return configFileFor({ filesystem: { rootdirectory: f.root } }, join(f.root, 'config.yml'));
}

const wharf = runWharf;

test('usage errors exit 2; a dry run lists what it would delete and deletes nothing', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  const config = await configFor(f);
  const bad = await wharf(['garbage-collect', config, '--grace', 'soon']);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /--grace/);
  t.is((await wharf(['garbage-collect'])).code, 2);

  const a = await pushImage(f.registry, 'cli/app', 'a', [randomBlob()]);
  await pushImage(f.registry, 'cli/app', 'b', [randomBlob()]);
  await f.registry.manifests.delete('cli/app', parseReference('a'));
  await ageAll(f.root, HOUR);
  const before = await storedBlobs(f.driver);
  const metricsFile = join(f.root, 'gc.prom');
  const dry = await wharf(['garbage-collect', config, '--dry-run', '--delete-untagged', '--metrics-file', metricsFile]);
  t.is(dry.code, 0, dry.stderr);
  t.regex(dry.stdout, new RegExp(`would delete blob ${a.config.digest}`));
  t.regex(dry.stdout, new RegExp(`would delete manifest cli/app@${a.manifest.digest}`));
  t.regex(dry.stdout, /blobs: 3 marked, 3 would delete/);
  t.deepEqual([...(await storedBlobs(f.driver))].sort(), [...before].sort());
  t.regex(await readFile(metricsFile, 'utf8'), /wharf_gc_last_run_dry_run 1\n/);
});

test('--every keeps collecting until SIGTERM, then exits 0', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  const config = await configFor(f);
  const result = await wharf(['garbage-collect', config, '--every', '1h', '--quiet'], (pid) => {
    // Stop it once it reports its first summary (read from storage: the metrics of a finished run).
    const watch = () => {
      if (existsSync(join(f.root, '/docker/registry/v2/_wharf/gc/metrics.prom'))) process.kill(pid, 'SIGTERM');
      else setTimeout(watch, 20);
    };
    watch();
  });
  t.is(result.code, 0, result.stderr);
  t.regex(result.stdout, /garbage collection finished/);
});
