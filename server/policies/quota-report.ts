/**
 * Quota figures for people: the running count of each rule next to a fresh recount from storage, for
 * `wharf quota <config.yml> [--json]` and the garbage collector's recount phase (which, in Redis mode, also corrects
 * a drifted count when nothing changed it during the recount).
 */
import type { StorageDriver } from '../../storage-drivers/driver.js';
import type { WharfConfig } from '../config/index.js';
import { driverFor } from '../storage.js';
import { BlobSizes, formatBytes, mirroredRepositories, recount, type QuotaLedger } from './quota.js';
import { RedisQuotaLedger, type RedisRuleFigures } from './quota-redis.js';
import { createQuotaLedger } from './quota-setup.js';
import { Policies, type QuotaRule } from './rules.js';

export interface QuotaComparison {
  rule: string;
  maxsize: number;
  /** Usage recounted from storage now. */
  usage: number;
  repositories: number;
  /** Where the running count lives. */
  mode: 'redis' | 'storage';
  /**
   * The running count: Redis's figure (undefined when it is not built yet); without Redis every process counts from
   * storage, so it is the recount itself.
   */
  running?: number;
  /** Redis: the count changed while storage was recounted (pushes or deletes meanwhile), so the two may differ. */
  changedDuring?: boolean;
  /** Redis: the count was replaced by the recount (it had drifted and nothing changed it meanwhile). */
  corrected?: boolean;
}

/** Recount every rule from storage and put it next to the running count; with `correct`, fix a drifted Redis count. */
export async function compareQuotas(
  driver: StorageDriver,
  rules: readonly QuotaRule[],
  ledger: QuotaLedger,
  options: {
    excluded?: (repository: string) => boolean;
    correct?: boolean;
    /** What happens between the two recounts of a drifted rule (default: a one-second pause). */
    settle?: () => Promise<void>;
  } = {},
): Promise<QuotaComparison[]> {
  const redis = ledger instanceof RedisQuotaLedger ? ledger : undefined;
  const before = new Map<string, RedisRuleFigures>();
  if (redis) for (const r of rules) before.set(r.id, await redis.figures(r));
  const counts = await recount(driver, rules, new BlobSizes(driver), options.excluded);
  const out: QuotaComparison[] = [];
  for (const r of rules) {
    const count = counts.get(r.id)!;
    const base = { rule: r.name, maxsize: r.maxsize, usage: count.usage, repositories: count.repositories() };
    if (!redis) {
      out.push({ ...base, mode: 'storage', running: count.usage });
      continue;
    }
    const b = before.get(r.id)!;
    const after = await redis.figures(r);
    const changedDuring = b.version !== after.version;
    const drifted = !after.ready || after.usage !== count.usage || after.links !== count.links.size;
    let corrected = false;
    if (options.correct && drifted && !changedDuring) {
      // A link charged just before the version was read may still have been on its way to storage when its
      // repository was listed: a second recount a moment later must agree before the count is replaced.
      await (options.settle ? options.settle() : new Promise((resolve) => setTimeout(resolve, 1000)));
      const again = (await recount(driver, [r], new BlobSizes(driver), options.excluded)).get(r.id)!;
      const same = again.usage === count.usage && again.links.size === count.links.size && [...again.links].every((l) => count.links.has(l));
      corrected = same && (await redis.correct(r, b.version, again));
    }
    out.push({
      ...base,
      mode: 'redis',
      ...(after.ready ? { running: after.usage } : {}),
      changedDuring,
      ...(options.correct ? { corrected } : {}),
    });
  }
  return out;
}

/** One line per rule, and a line for each difference. */
export function comparisonText(rows: readonly QuotaComparison[]): string {
  if (rows.length === 0) return 'quotas: none configured\n';
  const lines: string[] = [];
  for (const q of rows) {
    const pct = q.maxsize > 0 ? ((100 * (q.running ?? q.usage)) / q.maxsize).toFixed(1) : '0';
    lines.push(`${q.rule}: ${formatBytes(q.running ?? q.usage)} of ${formatBytes(q.maxsize)} (${pct}%), ${q.repositories} repositories; running count (${q.mode}) ${q.running ?? 'not built yet'}, recount ${q.usage} bytes`);
    if (q.running !== undefined && q.running !== q.usage) {
      lines.push(`  differs: running count ${q.running} bytes, recount ${q.usage} bytes (${q.running > q.usage ? '+' : ''}${q.running - q.usage})${q.changedDuring ? '; the count changed during the recount (pushes or deletes meanwhile)' : ''}${q.corrected ? '; corrected to the recount' : ''}`);
    } else if (q.corrected) {
      lines.push('  running count built from the recount');
    }
  }
  return `${lines.join('\n')}\n`;
}

export const QUOTA_USAGE = 'usage: wharf quota <config.yml> [--json]\n';

/** `wharf quota`: resolves to the exit code (0 done, 1 failure, 2 usage). */
export async function quotaCommand(args: string[], load: (path: string) => Promise<{ config: WharfConfig }>): Promise<number> {
  const json = args.includes('--json');
  const rest = args.filter((a) => a !== '--json');
  if (rest.length !== 1 || rest[0]!.startsWith('-')) {
    process.stderr.write(`wharf: ${rest.length === 0 ? 'a configuration file is required' : `unexpected argument: ${rest.find((a, i) => i > 0 || a.startsWith('-'))}`}\n${QUOTA_USAGE}`);
    return 2;
  }
  const { config } = await load(rest[0]!);
  const driver = driverFor(config);
  const policies = new Policies(config);
  let ledger: QuotaLedger | undefined;
  try {
    ledger = await createQuotaLedger(config, driver, policies);
    const rows = await compareQuotas(driver, policies.rules.quotas, ledger, { excluded: mirroredRepositories(config) });
    process.stdout.write(json ? `${JSON.stringify({ quotas: rows }, null, 2)}\n` : comparisonText(rows));
    return 0;
  } catch (err) {
    process.stderr.write(`wharf: quota failed: ${(err as Error).message}\n`);
    return 1;
  } finally {
    await ledger?.close();
  }
}
