/**
 * Single-flight across replicas: when `redis` is configured, replicas (and `--workers` processes) of one mirror
 * agree through Redis on who fetches a manifest or blob from the upstream; the others wait and then serve it from
 * the shared storage. Within a process, ./mirror.ts already shares one fetch between concurrent requests; this is
 * the layer between processes.
 *
 *   run(key, isDone, fetch):
 *     loop:
 *       SET <p><key> <token> NX PX <claimTtl>        one claim per key; the token says whose it is
 *       won:   if isDone(): release, answer "shared"  (the previous holder finished between our look and our claim)
 *              fetch(), renewing the claim every claimTtl/3 (PEXPIRE only while it is still ours), then release
 *              (DEL only while it is still ours: one Lua script each, so an expired claim taken over by another
 *              process is never extended or removed by the old holder)
 *       held:  poll the claim every pollMs until it is gone (released, or expired because its holder died)
 *              isDone()?  answer "shared" : loop (take over)
 *
 * - A holder that dies stops renewing: its claim expires within claimTtl and a waiter takes over. A holder whose
 *   fetch fails releases the claim; a waiter then tries itself (and usually meets the same upstream error).
 * - Redis down (not connected, a command failing or timing out): fetch without a claim. A duplicate fetch is better
 *   than a failed pull. Logged once per outage.
 * - A waiter gives up waiting after maxWaitMs (a holder alive but stuck) and fetches itself.
 * - Nothing is stored only in Redis: a claim is a hint about who is fetching, the content is in storage.
 */
import { randomUUID } from 'node:crypto';
import {
  closeRedisClient, createRedisClient, dialWithin, safeMessage, timedCommand, type AnyRedisClient, type RedisConnectionOptions,
} from '../cache/redis.js';

export interface SharedFlightLogger {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

export interface SharedFlightOptions extends RedisConnectionOptions {
  /** Key prefix. Default `wharf:proxy:flight:`. */
  prefix?: string;
  /** How long a claim lives without renewal (ms): how soon a waiter takes over from a dead holder. Default 8 s. */
  claimTtlMs?: number;
  /** How often a waiter looks at the claim (ms). Default 100. */
  pollMs?: number;
  /** The longest a waiter waits for another process's fetch before fetching itself (ms). Default 15 minutes. */
  maxWaitMs?: number;
  logger?: SharedFlightLogger;
}

/** What `run` did: fetched itself (with the fetch's value), or waited for another process that did. */
export type FlightOutcome<T> = { fetched: true; value: T } | { fetched: false };

const RENEW = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`;
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

class RedisUnavailable extends Error {}

export class SharedFlights {
  private readonly client: AnyRedisClient;
  private readonly prefix: string;
  private readonly claimTtlMs: number;
  private readonly pollMs: number;
  private readonly maxWaitMs: number;
  private readonly commandTimeoutMs: number;
  private readonly dialTimeoutMs: number;
  private readonly logger?: SharedFlightLogger;
  /** Whether an outage has been logged and not yet its end. */
  private outage = false;
  private closed = false;

  constructor(options: SharedFlightOptions) {
    this.prefix = options.prefix ?? 'wharf:proxy:flight:';
    this.claimTtlMs = options.claimTtlMs ?? 8_000;
    this.pollMs = options.pollMs ?? 100;
    this.maxWaitMs = options.maxWaitMs ?? 15 * 60_000;
    this.commandTimeoutMs = options.commandTimeoutMs ?? 3000;
    this.dialTimeoutMs = options.dialTimeoutMs ?? 5000;
    this.logger = options.logger;
    // An error event is an outage, noticed per command.
    this.client = createRedisClient(options, () => undefined);
  }

  /** Start connecting (node-redis keeps retrying in the background); resolves once connected or after the dial timeout. */
  connect(): Promise<void> {
    return dialWithin(this.client, this.dialTimeoutMs);
  }

  async close(): Promise<void> {
    this.closed = true;
    await closeRedisClient(this.client);
  }

  /**
   * Run `fetch` in at most one process at a time for `key`; the others wait until it is done and answer
   * `{ fetched: false }` once `isDone()` says the content is in storage.
   */
  async run<T>(key: string, isDone: () => Promise<boolean>, fetch: () => Promise<T>): Promise<FlightOutcome<T>> {
    const claimKey = `${this.prefix}${key}`;
    const deadline = Date.now() + this.maxWaitMs;
    let waited = false;
    for (;;) {
      const token = randomUUID();
      let won: boolean;
      try {
        won = (await this.command(['SET', claimKey, token, 'NX', 'PX', String(this.claimTtlMs)])) === 'OK';
      } catch {
        return { fetched: true, value: await fetch() };
      }
      if (won) {
        if (waited) this.logger?.info({ key }, 'proxy fetch taken over from another replica');
        return this.holding(claimKey, token, isDone, fetch);
      }
      if (!waited) this.logger?.debug({ key }, 'waiting for another replica to fetch from the upstream');
      waited = true;
      try {
        await this.whileHeld(claimKey, deadline);
      } catch (err) {
        if (!(err instanceof RedisUnavailable)) throw err;
        if (await isDone()) return { fetched: false };
        return { fetched: true, value: await fetch() };
      }
      if (await isDone()) return { fetched: false };
      if (Date.now() >= deadline) {
        this.logger?.warn({ key, waitedMs: this.maxWaitMs }, 'gave up waiting for another replica to fetch; fetching here too');
        return { fetched: true, value: await fetch() };
      }
    }
  }

  private async holding<T>(claimKey: string, token: string, isDone: () => Promise<boolean>, fetch: () => Promise<T>): Promise<FlightOutcome<T>> {
    const timer = setInterval(() => {
      this.command(['EVAL', RENEW, '1', claimKey, token, String(this.claimTtlMs)]).then(
        (kept) => {
          if (kept === 0) {
            clearInterval(timer);
            this.logger?.debug({ key: claimKey }, 'proxy fetch claim lost (expired); the fetch goes on');
          }
        },
        () => undefined,
      );
    }, Math.max(Math.floor(this.claimTtlMs / 3), 1));
    try {
      if (await isDone()) return { fetched: false };
      return { fetched: true, value: await fetch() };
    } finally {
      clearInterval(timer);
      await this.command(['EVAL', RELEASE, '1', claimKey, token]).catch(() => undefined);
    }
  }

  /** Resolve when the claim is gone or the deadline passed; RedisUnavailable when Redis stops answering. */
  private async whileHeld(claimKey: string, deadline: number): Promise<void> {
    while (Date.now() < deadline && !this.closed) {
      let exists: unknown;
      try {
        exists = await this.command(['EXISTS', claimKey]);
      } catch {
        throw new RedisUnavailable();
      }
      if (exists === 0) return;
      await new Promise((resolve) => setTimeout(resolve, this.pollMs));
    }
  }

  /** One command; any failure (not connected, error, timeout) is an outage, logged once until a command works. */
  private async command(args: string[]): Promise<unknown> {
    try {
      if (!this.client.isReady) throw new Error('not connected');
      const reply = await timedCommand(this.client, args, this.commandTimeoutMs);
      if (this.outage) {
        this.outage = false;
        this.logger?.info({}, 'redis available again for the proxy single-flight');
      }
      return reply;
    } catch (err) {
      if (!this.outage && !this.closed) {
        this.outage = true;
        this.logger?.warn({ err: safeMessage(err) }, 'redis unavailable for the proxy single-flight; replicas fetch without coordination');
      }
      throw err;
    }
  }
}
