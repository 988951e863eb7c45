/**
 * Last-pulled times for retention (`keep.pulledwithin`, ./retention.ts): the server notes every manifest GET or HEAD
 * (by tag: the tag and the digest it resolved to; by digest: the digest) in memory, and writes the notes to storage in
 * batches, so every replica's pulls count and `wharf retention` / `wharf garbage-collect`, separate processes, read
 * them. Records live under `_wharf/pulls/<name>/` (server/registry/layout.ts); a record's time is its file's
 * modification time (the file also holds the ISO 8601 time of the pull, for people).
 *
 * Cost: a pull is a Map update, never a storage write. Every `flushMs` (default 60 s; `WHARF_PULLS_FLUSH_MS` for
 * tests) the pending notes are written, at most 8 at a time; a key this process wrote less than `refreshMs` ago
 * (default 1 hour) is not noted again, so a hot tag costs one write an hour per process. So a recorded time is at most
 * `refreshMs + flushMs` older than the last pull, which is the precision of `pulledwithin`. Memory: at most
 * `maxPending` notes wait (more are dropped until the next flush: counted in `dropped`), and the "written recently"
 * memory is an LRU of `maxRemembered` keys (a forgotten key is merely written again).
 *
 * Recorded only for repositories a retention rule with `keep.pulledwithin` covers (`shouldRecord`, read at each
 * pull, so a SIGHUP that adds such a rule starts the recording): a registry without such rules writes nothing of its
 * own into storage when serving pulls. The first flush with such a rule in force creates `_wharf/pulls/_since`
 * (exclusively: the earliest server wins), and retention trusts "not pulled within D" only once that is D old
 * (./retention.ts). A write that fails is kept for the next flush (unless newer notes filled the queue). `close()`
 * (graceful shutdown) flushes.
 */
import type { LRUCache } from 'lru-cache';
import { lruOfEntries } from '../lru.js';
import { PathNotFoundError, UnsupportedOperationError, ifExists, type StorageDriver } from '../../storage-drivers/driver.js';
import * as layout from '../registry/layout.js';
import { forEachLimited } from '../registry/scan.js';
import { tryParseDigest, type Reference } from '../registry/reference.js';

export const DEFAULT_PULLS_FLUSH_MS = 60_000;
export const DEFAULT_PULLS_REFRESH_MS = 60 * 60_000;

export interface PullRecorderOptions {
  flushMs?: number;
  refreshMs?: number;
  maxPending?: number;
  maxRemembered?: number;
  onError?: (err: unknown) => void;
  now?: () => number;
  /**
   * Whether pulls of the repository are recorded (a retention rule with `pulledwithin` covers it); `anyRecorded`:
   * whether any rule has `pulledwithin` (then `_since` is created). Default: every repository.
   */
  shouldRecord?: (name: string) => boolean;
  anyRecorded?: () => boolean;
}

/** The flush interval from `WHARF_PULLS_FLUSH_MS` (tests lower it), else the default. */
export function pullsFlushMsFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  const v = Number(env.WHARF_PULLS_FLUSH_MS);
  return Number.isFinite(v) && v > 0 ? v : DEFAULT_PULLS_FLUSH_MS;
}

export class PullRecorder {
  /** path → time of the pull (ms), waiting for the next flush. */
  private pending = new Map<string, number>();
  /** path → when this process last wrote it. */
  private readonly written: LRUCache<string, number>;
  private timer?: NodeJS.Timeout;
  private flushing?: Promise<void>;
  private readonly flushMs: number;
  private readonly refreshMs: number;
  private readonly maxPending: number;
  private readonly now: () => number;
  /** Notes dropped because `maxPending` were waiting. */
  dropped = 0;
  /** Records written. */
  writes = 0;
  /** Set once `_since` is known to exist. */
  private sinceWritten = false;

  constructor(private readonly driver: StorageDriver, private readonly options: PullRecorderOptions = {}) {
    this.flushMs = options.flushMs ?? DEFAULT_PULLS_FLUSH_MS;
    this.refreshMs = options.refreshMs ?? DEFAULT_PULLS_REFRESH_MS;
    this.maxPending = options.maxPending ?? 10_000;
    this.now = options.now ?? Date.now;
    this.written = lruOfEntries(options.maxRemembered ?? 100_000);
  }

  /** Note a pull of `name` by `ref` that served `digest`. Synchronous and cheap: nothing is written here. */
  record(name: string, ref: Reference, digest: string): void {
    if (this.options.shouldRecord && !this.options.shouldRecord(name)) return;
    const d = tryParseDigest(digest);
    if (!d) return;
    const now = this.now();
    const paths = [layout.pullDigestPath(name, d)];
    if (ref.kind === 'tag') paths.push(layout.pullTagPath(name, ref.tag));
    for (const path of paths) {
      const last = this.written.get(path);
      if (last !== undefined && now - last < this.refreshMs) continue;
      if (!this.pending.has(path) && this.pending.size >= this.maxPending) {
        this.dropped++;
        void this.flush();
        continue;
      }
      this.pending.set(path, now);
    }
  }

  start(): void {
    this.timer ??= setInterval(() => void this.flush(), this.flushMs);
    this.timer.unref();
  }

  /** Write what is pending (one flush at a time; a call during one waits for it, then flushes what came meanwhile). */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing;
    await this.markSince();
    if (this.pending.size === 0) return;
    const batch = this.pending;
    this.pending = new Map();
    this.flushing = this.write(batch).finally(() => {
      this.flushing = undefined;
    });
    await this.flushing;
  }

  private async write(batch: Map<string, number>): Promise<void> {
    try {
      await forEachLimited([...batch], 8, async ([path, at]) => {
        try {
          await this.driver.putContent(path, `${new Date(at).toISOString()}\n`);
          this.written.set(path, at);
          this.writes++;
        } catch (err) {
          // Kept for the next flush, unless a newer note took its place or the queue is full.
          if (!this.pending.has(path) && this.pending.size < this.maxPending) this.pending.set(path, at);
          throw err;
        }
      });
    } catch (err) {
      this.options.onError?.(err);
    }
  }

  /** Create `_since` (once; the earliest server's stays) when some rule has pulls recorded. */
  private async markSince(): Promise<void> {
    if (this.sinceWritten || !(this.options.anyRecorded?.() ?? true)) return;
    const stamp = `${new Date(this.now()).toISOString()}\n`;
    try {
      try {
        await this.driver.putContentIfAbsent(layout.PULLS_SINCE_PATH, stamp);
      } catch (err) {
        if (!(err instanceof UnsupportedOperationError)) throw err;
        if (!(await ifExists(this.driver.stat(layout.PULLS_SINCE_PATH)))) await this.driver.putContent(layout.PULLS_SINCE_PATH, stamp);
      }
      this.sinceWritten = true;
    } catch (err) {
      this.options.onError?.(err);
    }
  }

  /** Stop the timer and write what is pending (graceful shutdown). */
  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.flush();
  }
}

export interface RepositoryPulls {
  /** tag → last pull by that tag (ms) */
  tags: Map<string, number>;
  /** digest → last pull of it, by tag or digest (ms) */
  digests: Map<string, number>;
}

/** The last-pull records of one repository (not its nested ones): one walk of its folder, times from the listing. */
export async function readPulls(driver: StorageDriver, name: string): Promise<RepositoryPulls> {
  const root = layout.pullsDir(name);
  const result: RepositoryPulls = { tags: new Map(), digests: new Map() };
  try {
    for await (const info of driver.walk(root, {
      descend: (dir) => {
        const first = dir.path.slice(root.length + 1).split('/')[0]!;
        return first === '_tags' || first === '_digests';
      },
    })) {
      if (info.isDir) continue;
      const parts = info.path.slice(root.length + 1).split('/');
      const at = info.modTime.getTime();
      if (parts[0] === '_tags' && parts.length === 2) result.tags.set(parts[1]!, at);
      else if (parts[0] === '_digests' && parts.length === 3) {
        const d = tryParseDigest(`${parts[1]}:${parts[2]}`);
        if (d) result.digests.set(d.value, at);
      }
    }
  } catch (err) {
    if (!(err instanceof PathNotFoundError)) throw err;
  }
  return result;
}

/**
 * Since when pulls are recorded (`_since`: the time it holds, else its modification time); undefined when they are
 * not (no server has recorded with a `pulledwithin` rule in force).
 */
export async function readPullsSince(driver: StorageDriver): Promise<number | undefined> {
  const raw = await ifExists(driver.getContent(layout.PULLS_SINCE_PATH));
  if (raw === undefined) return undefined;
  const at = Date.parse(raw.toString('utf8').trim());
  if (Number.isFinite(at)) return at;
  return (await ifExists(driver.stat(layout.PULLS_SINCE_PATH)))?.modTime.getTime();
}

/** Forget the records of a deleted tag or manifest (retention calls it after deleting them). */
export async function forgetPull(driver: StorageDriver, name: string, what: { tag: string } | { digest: string }): Promise<void> {
  if ('tag' in what) {
    await ifExists(driver.delete(layout.pullTagPath(name, what.tag)));
    return;
  }
  const d = tryParseDigest(what.digest);
  if (d) await ifExists(driver.delete(layout.pullDigestPath(name, d)));
}
