/**
 * Upload purging (registry:2 `storage.maintenance.uploadpurging`): remove upload sessions that were started and
 * never finished, once they are older than the configured age. The server runs it on an interval; the garbage
 * collector can run it too.
 */
import { PathNotFoundError, type StorageDriver, ifExists } from '../../storage-drivers/driver.js';
import * as layout from './layout.js';

export interface PurgeOptions {
  /** Sessions started before `now - olderThanMs` are removed. */
  olderThanMs: number;
  dryRun?: boolean;
  now?: Date;
}

export interface PurgeResult {
  /** `<repository>/<upload id>` of every session removed (or, in a dry run, that would be). */
  purged: string[];
  /** Sessions looked at. */
  examined: number;
}

/** When the session started: its `startedat` file, else the modification time of its data. */
export async function startedAt(driver: StorageDriver, dir: string): Promise<Date | undefined> {
  const raw = await ifExists(driver.getContent(`${dir}/startedat`));
  const parsed = raw ? new Date(raw.toString('utf8').trim()) : undefined;
  if (parsed && !Number.isNaN(parsed.getTime())) return parsed;
  return (await ifExists(driver.stat(`${dir}/data`)))?.modTime ?? (await ifExists(driver.stat(dir)))?.modTime;
}

export async function purgeUploads(driver: StorageDriver, options: PurgeOptions): Promise<PurgeResult> {
  const cutoff = (options.now ?? new Date()).getTime() - options.olderThanMs;
  const result: PurgeResult = { purged: [], examined: 0 };
  const uploadDirs: string[] = [];
  try {
    for await (const info of driver.walk(layout.REPOSITORIES_ROOT, {
      descend: (dir) => !layout.isUnderscored(dir.path),
    })) {
      if (info.isDir && layout.baseName(info.path) === '_uploads') uploadDirs.push(info.path);
    }
  } catch (err) {
    if (err instanceof PathNotFoundError) return result;
    throw err;
  }
  const prefix = `${layout.REPOSITORIES_ROOT}/`;
  for (const uploads of uploadDirs) {
    const repository = uploads.slice(prefix.length, -'/_uploads'.length);
    for (const dir of (await ifExists(driver.list(uploads))) ?? []) {
      result.examined++;
      const started = await startedAt(driver, dir);
      if (!started || started.getTime() >= cutoff) continue;
      result.purged.push(`${repository}/${layout.baseName(dir)}`);
      // Its data may be large (see DeleteOptions).
      if (!options.dryRun) await ifExists(driver.delete(dir, { mayBeLarge: true }));
    }
  }
  return result;
}
