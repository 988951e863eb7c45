/**
 * `wharf garbage-collect` as an operator runs it: the compiled CLI in its own process over a filesystem tree.
 * Covers the summary, dry-run listing, exit codes, the metrics file, and a worker killed (SIGKILL) mid-sweep and
 * started again.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { CLI_PATH } from '../../conformance/harness.js';
import * as layout from '../registry/layout.js';
import { parseDigest, parseReference } from '../registry/reference.js';
import { LOCK_PATH, TRASH_ROOT } from './state.js';
import {
  ageAll, fixture, pullsCompletely, pushImage, randomBlob, sha256, storedBlobs, type Fixture,
} from './test-helpers.js';

const HOUR = 3_600_000;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

async function configFor(f: Fixture): Promise<string> {
  const path = join(f.root, 'config.yml');
  await writeFile(path, stringify({ version: '0.1', storage: { filesystem: { rootdirectory: f.root } } }));
  return path;
}

/** Run the CLI; `onSpawn` may kill it. */
function wharf(args: string[], onSpawn?: (pid: number, done: Promise<unknown>) => void): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_PATH, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const done = new Promise((r) => child.once('exit', r));
    child.once('error', reject);
    child.once('exit', (code, signal) => resolve({ code, signal, stdout, stderr }));
    onSpawn?.(child.pid!, done);
  });
}

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

test('a worker killed mid-sweep and started again leaves a consistent registry', async (t) => {
  const f = await fixture();
  t.teardown(f.remove);
  const config = await configFor(f);
  const kept: string[] = [];
  for (let i = 0; i < 6; i++) {
    await pushImage(f.registry, `kill/r${i % 2}`, `t${i}`, [randomBlob(), randomBlob()]);
    if (i % 3 === 0) await f.registry.manifests.delete(`kill/r${i % 2}`, parseReference(`t${i}`));
    else kept.push(`kill/r${i % 2}:t${i}`);
  }
  // Enough garbage that the sweep is still going when the kill lands.
  const garbage = Array.from({ length: 2000 }, () => randomBlob(64));
  await Promise.all(garbage.map((b) => f.driver.putContent(layout.blobDataPath(parseDigest(sha256(b))), b)));
  await ageAll(f.root, HOUR);

  const trash = join(f.root, TRASH_ROOT);
  const killed = await wharf(['garbage-collect', config, '--delete-untagged', '--quiet'], (pid, done) => {
    let exited = false;
    void done.then(() => { exited = true; });
    const watch = () => {
      if (exited) return;
      // The sweep has started once something was moved aside.
      if (existsSync(trash)) process.kill(pid, 'SIGKILL');
      else setImmediate(watch);
    };
    watch();
  });
  t.is(killed.signal, 'SIGKILL', `the worker finished before the kill: ${killed.stdout}`);
  t.true(existsSync(join(f.root, LOCK_PATH)), 'the dead worker left its lock');
  const afterKill = (await storedBlobs(f.driver)).size;
  t.true(afterKill > 20, 'the sweep was interrupted');

  const rerun = await wharf(['garbage-collect', config, '--delete-untagged']);
  t.is(rerun.code, 0, rerun.stderr);
  t.regex(rerun.stdout, /garbage collection finished/);
  for (const ref of kept) {
    const [repo, tag] = ref.split(':');
    t.true(await pullsCompletely(f.registry, repo!, tag!), ref);
  }
  // Exactly the live content is left: 4 images of manifest + config + 2 layers.
  t.is((await storedBlobs(f.driver)).size, kept.length * 4);
  let inTrash = 0;
  try {
    for await (const info of f.driver.walk(TRASH_ROOT)) if (!info.isDir) inTrash++;
  } catch {
    // no trash folder at all
  }
  t.is(inTrash, 0);
  t.false(existsSync(join(f.root, LOCK_PATH)));
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
