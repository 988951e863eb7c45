/**
 * The quota count in Redis, shared by every replica (docs/policies.md#quotas, docs/redis.md). Per rule id, under
 * the prefix (default `wharf:quota:`):
 *   <p><id>:links     set of links `l|<repo>|<digest>` / `m|<repo>|<digest>`
 *   <p><id>:refs      hash digest → number of links naming it
 *   <p><id>:sizes     hash digest → size
 *   <p><id>:usage     the sum of `sizes`
 *   <p><id>:version   bumped by every change (and every release while the count is being built)
 *   <p><id>:ready     set once the count was built from storage; absent: it must be (re)built
 *   <p><id>:lock      held by the one process building it
 * Each operation is one Lua script over all the rules of a repository, so a charge is checked and applied atomically:
 * replicas racing for the last bytes cannot exceed `maxsize` together.
 */
import { randomUUID } from 'node:crypto';
import type { StorageDriver } from '../../storage-drivers/driver.js';
import { closeRedisClient, createRedisClient, dialWithin, safeMessage, timedCommand, type AnyRedisClient, type RedisConnectionOptions } from '../cache/redis.js';
import { RegistryError } from '../registry/errors.js';
import { BlobSizes, linkKey, recount, type LinkCount } from './quota-count.js';
import type { QuotaLedger, QuotaLink, QuotaVerdict } from './quota.js';
import type { QuotaRule } from './rules.js';

export const QUOTA_KEY_PREFIX = 'wharf:quota:';

// ARGV: prefix, link, digest, size, n, then n × (id, maxsize)
const CHARGE = `
local p, link, d, size, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
for i = 0, n - 1 do
  local k = p .. ARGV[6 + 2 * i] .. ':'
  if redis.call('EXISTS', k .. 'ready') == 0 then return {'notready', ARGV[6 + 2 * i]} end
  if redis.call('SISMEMBER', k .. 'links', link) == 0 and not redis.call('HGET', k .. 'refs', d) then
    local usage = tonumber(redis.call('GET', k .. 'usage') or '0')
    if usage + size > tonumber(ARGV[7 + 2 * i]) then return {'full', ARGV[6 + 2 * i], tostring(usage)} end
  end
end
local added = 0
for i = 0, n - 1 do
  local k = p .. ARGV[6 + 2 * i] .. ':'
  if redis.call('SADD', k .. 'links', link) == 1 then
    added = 1
    if redis.call('HINCRBY', k .. 'refs', d, 1) == 1 then
      redis.call('HSET', k .. 'sizes', d, size)
      redis.call('INCRBY', k .. 'usage', size)
    end
    redis.call('INCR', k .. 'version')
  end
end
return {'ok', tostring(added)}`;

// ARGV: prefix, link, digest, n, ids...
const RELEASE = `
local p, link, d, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
for i = 0, n - 1 do
  local k = p .. ARGV[5 + i] .. ':'
  if redis.call('SREM', k .. 'links', link) == 1 then
    if redis.call('HINCRBY', k .. 'refs', d, -1) <= 0 then
      redis.call('HDEL', k .. 'refs', d)
      local s = tonumber(redis.call('HGET', k .. 'sizes', d) or '0')
      redis.call('HDEL', k .. 'sizes', d)
      redis.call('DECRBY', k .. 'usage', s)
    end
    redis.call('INCR', k .. 'version')
  elseif redis.call('EXISTS', k .. 'ready') == 0 then
    redis.call('INCR', k .. 'version')
  end
end
return 1`;

// ARGV: prefix, bytes, digest ('' for none), n, then n × (id, maxsize)
const ROOM = `
local p, bytes, d, n = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
for i = 0, n - 1 do
  local k = p .. ARGV[5 + 2 * i] .. ':'
  if redis.call('EXISTS', k .. 'ready') == 0 then return {'notready', ARGV[5 + 2 * i]} end
  if d == '' or not redis.call('HGET', k .. 'refs', d) then
    local usage = tonumber(redis.call('GET', k .. 'usage') or '0')
    local max = tonumber(ARGV[6 + 2 * i])
    if (bytes == 0 and usage >= max) or (bytes > 0 and usage + bytes > max) then return {'full', ARGV[5 + 2 * i], tostring(usage)} end
  end
end
return {'ok', '0'}`;

// ARGV: prefix, id, token, version expected, build prefix, force ('1': install even if the version moved)
const INSTALL = `
local k = ARGV[1] .. ARGV[2] .. ':'
if redis.call('GET', k .. 'lock') ~= ARGV[3] then return 'lost' end
if ARGV[6] ~= '1' and (redis.call('GET', k .. 'version') or '0') ~= ARGV[4] then return 'moved' end
local b = ARGV[5]
redis.call('DEL', k .. 'links', k .. 'refs', k .. 'sizes')
for _, s in ipairs({'links', 'refs', 'sizes'}) do
  if redis.call('EXISTS', b .. s) == 1 then redis.call('RENAME', b .. s, k .. s) end
end
redis.call('SET', k .. 'usage', redis.call('GET', b .. 'usage') or '0')
redis.call('DEL', b .. 'usage')
redis.call('INCR', k .. 'version')
redis.call('SET', k .. 'ready', '1')
redis.call('DEL', k .. 'lock')
return 'ok'`;

// ARGV: prefix, id, token
const UNLOCK = `
local k = ARGV[1] .. ARGV[2] .. ':'
if redis.call('GET', k .. 'lock') == ARGV[3] then redis.call('DEL', k .. 'lock') end
return 1`;

export interface RedisQuotaOptions extends RedisConnectionOptions {
  prefix?: string;
  /** How long a push waits for another process to build a rule's count before it is answered 503. Default 10 s. */
  buildWaitMs?: number;
  /** How long the build lock is held at most (a crashed builder's lock expires). Default 5 min. */
  lockMs?: number;
  /** Repositories not counted (the mirror's). */
  excluded?: (repository: string) => boolean;
  logger?: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void };
}

/** Redis could not answer: the push is answered 503, never waits past the configured timeouts. */
function unavailable(err: unknown): RegistryError {
  return new RegistryError('UNAVAILABLE', `quota count unavailable (redis): ${safeMessage(err)}`);
}

/** One rule's figures as read from Redis. */
export interface RedisRuleFigures {
  ready: boolean;
  usage: number;
  version: string;
  links: number;
}

export class RedisQuotaLedger implements QuotaLedger {
  readonly mode = 'redis' as const;
  private readonly client: AnyRedisClient;
  readonly prefix: string;
  private readonly timeoutMs: number;
  private readonly dialTimeoutMs: number;
  private readonly sizes: BlobSizes;
  /** Rules whose count missed a release during an outage: their `ready` is dropped (a rebuild) once Redis answers. */
  private readonly dirty = new Set<string>();
  private readonly building = new Map<string, Promise<void>>();

  constructor(private readonly driver: StorageDriver, private readonly options: RedisQuotaOptions) {
    this.prefix = options.prefix ?? QUOTA_KEY_PREFIX;
    this.timeoutMs = options.commandTimeoutMs ?? 3000;
    this.dialTimeoutMs = options.dialTimeoutMs ?? 5000;
    this.sizes = new BlobSizes(driver);
    this.client = createRedisClient(options, () => {});
  }

  /**
   * Connect, waiting at most the dial timeout (node-redis goes on reconnecting in the background). Called at start
   * when quota rules are configured, else on first use (a SIGHUP may add rules), so a process without quotas never
   * dials Redis for them.
   */
  connect(): Promise<void> {
    this.connecting ??= dialWithin(this.client, this.dialTimeoutMs);
    return this.connecting;
  }

  private connecting?: Promise<void>;

  private async command(args: string[]): Promise<unknown> {
    if (!this.connecting) await this.connect();
    return timedCommand(this.client, args, this.timeoutMs);
  }

  private async script(script: string, args: string[]): Promise<unknown> {
    if (this.dirty.size > 0) {
      const ids = [...this.dirty];
      await this.command(['DEL', ...ids.map((id) => `${this.prefix}${id}:ready`)]);
      for (const id of ids) this.dirty.delete(id);
    }
    return this.command(['EVAL', script, '0', this.prefix, ...args]);
  }

  /** Run a decision script; when a rule's count is not built, build it (or wait for the process building it). */
  private async decide(script: string, args: string[]): Promise<[string, string, string?]> {
    const deadline = Date.now() + (this.options.buildWaitMs ?? 10_000);
    for (;;) {
      let reply: [string, string, string?];
      try {
        reply = (await this.script(script, args)) as [string, string, string?];
      } catch (err) {
        throw unavailable(err);
      }
      if (reply[0] !== 'notready') return reply;
      if (Date.now() > deadline) {
        throw new RegistryError('UNAVAILABLE', 'quota count is being built from storage; retry shortly', { detail: { rule: reply[1] } });
      }
      await this.build(reply[1]);
    }
  }

  private rulesById(rules: readonly QuotaRule[]): Map<string, QuotaRule> {
    for (const r of rules) this.known.set(r.id, r);
    return new Map(rules.map((r) => [r.id, r]));
  }

  async room(rules: readonly QuotaRule[], bytes: number, digest?: string): Promise<QuotaVerdict> {
    const byId = this.rulesById(rules);
    const reply = await this.decide(ROOM, [String(bytes), digest ?? '', String(rules.length), ...rules.flatMap((r) => [r.id, String(r.maxsize)])]);
    return reply[0] === 'full' ? { ok: false, rule: byId.get(reply[1])!, usage: Number(reply[2]) } : { ok: true, added: false };
  }

  async charge(rules: readonly QuotaRule[], link: QuotaLink, size: number): Promise<QuotaVerdict> {
    const byId = this.rulesById(rules);
    const key = linkKey(link.repository, link.kind, link.digest);
    const reply = await this.decide(CHARGE, [key, link.digest, String(size), String(rules.length), ...rules.flatMap((r) => [r.id, String(r.maxsize)])]);
    return reply[0] === 'full' ? { ok: false, rule: byId.get(reply[1])!, usage: Number(reply[2]) } : { ok: true, added: reply[1] === '1' };
  }

  async release(rules: readonly QuotaRule[], link: QuotaLink): Promise<void> {
    const key = linkKey(link.repository, link.kind, link.digest);
    try {
      await this.script(RELEASE, [key, link.digest, String(rules.length), ...rules.map((r) => r.id)]);
    } catch (err) {
      for (const r of rules) this.dirty.add(r.id);
      throw unavailable(err);
    }
  }

  /** The rules last asked about, so a build can find a rule by id. */
  private known = new Map<string, QuotaRule>();

  /** Build the count of rule `id` from storage, unless another process is (then wait a little and return). */
  private build(id: string): Promise<void> {
    let running = this.building.get(id);
    if (!running) {
      running = this.buildOnce(id).finally(() => this.building.delete(id));
      this.building.set(id, running);
    }
    return running;
  }

  private async buildOnce(id: string): Promise<void> {
    const rule = this.known.get(id);
    if (!rule) return;
    const token = randomUUID();
    const k = `${this.prefix}${id}:`;
    let got: unknown;
    try {
      got = await this.command(['SET', `${k}lock`, token, 'NX', 'PX', String(this.options.lockMs ?? 300_000)]);
    } catch (err) {
      throw unavailable(err);
    }
    if (got !== 'OK') {
      await new Promise((r) => setTimeout(r, 100));
      return;
    }
    try {
      // Another process may have built it between the 'notready' that sent us here and our lock. Building again
      // would recount storage while charges flow, and a charge whose link is not written yet is missing from
      // storage: the recount would drop it (and after 5 moved versions be installed anyway), letting replicas
      // exceed maxsize together.
      if (Number(await this.command(['EXISTS', `${k}ready`])) === 1) return;
      for (let attempt = 1; ; attempt++) {
        const version = String((await this.command(['GET', `${k}version`])) ?? '0');
        const count = (await recount(this.driver, [rule], this.sizes, this.options.excluded)).get(id)!;
        const build = `${k}build:${token}:`;
        await this.writeBuild(build, count);
        const force = attempt >= 5;
        const reply = await this.command(['EVAL', INSTALL, '0', this.prefix, id, token, version, build, force ? '1' : '0']);
        if (reply === 'ok') {
          this.options.logger?.info({ rule: rule.name, usage: count.usage }, 'quota count built from storage');
          return;
        }
        await this.command(['DEL', `${build}links`, `${build}refs`, `${build}sizes`, `${build}usage`]);
        if (reply === 'lost') return;
      }
    } catch (err) {
      if (err instanceof RegistryError) throw err;
      throw unavailable(err);
    } finally {
      await this.command(['EVAL', UNLOCK, '0', this.prefix, id, token]).catch(() => {});
    }
  }

  /** Write a count under temporary keys, in batches (installed by one script). */
  private async writeBuild(build: string, count: LinkCount): Promise<void> {
    const batch = 500;
    const links = [...count.links];
    for (let i = 0; i < links.length; i += batch) await this.command(['SADD', `${build}links`, ...links.slice(i, i + batch)]);
    const refs = [...count.refs];
    for (let i = 0; i < refs.length; i += batch) {
      const part = refs.slice(i, i + batch);
      await this.command(['HSET', `${build}refs`, ...part.flatMap(([d, n]) => [d, String(n)])]);
      await this.command(['HSET', `${build}sizes`, ...part.flatMap(([d]) => [d, String(count.sizes.get(d) ?? 0)])]);
    }
    await this.command(['SET', `${build}usage`, String(count.usage)]);
  }

  /** Each rule's figures in Redis (the command, the metrics, the GC recount). */
  async figures(rule: QuotaRule): Promise<RedisRuleFigures> {
    const k = `${this.prefix}${rule.id}:`;
    const [ready, usage, version, links] = (await Promise.all([
      this.command(['EXISTS', `${k}ready`]),
      this.command(['GET', `${k}usage`]),
      this.command(['GET', `${k}version`]),
      this.command(['SCARD', `${k}links`]),
    ])) as [number, string | null, string | null, number];
    return { ready: Number(ready) === 1, usage: Number(usage ?? 0), version: version ?? '0', links: Number(links) };
  }

  async usage(rules: readonly QuotaRule[]): Promise<Map<string, { usage: number; repositories?: number } | undefined>> {
    const out = new Map<string, { usage: number } | undefined>();
    for (const r of rules) {
      const f = await this.figures(r);
      out.set(r.id, f.ready ? { usage: f.usage } : undefined);
    }
    return out;
  }

  /**
   * Replace a rule's count with `count` (a recount from storage) when its version is still `version`, i.e. nothing
   * changed it since the caller read the version before recounting. Returns whether it was replaced.
   */
  async correct(rule: QuotaRule, version: string, count: LinkCount): Promise<boolean> {
    const token = randomUUID();
    const k = `${this.prefix}${rule.id}:`;
    if ((await this.command(['SET', `${k}lock`, token, 'NX', 'PX', String(this.options.lockMs ?? 300_000)])) !== 'OK') return false;
    try {
      const build = `${k}build:${token}:`;
      await this.writeBuild(build, count);
      const reply = await this.command(['EVAL', INSTALL, '0', this.prefix, rule.id, token, version, build, '0']);
      if (reply !== 'ok') await this.command(['DEL', `${build}links`, `${build}refs`, `${build}sizes`, `${build}usage`]);
      return reply === 'ok';
    } finally {
      await this.command(['EVAL', UNLOCK, '0', this.prefix, rule.id, token]).catch(() => {});
    }
  }

  async close(): Promise<void> {
    if (this.connecting) await closeRedisClient(this.client);
  }
}
