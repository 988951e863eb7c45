/**
 * Quotas as configured, for the server, `wharf quota` and the garbage collector: the Redis ledger when the `redis`
 * section is configured, else the storage ledger; mirrored repositories left out.
 */
import type { StorageDriver } from '../../storage-drivers/driver.js';
import { redisConnectionOptions } from '../cache/index.js';
import type { WharfConfig } from '../config/index.js';
import { mirroredRepositories, Quotas, StorageQuotaLedger, type QuotaLedger } from './quota.js';
import { RedisQuotaLedger } from './quota-redis.js';
import type { Policies, QuotaRule } from './rules.js';

export interface QuotaSetupOptions {
  logger?: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void };
  onRefused?: (rule: QuotaRule) => void;
  /** Redis key prefix (tests). */
  redisPrefix?: string;
}

export interface QuotaSetup {
  quotas: Quotas;
  ledger: QuotaLedger;
  /** Each rule's running figure (undefined usage: not counted yet), for the metrics. */
  figures(): Promise<Array<{ rule: string; usage?: number }>>;
  /** Each rule's maxsize, from the rules in force (no I/O). */
  limits(): Array<{ rule: string; limit: number }>;
  close(): Promise<void>;
}

/** The configured ledger (Redis connected, or the storage one). */
export async function createQuotaLedger(
  config: WharfConfig,
  driver: StorageDriver,
  policies: Policies,
  options: QuotaSetupOptions = {},
): Promise<QuotaLedger> {
  const excluded = mirroredRepositories(config);
  if (config.redis && (config.redis.addr !== undefined || config.redis.url !== undefined)) {
    const ledger = new RedisQuotaLedger(driver, {
      ...redisConnectionOptions(config.redis),
      excluded,
      ...(options.logger ? { logger: options.logger } : {}),
      ...(options.redisPrefix ? { prefix: options.redisPrefix } : {}),
    });
    if (policies.rules.quotas.length > 0) await ledger.connect();
    return ledger;
  }
  return new StorageQuotaLedger(driver, () => policies.rules.quotas, { excluded });
}

export async function createQuotas(
  config: WharfConfig,
  driver: StorageDriver,
  policies: Policies,
  options: QuotaSetupOptions = {},
): Promise<QuotaSetup> {
  const ledger = await createQuotaLedger(config, driver, policies, options);
  const quotas = new Quotas(policies, ledger, {
    excluded: mirroredRepositories(config),
    ...(options.onRefused ? { onRefused: options.onRefused } : {}),
    onReleaseFailed: (err, link) =>
      options.logger?.warn({ err, repository: link.repository, digest: link.digest }, 'quota: a release could not be recorded; the count is rebuilt'),
  });
  return {
    quotas,
    ledger,
    async figures() {
      const rules = policies.rules.quotas;
      if (rules.length === 0) return [];
      // Without Redis, a scrape recounts when the figure is older than the refresh interval (at most one walk per
      // interval), so the gauge shows other replicas' pushes too.
      const held = await ledger.usage(rules);
      return rules.map((r) => {
        const usage = held.get(r.id)?.usage;
        return { rule: r.name, ...(usage !== undefined ? { usage } : {}) };
      });
    },
    limits: () => policies.rules.quotas.map((r) => ({ rule: r.name, limit: r.maxsize })),
    close: () => ledger.close(),
  };
}
