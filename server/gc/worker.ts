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
import { ifExists, type StorageDriver } from '../../storage-drivers/driver.js';
import { GC_LOCK_PATH, GC_METRICS_PATH, layersPath } from '../registry/layout.js';
import { purgeUploads } from '../registry/purge.js';
import {
  listBlobs, listRepositories, removeEmptyBlobFolders, removeEmptyRepository, repositoryRelativePath, scanRepository,
  type BlobFile, type LinkEntry, type RepositoryScan,
} from '../registry/scan.js';
import { readPullsSince } from '../policies/pulls.js';
import { retainRepository, type RetentionItem } from '../policies/retention-run.js';
import type { Policies } from '../policies/rules.js';
import { markRepository, type MarkResult } from './mark.js';
import type { RepositoryExpiry } from './proxy-expiry.js';
import { metricsText, newStats, type GcStats } from './report.js';
import { LOCK_PROPAGATION_MS, StorageGcLock, StorageLiveSet, type GcLock, type LiveSet } from './state.js';
import { Sweeper, restoreTrash, type Doomed } from './sweep.js';

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
  /**
   * Retention rules (`policies.retention`): applied as the phase before mark, so what they delete is collected in
   * the same run (server/policies/retention-run.ts). Absent or no rule: no phase.
   */
  retention?: Policies;
  /** Each tag and manifest retention deletes (in a dry run: would), with the rule and the reason. */
  onRetention?: (item: RetentionItem) => void;
  /** Retention's warnings (a delete skipped or raced by a push). */
  onWarning?: (message: string) => void;
  /**
   * Quotas (server/policies/quota.ts): each removed layer or revision link is released, and after the sweep every
   * rule is recounted from storage and compared with (in Redis mode: corrected to, when nothing changed it) the
   * running count.
   */
  quotas?: {
    release(repository: string, kind: 'layer' | 'manifest', digest: string): Promise<void>;
    recount(dryRun: boolean): Promise<NonNullable<GcStats['quotas']>>;
  };
}

export const DEFAULT_GRACE_MS = 60 * 60_000;
export const DEFAULT_UPLOAD_AGE_MS = 24 * 60 * 60_000;
/** Links removed per sweep (and lock check). */
const BATCH = 256;

/** One full collection. Throws LockBusyError when another run holds the lock; on failure the lock is released. */
export async function collectGarbage(driver: StorageDriver, options: GcOptions = {}): Promise<GcStats> {
  const run = await takeLock(driver, options);
  let success = false;
  try {
    const cutoff = await settle(run);
    const purged = await purgeStaleUploads(run);
    await applyRetention(run);
    const live = await markRepositories(run, cutoff, purged);
    await sweepBlobs(run, cutoff, live);
    await recountQuotas(run);
    await tidy(run);
    run.stats.phase = 'done';
    success = true;
    return run.stats;
  } finally {
    await report(run, success);
  }
}

/** What every phase of one run shares. */
interface Run {
  driver: StorageDriver;
  options: GcOptions;
  stats: GcStats;
  dryRun: boolean;
  concurrency: number;
  lock: GcLock;
  liveSet: LiveSet;
  sweeper: Sweeper;
  note: NonNullable<GcOptions['onDelete']>;
  /** Throw LockLostError unless the lock is still ours (a dry run holds none). */
  verify(): Promise<void>;
  /** Delete with the live-set re-check (./sweep.ts); a dry run deletes nothing and reports all a real run would try. */
  removeAll<T extends Doomed>(items: T[], hook?: (item: T) => Promise<void> | void): Promise<T[]>;
}

/** Phase `lock`: take the lock. A dry run deletes nothing, so it needs neither the lock nor the servers' records. */
async function takeLock(driver: StorageDriver, options: GcOptions): Promise<Run> {
  const dryRun = options.dryRun ?? false;
  const stats = options.stats ?? newStats(dryRun);
  stats.dryRun = dryRun;
  const liveSet = options.liveSet ?? new StorageLiveSet(driver);
  const gcLock = options.lock ?? new StorageGcLock(driver);
  let runId = 'dry-run';
  if (!dryRun) {
    stats.phase = 'lock';
    runId = (await gcLock.acquire()).runId;
  }
  const concurrency = options.concurrency ?? 8;
  const sweeper = new Sweeper(driver, liveSet, runId, concurrency);
  return {
    driver, options, stats, dryRun, concurrency, lock: gcLock, liveSet, sweeper,
    note: options.onDelete ?? (() => {}),
    verify: async () => {
      if (!dryRun) await gcLock.verify();
    },
    removeAll: (items, hook) => (dryRun ? Promise.resolve(items) : sweeper.removeAll(items, hook)),
  };
}

/**
 * Wait until every server knows of the lock, forget older runs' records, put back what an interrupted run left in
 * trash. Resolves to the grace cutoff: nothing modified at or after it (ms) is deleted.
 */
async function settle(run: Run): Promise<number> {
  const { driver, options } = run;
  if (!run.dryRun) {
    await new Promise((r) => setTimeout(r, options.propagationMs ?? LOCK_PROPAGATION_MS));
    // Records older than our lock belong to earlier runs; the lock file's time is the storage's clock.
    const lockTime = (await ifExists(driver.stat(GC_LOCK_PATH)))?.modTime;
    if (lockTime) await run.liveSet.prune(new Date(lockTime.getTime() - 1000));
    run.stats.restored = await restoreTrash(driver);
    await run.lock.verify();
  }
  return Date.now() - (options.graceMs ?? DEFAULT_GRACE_MS);
}

/**
 * Phase `uploads`: stale upload sessions go first, so repositories they alone kept alive are emptied in this run.
 * Resolves to the `<repository>/<id>` of each session purged.
 */
async function purgeStaleUploads(run: Run): Promise<string[]> {
  run.stats.phase = 'uploads';
  const purge = await purgeUploads(run.driver, { olderThanMs: run.options.uploadAgeMs ?? DEFAULT_UPLOAD_AGE_MS, dryRun: run.dryRun });
  run.stats.uploadsPurged = purge.purged.length;
  for (const p of purge.purged) run.note('upload', p);
  return purge.purged;
}

/**
 * Retention alone (`wharf retention`): take the same lock as a collection (so the two never run together), wait for
 * the servers to record, apply the phase, release. Deletes tags and untagged revision links; their blobs go at the
 * next collection. Throws LockBusyError when another run holds the lock.
 */
export async function runRetention(driver: StorageDriver, options: GcOptions): Promise<GcStats> {
  const run = await takeLock(driver, options);
  try {
    await settle(run);
    await applyRetention(run);
    run.stats.phase = 'done';
    return run.stats;
  } finally {
    run.stats.durationMs = Date.now() - run.stats.startedAt;
    if (!run.dryRun) await run.lock.release();
  }
}

/** Phase `retention`: each repository a retention rule covers (server/policies/retention-run.ts). */
async function applyRetention(run: Run): Promise<void> {
  const policies = run.options.retention;
  if (!policies || policies.rules.retention.length === 0) return;
  run.stats.phase = 'retention';
  const { driver, options } = run;
  // One read for the run: since when the servers record pulls.
  const pullsSince = readPullsSince(driver);
  pullsSince.catch(() => {});
  for await (const name of listRepositories(driver)) {
    await run.verify();
    await retainRepository({
      driver,
      policies,
      dryRun: run.dryRun,
      stats: run.stats,
      repositoryWritten: (repo) => run.liveSet.hasRepository(repo),
      remove: (items) => run.removeAll(items),
      verify: () => run.verify(),
      note: (item) => {
        options.onRetention?.(item);
        run.note(item.kind, `${item.what} (${item.rule}: ${item.reason})`);
      },
      ...(options.onWarning ? { warn: options.onWarning } : {}),
      ...(options.forgetLink ? { forgetLink: options.forgetLink } : {}),
      pullsSince,
      ...(options.quotas ? { releaseManifest: (repo: string, digest: string) => options.quotas!.release(repo, 'manifest', digest) } : {}),
    }, name);
  }
}

/**
 * Phase `mark`: for each repository, expire mirrored content past its TTL (./proxy-expiry.ts), mark, sweep the
 * links nothing live needs, and remove the repository when that left it empty. Resolves to every digest live in
 * any repository.
 */
async function markRepositories(run: Run, cutoff: number, purged: string[]): Promise<Set<string>> {
  const { driver, options, stats } = run;
  stats.phase = 'mark';
  const live = new Set<string>();
  /** One file through the same sweep (the mirror expiry's tags and revisions); true when it was deleted. */
  const remove = async (path: string, digest: string): Promise<boolean> => (await run.removeAll([{ path, digest }])).length === 1;
  for await (const name of listRepositories(driver)) {
    await run.verify();
    const scan = await scanRepository(driver, name);
    // Mirrored content past its TTL leaves the scan (and storage) first, so mark no longer counts it.
    await options.expiry?.beforeMark(scan, { remove, cutoff });
    const marked = await markRepository(driver, scan, { deleteUntagged: options.deleteUntagged ?? false, cutoff });
    stats.repositories++;
    stats.manifestsMarked += marked.manifests.size;
    stats.missingManifests += marked.missing.length;
    for (const d of marked.manifests) live.add(d);
    for (const d of marked.blobs) live.add(d);
    stats.blobsMarked = live.size;

    const remaining = await sweepLinks(run, cutoff, scan, marked);
    const uploadsLeft = scan.uploads - purged.filter((p) => p.slice(0, p.lastIndexOf('/')) === name).length;
    if (remaining === 0 && scan.tags.size === 0 && uploadsLeft <= 0) await removeRepository(run, name);
    await options.expiry?.afterRepository(name);
  }
  return live;
}

/**
 * The links of one repository that nothing live needs and that are old enough, in batches; the folders they leave
 * empty go too, up to each link's `keep` folder. Resolves to the number of links left.
 */
async function sweepLinks(run: Run, cutoff: number, scan: RepositoryScan, marked: MarkResult): Promise<number> {
  const { name } = scan;
  let remaining = 0;
  const doomed: (Doomed & { kind: 'manifest' | 'link' })[] = [];
  const consider = (kind: 'manifest' | 'link', digest: string, link: LinkEntry, live: boolean) => {
    if (live || link.mtime >= cutoff) remaining++;
    else doomed.push({ path: link.path, digest, kind, keep: link.keep });
  };
  for (const [d, link] of scan.revisions) consider('manifest', d, link, marked.manifests.has(d));
  for (const refs of scan.referrers.values()) for (const [d, link] of refs) consider('link', d, link, marked.manifests.has(d));
  for (const [d, link] of scan.layers) consider('link', d, link, marked.blobs.has(d) || marked.manifests.has(d));
  for (let i = 0; i < doomed.length; i += BATCH) {
    await run.verify();
    const batch = doomed.slice(i, i + BATCH);
    const deleted = await run.removeAll(batch);
    remaining += batch.length - deleted.length;
    for (const { path, digest, kind } of deleted) {
      if (!run.dryRun) await run.options.forgetLink?.(name, digest);
      if (!run.dryRun && (kind === 'manifest' || path.startsWith(`${layersPath(name)}/`))) {
        await run.options.quotas?.release(name, kind === 'manifest' ? 'manifest' : 'layer', digest);
      }
      if (kind === 'manifest') run.stats.manifestsDeleted++;
      else run.stats.linksDeleted++;
      run.note(kind, `${name}@${digest}${kind === 'link' ? ` (${repositoryRelativePath(name, path)})` : ''}`);
    }
  }
  return remaining;
}

/** A repository left with no tags, no links and no uploads goes, unless a server wrote to it meanwhile. */
async function removeRepository(run: Run, name: string): Promise<void> {
  const removed = run.dryRun || (await removeEmptyRepository(run.driver, name, async () => !(await run.liveSet.hasRepository(name))));
  if (!removed) return;
  run.stats.repositoriesDeleted++;
  run.note('repository', name);
}

/**
 * Phase `sweep`: every blob older than the cutoff that no repository marked, a page at a time (the lock checked
 * before each). Reading the next page overlaps with sweeping the previous one (at most one sweep in flight).
 */
async function sweepBlobs(run: Run, cutoff: number, live: Set<string>): Promise<void> {
  const { driver, options, stats } = run;
  stats.phase = 'sweep';
  const sweepPage = async (items: BlobFile[]) => {
    await run.verify();
    const hook = options.beforeBlobDelete;
    for (const { digest, size } of await run.removeAll(items, hook && ((item) => hook(item.digest)))) {
      stats.blobsDeleted++;
      stats.bytesFreed += size;
      run.note('blob', digest);
      if (!run.dryRun) await options.forget?.(digest);
    }
  };
  // A failed sweep surfaces at the next await of `sweeping`; nothing goes on (the lock is not released) while one
  // runs.
  let sweeping: Promise<void> = Promise.resolve();
  try {
    // An empty `<hex>` folder goes too (rmdir-style, so a blob being stored into it meanwhile is not disturbed).
    const noData = run.dryRun ? undefined : async (folder: string) => driver.removeEmptyDirectory?.(folder);
    for await (const blobs of listBlobs(driver, run.concurrency, noData)) {
      stats.blobsSeen += blobs.length;
      // Its `<hex>` folder goes with it (`keep` is its `<xx>` folder); `<xx>` folders are tidied once all is swept.
      const doomed = blobs.filter((b) => !live.has(b.digest) && b.modTime.getTime() < cutoff);
      await sweeping;
      sweeping = sweepPage(doomed);
      sweeping.catch(() => {}); // handled by the awaits; this only keeps it from counting as unhandled meanwhile
    }
  } finally {
    await sweeping.catch(() => {});
  }
  await sweeping;
}

/** Phase `quotas`: each quota rule recounted from storage after the sweep, next to the running count. */
async function recountQuotas(run: Run): Promise<void> {
  if (!run.options.quotas) return;
  run.stats.phase = 'quotas';
  run.stats.quotas = await run.options.quotas.recount(run.dryRun);
}

/** Remove the `blobs/<alg>/<xx>` folders the sweep left empty, and this run's trash. */
async function tidy(run: Run): Promise<void> {
  if (run.dryRun) return;
  await removeEmptyBlobFolders(run.driver, run.concurrency);
  await run.sweeper.emptyTrash();
}

/** Write the run's metrics (also of a failed run), then release the lock. */
async function report(run: Run, success: boolean): Promise<void> {
  run.stats.durationMs = Date.now() - run.stats.startedAt;
  try {
    await run.driver.putContent(GC_METRICS_PATH, metricsText(run.stats, success));
  } finally {
    if (!run.dryRun) await run.lock.release();
  }
}
