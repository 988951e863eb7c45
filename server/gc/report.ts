/**
 * What a collection run tells people: progress while it runs (a bar on a terminal, a line every few seconds
 * otherwise), one summary at the end, and the Prometheus text of the last run.
 */
import type { Writable } from 'node:stream';
import { comparisonText, type QuotaComparison } from '../policies/quota-report.js';

export interface GcStats {
  phase: 'lock' | 'retention' | 'mark' | 'sweep' | 'uploads' | 'quotas' | 'done';
  dryRun: boolean;
  repositories: number;
  repositoriesTotal?: number;
  repositoriesDeleted: number;
  manifestsMarked: number;
  manifestsDeleted: number;
  blobsMarked: number;
  blobsSeen: number;
  blobsDeleted: number;
  linksDeleted: number;
  bytesFreed: number;
  uploadsPurged: number;
  /** Files an interrupted earlier run had moved aside and this run put back. */
  restored: number;
  /** Live manifests whose bytes were missing (a damaged registry; reported, never fatal). */
  missingManifests: number;
  /** Mirrored tags and manifest revisions removed because their TTL passed (./proxy-expiry.ts); the revisions are
   *  also counted in manifestsDeleted. */
  expiredTags: number;
  expiredManifests: number;
  /** Retention (server/policies/retention-run.ts): repositories a rule covered, tags and untagged manifests deleted
   *  (the manifests are not counted in manifestsDeleted), deletes skipped because a push touched them, and tags
   *  deleted while a push wrote into their repository. */
  retentionRepositories: number;
  retentionTagsDeleted: number;
  retentionManifestsDeleted: number;
  retentionSkipped: number;
  retentionRaced: number;
  startedAt: number;
  durationMs: number;
  /** Each quota rule recounted after the sweep, next to the running count (server/policies/quota-report.ts). */
  quotas?: QuotaComparison[];
}

export function newStats(dryRun: boolean): GcStats {
  return {
    phase: 'lock', dryRun, repositories: 0, repositoriesDeleted: 0, manifestsMarked: 0, manifestsDeleted: 0,
    blobsMarked: 0, blobsSeen: 0, blobsDeleted: 0, linksDeleted: 0, bytesFreed: 0, uploadsPurged: 0, restored: 0,
    missingManifests: 0, expiredTags: 0, expiredManifests: 0,
    retentionRepositories: 0, retentionTagsDeleted: 0, retentionManifestsDeleted: 0, retentionSkipped: 0, retentionRaced: 0,
    startedAt: Date.now(), durationMs: 0,
  };
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

function progressText(s: GcStats): string {
  if (s.phase === 'mark') {
    const total = s.repositoriesTotal;
    return `mark: ${s.repositories}${total !== undefined ? `/${total}` : ''} repositories, ${s.manifestsMarked} manifests, ${s.blobsMarked} digests live`;
  }
  if (s.phase === 'retention') return `retention: ${s.retentionRepositories} repositories, ${s.retentionTagsDeleted} tags and ${s.retentionManifestsDeleted} manifests deleted`;
  if (s.phase === 'sweep') return `sweep: ${s.blobsSeen} blobs examined, ${s.blobsDeleted} deleted (${formatBytes(s.bytesFreed)})`;
  return `${s.phase}`;
}

/** Reports progress every `intervalMs` until stopped: `\r`-redrawn on a TTY, one line each time otherwise. */
export function startProgress(stats: GcStats, out: Writable & { isTTY?: boolean }, intervalMs?: number): () => void {
  const tty = out.isTTY === true;
  const every = intervalMs ?? (tty ? 200 : 10_000);
  const draw = () => {
    const text = progressText(stats);
    if (tty) {
      const bar = stats.phase === 'mark' && stats.repositoriesTotal
        ? `[${'#'.repeat(Math.round((20 * stats.repositories) / stats.repositoriesTotal)).padEnd(20, '.')}] `
        : '';
      out.write(`\r\x1b[K${bar}${text}`);
    } else {
      out.write(`progress: ${text}\n`);
    }
  };
  const timer = setInterval(draw, every);
  timer.unref();
  return () => {
    clearInterval(timer);
    if (tty) out.write('\r\x1b[K');
  };
}

export function summaryText(s: GcStats): string {
  const verb = s.dryRun ? 'would delete' : 'deleted';
  return [
    `repositories: ${s.repositories} marked, ${s.repositoriesDeleted} ${verb}`,
    `manifests: ${s.manifestsMarked} marked, ${s.manifestsDeleted} ${verb}`,
    `blobs: ${s.blobsMarked} marked, ${s.blobsDeleted} ${verb}, ${formatBytes(s.bytesFreed)} ${s.dryRun ? 'would be freed' : 'freed'}`,
    `links: ${s.linksDeleted} ${verb}; upload sessions: ${s.uploadsPurged} ${s.dryRun ? 'would be purged' : 'purged'}`,
    ...(s.expiredTags || s.expiredManifests ? [`mirror TTL: ${s.expiredTags} tags and ${s.expiredManifests} manifests ${s.dryRun ? 'would expire' : 'expired'}`] : []),
    ...(s.retentionRepositories ? [retentionLine(s)] : []),
    ...(s.restored ? [`restored ${s.restored} files an interrupted run had set aside`] : []),
    ...(s.missingManifests ? [`warning: ${s.missingManifests} live manifests have no content`] : []),
    ...(s.quotas?.length ? comparisonText(s.quotas).trimEnd().split('\n').map((l) => `quota ${l}`) : []),
    // Last, one line that says it all (log tails and the benchmark show the last line).
    `garbage collection ${s.dryRun ? 'dry run ' : ''}finished in ${(s.durationMs / 1000).toFixed(1)}s: ` +
      `${s.blobsDeleted} blobs (${formatBytes(s.bytesFreed)}), ${s.manifestsDeleted} manifests, ` +
      `${s.repositoriesDeleted} repositories ${verb}`,
  ].join('\n') + '\n';
}

/** The retention phase's figures in one line. */
export function retentionLine(s: GcStats): string {
  const verb = s.dryRun ? 'would delete' : 'deleted';
  return `retention: ${s.retentionRepositories} repositories under a rule, ${s.retentionTagsDeleted} tags and ` +
    `${s.retentionManifestsDeleted} untagged manifests ${verb}` +
    (s.retentionSkipped ? `, ${s.retentionSkipped} kept because a push touched them during the run` : '') +
    (s.retentionRaced ? `; warning: ${s.retentionRaced} tags deleted while a push wrote into their repository` : '');
}

/** Prometheus text exposition of a finished (or failed) run. */
export function metricsText(s: GcStats, success: boolean, finishedAt = Date.now()): string {
  const g = (name: string, help: string, value: number) => `# HELP ${name} ${help}\n# TYPE ${name} gauge\n${name} ${value}\n`;
  return [
    g('wharf_gc_last_run_success', 'Whether the last garbage collection succeeded (1) or failed (0).', success ? 1 : 0),
    g('wharf_gc_last_run_timestamp_seconds', 'When the last garbage collection finished.', Math.floor(finishedAt / 1000)),
    g('wharf_gc_last_run_duration_seconds', 'Duration of the last garbage collection.', s.durationMs / 1000),
    g('wharf_gc_last_run_dry_run', 'Whether the last run was a dry run.', s.dryRun ? 1 : 0),
    g('wharf_gc_repositories_marked', 'Repositories examined by the last run.', s.repositories),
    g('wharf_gc_repositories_deleted', 'Emptied repositories removed by the last run.', s.repositoriesDeleted),
    g('wharf_gc_manifests_marked', 'Live manifests found by the last run.', s.manifestsMarked),
    g('wharf_gc_manifests_deleted', 'Manifest revisions deleted by the last run.', s.manifestsDeleted),
    g('wharf_gc_blobs_marked', 'Live digests found by the last run.', s.blobsMarked),
    g('wharf_gc_blobs_deleted', 'Blobs deleted by the last run.', s.blobsDeleted),
    g('wharf_gc_bytes_freed', 'Bytes freed by the last run.', s.bytesFreed),
    g('wharf_gc_links_deleted', 'Repository links deleted by the last run.', s.linksDeleted),
    g('wharf_gc_uploads_purged', 'Stale upload sessions purged by the last run.', s.uploadsPurged),
    g('wharf_gc_proxy_expired_tags', 'Mirrored tags past their TTL removed by the last run.', s.expiredTags),
    g('wharf_gc_proxy_expired_manifests', 'Mirrored manifest revisions past their TTL removed by the last run.', s.expiredManifests),
    g('wharf_gc_retention_tags_deleted', 'Tags deleted by retention rules in the last run.', s.retentionTagsDeleted),
    g('wharf_gc_retention_manifests_deleted', 'Untagged manifests deleted by retention rules in the last run.', s.retentionManifestsDeleted),
    ...(s.quotas?.length ? [quotaMetrics(s.quotas)] : []),
  ].join('');
}

/** Each quota rule's recount and its difference from the running count (label: the rule's name). */
function quotaMetrics(rows: readonly QuotaComparison[]): string {
  const label = (rule: string) => `{rule="${rule.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"}`;
  return [
    '# HELP wharf_gc_quota_usage_bytes Each quota rule\'s usage recounted from storage by the last run.',
    '# TYPE wharf_gc_quota_usage_bytes gauge',
    ...rows.map((q) => `wharf_gc_quota_usage_bytes${label(q.rule)} ${q.usage}`),
    '# HELP wharf_gc_quota_drift_bytes Running count minus the recount, per quota rule, as the last run found them (before any correction).',
    '# TYPE wharf_gc_quota_drift_bytes gauge',
    ...rows.map((q) => `wharf_gc_quota_drift_bytes${label(q.rule)} ${(q.running ?? q.usage) - q.usage}`),
  ].join('\n') + '\n';
}
