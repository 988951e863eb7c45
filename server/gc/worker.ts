/**
 * The garbage collector: a separate worker over the same storage driver and registry layer as the server (it never
 * imports server/http). Safe while servers keep taking pushes. The protocol, with G = grace period,
 * P = LOCK_PROPAGATION_MS (longer than a server's view of the lock can be old):
 *
 *   worker                                             every server
 *   ------                                             ------------
 *   restoreTrash()  (only after taking the lock)       every LOCK_POLL_MS: held := lock exists and unexpired
 *   lock.acquire()  (write, settle, read back)         when held, or last check older than LOCK_STALE_MS:
 *   sleep(P)        now every server knows "held"        - descriptor cache unused and emptied
 *   liveSet.prune(older than the lock)                   - before linking / mounting / checking a manifest's
 *   restoreTrash()                                         blobs: liveSet.record(repo, digests)
 *   cutoff := now - G
 *   for each repository:
 *     mirrored: tags and revisions past their TTL go first, each through sweep (./proxy-expiry.ts)
 *     mark from tags (+ revisions unless --delete-untagged) and anything younger than cutoff
 *     for each old unmarked revision / referrer / layer link:  sweep(link, digest)
 *     repository now empty and not recorded:  remove its folders
 *   for each blobs/<alg>/<xx>/<hex>/data older than cutoff and not marked (lock.verify() every batch):
 *     sweep(data, digest)
 *   purge upload sessions older than --upload-age
 *   lock.release()                                     sees "free": empties its descriptor cache again
 *
 *   sweep(path, d):  if liveSet.has(d) keep; move path to trash; if liveSet.has(d) move back, keep; else delete
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
 *    MANIFEST_BLOB_UNKNOWN.
 *  - Blob deletion happens only while the lock is held, and servers bypass their descriptor cache while it is, so
 *    no "exists" answer for a deleted blob comes from memory.
 */
import type { StorageDriver } from '../../storage-drivers/driver.js';
import { PathNotFoundError } from '../../storage-drivers/driver.js';
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
import { Sweeper, restoreTrash } from './sweep.js';

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
  /** Called right before each blob delete (tests use it to interrupt a run mid-sweep). */
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
    const sweeper = new Sweeper(driver, liveSet, runId);
    const remove = async (path: string, digest: string): Promise<boolean> => (dryRun ? true : sweeper.remove(path, digest));

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
      // Mirrored content past its TTL leaves the scan (and storage) first, so mark no longer counts it (./proxy-expiry.ts).
      await options.expiry?.beforeMark(scan, { remove, cutoff });
      const marked = await markRepository(driver, scan, { deleteUntagged: options.deleteUntagged ?? false, cutoff });
      stats.repositories++;
      stats.manifestsMarked += marked.manifests.size;
      stats.missingManifests += marked.missing.length;
      for (const d of marked.manifests) live.add(d);
      for (const d of marked.blobs) live.add(d);
      stats.blobsMarked = live.size;

      // Links of this repository that nothing live needs, and that are old enough.
      let remaining = 0;
      const doomed: { path: string; digest: string; kind: 'manifest' | 'link' }[] = [];
      for (const [d, link] of scan.revisions) {
        if (marked.manifests.has(d) || link.mtime >= cutoff) remaining++;
        else doomed.push({ path: link.path, digest: d, kind: 'manifest' });
      }
      for (const refs of scan.referrers.values()) {
        for (const [d, link] of refs) {
          if (marked.manifests.has(d) || link.mtime >= cutoff) remaining++;
          else doomed.push({ path: link.path, digest: d, kind: 'link' });
        }
      }
      for (const [d, link] of scan.layers) {
        if (marked.blobs.has(d) || marked.manifests.has(d) || link.mtime >= cutoff) remaining++;
        else doomed.push({ path: link.path, digest: d, kind: 'link' });
      }
      let kept = 0;
      await runLimited(doomed, concurrency, async ({ path, digest, kind }) => {
        if (await remove(path, digest)) {
          if (!dryRun) await options.forgetLink?.(name, digest);
          if (kind === 'manifest') stats.manifestsDeleted++;
          else stats.linksDeleted++;
          note(kind, `${name}@${digest}${kind === 'link' ? ` (${path.slice(layout.repositoryPath(name).length + 1)})` : ''}`);
        } else {
          kept++;
        }
      });
      remaining += kept;

      // A repository left with no tags, no links and no uploads is removed (its `_` folders, then itself if empty).
      if (remaining === 0 && scan.tags.size === 0 && scan.uploads - (purgedIn(purge.purged, name)) <= 0) {
        const root = layout.repositoryPath(name);
        const parts = ['_layers', '_manifests', '_referrers'].map((p) => `${root}/${p}`);
        if (((await orUndefined(driver.list(`${root}/_uploads`))) ?? []).length === 0) parts.push(`${root}/_uploads`);
        const removed = dryRun || (await sweeper.removeEmptyRepositoryParts(name, parts));
        if (removed) {
          if (!dryRun && ((await orUndefined(driver.list(root))) ?? []).length === 0) await orUndefined(driver.delete(root));
          stats.repositoriesDeleted++;
          note('repository', name);
        }
      }
      await options.expiry?.afterRepository(name);
    }

    stats.phase = 'sweep';
    let batch: { path: string; digest: string; size: number }[] = [];
    const flush = async () => {
      if (batch.length === 0) return;
      if (!dryRun) await lock.verify();
      const items = batch;
      batch = [];
      await runLimited(items, concurrency, async ({ path, digest, size }) => {
        await options.beforeBlobDelete?.(digest);
        if (await remove(path, digest)) {
          stats.blobsDeleted++;
          stats.bytesFreed += size;
          note('blob', digest);
          if (!dryRun) await options.forget?.(digest);
        }
      });
    };
    try {
      for await (const info of driver.walk(layout.BLOBS_ROOT)) {
        if (info.isDir || layout.baseName(info.path) !== 'data') continue;
        const parts = info.path.slice(layout.BLOBS_ROOT.length + 1).split('/');
        const digest = parts.length === 4 ? tryParseDigest(`${parts[0]}:${parts[2]}`)?.value : undefined;
        if (!digest) continue;
        stats.blobsSeen++;
        if (live.has(digest) || info.modTime.getTime() >= cutoff) continue;
        batch.push({ path: info.path, digest, size: info.size });
        if (batch.length >= BATCH) await flush();
      }
    } catch (err) {
      if (!(err instanceof PathNotFoundError)) throw err;
    }
    await flush();
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

function purgedIn(purged: string[], name: string): number {
  return purged.filter((p) => p.slice(0, p.lastIndexOf('/')) === name).length;
}
