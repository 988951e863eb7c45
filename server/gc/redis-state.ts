/**
 * The garbage collector's lock and live set in Redis, used by the worker and every server when the `redis` section is
 * configured (same connection settings as the blob-descriptor cache); ./state.ts has the storage ones used otherwise.
 *
 *   wharf:gc:lock         JSON LockInfo of the running collection, with a PX expiry (absent: no collection)
 *   wharf:gc:live         set: digests servers linked, mounted or referenced while a lock may have been held
 *   wharf:gc:live-repos   set: repositories servers wrote to meanwhile
 *   wharf:gc:unfinished   run id of the last run that took the lock and has not released it cleanly
 *
 * The lock is strict: taking it is SET NX PX with a random owner token, so of two workers exactly one gets it. The
 * holder renews it every third of its lifetime (a timer) and on every `verify`; renew and release are scripts that
 * act only when the stored owner is the caller's. A worker that dies stops renewing and its lock expires (default
 * 60 s), so the next run proceeds.
 *
 * Which records belong to which run. Taking the lock and emptying both sets are one script, so while a run holds the
 * lock the sets hold exactly the records made after it was taken:
 *   - a record made after the lock was taken is never lost: the sets are emptied only by taking the lock (which fails
 *     while it exists) and by its owner's release;
 *   - a record made before is dropped, which is harmless for the reason a server's "no lock" decision is: the server
 *     decided on a view at most LOCK_STALE_MS old and writes the link it protects right after recording, well inside
 *     the worker's LOCK_PROPAGATION_MS wait, so marking sees that link (a young link is a root);
 *   - records made after the release (a server's view lags by up to LOCK_POLL_MS) are useless; the next run drops them.
 * So `prune` has nothing left to do.
 *
 * Unfinished runs. The worker forgets every digest and link it deletes in the shared descriptor cache before it
 * releases the lock, which is why servers keep that cache across runs (./recorder.ts). A run that dies, loses Redis,
 * or fails to deliver an invalidation may leave a fact there it made false: taking the lock sets `unfinished`, and
 * only a release with every invalidation delivered removes it. A server that finds no lock but an unfinished run it
 * has not handled yet empties the shared cache (a new generation, for every replica) before it answers from it again;
 * and the next worker empties it after taking the lock, for any server that missed that moment.
 * A server with Redis that saw a run without Redis end does the same (that worker forgot nothing in Redis).
 *
 * Fencing. The worker's live-set reads (`has`, `recorded`, `hasRepository`) check, in the same script, that the lock
 * is still its own, and throw LockLostError otherwise. A worker that stalled past its lock's expiry while another run
 * took the lock (and emptied the sets) can never act on an answer from that other run's sets.
 *
 * Failures. Every command has the connection's time limit and none waits in a queue while disconnected. A server that
 * must record and cannot reach Redis fails the write with 503 UNAVAILABLE; it never proceeds unrecorded. While Redis
 * is unreachable a server reads the lock from the storage marker below (DualLockProbe), so only writes made while a
 * collection runs fail; pushes go on when none does, pulls always. A worker that cannot renew, verify or read the live
 * set stops with that error, deleting nothing more; its lock expires.
 *
 * Worker and servers that disagree about Redis (one configured with it, one without):
 *   - the Redis worker also writes the storage lock object, marked `backend: 'redis'`, while it runs. A server without
 *     Redis sees it (its storage probe reads that object) and refuses writes that must be recorded (503), since its
 *     records would go where the worker does not look (./recorder.ts). A worker without Redis sees it as a held lock.
 *   - a server with Redis also reads the storage lock object; when a worker without Redis holds it, the server records
 *     into the storage live set as well (`DualLiveSet`), which is where that worker looks. It does too while its own
 *     view is stale.
 *   - a Redis worker refuses to start while a worker without Redis holds the storage lock.
 * Not detected: worker and servers configured with different Redis servers or databases.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { ifExists, type StorageDriver } from '../../storage-drivers/driver.js';
import { redisConnectionOptions } from '../cache/index.js';
import {
  closeRedisClient, createRedisClient, dialWithin, safeMessage, timedCommand, type AnyRedisClient, type RedisConnectionOptions,
} from '../cache/redis.js';
import type { WharfConfig } from '../config/index.js';
import { RegistryError } from '../registry/errors.js';
import { GC_LOCK_PATH } from '../registry/layout.js';
import {
  LOCK_STALE_MS, LockBusyError, LockLostError, StorageGcLock, StorageLiveSet, StorageLockProbe,
  type GcLock, type LiveSet, type LockInfo, type LockProbe,
} from './state.js';

export const GC_KEY_PREFIX = 'wharf:gc:';

/**
 * The lock is free: take it, empty the live sets and note the run as unfinished (one atomic step), answering the
 * unfinished run before it, if any; otherwise answer the holder and its PTTL.
 */
const ACQUIRE = `
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('DEL', KEYS[2], KEYS[3])
  local before = redis.call('GET', KEYS[4]) or ''
  redis.call('SET', KEYS[4], ARGV[3])
  return {'', 0, before}
end
return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}`;

const OWNED = `
local function owned()
  local v = redis.call('GET', KEYS[1])
  return v and cjson.decode(v).owner == ARGV[1]
end
`;

const RENEW = `${OWNED}
if owned() then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`;

/** ARGV[2] = '1': an invalidation failed, so the run stays noted as unfinished. */
const RELEASE = `${OWNED}
if not owned() then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
if ARGV[2] ~= '1' then redis.call('DEL', KEYS[4]) end
return 1`;

const CURRENT = `
local v = redis.call('GET', KEYS[1])
local u = redis.call('GET', KEYS[4]) or ''
if not v then return {'', 0, u} end
return {v, redis.call('PTTL', KEYS[1]), u}`;

/** Which of ARGV[2..] are members of KEYS[2]; when ARGV[1] is an owner token, only while that owner holds the lock. */
const MEMBERS = `${OWNED}
if ARGV[1] ~= '' and not owned() then return redis.error_reply('WHARF_GC_LOCK_LOST') end
return redis.call('SMISMEMBER', KEYS[2], unpack(ARGV, 2))`;

/** Digests per SADD / SMISMEMBER call (Lua's unpack has a limit of a few thousand). */
const CHUNK = 1000;

export interface RedisGcOptions extends RedisConnectionOptions {
  /** Key prefix (tests give each their own). Default `wharf:gc:`. */
  prefix?: string;
}

/** Redis could not answer a command of the collector's lock or live set: the run stops (nothing more is deleted). */
export class GcRedisUnavailableError extends Error {
  override name = 'GcRedisUnavailableError';
}

/** One connection for the GC state, with the cache's client settings and time limits. */
export class RedisGcConnection {
  private readonly client: AnyRedisClient;
  readonly keys: { lock: string; live: string; repos: string; unfinished: string };
  private readonly timeoutMs: number;
  private readonly dialTimeoutMs: number;
  private lastError?: string;

  constructor(options: RedisGcOptions, private readonly onError?: (err: unknown) => void) {
    const prefix = options.prefix ?? GC_KEY_PREFIX;
    this.keys = { lock: `${prefix}lock`, live: `${prefix}live`, repos: `${prefix}live-repos`, unfinished: `${prefix}unfinished` };
    this.timeoutMs = options.commandTimeoutMs ?? 3000;
    this.dialTimeoutMs = options.dialTimeoutMs ?? 5000;
    this.client = createRedisClient(options, (err) => {
      this.lastError = safeMessage(err);
      this.onError?.(err);
    });
  }

  /**
   * Connect, waiting at most the dial timeout. With `required` (the worker) a failure throws; otherwise (a server)
   * node-redis goes on reconnecting in the background and commands fail until it is back.
   */
  async connect(required: boolean): Promise<void> {
    await dialWithin(this.client, this.dialTimeoutMs, (err) => { this.lastError = safeMessage(err); });
    if (required && !this.client.isReady) {
      this.client.destroy();
      throw new Error(`redis (garbage-collection lock) unreachable: ${this.lastError ?? `no connection within ${this.dialTimeoutMs} ms`}`);
    }
  }

  /**
   * One command within the time limit. A failure (not connected, timed out, an error reply) rejects with
   * GcRedisUnavailableError, whose message says it was Redis; the lock-lost reply is left to the caller.
   */
  async command(args: string[]): Promise<unknown> {
    try {
      return await timedCommand(this.client, args, this.timeoutMs);
    } catch (err) {
      const message = safeMessage(err);
      if (message.includes('WHARF_GC_LOCK_LOST')) throw err;
      throw new GcRedisUnavailableError(`redis (garbage-collection lock) unavailable: ${message}`);
    }
  }

  /** A script over KEYS: the lock, `other`, the repository set, the unfinished-run note. */
  script(script: string, other: string, args: string[]): Promise<unknown> {
    return this.command(['EVAL', script, '4', this.keys.lock, other, this.keys.repos, this.keys.unfinished, ...args]);
  }

  close(): Promise<void> {
    return closeRedisClient(this.client);
  }
}

function parseHeld(reply: unknown): LockInfo | undefined {
  if (!Array.isArray(reply) || !reply[0]) return undefined;
  const info = JSON.parse(String(reply[0])) as LockInfo;
  const pttl = Number(reply[1]);
  return { ...info, expiresAt: new Date(Date.now() + (pttl > 0 ? pttl : 0)).toISOString() };
}

export class RedisLockProbe implements LockProbe {
  private unclean?: string;

  constructor(protected readonly redis: RedisGcConnection) {}

  async current(): Promise<LockInfo | undefined> {
    const reply = (await this.redis.script(CURRENT, this.redis.keys.live, [])) as [string, number, string];
    const held = parseHeld(reply);
    this.unclean = !held && reply[2] !== '' ? reply[2] : undefined;
    return held;
  }

  uncleanRun(): string | undefined {
    return this.unclean;
  }
}

export interface RedisLockOptions {
  /** Lock lifetime without renewal (default 60 s). */
  ttlMs?: number;
  /** Renew on a timer this often (default a third of `ttlMs`); 0: only in `verify` (tests stand for a stalled worker). */
  renewMs?: number;
  /** Storage to write the `backend: 'redis'` marker lock object into, and to check for a worker without Redis. */
  driver?: StorageDriver;
  /** Lifetime of the storage marker (default 10 minutes), rewritten by `verify` after a third of it. */
  markerTtlMs?: number;
  /**
   * Empty the shared descriptor cache (a new generation); resolves to whether it was done. Called after taking the
   * lock when the run before ended unfinished: a server that never saw that run end has not emptied the cache.
   */
  clearSharedCache?: () => Promise<boolean>;
}

export class RedisGcLock extends RedisLockProbe implements GcLock {
  private mine?: LockInfo;
  private markerWrittenAt = 0;
  private invalidationFailed = false;
  private timer?: NodeJS.Timeout;
  /** Set when a timed renewal found the lock gone. */
  private lost?: LockLostError;
  private readonly ttlMs: number;
  private readonly markerTtlMs: number;

  constructor(redis: RedisGcConnection, private readonly options: RedisLockOptions = {}) {
    super(redis);
    this.ttlMs = options.ttlMs ?? 60_000;
    this.markerTtlMs = options.markerTtlMs ?? 10 * 60_000;
  }

  /**
   * A delete could not be forgotten in the shared descriptor cache: the release leaves the run noted as unfinished,
   * so every server empties that cache before using it again (server/gc/recorder.ts).
   */
  noteInvalidationFailed(): void {
    this.invalidationFailed = true;
  }

  /** The owner token while the lock is ours (the live set's fence). */
  owner(): string | undefined {
    return this.mine?.owner;
  }

  async acquire(): Promise<LockInfo> {
    const driver = this.options.driver;
    if (driver) {
      // A worker configured without Redis holds its lock in storage only.
      const stored = await new StorageLockProbe(driver).current();
      if (stored && stored.backend !== 'redis') throw new LockBusyError(stored);
    }
    const now = new Date();
    const info: LockInfo = {
      owner: randomUUID(),
      runId: `${now.toISOString().replace(/[-:]/g, '').replace(/\..*$/, '')}-${randomUUID().slice(0, 8)}`,
      host: hostname(),
      pid: process.pid,
      acquiredAt: now.toISOString(),
      expiresAt: new Date(now.getTime() + this.ttlMs).toISOString(),
      backend: 'redis',
    };
    const reply = (await this.redis.script(ACQUIRE, this.redis.keys.live, [JSON.stringify(info), String(this.ttlMs), info.runId])) as string[];
    const holder = parseHeld(reply);
    if (holder) throw new LockBusyError(holder);
    this.mine = info;
    this.lost = undefined;
    this.invalidationFailed = false;
    try {
      await this.writeMarker();
      if (reply[2] && this.options.clearSharedCache && !(await this.options.clearSharedCache())) this.invalidationFailed = true;
    } catch (err) {
      await this.release();
      throw err;
    }
    const every = this.options.renewMs ?? Math.max(1, Math.floor(this.ttlMs / 3));
    if (every > 0) {
      // The storage marker is what servers read while they cannot reach Redis: keep it fresh between `verify`s too
      // (a long mark of one repository), and treat a marker that cannot be written like a lost lock.
      this.timer = setInterval(() => void this.renew().then(() => this.refreshMarker()).catch(() => {}), every);
      this.timer.unref();
    }
    return info;
  }

  private async writeMarker(): Promise<void> {
    if (!this.options.driver || !this.mine) return;
    this.markerWrittenAt = Date.now();
    const marker = { ...this.mine, expiresAt: new Date(this.markerWrittenAt + this.markerTtlMs).toISOString() };
    await this.options.driver.putContent(GC_LOCK_PATH, JSON.stringify(marker));
  }

  /** Extend the lock; LockLostError when it is no longer ours. A Redis failure rejects (the caller stops). */
  private async renew(): Promise<void> {
    if (!this.mine) throw new LockLostError('the garbage-collection lock is not held');
    if (this.lost) throw this.lost;
    const renewed = await this.redis.script(RENEW, this.redis.keys.live, [this.mine.owner, String(this.ttlMs)]);
    if (Number(renewed) !== 1) {
      this.lost = new LockLostError();
      clearInterval(this.timer);
      throw this.lost;
    }
  }

  async verify(): Promise<void> {
    await this.renew();
    await this.refreshMarker();
  }

  private async refreshMarker(): Promise<void> {
    if (Date.now() - this.markerWrittenAt <= this.markerTtlMs / 3) return;
    try {
      await this.writeMarker();
    } catch (err) {
      this.lost ??= new LockLostError(`the garbage-collection lock's storage marker could not be renewed: ${(err as Error).message}`);
      clearInterval(this.timer);
      throw this.lost;
    }
  }

  /**
   * Give the lock up, if still ours. Never rejects: a Redis that cannot be reached now only means the lock expires on
   * its own, and the error that ended the run (if any) is the one to report.
   */
  async release(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    const mine = this.mine;
    if (!mine) return;
    this.mine = undefined;
    const driver = this.options.driver;
    if (driver) {
      try {
        const raw = await ifExists(driver.getContent(GC_LOCK_PATH));
        if (raw && (JSON.parse(raw.toString('utf8')) as LockInfo).owner === mine.owner) await ifExists(driver.delete(GC_LOCK_PATH));
      } catch {
        // the marker expires on its own
      }
    }
    await this.redis.script(RELEASE, this.redis.keys.live, [mine.owner, this.invalidationFailed ? '1' : '0']).catch(() => {});
  }
}

export class RedisLiveSet implements LiveSet {
  /** `fence`: the worker's lock; its reads then answer only while that lock is still its own. */
  constructor(private readonly redis: RedisGcConnection, private readonly fence?: { owner(): string | undefined }) {}

  async record(repository: string, digests: string[]): Promise<void> {
    const unique = [...new Set(digests)];
    const writes: Promise<unknown>[] = [this.redis.command(['SADD', this.redis.keys.repos, repository])];
    for (let i = 0; i < unique.length; i += CHUNK) {
      writes.push(this.redis.command(['SADD', this.redis.keys.live, ...unique.slice(i, i + CHUNK)]));
    }
    try {
      await Promise.all(writes);
    } catch (err) {
      throw new RegistryError('UNAVAILABLE', 'the garbage collector\'s live set (redis) cannot be reached; try again', {
        cause: err,
        detail: { reason: safeMessage(err) },
      });
    }
  }

  private async members(key: string, items: string[]): Promise<Set<string>> {
    let owner = '';
    if (this.fence) {
      owner = this.fence.owner() ?? '';
      if (owner === '') throw new LockLostError('the garbage-collection lock is not held');
    }
    const found = new Set<string>();
    for (let i = 0; i < items.length; i += CHUNK) {
      const chunk = items.slice(i, i + CHUNK);
      let reply: unknown;
      try {
        reply = await this.redis.script(MEMBERS, key, [owner, ...chunk]);
      } catch (err) {
        if (err instanceof Error && err.message.includes('WHARF_GC_LOCK_LOST')) throw new LockLostError();
        throw err;
      }
      (reply as number[]).forEach((m, j) => {
        if (Number(m) === 1) found.add(chunk[j]!);
      });
    }
    return found;
  }

  async has(digest: string): Promise<boolean> {
    return (await this.members(this.redis.keys.live, [digest])).has(digest);
  }

  recorded(digests: string[]): Promise<Set<string>> {
    return this.members(this.redis.keys.live, [...new Set(digests)]);
  }

  async hasRepository(repository: string): Promise<boolean> {
    return (await this.members(this.redis.keys.repos, [repository])).has(repository);
  }

  /** Nothing to do: taking the lock emptied the sets (see the header). */
  async prune(): Promise<void> {}
}

/**
 * A server's probe with Redis configured: the Redis lock, and the storage lock object of a worker that runs without
 * Redis (the `backend: 'redis'` marker of a Redis worker is not that).
 */
export class DualLockProbe implements LockProbe {
  private storageRun?: LockInfo;
  /** A run without Redis that this server saw end: it forgot nothing in the shared cache. */
  private endedStorageRun?: string;
  private readAt = 0;

  constructor(
    private readonly redis: LockProbe,
    private readonly storage: LockProbe,
    private readonly staleMs = LOCK_STALE_MS,
  ) {}

  /**
   * The Redis lock, or a storage run. When Redis cannot be read, the storage lock object answers alone, the
   * `backend: 'redis'` marker included: a Redis worker writes that marker right after taking its Redis lock and
   * before its propagation wait, and keeps it until it releases, so "no marker" read now means no collection can
   * start marking within LOCK_PROPAGATION_MS, exactly the storage protocol's guarantee. So a Redis outage stops only
   * the writes that must be recorded while a collection runs (their record cannot be made: 503), not every push.
   */
  async current(): Promise<LockInfo | undefined> {
    const [inRedis, stored] = await Promise.all([
      this.redis.current().then((held) => ({ held }), () => undefined),
      this.storage.current(),
    ]);
    const storageRun = stored && stored.backend !== 'redis' ? stored : undefined;
    if (this.storageRun && this.storageRun.runId !== storageRun?.runId) this.endedStorageRun = this.storageRun.runId;
    this.storageRun = storageRun;
    this.readAt = Date.now();
    if (!inRedis) return stored;
    return inRedis.held ?? this.storageRun;
  }

  uncleanRun(): string | undefined {
    return this.redis.uncleanRun?.() ?? this.endedStorageRun;
  }

  /** Whether records must go to storage too: a worker without Redis runs, or our view of storage is stale. */
  storageWorkerMayRun(): boolean {
    return this.storageRun !== undefined || Date.now() - this.readAt > this.staleMs;
  }
}

/** A server's live set with Redis configured: Redis always, storage too while a worker without Redis may run. */
export class DualLiveSet implements LiveSet {
  constructor(private readonly redis: LiveSet, private readonly storage: LiveSet, private readonly probe: DualLockProbe) {}

  async record(repository: string, digests: string[]): Promise<void> {
    await Promise.all([
      this.redis.record(repository, digests),
      this.probe.storageWorkerMayRun() ? this.storage.record(repository, digests) : undefined,
    ]);
  }

  has(digest: string): Promise<boolean> {
    return this.redis.has(digest);
  }

  recorded(digests: string[]): Promise<Set<string>> {
    return this.redis.recorded(digests);
  }

  hasRepository(repository: string): Promise<boolean> {
    return this.redis.hasRepository(repository);
  }

  prune(before: Date): Promise<void> {
    return this.redis.prune(before);
  }
}

export interface WorkerGcState {
  lock: GcLock;
  liveSet: LiveSet;
  /** Wrap each shared-cache invalidation: a failed one leaves the run noted as unfinished (see RedisGcLock). */
  invalidating(invalidation: Promise<void>): Promise<void>;
  close(): Promise<void>;
}

/** The worker's lock and live set: in Redis when the `redis` section is configured, else in storage. */
export async function workerGcState(config: WharfConfig, driver: StorageDriver, options: RedisGcOptions & RedisLockOptions = {}): Promise<WorkerGcState> {
  if (!config.redis) {
    return { lock: new StorageGcLock(driver), liveSet: new StorageLiveSet(driver), invalidating: (p) => p, close: async () => {} };
  }
  const redis = new RedisGcConnection({ ...redisConnectionOptions(config.redis), ...options });
  await redis.connect(true);
  const lock = new RedisGcLock(redis, { driver, ...options });
  return {
    lock,
    liveSet: new RedisLiveSet(redis, lock),
    invalidating: (p) => p.catch((err: unknown) => {
      lock.noteInvalidationFailed();
      throw err;
    }),
    close: () => redis.close(),
  };
}

export interface ServerGcState {
  probe: LockProbe;
  liveSet: LiveSet;
  /** Whether the live set is in Redis (then a storage lock object marked 'redis' is not a reason to refuse). */
  redis: boolean;
  close(): Promise<void>;
}

/** A server's lock probe and live set for the recorder (./recorder.ts): Redis and storage, or storage alone. */
export async function serverGcState(
  config: WharfConfig,
  driver: StorageDriver,
  options: RedisGcOptions & { onError?: (err: unknown) => void } = {},
): Promise<ServerGcState> {
  const storageProbe = new StorageLockProbe(driver);
  const storageLive = new StorageLiveSet(driver);
  if (!config.redis) return { probe: storageProbe, liveSet: storageLive, redis: false, close: async () => {} };
  const redis = new RedisGcConnection({ ...redisConnectionOptions(config.redis), ...options }, options.onError);
  // Redis down at startup: the server starts anyway, and refuses writes that must be recorded until it is back.
  await redis.connect(false);
  const probe = new DualLockProbe(new RedisLockProbe(redis), storageProbe);
  return { probe, liveSet: new DualLiveSet(new RedisLiveSet(redis), storageLive, probe), redis: true, close: () => redis.close() };
}
