/**
 * `wharf garbage-collect <config.yml> [--dry-run] [--delete-untagged] [--grace <duration>] [--upload-age <duration>]
 *                                     [--quiet] [--every <duration>] [--metrics-file <path>]`
 *
 * registry:2's command and flags, plus ours. Loads the same configuration and storage driver as the server and runs
 * ./worker.ts. Exit codes: 0 done, 1 the run failed (or the lock is held by another run), 2 invalid usage.
 */
import { writeFile, rename } from 'node:fs/promises';
import { storageCondition, type StorageDriver } from '../../storage-drivers/driver.js';
import { nanosToMillis, parseGoDuration } from '../config/duration.js';
import type { WharfConfig } from '../config/index.js';
import type { ProxyConfig } from '../config/index.js';
import { createDescriptorCache, type DescriptorCache } from '../cache/index.js';
import { driverFor } from '../storage.js';
import { mirroredRepositories, Quotas } from '../policies/quota.js';
import { compareQuotas } from '../policies/quota-report.js';
import { createQuotaLedger } from '../policies/quota-setup.js';
import { Policies } from '../policies/rules.js';
import { metricsText, newStats, retentionLine, startProgress, summaryText } from './report.js';
import { ProxyExpiry } from './proxy-expiry.js';
import { GcRedisUnavailableError, workerGcState, type WorkerGcState } from './redis-state.js';
import { LockBusyError, LockLostError } from './state.js';
import { DEFAULT_GRACE_MS, DEFAULT_UPLOAD_AGE_MS, collectGarbage, runRetention, type GcOptions } from './worker.js';

export const GC_USAGE = `usage: wharf garbage-collect <config.yml> [--dry-run] [--delete-untagged] [--grace <duration>]
                             [--upload-age <duration>] [--quiet] [--every <duration>] [--metrics-file <path>]
`;

export interface GcCommandOptions {
  configPath: string;
  dryRun: boolean;
  deleteUntagged: boolean;
  graceMs: number;
  uploadAgeMs: number;
  quiet: boolean;
  everyMs?: number;
  metricsFile?: string;
}

export class UsageError extends Error {}

function duration(flag: string, text: string | undefined): number {
  if (text === undefined) throw new UsageError(`${flag} needs a duration such as 1h or 30m`);
  try {
    return nanosToMillis(parseGoDuration(text));
  } catch (err) {
    throw new UsageError(`${flag}: ${(err as Error).message}`);
  }
}

export function parseGcArgs(args: string[]): GcCommandOptions {
  let configPath: string | undefined;
  const options: Omit<GcCommandOptions, 'configPath'> = {
    dryRun: false, deleteUntagged: false, graceMs: DEFAULT_GRACE_MS, uploadAgeMs: DEFAULT_UPLOAD_AGE_MS, quiet: false,
  };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const [flag, inline] = arg.startsWith('--') && arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    const value = () => inline ?? args[++i];
    switch (flag) {
      case '--dry-run': case '-d': options.dryRun = true; break;
      case '--delete-untagged': case '-m': options.deleteUntagged = true; break;
      case '--quiet': case '-q': options.quiet = true; break;
      case '--grace': options.graceMs = duration('--grace', value()); break;
      case '--upload-age': options.uploadAgeMs = duration('--upload-age', value()); break;
      case '--every': options.everyMs = duration('--every', value()); break;
      case '--metrics-file': {
        const v = value();
        if (!v) throw new UsageError('--metrics-file needs a path');
        options.metricsFile = v;
        break;
      }
      default:
        if (arg.startsWith('-') || configPath !== undefined) throw new UsageError(`unexpected argument: ${arg}`);
        configPath = arg;
    }
  }
  if (configPath === undefined) throw new UsageError('a configuration file is required');
  if (options.everyMs !== undefined && options.everyMs <= 0) throw new UsageError('--every must be positive');
  return { configPath, ...options };
}


async function writeMetricsFile(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, text);
  await rename(tmp, path);
}

/** The collectGarbage options that tie a run to its lock, live set and shared descriptor cache. */
export function sharedStateOptions(gc: WorkerGcState, cache?: DescriptorCache): Pick<GcOptions, 'lock' | 'liveSet' | 'forget' | 'forgetLink'> {
  return {
    lock: gc.lock,
    liveSet: gc.liveSet,
    forget: cache ? (d) => gc.invalidating(cache.forget(d)) : undefined,
    forgetLink: cache ? (repo, d) => gc.invalidating(cache.forgetLink(repo, d)) : undefined,
  };
}

/** One run with output; resolves to the exit code. */
async function runOnce(driver: StorageDriver, o: GcCommandOptions, gc: WorkerGcState, cache?: DescriptorCache, proxy?: ProxyConfig, policies?: Policies, quotas?: GcOptions['quotas']): Promise<number> {
  const stats = newStats(o.dryRun);
  const listing = o.dryRun && !o.quiet ? (kind: string, what: string) => void process.stdout.write(`would delete ${kind} ${what}\n`) : undefined;
  const stopProgress = o.quiet ? () => {} : startProgress(stats, process.stderr);
  let code = 0;
  try {
    await collectGarbage(driver, {
      dryRun: o.dryRun,
      deleteUntagged: o.deleteUntagged,
      graceMs: o.graceMs,
      uploadAgeMs: o.uploadAgeMs,
      stats,
      ...sharedStateOptions(gc, cache),
      onDelete: listing,
      // A mirror's cached content past its upstream's TTL (docs/mirror.md).
      expiry: proxy ? new ProxyExpiry(driver, proxy, { dryRun: o.dryRun, stats, note: listing, ...(policies ? { policies: policies.rules } : {}) }) : undefined,
      // policies.retention: its own phase before mark (docs/policies.md#retention).
      retention: policies,
      onWarning: o.quiet ? undefined : (message) => void process.stderr.write(`warning: ${message}\n`),
      quotas,
    });
    stopProgress();
    process.stdout.write(summaryText(stats));
  } catch (err) {
    stopProgress();
    code = 1;
    const condition = storageCondition(err);
    if (err instanceof LockBusyError) process.stderr.write(`wharf: garbage collection skipped: ${err.message}\n`);
    // Redis gone or the lock lost: an outage, not a bug, so its message without a stack trace.
    else if (err instanceof GcRedisUnavailableError || err instanceof LockLostError) process.stderr.write(`wharf: garbage collection failed: ${err.message}; stopped, nothing more deleted\n`);
    // A full or read-only storage: the operator's to fix, so said plainly (a run stops at its first failed write,
    // which is the lock's when the disk is already full: then nothing at all was deleted).
    else if (condition) {
      const what = condition === 'full' ? 'the storage is full' : 'the storage is read-only';
      process.stderr.write(`wharf: garbage collection failed: ${what} (${(err as Error).message}), in phase ${stats.phase}; stopped, nothing more deleted. Free some space or make the storage writable, then run it again\n`);
    } else process.stderr.write(`wharf: garbage collection failed: ${(err as Error).stack ?? String(err)}\n`);
  }
  if (o.metricsFile) await writeMetricsFile(o.metricsFile, metricsText(stats, code === 0));
  return code;
}

/** What a collection or a retention run works with besides storage; `close` ends every connection it opened. */
interface RunState {
  cache?: DescriptorCache;
  gc: WorkerGcState;
  quotas?: GcOptions['quotas'];
  close(): Promise<void>;
}

/**
 * Open the run's shared state: a shared (Redis) descriptor cache, told about every delete (an in-memory one lives in
 * each server, which keeps it switched off while the lock is held: ./recorder.ts); the lock and live set, in Redis
 * when the `redis` section is configured (./redis-state.ts), else in storage; and the quota count. Undefined, after
 * saying why on stderr, when one cannot be opened.
 */
async function openRunState(config: WharfConfig, driver: StorageDriver, policies: Policies, what: string): Promise<RunState | undefined> {
  const cache = config.storage.cache.blobdescriptor === 'redis' ? await createDescriptorCache(config) : undefined;
  let gc: WorkerGcState | undefined;
  try {
    gc = await workerGcState(config, driver, {
      clearSharedCache: cache ? async () => { await cache.clear(); return cache.healthy(); } : undefined,
    });
    const quotas = await gcQuotas(config, driver, policies);
    const opened = gc;
    return {
      cache, gc, quotas: quotas?.hooks,
      close: async () => {
        await quotas?.close();
        await opened.close();
        await cache?.close();
      },
    };
  } catch (err) {
    await gc?.close();
    await cache?.close();
    process.stderr.write(`wharf: ${what} failed: ${(err as Error).message}\n`);
    return undefined;
  }
}

/** Run once, or every `everyMs` until SIGTERM/SIGINT (a run in progress finishes first). */
export async function garbageCollectCommand(config: WharfConfig, o: GcCommandOptions): Promise<number> {
  const driver = driverFor(config);
  // One Policies for retention, mirror expiry and quotas: the rules as the run started.
  const policies = new Policies(config);
  const state = await openRunState(config, driver, policies, 'garbage collection');
  if (!state) return 1;
  try {
    return await runCommand(driver, o, state.gc, state.cache, config.proxy, policies, state.quotas);
  } finally {
    await state.close();
  }
}

/**
 * With quota rules configured: the run releases the links it removes (in Redis mode; without Redis every server
 * recounts from storage) and recounts each rule after the sweep (server/policies/quota-report.ts).
 */
async function gcQuotas(config: WharfConfig, driver: StorageDriver, policies: Policies): Promise<{ hooks: GcOptions['quotas']; close(): Promise<void> } | undefined> {
  if (config.policies.quotas.length === 0) return undefined;
  const excluded = mirroredRepositories(config);
  const ledger = await createQuotaLedger(config, driver, policies);
  const quotas = new Quotas(policies, ledger, { excluded });
  return {
    hooks: {
      release: (repository, kind, digest) => quotas.release(repository, kind, digest),
      recount: (dryRun) => compareQuotas(driver, policies.rules.quotas, ledger, { excluded, correct: !dryRun }),
    },
    close: () => ledger.close(),
  };
}

async function runCommand(driver: StorageDriver, o: GcCommandOptions, gc: WorkerGcState, cache?: DescriptorCache, proxy?: ProxyConfig, policies?: Policies, quotas?: GcOptions['quotas']): Promise<number> {
  if (o.everyMs === undefined) return runOnce(driver, o, gc, cache, proxy, policies, quotas);
  let stopping = false;
  let wake: () => void = () => {};
  const stop = () => {
    stopping = true;
    wake();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  let last = 0;
  while (!stopping) {
    last = await runOnce(driver, o, gc, cache, proxy, policies, quotas);
    if (stopping) break;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, o.everyMs);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
  return last;
}

/** The configuration's policies when it has retention rules. */
function retentionPolicies(config: WharfConfig): Policies | undefined {
  return config.policies.retention.length > 0 ? new Policies(config) : undefined;
}

export const RETENTION_USAGE = `usage: wharf retention <config.yml> [--dry-run] [--quiet]
`;

export interface RetentionCommandOptions {
  configPath: string;
  dryRun: boolean;
  quiet: boolean;
}

export function parseRetentionArgs(args: string[]): RetentionCommandOptions {
  let configPath: string | undefined;
  let dryRun = false;
  let quiet = false;
  for (const arg of args) {
    if (arg === '--dry-run' || arg === '-d') dryRun = true;
    else if (arg === '--quiet' || arg === '-q') quiet = true;
    else if (arg.startsWith('-') || configPath !== undefined) throw new UsageError(`unexpected argument: ${arg}`);
    else configPath = arg;
  }
  if (configPath === undefined) throw new UsageError('a configuration file is required');
  return { configPath, dryRun, quiet };
}

/**
 * `wharf retention <config.yml> [--dry-run] [--quiet]`: only the retention phase of a collection, under the same lock
 * (Redis when configured) and live-set protocol. Each tag and manifest deleted (or, with --dry-run, that would be) is
 * printed with its rule and reason, then a summary. Exit codes as garbage-collect.
 */
export async function retentionCommand(config: WharfConfig, o: RetentionCommandOptions): Promise<number> {
  const policies = retentionPolicies(config);
  if (!policies) {
    process.stderr.write('wharf: retention: the configuration has no policies.retention rules; nothing to do\n');
    return 0;
  }
  const driver = driverFor(config);
  const state = await openRunState(config, driver, policies, 'retention');
  if (!state) return 1;
  const stats = newStats(o.dryRun);
  try {
    await runRetention(driver, {
      dryRun: o.dryRun,
      stats,
      ...sharedStateOptions(state.gc, state.cache),
      retention: policies,
      // The revisions it removes are given back to the quota rules counting them (the recount is a collection's).
      ...(state.quotas ? { quotas: state.quotas } : {}),
      onRetention: o.quiet ? undefined : (item) =>
        void process.stdout.write(`${o.dryRun ? 'would delete' : 'deleted'} ${item.kind} ${item.what} (${item.rule}: ${item.reason})\n`),
      onWarning: o.quiet ? undefined : (message) => void process.stderr.write(`warning: ${message}\n`),
    });
    process.stdout.write(`${retentionLine(stats)}\nretention ${o.dryRun ? 'dry run ' : ''}finished in ${(stats.durationMs / 1000).toFixed(1)}s\n`);
    return 0;
  } catch (err) {
    if (err instanceof LockBusyError) process.stderr.write(`wharf: retention skipped: ${err.message}\n`);
    else if (err instanceof GcRedisUnavailableError || err instanceof LockLostError) process.stderr.write(`wharf: retention failed: ${err.message}; stopped, nothing more deleted\n`);
    else process.stderr.write(`wharf: retention failed: ${(err as Error).stack ?? String(err)}\n`);
    return 1;
  } finally {
    await state.close();
  }
}
