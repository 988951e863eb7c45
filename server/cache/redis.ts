/**
 * The blob-descriptor cache in Redis (`storage.cache.blobdescriptor: redis`), shared by every replica and by the
 * garbage collector.
 *
 * Keys (all under one prefix, default `wharf:blobdescriptor:`):
 *   <p>epoch              the current cache generation (a counter)
 *   <p>g<epoch>:<digest>  hash: size, mediatype, and one `repo:<name>` field per repository known to link the digest
 *   <p>gone:<digest>      tombstone: the digest was just invalidated; nobody may cache it again until it expires
 * Each operation is one Lua script, so reading the generation and the entry is atomic and costs one round trip.
 *
 * Outages. Redis being down must never make the registry fail or answer from stale data:
 *   - every command has a timeout and is never queued while disconnected, so a request never waits on Redis;
 *   - any failure switches the cache off for this process (reads miss, writes are skipped, invalidations reject with
 *     `CacheUnavailableError`) and logs once per outage;
 *   - coming back, the process first starts a new generation (INCR epoch) and only then answers again. Entries
 *     written before the outage are never read again, by any replica, so an invalidation that could not be delivered
 *     during the outage cannot leave a stale "exists" behind (Redis may come back with its old data on disk).
 *     Every replica sees its connection drop when Redis restarts, so every replica starts a generation before it reads.
 * Entries also expire (`entryTtlSeconds`), which bounds their memory after generations change.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { createClient, RedisClientType } from 'redis';
import { CacheUnavailableError, DEFAULT_TOMBSTONE_MS, type CacheStatus, type CachedDescriptor, type DescriptorCache } from './cache.js';

/** Where and how to connect: registry:2's `redis` section plus Wharf's `redis.url`. */
export interface RedisConnectionOptions {
  /** `redis://[user][:password]@host:port[/db]` or `rediss://…` (TLS). Other fields override its parts. */
  url?: string;
  /** `host:port` (registry:2 `redis.addr`). */
  addr?: string;
  username?: string;
  password?: string;
  db?: number;
  tls?: {
    enabled: boolean;
    /** Client certificate and key (PEM file paths) for mutual TLS. */
    certificate?: string;
    key?: string;
    /** CA certificates (PEM file paths) the server's certificate must chain to; the system roots when absent. */
    clientcas?: string[];
  };
  /** Connect timeout (ms). Default 5000. */
  dialTimeoutMs?: number;
  /** Per-command timeout (ms): the larger of registry:2's readtimeout and writetimeout. Default 3000. */
  commandTimeoutMs?: number;
}

/** Anything with pino's warn/info (a pino Logger). */
export interface CacheLogger {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

export interface RedisCacheOptions extends RedisConnectionOptions {
  /** Key prefix. Default `wharf:blobdescriptor:`. */
  prefix?: string;
  tombstoneMs?: number;
  /** Entries expire after this long without being written (s). Default 7 days. */
  entryTtlSeconds?: number;
  /** How often a process whose connection is alive but whose commands failed tries to recover (ms). Default 1000. */
  recoveryIntervalMs?: number;
  logger?: CacheLogger;
}

const LOOKUP = `
local g = redis.call('GET', ARGV[1] .. 'epoch') or '0'
return redis.call('HMGET', ARGV[1] .. 'g' .. g .. ':' .. ARGV[2], unpack(ARGV, 3))`;

const STORE = `
if redis.call('EXISTS', ARGV[1] .. 'gone:' .. ARGV[2]) == 1 then return 0 end
local g = redis.call('GET', ARGV[1] .. 'epoch') or '0'
local k = ARGV[1] .. 'g' .. g .. ':' .. ARGV[2]
redis.call('HSET', k, unpack(ARGV, 4))
redis.call('EXPIRE', k, ARGV[3])
return 1`;

const FORGET = `
redis.call('SET', ARGV[1] .. 'gone:' .. ARGV[2], '1', 'PX', ARGV[3])
local g = redis.call('GET', ARGV[1] .. 'epoch') or '0'
local k = ARGV[1] .. 'g' .. g .. ':' .. ARGV[2]
if ARGV[4] then return redis.call('HDEL', k, ARGV[4]) end
return redis.call('DEL', k)`;

/** The node-redis client options for a connection, without ever putting the password into a URL or a log line. */
export function clientOptions(options: RedisConnectionOptions): Parameters<typeof createClient>[0] {
  const out: Record<string, any> = { disableOfflineQueue: true };
  const socket: Record<string, any> = {
    connectTimeout: options.dialTimeoutMs ?? 5000,
    // Reconnect quickly at first, then every 2 s at most; never give up (the cache just stays off meanwhile).
    reconnectStrategy: (retries: number) => Math.min(50 * 2 ** Math.min(retries, 6), 2000),
  };
  if (options.url !== undefined) out.url = options.url;
  if (options.addr !== undefined) {
    const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(options.addr);
    socket.host = m ? (m[1] ?? m[2]) || 'localhost' : options.addr;
    socket.port = m ? Number(m[3]) : 6379;
  }
  if (options.tls?.enabled || options.url?.startsWith('rediss:')) {
    socket.tls = true;
    if (socket.host) socket.servername = socket.host;
    if (options.tls?.certificate) socket.cert = readFileSync(options.tls.certificate);
    if (options.tls?.key) socket.key = readFileSync(options.tls.key);
    if (options.tls?.clientcas?.length) socket.ca = options.tls.clientcas.map((f) => readFileSync(f));
  }
  out.socket = socket;
  if (options.username !== undefined) out.username = options.username;
  if (options.password !== undefined && options.password !== '') out.password = options.password;
  if (options.db !== undefined) out.database = options.db;
  out.commandOptions = { timeout: options.commandTimeoutMs ?? 3000 };
  return out as Parameters<typeof createClient>[0];
}

/**
 * node-redis, loaded on first use rather than imported: it adds about 24 MB to a process's memory, which a Wharf
 * without a `redis` section should not carry. (Its CommonJS build; `require` caches it.)
 */
const loadRedis = (): typeof import('redis') => createRequire(import.meta.url)('redis') as typeof import('redis');

/** A connected-or-not node-redis client, as every Redis user in Wharf holds it. */
export type AnyRedisClient = RedisClientType<any, any, any, any, any>;

/**
 * A client for these settings (`clientOptions`: no offline queue, endless quick reconnects). `onError` receives
 * connection errors; without a listener node-redis would crash the process.
 */
export function createRedisClient(options: RedisConnectionOptions, onError: (err: unknown) => void): AnyRedisClient {
  const client = loadRedis().createClient(clientOptions(options)) as AnyRedisClient;
  client.on('error', onError);
  return client;
}

/**
 * One command, failing after `timeoutMs` however far it got. (node-redis times out only commands still waiting to be
 * written; a Redis that stops answering would otherwise hold the caller forever.) A reply arriving after the timeout
 * is ignored.
 */
export function timedCommand(client: AnyRedisClient, args: string[], timeoutMs: number): Promise<unknown> {
  const reply = client.sendCommand(args);
  reply.catch(() => {}); // a late failure after the timeout has nobody to tell
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`redis command timed out after ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([reply, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Start `client` connecting and wait until the first attempt ends or `timeoutMs` passes, whichever comes first.
 * node-redis goes on reconnecting in the background after a failure; `onError` hears of the failed attempt.
 */
export async function dialWithin(client: AnyRedisClient, timeoutMs: number, onError: (err: unknown) => void = () => {}): Promise<void> {
  const connecting = client.connect().then(() => undefined, onError);
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([connecting, new Promise<void>((resolve) => { timer = setTimeout(resolve, timeoutMs); })]);
  } finally {
    clearTimeout(timer);
  }
}

/** Close `client`: QUIT when it is connected; otherwise, or when QUIT fails, drop the socket (never waits for Redis). */
export async function closeRedisClient(client: AnyRedisClient): Promise<void> {
  try {
    if (client.isReady) await client.close();
    else client.destroy();
  } catch {
    client.destroy();
  }
}

/** An error's message without anything that looks like URL credentials. */
export function safeMessage(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.replace(/\/\/[^@/\s]*@/g, '//***@');
}

export class RedisDescriptorCache implements DescriptorCache {
  readonly backend = 'redis' as const;
  private readonly client: AnyRedisClient;
  private readonly prefix: string;
  private readonly tombstoneMs: number;
  private readonly ttl: number;
  private readonly recoveryMs: number;
  private readonly commandTimeoutMs: number;
  private readonly dialTimeoutMs: number;
  private readonly logger?: CacheLogger;
  private up = false;
  /** Whether an outage has been logged and not yet its end (one warning per outage). */
  private outageLogged = false;
  private since = Date.now();
  private lastError?: string;
  private recovering?: Promise<void>;
  /** Counts failures, so a recovery that raced with a new failure does not count as one. */
  private failures = 0;
  private recoveryTimer?: NodeJS.Timeout;
  private closed = false;

  constructor(options: RedisCacheOptions) {
    this.prefix = options.prefix ?? 'wharf:blobdescriptor:';
    this.tombstoneMs = options.tombstoneMs ?? DEFAULT_TOMBSTONE_MS;
    this.ttl = options.entryTtlSeconds ?? 7 * 24 * 3600;
    this.recoveryMs = options.recoveryIntervalMs ?? 1000;
    this.commandTimeoutMs = options.commandTimeoutMs ?? 3000;
    this.dialTimeoutMs = options.dialTimeoutMs ?? 5000;
    this.logger = options.logger;
    // Errors are outages, handled here.
    this.client = createRedisClient(options, (err) => this.down(err));
    this.client.on('end', () => this.down(new Error('connection closed')));
    this.client.on('ready', () => void this.recover());
  }

  /**
   * Start connecting; resolves once the first attempt is over, whatever its outcome (connected and answering, or
   * failed, or the dial timeout passed). node-redis keeps reconnecting in the background after a failure.
   */
  async connect(): Promise<void> {
    const failuresBefore = this.failures;
    const connecting = this.client.connect().then(
      () => this.recovering,
      (err: unknown) => this.down(err),
    );
    let timer: NodeJS.Timeout | undefined;
    let poll: NodeJS.Timeout | undefined;
    const settled = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.dialTimeoutMs);
      poll = setInterval(() => {
        if (this.up || this.failures !== failuresBefore || this.closed) resolve();
      }, 5);
    });
    try {
      await Promise.race([connecting, settled]);
    } finally {
      clearTimeout(timer);
      clearInterval(poll);
    }
  }

  healthy(): boolean {
    return this.up;
  }

  status(): CacheStatus {
    const s: CacheStatus = { backend: this.backend, healthy: this.up, since: this.since };
    if (!this.up && this.lastError !== undefined) s.lastError = this.lastError;
    return s;
  }

  async stat(digest: string): Promise<CachedDescriptor | undefined> {
    const reply = await this.read([digest, 'size', 'mediatype']);
    if (!reply || reply[0] == null) return undefined;
    const size = Number(reply[0]);
    if (!Number.isSafeInteger(size) || size < 0) return undefined;
    return reply[1] ? { size, mediaType: reply[1] } : { size };
  }

  async set(digest: string, descriptor: CachedDescriptor): Promise<void> {
    const fields = ['size', String(descriptor.size)];
    if (descriptor.mediaType) fields.push('mediatype', descriptor.mediaType);
    await this.write([digest, String(this.ttl), ...fields]);
  }

  async isLinked(repository: string, digest: string): Promise<boolean> {
    const reply = await this.read([digest, `repo:${repository}`]);
    return reply?.[0] === '1';
  }

  async setLinked(repository: string, digest: string): Promise<void> {
    await this.write([digest, String(this.ttl), `repo:${repository}`, '1']);
  }

  async forget(digest: string): Promise<void> {
    await this.invalidate([digest, String(this.tombstoneMs)]);
  }

  async forgetLink(repository: string, digest: string): Promise<void> {
    await this.invalidate([digest, String(this.tombstoneMs), `repo:${repository}`]);
  }

  async clear(): Promise<void> {
    if (!this.up) {
      // Not answering now; counted as a failure, so it starts a new generation before it answers (even if it has not
      // connected yet, when it would otherwise keep the current one).
      this.failures++;
      return;
    }
    try {
      await this.command(['INCR', `${this.prefix}epoch`]);
    } catch (err) {
      this.down(err);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.up = false;
    clearTimeout(this.recoveryTimer);
    await closeRedisClient(this.client);
  }

  // ---- plumbing ------------------------------------------------------------------------------------------

  private eval(script: string, args: string[]): Promise<unknown> {
    return this.command(['EVAL', script, '0', this.prefix, ...args]);
  }

  /** One command with the time limit; a reply after it is ignored (the cache is off by then, see `down`). */
  private command(args: string[]): Promise<unknown> {
    return timedCommand(this.client, args, this.commandTimeoutMs);
  }

  private async read(args: string[]): Promise<(string | null)[] | undefined> {
    if (!this.up) return undefined;
    try {
      return (await this.eval(LOOKUP, args)) as (string | null)[];
    } catch (err) {
      this.down(err);
      return undefined;
    }
  }

  private async write(args: string[]): Promise<void> {
    if (!this.up) return;
    try {
      await this.eval(STORE, args);
    } catch (err) {
      this.down(err);
    }
  }

  private async invalidate(args: string[]): Promise<void> {
    if (this.up) {
      try {
        await this.eval(FORGET, args);
        return;
      } catch (err) {
        this.down(err);
      }
    }
    throw new CacheUnavailableError(
      'the blob-descriptor cache in Redis could not be invalidated; it stays off until Redis is back and a new cache generation has started',
    );
  }

  /** Something failed: stop answering from the cache until a new generation has started. */
  private down(err: unknown): void {
    if (this.closed) return;
    this.failures++;
    this.lastError = safeMessage(err);
    if (this.up) {
      this.up = false;
      this.since = Date.now();
    }
    if (!this.outageLogged) {
      this.outageLogged = true;
      this.logger?.warn({ err: this.lastError }, 'redis blob-descriptor cache unavailable; serving from storage until it is back');
    }
    // A failed command on a live connection (a timeout) brings no 'ready' event: try again on a timer.
    this.scheduleRecovery();
  }

  private scheduleRecovery(): void {
    if (this.closed || this.recoveryTimer) return;
    this.recoveryTimer = setTimeout(() => {
      this.recoveryTimer = undefined;
      if (this.client.isReady) void this.recover();
      else if (!this.client.isOpen) void this.client.connect().catch((err: unknown) => this.down(err));
      // otherwise node-redis is reconnecting and its 'ready' event will bring the recovery
    }, this.recoveryMs);
    this.recoveryTimer.unref();
  }

  /** Start a new generation (after a failure), then answer again. Single-flight. */
  private recover(): Promise<void> {
    if (this.failures === 0 && !this.closed && this.client.isReady) {
      // The first connection of a process that never failed: it has no undelivered invalidation to hide behind a new
      // generation, so the shared cache stays warm (a GC worker or a new replica starting is no reason to empty it).
      this.up = true;
      this.since = Date.now();
      return Promise.resolve();
    }
    this.recovering ??= (async () => {
      try {
        if (this.closed || !this.client.isReady) return;
        const failuresBefore = this.failures;
        const epoch = await this.command(['INCR', `${this.prefix}epoch`]);
        if (this.closed) return;
        if (this.failures !== failuresBefore) {
          // Something failed while the generation was being started (an invalidation, perhaps, written to the new
          // generation's view of the world too late): start yet another one.
          this.scheduleRecovery();
          return;
        }
        this.up = true;
        this.since = Date.now();
        this.lastError = undefined;
        if (this.outageLogged) {
          this.outageLogged = false;
          this.logger?.info({ generation: Number(epoch) }, 'redis blob-descriptor cache available again; started a new cache generation');
        }
      } catch (err) {
        this.down(err);
      } finally {
        this.recovering = undefined;
      }
    })();
    return this.recovering;
  }
}
