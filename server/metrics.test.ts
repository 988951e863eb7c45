/** The instrumented storage driver: timed, and otherwise the driver it wraps, optional capabilities included. */
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkedDriver } from '../storage-drivers/checked.js';
import type { FileInfo, StorageDriver } from '../storage-drivers/driver.js';
import { FilesystemDriver } from '../storage-drivers/filesystem.js';
import { InMemoryDriver } from '../storage-drivers/inmemory.js';
import { Metrics, instrumentedDriver } from './metrics.js';

/**
 * Every member of the driver contract. Typed so that a member added to StorageDriver must be added here, which puts
 * it under the check below.
 */
const MEMBERS: Record<keyof StorageDriver, true> = {
  name: true,
  getContent: true,
  getContentWithInfo: true,
  putContent: true,
  putContentIfAbsent: true,
  reader: true,
  writer: true,
  stat: true,
  list: true,
  move: true,
  delete: true,
  removeEmptyDirectory: true,
  countDirectories: true,
  listFiles: true,
  deleteFiles: true,
  redirectURL: true,
  walk: true,
};

const offered = (d: StorageDriver) =>
  Object.keys(MEMBERS).filter((m) => typeof (d as unknown as Record<string, unknown>)[m] === 'function').sort();

/** An in-memory driver that also lists and deletes files in batches, as the S3 driver does. */
class BatchingDriver extends InMemoryDriver {
  async *listFiles(path: string): AsyncIterable<FileInfo> {
    for await (const info of this.walk(path)) if (!info.isDir) yield info;
  }

  async deleteFiles(paths: string[]): Promise<void> {
    for (const p of paths) await this.delete(p).catch(() => {});
  }
}

async function operations(metrics: Metrics): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const v of (await metrics.storageDuration.get()).values) {
    if (v.metricName === 'wharf_storage_operation_duration_seconds_count') out[String(v.labels.operation)] = v.value;
  }
  return out;
}

test('the instrumented driver offers exactly what the driver it wraps offers, for every driver', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-metrics-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const drivers = [checkedDriver(new FilesystemDriver({ rootDirectory: dir })), checkedDriver(new InMemoryDriver()), checkedDriver(new BatchingDriver())];
  for (const driver of drivers) {
    const wrapped = instrumentedDriver(driver, new Metrics({ defaultMetrics: false }));
    // getContentWithInfo is always there: a driver without it is asked by getContent and stat.
    t.deepEqual(offered(wrapped), [...new Set([...offered(driver), 'getContentWithInfo'])].sort(), driver.name);
  }
  // The filesystem counts folders and removes empty ones; neither is lost to metrics.
  t.true(offered(drivers[0]!).includes('countDirectories') && offered(drivers[0]!).includes('removeEmptyDirectory'));
  t.true(offered(drivers[2]!).includes('listFiles') && offered(drivers[2]!).includes('deleteFiles'));
});

test('the optional capabilities answer as the driver does, and are timed', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-metrics-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const metrics = new Metrics({ defaultMetrics: false });
  const fs = instrumentedDriver(checkedDriver(new FilesystemDriver({ rootDirectory: dir })), metrics);
  await fs.putContent('/r/_uploads/a/startedat', 'x');
  await fs.putContent('/r/_uploads/b/startedat', 'x');
  const counted = await fs.countDirectories!('/r/_uploads');
  t.true(counted === 2 || counted === undefined, 'the link count where the filesystem keeps it, else undefined');
  t.false(await fs.removeEmptyDirectory!('/r/_uploads/a'));
  await fs.delete('/r/_uploads/a/startedat');
  t.true(await fs.removeEmptyDirectory!('/r/_uploads/a'));
  t.deepEqual(await fs.list('/r/_uploads'), ['/r/_uploads/b']);

  const batching = instrumentedDriver(checkedDriver(new BatchingDriver()), metrics);
  await batching.putContent('/t/x', '1');
  await batching.putContent('/t/y/z', '2');
  const listed: string[] = [];
  for await (const f of batching.listFiles!('/t')) listed.push(f.path);
  t.deepEqual(listed, ['/t/x', '/t/y/z']);
  await batching.deleteFiles!(['/t/x', '/t/y/z']);
  await t.throwsAsync(batching.stat('/t/x'));

  const ops = await operations(metrics);
  t.is(ops.countDirectories, 1);
  t.is(ops.removeEmptyDirectory, 2);
  t.is(ops.listFiles, 1);
  t.is(ops.deleteFiles, 1);
});
