/**
 * Quotas (`policies.quotas`, docs/policies.md#quotas): the usage of a rule is the sum of the sizes of the distinct
 * digests linked (layer links and manifest revision links) in the repositories it matches. `Quotas` is what the
 * registry asks before it links anything (`room`, `charge`) and tells after it unlinked (`release`); the count itself
 * is a `QuotaLedger`: `StorageQuotaLedger` below (no Redis: recounted from storage, refreshed every few seconds) or
 * `RedisQuotaLedger` (./quota-redis.ts: one atomic count shared by every replica).
 */
import { performance } from 'node:perf_hooks';
import type { StorageDriver } from '../../storage-drivers/driver.js';
import type { WharfConfig } from '../config/index.js';
import { routeOf } from '../proxy/routing.js';
import { RegistryError } from '../registry/errors.js';
import { BlobSizes, LinkCount, linkKey, recount, type LinkKind } from './quota-count.js';
import type { Policies, QuotaRule } from './rules.js';

export { LinkCount, BlobSizes, linkKey, recount, type LinkKind } from './quota-count.js';

/** A link being charged or released. */
export interface QuotaLink {
  repository: string;
  kind: LinkKind;
  digest: string;
}

export type QuotaVerdict = { ok: true; added: boolean } | { ok: false; rule: QuotaRule; usage: number };

/** Where a rule's running count lives. */
export interface QuotaLedger {
  readonly mode: 'redis' | 'storage';
  /**
   * Whether `bytes` more fit in every rule of `rules` (with 0: whether any room is left at all). A digest already
   * counted for a rule costs that rule nothing.
   */
  room(rules: readonly QuotaRule[], bytes: number, digest?: string): Promise<QuotaVerdict>;
  /** Count the link for every rule of `rules`, or for none when it does not fit one of them. */
  charge(rules: readonly QuotaRule[], link: QuotaLink, size: number): Promise<QuotaVerdict>;
  /** The link is gone from storage: uncount it. */
  release(rules: readonly QuotaRule[], link: QuotaLink): Promise<void>;
  /** The running figure of each rule (for the command and the metrics): usage and repositories, when known. */
  usage(rules: readonly QuotaRule[]): Promise<Map<string, { usage: number; repositories?: number } | undefined>>;
  close(): Promise<void>;
}

/** Bytes as people read them: `512 MiB`, `9.8 GiB`, `100 B`. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  if (i === 0) return `${n} B`;
  const s = v >= 100 || Number.isInteger(v) ? v.toFixed(0) : v.toFixed(1).replace(/\.0$/, '');
  return `${s} ${units[i]}`;
}

/** The DENIED a refusal answers with: the rule's name and the figures (bytes in `detail`). */
export function quotaExceeded(rule: QuotaRule, usage: number, size: number, what = 'this blob'): RegistryError {
  return new RegistryError(
    'DENIED',
    `quota ${rule.name} exceeded: ${formatBytes(usage)} of ${formatBytes(rule.maxsize)} used, ${what} needs ${formatBytes(size)}`,
    { detail: { rule: rule.name, maxsize: rule.maxsize, usage, size }, reason: { kind: 'policy-refused', policy: 'quotas' } },
  );
}

/** Whether a repository is a mirror's (a `proxy` upstream's): those are neither counted nor refused. */
export function mirroredRepositories(config: Pick<WharfConfig, 'proxy'>): (repository: string) => boolean {
  const proxy = config.proxy;
  return proxy ? (name) => routeOf(proxy, name) !== undefined : () => false;
}

export interface QuotasOptions {
  /** Repositories neither counted nor refused (the mirror's). */
  excluded?: (repository: string) => boolean;
  /** Told of each refusal (the metric). */
  onRefused?: (rule: QuotaRule) => void;
  /** Told when a release could not be recorded (the count is then corrected by the next rebuild or GC recount). */
  onReleaseFailed?: (err: unknown, link: QuotaLink) => void;
}

/** What the registry asks and tells about quotas; the rules are read from `policies` at each call. */
export class Quotas {
  constructor(private readonly policies: Policies, readonly ledger: QuotaLedger, private readonly options: QuotasOptions = {}) {}

  rulesFor(repository: string): QuotaRule[] {
    if (this.options.excluded?.(repository)) return [];
    return this.policies.rules.quotasFor(repository);
  }

  /** The rules in force. */
  get rules(): readonly QuotaRule[] {
    return this.policies.rules.quotas;
  }

  /**
   * Refuse (DENIED) when `bytes` more do not fit (0: when a rule is already full). `digest`, when known, costs
   * nothing for a rule that counts it already.
   */
  async room(repository: string, bytes: number, digest?: string): Promise<void> {
    const rules = this.rulesFor(repository);
    if (rules.length === 0) return;
    const verdict = await this.ledger.room(rules, bytes, digest);
    if (!verdict.ok) throw this.refused(verdict.rule, verdict.usage, bytes, digest === undefined ? 'this upload' : 'this blob');
  }

  /**
   * Count a link about to be written (DENIED when it does not fit). Returns what undoes the charge when the link
   * could then not be written.
   */
  async charge(repository: string, kind: LinkKind, digest: string, size: number): Promise<() => Promise<void>> {
    const rules = this.rulesFor(repository);
    if (rules.length === 0) return async () => {};
    const link = { repository, kind, digest };
    const verdict = await this.ledger.charge(rules, link, size);
    if (!verdict.ok) throw this.refused(verdict.rule, verdict.usage, size, kind === 'manifest' ? 'this manifest' : 'this blob');
    return verdict.added ? () => this.release(repository, kind, digest) : async () => {};
  }

  /**
   * Count a link being written back (a revision restored after a racing delete released it): never refused, and
   * never fails the caller (a failure is left to the next recount).
   */
  async recharge(repository: string, kind: LinkKind, digest: string, size: number): Promise<void> {
    const rules = this.rulesFor(repository).map((r) => ({ ...r, maxsize: Number.MAX_SAFE_INTEGER }));
    if (rules.length === 0) return;
    await this.ledger.charge(rules, { repository, kind, digest }, size).catch(() => {});
  }

  /** A link was removed from storage. Never fails the caller: the storage change stands. */
  async release(repository: string, kind: LinkKind, digest: string): Promise<void> {
    const rules = this.rulesFor(repository);
    if (rules.length === 0) return;
    const link = { repository, kind, digest };
    try {
      await this.ledger.release(rules, link);
    } catch (err) {
      this.options.onReleaseFailed?.(err, link);
    }
  }

  private refused(rule: QuotaRule, usage: number, size: number, what: string): RegistryError {
    this.options.onRefused?.(rule);
    return quotaExceeded(rule, usage, size, what);
  }
}

/** How often, at most, the storage ledger recounts from storage to see other processes' links. */
export const DEFAULT_REFRESH_MS = 5000;

type JournalEntry = { add: boolean; ids: string[]; link: string; digest: string; size: number };

/**
 * The count without Redis: storage is the shared state. Each process holds the figure recounted from storage, applies
 * its own charges and releases to it at once, and recounts when it is older than `refreshMs`; a refusal is never
 * decided on a figure recounted before the decision started (it recounts first). Changes made during a recount are
 * replayed onto its result. Another process's links are seen within `refreshMs`; see docs/policies.md for the bound.
 */
export class StorageQuotaLedger implements QuotaLedger {
  readonly mode = 'storage' as const;
  private counts = new Map<string, LinkCount>();
  private refreshedAt = -Infinity;
  private recounting?: Promise<void>;
  private journal?: JournalEntry[];
  private readonly refreshMs: number;
  private readonly sizes: BlobSizes;

  constructor(
    private readonly driver: StorageDriver,
    /** Every rule in force (all are recounted together). */
    private readonly allRules: () => readonly QuotaRule[],
    private readonly options: { refreshMs?: number; excluded?: (repository: string) => boolean; sizes?: BlobSizes } = {},
  ) {
    this.refreshMs = options.refreshMs ?? DEFAULT_REFRESH_MS;
    this.sizes = options.sizes ?? new BlobSizes(driver);
  }

  private async recountSince(since: number): Promise<void> {
    while (this.refreshedAt < since) {
      await (this.recounting ??= this.recountNow().finally(() => { this.recounting = undefined; }));
    }
  }

  private async recountNow(): Promise<void> {
    const startedAt = performance.now();
    const journal: JournalEntry[] = [];
    this.journal = journal;
    try {
      const fresh = await recount(this.driver, this.allRules(), this.sizes, this.options.excluded);
      for (const e of journal) {
        for (const id of e.ids) {
          const c = fresh.get(id);
          if (!c) continue;
          if (e.add) c.add(e.link, e.digest, e.size);
          else c.remove(e.link, e.digest);
        }
      }
      this.counts = fresh;
      this.refreshedAt = startedAt;
    } finally {
      if (this.journal === journal) this.journal = undefined;
    }
  }

  /** Recount when a rule has no figure yet or the figure is older than the refresh interval. */
  private async current(rules: readonly QuotaRule[]): Promise<void> {
    const now = performance.now();
    if (now - this.refreshedAt >= this.refreshMs || rules.some((r) => !this.counts.has(r.id))) await this.recountSince(now);
  }

  /** Decide on the current figure; a refusal on a figure older than the call is decided again after a recount. */
  private async decide(rules: readonly QuotaRule[], verdict: () => QuotaVerdict): Promise<QuotaVerdict> {
    const since = performance.now();
    await this.current(rules);
    let out = verdict();
    if (!out.ok && this.refreshedAt < since) {
      await this.recountSince(since);
      out = verdict();
    }
    return out;
  }

  room(rules: readonly QuotaRule[], bytes: number, digest?: string): Promise<QuotaVerdict> {
    return this.decide(rules, () => {
      for (const r of rules) {
        const c = this.counts.get(r.id)!;
        if (digest !== undefined && c.refs.has(digest)) continue;
        if (bytes === 0 ? c.usage >= r.maxsize : c.usage + bytes > r.maxsize) return { ok: false, rule: r, usage: c.usage };
      }
      return { ok: true, added: false };
    });
  }

  charge(rules: readonly QuotaRule[], link: QuotaLink, size: number): Promise<QuotaVerdict> {
    const key = linkKey(link.repository, link.kind, link.digest);
    this.sizes.remember(link.digest, size);
    return this.decide(rules, () => {
      for (const r of rules) {
        const c = this.counts.get(r.id)!;
        if (c.usage + c.cost(key, link.digest, size) > r.maxsize && c.cost(key, link.digest, size) > 0) {
          return { ok: false, rule: r, usage: c.usage };
        }
      }
      let added = false;
      for (const r of rules) added = this.counts.get(r.id)!.add(key, link.digest, size) || added;
      this.journal?.push({ add: true, ids: rules.map((r) => r.id), link: key, digest: link.digest, size });
      return { ok: true, added };
    });
  }

  async release(rules: readonly QuotaRule[], link: QuotaLink): Promise<void> {
    const key = linkKey(link.repository, link.kind, link.digest);
    for (const r of rules) this.counts.get(r.id)?.remove(key, link.digest);
    this.journal?.push({ add: false, ids: rules.map((r) => r.id), link: key, digest: link.digest, size: 0 });
  }

  async usage(rules: readonly QuotaRule[]): Promise<Map<string, { usage: number; repositories?: number } | undefined>> {
    await this.current(rules);
    return new Map(rules.map((r) => {
      const c = this.counts.get(r.id);
      return [r.id, c && { usage: c.usage, repositories: c.repositories() }];
    }));
  }

  /** The figure as held now, without refreshing (metrics). */
  held(rule: QuotaRule): number | undefined {
    return this.counts.get(rule.id)?.usage;
  }

  async close(): Promise<void> {}
}
