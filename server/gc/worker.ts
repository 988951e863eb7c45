/**
 * The garbage collector: a separate worker over the same storage driver and registry layer as the server (it never
 * imports server/http). Safe while servers keep taking pushes. The protocol, with G = grace period,
 * P = LOCK_PROPAGATION_MS (longer than a server's view of the lock can be old):
 *
 *   worker                                             every server
 *   ------                                             ------------
 *   restoreTrash()  (only after taking the lock)       every LOCK_POLL_MS: held := lock exists and unexpired
 *   lock.acquire()  (Redis: SET NX; storage: write,    when held, or last check older than LOCK_STALE_MS:
 *                    settle, read back)
 *   sleep(P)        now every server knows "held"        - descriptor cache unused (an in-memory one emptied)
 *   liveSet.prune(older than the lock)                   - before linking / mounting / checking a manifest's
 *   restoreTrash()                                         blobs: liveSet.record(repo, digests)
 *   cutoff := now - G
 *   purge upload sessions older than --upload-age
 *   for each repository:
 *     mirrored: tags and revisions past their TTL go first, each through sweep (./proxy-expiry.ts)
 *     mark from tags (+ revisions unless --delete-untagged) and anything younger than cutoff
 *     old unmarked revisions / referrers / layer links, in batches:  sweep(batch)
 *     repository now empty and not recorded:  remove its folders
 *   blobs/<alg>/<xx>/<hex>/data older than cutoff and not marked, in batches (lock.verify() before each):
 *     sweep(batch)
 *   remove emptied blobs/<alg>/<xx> folders and this run's trash
 *   lock.release()                                     sees "free": empties an in-memory cache again
 *
 *   sweep(batch):  keep what liveSet.recorded(batch) has; move the rest to trash;
 *                  live := liveSet.recorded(moved), asked after the last move finished;
 *                  move back what live has; delete the others, then remove the folders that left empty
 *                  (rmdir-style: only an empty folder goes, so a server writing into it never loses its file)
 *
 * Why nothing live is deleted:
 *  - Anything a server wrote before marking started (a link, a revision, a tag) is seen by mark: tags and young
 *    links are roots. The grace period G covers the gap between a client uploading blobs and pushing the manifest
 *    that uses them, since an unreferenced layer link younger than G keeps its blob.
 *  - A server deciding "no lock" did so less than LOCK_STALE_MS ago. The worker waits P > LOCK_STALE_MS after
 *    taking the lock, so every write whose decision said "no lock" happened before marking began (the 2s margin in P
 *    covers the time between a decision and its write) and mark sees it; every later write is recorded first.
 *  - A record written before the sweeper's second look wins; one written after it belongs to a server whose own
 *    check (blob exists? linked?) runs after the move, finds nothing, and re-uploads or fails cleanly with
 *    MANIFEST_BLOB_UNKNOWN. A batch changes nothing here: its second look begins only once every move of the
 *    batch has finished, so it is after the move for each file of the batch.
 *  - Blob deletion happens only while the lock is held, and servers bypass their descriptor cache while it is, so
 *    no "exists" answer for a deleted blob comes from memory; the worker forgets each deleted blob and link in a
 *    shared Redis cache itself (see ./redis-state.ts for the lock and live set in Redis).
 */
import type { StorageDriver } from '../../storage-drivers/driver.js';
import { orUndefined } from '../registry/blobs.js';
import * as layout from '../registry/layout.js';
import { purgeUploads } from '../registry/purge.js';
import { tryParseDigest } from '../registry/reference.js';
import { listRepositories, markRepository, scanRepository } from './mark.js';
import type { RepositoryExpiry } from './proxy-expiry.js';
import { metricsText, newStats, type GcStats } from './report.js';
import {
  LOCK_PATH, LOCK_PROPAGATION_MS, METRICS_PATH, StorageGcLock, StorageLiveSet, runLimited,
  type GcLock, type LiveSet,
} from './state.js';
import { Sweeper, removeEmptyParents, restoreTrash, type Doomed } from './sweep.js';

export interface GcOptions {
  dryRun?: boolean;
  deleteUntagged?: boolean;
  /** Nothing modified less than this long ago is deleted (default 1 hour). */
  graceMs?: number;
  /** Upload sessions older than this are purged (default 24 hours). */
  uploadAgeMs?: number;
  /** Wait between taking the lock and marking (default LOCK_PROPAGATION_MS). Lower only when no server runs. */
  propagationMs?: number;
  lock?: GcLock;
  liveSet?: LiveSet;
  /** Deletes in flight at once (default 8). */
  concurrency?: number;
  /** Called for each thing deleted (or, in a dry run, that would be). */
  onDelete?: (kind: 'blob' | 'manifest' | 'link' | 'repository' | 'upload' | 'tag', what: string) => void;
  /** Mirror TTL expiry: per-repository hooks around mark (./proxy-expiry.ts). */
  expiry?: RepositoryExpiry;
  /**
   * Called for each blob after it was moved aside and before the second look at the live set (tests use it to
   * act as a server at the worst moment).
   */
  beforeBlobDelete?: (digest: string) => Promise<void> | void;
  /** Live statistics, updated as the run goes (for progress output). */
  stats?: GcStats;
  /** Forget a deleted digest in a shared blob-descriptor cache (e.g. Redis), when one is configured. */
  forget?: (digest: string) => Promise<void> | void;
  /** Forget a deleted repository link in that cache. */
  forgetLink?: (repository: string, digest: string) => Promise<void> | void;
}

export const DEFAULT_GRACE_MS = 60 * 60_000;
export const DEFAULT_UPLOAD_AGE_MS = 24 * 60 * 60_000;
const BATCH = 256;

/** One full collection. Throws LockBusyError when another run holds the lock; on failure the lock is released. */
export async function collectGarbage(driver: StorageDriver, options: GcOptions = {}): Promise<GcStats> {
  const dryRun = options.dryRun ?? false;
  const stats = options.stats ?? newStats(dryRun);
  stats.dryRun = dryRun;
  const graceMs = options.graceMs ?? DEFAULT_GRACE_MS;
  const liveSet = options.liveSet ?? new StorageLiveSet(driver);
  const lock = options.lock ?? new StorageGcLock(driver);
  const concurrency = options.concurrency ?? 8;
  const note = options.onDelete ?? (() => {});

  // A dry run deletes nothing, so it needs neither the lock nor the servers' records.
  let runId = 'dry-run';
  if (!dryRun) {
    stats.phase = 'lock';
    const info = await lock.acquire();
    runId = info.runId;
  }
  let success = false;
  try {
    if (!dryRun) {
      await new Promise((r) => setTimeout(r, options.propagationMs ?? LOCK_PROPAGATION_MS));
      // Records older than our lock belong to earlier runs; the lock file's time is the storage's clock.
      const lockTime = (await orUndefined(driver.stat(LOCK_PATH)))?.modTime;
      if (lockTime) await liveSet.prune(new Date(lockTime.getTime() - 1000));
      stats.restored = await restoreTrash(driver);
      await lock.verify();
    }
    const cutoff = Date.now() - graceMs;
    const sweeper = new Sweeper(driver, liveSet, runId, concurrency);
    // A dry run deletes nothing and reports everything a real run would try.
    const removeAll = <T extends Doomed>(items: T[], hook?: (item: T) => Promise<void> | void): Promise<T[]> =>
      dryRun ? Promise.resolve(items) : sweeper.removeAll(items, hook);
    /** One file through the same sweep (the mirror expiry's tags and revisions); true when it was deleted. */
    const remove = async (path: string, digest: string): Promise<boolean> => (await removeAll([{ path, digest }])).length === 1;

    // Stale uploads first, so repositories they alone kept alive are emptied in this run.
    stats.phase = 'uploads';
    const purge = await purgeUploads(driver, { olderThanMs: options.uploadAgeMs ?? DEFAULT_UPLOAD_AGE_MS, dryRun });
    stats.uploadsPurged = purge.purged.length;
    for (const p of purge.purged) note('upload', p);

    stats.phase = 'mark';
    const live = new Set<string>();
    for await (const name of listRepositories(driver)) {
      if (!dryRun) await lock.verify();
      const scan = await scanRepository(driver, name);
      // Mirrored content past its TTL leaves the scan (and storage) first, so mark no longer counts it
      // (./proxy-expiry.ts).
      await options.expiry?.beforeMark(scan, { remove, cutoff });
      const marked = await markRepository(driver, scan, { deleteUntagged: options.deleteUntagged ?? false, cutoff });
      stats.repositories++;
      stats.manifestsMarked += marked.manifests.size;
      stats.missingManifests += marked.missing.length;
      for (const d of marked.manifests) live.add(d);
      for (const d of marked.blobs) live.add(d);
      stats.blobsMarked = live.size;

      // Links of this repository that nothing live needs, and that are old enough. Emptied link folders are
      // removed up to the repository's `_manifests`, `_layers` and `_referrers` folders.
      const root = layout.repositoryPath(name);
      const keepFolder = (path: string) => path.slice(0, path.indexOf('/', root.length + 1));
      let remaining = 0;
      const doomed: (Doomed & { kind: 'manifest' | 'link' })[] = [];
      for (const [d, link] of scan.revisions) {
        if (marked.manifests.has(d) || link.mtime >= cutoff) remaining++;
        else doomed.push({ path: link.path, digest: d, kind: 'manifest', keep: keepFolder(link.path) });
      }
      for (const refs of scan.referrers.values()) {
        for (const [d, link] of refs) {
          if (marked.manifests.has(d) || link.mtime >= cutoff) remaining++;
          else doomed.push({ path: link.path, digest: d, kind: 'link', keep: keepFolder(link.path) });
        }
      }
      for (const [d, link] of scan.layers) {
        if (marked.blobs.has(d) || marked.manifests.has(d) || link.mtime >= cutoff) remaining++;
        else doomed.push({ path: link.path, digest: d, kind: 'link', keep: keepFolder(link.path) });
      }
      for (let i = 0; i < doomed.length; i += BATCH) {
        if (!dryRun) await lock.verify();
        const batch = doomed.slice(i, i + BATCH);
        const deleted = await removeAll(batch);
        remaining += batch.length - deleted.length;
        for (const { path, digest, kind } of deleted) {
          if (!dryRun) await options.forgetLink?.(name, digest);
          if (kind === 'manifest') stats.manifestsDeleted++;
          else stats.linksDeleted++;
          note(kind, `${name}@${digest}${kind === 'link' ? ` (${path.slice(root.length + 1)})` : ''}`);
        }
      }

      // A repository left with no tags, no links and no uploads is removed (its `_` folders, then itself if empty).
      if (remaining === 0 && scan.tags.size === 0 && scan.uploads - (purgedIn(purge.purged, name)) <= 0) {
        const parts = ['_layers', '_manifests', '_referrers'].map((p) => `${root}/${p}`);
        if (((await orUndefined(driver.list(`${root}/_uploads`))) ?? []).length === 0) parts.push(`${root}/_uploads`);
        const removed = dryRun || (await sweeper.removeEmptyRepositoryParts(name, parts));
        if (removed) {
          // The repository's folder and its namespace folders above it go only if nothing else is in them.
          if (!dryRun && (await driver.removeEmptyDirectory?.(root))) await removeEmptyParents(driver, root, layout.REPOSITORIES_ROOT);
          stats.repositoriesDeleted++;
          note('repository', name);
        }
      }
      await options.expiry?.afterRepository(name);
    }

    stats.phase = 'sweep';
    const sweepBatch = async (items: (Doomed & { size: number })[]) => {
      if (!dryRun) await lock.verify();
      const hook = options.beforeBlobDelete;
      for (const { digest, size } of await removeAll(items, hook && ((item) => hook(item.digest)))) {
        stats.blobsDeleted++;
        stats.bytesFreed += size;
        note('blob', digest);
        if (!dryRun) await options.forget?.(digest);
      }
    };
    // Reading the next batch overlaps with sweeping the previous one (at most one sweep in flight). A failed
    // sweep surfaces at the next await of `sweeping`; nothing goes on (the lock is not released) while one runs.
    let sweeping: Promise<void> = Promise.resolve();
    try {
      // An empty `<hex>` folder goes too (rmdir-style, so a blob being stored into it meanwhile is not disturbed).
      const noData = dryRun ? undefined : async (folder: string) => driver.removeEmptyDirectory?.(folder);
      for await (const blobs of listBlobs(driver, concurrency, noData)) {
        const doomed: (Doomed & { size: number })[] = [];
        for (const b of blobs) {
          stats.blobsSeen++;
          if (live.has(b.digest) || b.modTime.getTime() >= cutoff) continue;
          // Its `<hex>` folder goes with it; `<xx>` folders are tidied once the sweep is over.
          doomed.push({ path: b.path, digest: b.digest, size: b.size, keep: layout.parentOf(layout.parentOf(b.path)) });
        }
        await sweeping;
        sweeping = sweepBatch(doomed);
        sweeping.catch(() => {}); // handled by the awaits; this only keeps it from counting as unhandled meanwhile
      }
    } finally {
      await sweeping.catch(() => {});
    }
    await sweeping;
    if (!dryRun) {
      await removeEmptyBlobFolders(driver, concurrency);
      await sweeper.emptyTrash();
    }
    stats.phase = 'done';
    success = true;
    return stats;
  } finally {
    stats.durationMs = Date.now() - stats.startedAt;
    try {
      await driver.putContent(METRICS_PATH, metricsText(stats, success));
    } finally {
      if (!dryRun) await lock.release();
    }
  }
}

interface BlobFile {
  path: string;
  digest: string;
  size: number;
  modTime: Date;
}

/**
 * Every `blobs/<alg>/<xx>/<hex>/data`, a batch (at most BATCH) at a time: one listing per `<xx>` folder and one stat
 * per blob (`concurrency` at a time), rather than a walk that also stats and lists every `<hex>` folder. Memory: one
 * `<xx>` folder's names. A `<hex>` folder without data (left by a run that died before removing it) is passed to
 * `noData`.
 */
async function* listBlobs(driver: StorageDriver, concurrency: number, noData?: (folder: string) => Promise<unknown>): AsyncGenerator<BlobFile[]> {
  for (const alg of (await orUndefined(driver.list(layout.BLOBS_ROOT))) ?? []) {
    for (const prefix of (await orUndefined(driver.list(alg))) ?? []) {
      const folders = (await orUndefined(driver.list(prefix))) ?? [];
      for (let i = 0; i < folders.length; i += BATCH) {
        const batch: BlobFile[] = [];
        await runLimited(folders.slice(i, i + BATCH), concurrency, async (folder) => {
          const digest = tryParseDigest(`${layout.baseName(alg)}:${layout.baseName(folder)}`)?.value;
          const info = digest ? await orUndefined(driver.stat(`${folder}/data`)) : undefined;
          if (digest && info && !info.isDir) batch.push({ path: info.path, digest, size: info.size, modTime: info.modTime });
          else if (digest && !info) await noData?.(folder);
        });
        if (batch.length > 0) yield batch;
      }
    }
  }
}

/** Remove the `blobs/<alg>/<xx>` folders the sweep left empty (`blobs/<alg>` itself stays, as registry:2 has it). */
async function removeEmptyBlobFolders(driver: StorageDriver, concurrency: number): Promise<void> {
  if (!driver.removeEmptyDirectory) return;
  for (const alg of (await orUndefined(driver.list(layout.BLOBS_ROOT))) ?? []) {
    await runLimited((await orUndefined(driver.list(alg))) ?? [], concurrency, (prefix) => driver.removeEmptyDirectory!(prefix));
  }
}

function purgedIn(purged: string[], name: string): number {
  return purged.filter((p) => p.slice(0, p.lastIndexOf('/')) === name).length;
}
