/**
 * Wharf's OCI Distribution conformance suite: checks written from the words of the distribution-spec (v1.1 and
 * what its main branch adds), runnable against any registry URL.
 *
 * Checks live in `areas/<area>.ts`, one named async function per spec statement, each tagged
 *   - with a level: `required` (MUST), `optional` (SHOULD / MAY) or `strict` (Wharf's stricter promises),
 *   - with the features it needs (delete, referrers, catalog, …), so a registry that disables one by configuration
 *     can still be measured on the rest.
 * This module selects checks from options, runs them one after another (each in its own fresh repositories) and
 * reports pass / fail / skip.
 */
import { randomBytes } from 'node:crypto';
import { AREAS, OPT_IN_FEATURES, type Area, type Check, type Context, type Feature } from './check.js';
import { RegistryClient } from './client.js';
import { discoveryChecks } from './areas/discovery.js';
import { managementChecks } from './areas/management.js';
import { pullChecks } from './areas/pull.js';
import { pushChecks } from './areas/push.js';
import { referrersChecks } from './areas/referrers.js';
import { sparseChecks } from './areas/sparse.js';

export type { Area, Check, Feature, Level } from './check.js';
export { AREAS, FEATURES, OPT_IN_FEATURES } from './check.js';

/** Every check, in area order. */
export const checks: readonly Check[] = [
  ...pullChecks, ...pushChecks, ...sparseChecks, ...discoveryChecks, ...managementChecks, ...referrersChecks,
];

export interface SuiteOptions {
  /** Registry base URL, e.g. http://127.0.0.1:5000 */
  url: string;
  /** Run only these areas (all when empty or absent). */
  only?: Area[];
  /** Run only checks with these names. */
  checks?: string[];
  /** Run wharf-strict checks too. */
  strict?: boolean;
  /** Skip SHOULD/MAY checks. */
  skipOptional?: boolean;
  /** Features the registry has turned off. `delete` here also enables the `delete-disabled` checks. */
  skipFeatures?: Feature[];
  /** Opt-in features the registry has turned on (`sparse-index`; see OPT_IN_FEATURES). */
  features?: Feature[];
  /** Repository name prefix; each run adds a random segment below it. */
  namePrefix?: string;
  user?: string;
  password?: string;
  timeoutMs?: number;
}

export type Status = 'pass' | 'fail' | 'skip';

export interface CheckResult {
  check: Check;
  status: Status;
  /** Failure message, or the reason for a skip. */
  message?: string;
  durationMs: number;
}

/** Whether --only / --check select this check; unselected checks are left out of the results entirely. */
export function isSelected(check: Check, options: SuiteOptions): boolean {
  if (options.only?.length && !options.only.includes(check.area)) return false;
  return !options.checks?.length || options.checks.includes(check.name);
}

/** Why a selected check is skipped under these options (level or disabled feature), or undefined if it runs. */
export function skipReason(check: Check, options: SuiteOptions): string | undefined {
  if (check.level === 'strict' && !options.strict) return 'wharf-strict check (run with --strict)';
  if (check.level === 'optional' && options.skipOptional) return 'optional check (--skip-optional)';
  const off = new Set(options.skipFeatures ?? []);
  const on = new Set(options.features ?? []);
  for (const feature of check.features) {
    if (OPT_IN_FEATURES.includes(feature)) {
      if (!on.has(feature)) return `opt-in feature ${feature} not declared (--${feature})`;
    } else if (feature === 'complete-index') {
      if (on.has('sparse-index')) return 'the registry accepts sparse indexes (--sparse-index)';
    } else if (feature === 'delete-disabled') {
      if (!off.has('delete')) return 'runs only when deletion is declared disabled (--skip-delete)';
    } else if (off.has(feature)) {
      return `feature ${feature} skipped`;
    }
  }
  return undefined;
}

/** Creates the per-run context: one client, and repository names unique to this run. */
export function createContext(options: SuiteOptions): Context {
  const client = new RegistryClient({ url: options.url, user: options.user, password: options.password,
    timeoutMs: options.timeoutMs });
  const prefix = (options.namePrefix ?? 'conformance').replace(/\/+$/, '');
  const run = `run-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
  let counter = 0;
  const segment = (label?: string) => `${++counter}${label ? `-${label}` : ''}`;
  return {
    client,
    repo: (label) => `${prefix}/${run}/r${segment(label)}`,
    namespace: (label) => `${prefix}/${run}/ns${segment(label)}`,
  };
}

/** Runs one check and never throws: failures and unexpected errors both become a `fail` result. */
export async function runCheck(check: Check, ctx: Context): Promise<CheckResult> {
  const started = performance.now();
  try {
    await check.run(ctx);
    return { check, status: 'pass', durationMs: performance.now() - started };
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    return { check, status: 'fail', message, durationMs: performance.now() - started };
  }
}

/** Runs the selected checks one after another; `onResult` sees each result as it comes. */
export async function runSuite(options: SuiteOptions,
  onResult?: (result: CheckResult) => void): Promise<CheckResult[]> {
  const ctx = createContext(options);
  const results: CheckResult[] = [];
  for (const check of checks) {
    if (!isSelected(check, options)) continue;
    const reason = skipReason(check, options);
    const result = reason ? { check, status: 'skip' as const, message: reason, durationMs: 0 } : await runCheck(check, ctx);
    results.push(result);
    onResult?.(result);
  }
  return results;
}

/** A plain-text report: one summary line per area, then every failure with its spec reference and message. */
export function formatReport(results: CheckResult[]): string {
  const lines: string[] = [];
  const width = Math.max(...AREAS.map((a) => a.length));
  for (const a of AREAS) {
    const inArea = results.filter((r) => r.check.area === a);
    if (!inArea.length) continue;
    const count = (s: Status) => inArea.filter((r) => r.status === s).length;
    const mark = count('fail') ? 'FAIL' : count('pass') ? 'ok  ' : 'skip';
    lines.push(`${mark} ${a.padEnd(width)}  ${count('pass')} passed, ${count('fail')} failed, ${count('skip')} skipped`);
  }
  const failures = results.filter((r) => r.status === 'fail');
  if (failures.length) {
    lines.push('', `${failures.length} failure${failures.length === 1 ? '' : 's'}:`);
    for (const f of failures) {
      lines.push('', `✗ [${f.check.area}] ${f.check.name} (${f.check.level}) — ${f.check.spec}`, `    ${f.message}`);
    }
  }
  return lines.join('\n');
}
