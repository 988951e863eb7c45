/**
 * Limits on open upload sessions (`storage.maintenance.uploadlimits`): each session holds storage until it is
 * completed, cancelled or purged, so a public registry bounds how many one repository and one user may hold.
 *
 *   per repository  counted in storage: the sessions under the repository's `_uploads/`, so every replica and
 *                   process sees the same count (the authoritative one)
 *   per user        the authenticated user, or the client address for anonymous pushers (an IPv6 address by its
 *                   /64); counted in this process, since storage does not record who started a session. Without
 *                   sticky sessions each process (worker, replica) counts its own, so a user may hold up to the
 *                   limit in each process.
 *
 * A session stops counting when it is completed or cancelled (seen here, or noticed as gone from storage when a
 * user reaches the limit), and once it is older than the upload purge age (`uploadpurging.age`), whether or not
 * purging has removed it yet. Starting a session beyond either limit is refused with 429 TOOMANYREQUESTS. Starts
 * racing each other may overshoot a limit by the number running at the same moment in other processes.
 *
 * Cost, per session start: one `stat` of the repository's `_uploads/` where the driver counts its directories that
 * way (a local ext4, XFS or tmpfs: FilesystemDriver.countDirectories), else one listing of it. A start that count
 * puts at the limit lists it too; the start times of sessions are only read when the listing reaches the limit,
 * and remembered.
 */
import type { LRUCache } from 'lru-cache';
import { lruOfEntries } from '../lru.js';
import { PathNotFoundError, type StorageDriver, ifExists } from '../../storage-drivers/driver.js';
import { RegistryError } from '../registry/errors.js';
import * as layout from '../registry/layout.js';
import { startedAt } from '../registry/purge.js';
import type { UploadStatus } from '../registry/uploads.js';

export interface UploadLimitOptions {
  /** Most open sessions per repository; 0 for no limit. */
  perRepository: number;
  /** Most open sessions per user (or anonymous client address); 0 for no limit. */
  perUser: number;
  /** Sessions older than this do not count (the upload purge age), in ms. */
  maxAgeMs: number;
  now?: () => number;
  /** Most sessions remembered for the per-user count; the least recently used users are forgotten beyond it. */
  maxTracked?: number;
}

export class UploadLimits {
  /** Per uploader: session key (`<name>/<id>`) → start time (ms). Map order: least recently used uploader first. */
  private readonly byUploader = new Map<string, Map<string, number>>();
  /** Session key → its uploader, to forget a completed session. */
  private readonly uploaderOfSession = new Map<string, string>();
  /** Starts admitted and still running in this process, per uploader and per repository. */
  private readonly pendingByUploader = new Map<string, number>();
  private readonly pendingByRepository = new Map<string, number>();
  /** Per repository, the end of the last start's turn (see inTurn); gone once no start is waiting. */
  private readonly turns = new Map<string, Promise<void>>();
  /** Start times read from storage, by session directory (they never change); at most `maxTracked`. */
  private readonly startTimes: LRUCache<string, number>;
  private readonly now: () => number;
  private readonly maxTracked: number;

  constructor(private readonly driver: StorageDriver, private readonly options: UploadLimitOptions) {
    this.now = options.now ?? Date.now;
    this.maxTracked = options.maxTracked ?? 100_000;
    this.startTimes = lruOfEntries(this.maxTracked);
  }

  /** Start a session for `uploader` in repository `name`, within the limits; 429 TOOMANYREQUESTS beyond them. */
  async start(name: string, uploader: string, begin: () => Promise<UploadStatus>): Promise<UploadStatus> {
    // Each admit checks and reserves its slot without an await in between, so racing starts in this process
    // cannot both take the last one.
    await this.admitUploader(uploader);
    try {
      return await this.inTurn(name, async () => {
        await this.admitRepository(name);
        try {
          const session = await begin();
          this.track(uploader, `${name}/${session.id}`);
          return session;
        } finally {
          bump(this.pendingByRepository, name, -1);
        }
      });
    } finally {
      bump(this.pendingByUploader, uploader, -1);
    }
  }

  /**
   * With a driver that may count sessions from a directory's link count (countDirectories: the filesystem driver, on
   * whatever filesystem), the starts in one repository take turns in this process: the count is read when a start
   * resumes, and a session another start made in between (its reservation already given back) would be in neither.
   * Each turn is a count (a `stat`, or a listing where the filesystem does not count) and `begin`, which includes the
   * quota check: with quotas in an unreachable Redis, starts in one repository wait out its timeout one after another.
   * Drivers without it (S3) list, as before, without turns.
   */
  private inTurn<T>(name: string, fn: () => Promise<T>): Promise<T> {
    if (!this.driver.countDirectories || this.options.perRepository <= 0) return fn();
    const run = (this.turns.get(name) ?? Promise.resolve()).then(fn);
    const done = run.then(() => {}, () => {});
    this.turns.set(name, done);
    void done.then(() => {
      if (this.turns.get(name) === done) this.turns.delete(name);
    });
    return run;
  }

  /** A session was completed or cancelled: it no longer counts. */
  closed(name: string, id: string): void {
    this.closedKey(`${name}/${id}`);
  }

  private closedKey(key: string): void {
    const uploader = this.uploaderOfSession.get(key);
    if (uploader === undefined) return;
    this.uploaderOfSession.delete(key);
    const sessions = this.byUploader.get(uploader);
    sessions?.delete(key);
    if (sessions?.size === 0) this.byUploader.delete(uploader);
  }

  private tooMany(what: string, limit: number): RegistryError {
    return new RegistryError('TOOMANYREQUESTS', `too many open upload sessions ${what}; finish or cancel some first`, {
      detail: { limit },
    });
  }

  private async admitUploader(uploader: string): Promise<void> {
    const limit = this.options.perUser;
    const count = () => (this.byUploader.get(uploader)?.size ?? 0) + (this.pendingByUploader.get(uploader) ?? 0);
    if (limit <= 0 || count() < limit) {
      bump(this.pendingByUploader, uploader, 1);
      return;
    }
    // At the limit: drop what has expired, and look in storage for a few sessions (finished in another process,
    // purged), then count again. Only here, so a user below the limit costs nothing; at most PRUNE_BATCH lookups
    // per refused start, taking turns over the user's sessions, so refused starts cannot be made expensive.
    const sessions = this.byUploader.get(uploader);
    if (sessions) {
      const cutoff = this.now() - this.options.maxAgeMs;
      for (const [key, started] of [...sessions]) if (started < cutoff) this.closedKey(key);
      const batch = [...sessions.keys()].slice(0, PRUNE_BATCH);
      const present = await Promise.all(batch.map((key) => {
        const slash = key.lastIndexOf('/');
        return ifExists(this.driver.stat(layout.uploadDir(key.slice(0, slash), key.slice(slash + 1))));
      }));
      batch.forEach((key, i) => {
        const started = sessions.get(key);
        if (started === undefined) return;
        this.closedKey(key);
        // Still there: back to the end of the turn.
        if (present[i]) this.remember(uploader, key, started);
      });
    }
    if (count() >= limit) throw this.tooMany('for this user', limit);
    bump(this.pendingByUploader, uploader, 1);
  }

  private async admitRepository(name: string): Promise<void> {
    const limit = this.options.perRepository;
    const reserve = () => bump(this.pendingByRepository, name, 1);
    if (limit <= 0) return reserve();
    // Sessions are directories: a driver that can count them without listing (a local filesystem, by the link
    // count) admits a start below the limit on that count. At the limit, the listing below decides, with ages.
    const counted = await this.driver.countDirectories?.(layout.uploadsPath(name));
    if (counted !== undefined && counted + (this.pendingByRepository.get(name) ?? 0) < limit) return reserve();
    const dirs = (await ifExists(this.driver.list(layout.uploadsPath(name)))) ?? [];
    if (dirs.length + (this.pendingByRepository.get(name) ?? 0) < limit) return reserve();
    // At the limit by the listing: count only the sessions younger than the purge age.
    const cutoff = this.now() - this.options.maxAgeMs;
    let open = 0;
    for (let i = 0; i < dirs.length && open < limit; i += 16) {
      const times = await Promise.all(dirs.slice(i, i + 16).map((dir) => this.startTime(dir)));
      open += times.filter((t) => t === undefined || t >= cutoff).length;
    }
    if (open + (this.pendingByRepository.get(name) ?? 0) >= limit) throw this.tooMany('in this repository', limit);
    reserve();
  }

  /** When the session in `dir` started (remembered); undefined when unknown (it then counts as open). */
  private async startTime(dir: string): Promise<number | undefined> {
    const known = this.startTimes.get(dir);
    if (known !== undefined) return known;
    let started: Date | undefined;
    try {
      started = await startedAt(this.driver, dir);
    } catch (err) {
      if (err instanceof PathNotFoundError) return 0; // gone meanwhile: does not count
      throw err;
    }
    if (started === undefined) return undefined;
    this.startTimes.set(dir, started.getTime());
    return started.getTime();
  }

  private remember(uploader: string, key: string, started: number): void {
    let sessions = this.byUploader.get(uploader);
    if (!sessions) {
      sessions = new Map<string, number>();
      this.byUploader.set(uploader, sessions);
    }
    sessions.set(key, started);
    this.uploaderOfSession.set(key, uploader);
  }

  private track(uploader: string, key: string): void {
    if (this.options.perUser <= 0) return;
    this.remember(uploader, key, this.now());
    const sessions = this.byUploader.get(uploader)!;
    this.byUploader.delete(uploader); // re-insert: most recently used last
    this.byUploader.set(uploader, sessions);
    // Bound the memory: forget the least recently active uploaders' sessions (their counts start again).
    while (this.uploaderOfSession.size > this.maxTracked && this.byUploader.size > 1) {
      const [oldest, old] = this.byUploader.entries().next().value!;
      this.byUploader.delete(oldest);
      for (const k of old.keys()) this.uploaderOfSession.delete(k);
    }
  }
}

/** Storage lookups a refused start may cost (see admitUploader). */
const PRUNE_BATCH = 16;

function bump(map: Map<string, number>, key: string, by: number): void {
  const next = (map.get(key) ?? 0) + by;
  if (next <= 0) map.delete(key);
  else map.set(key, next);
}
