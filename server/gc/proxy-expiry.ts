/**
 * TTL expiry of the pull-through cache, run by the garbage collector (./worker.ts calls it for each repository).
 *
 * A repository is mirrored when its last-pull records name an upstream (the mirror writes the upstream's name with the
 * date), or, without such records, when the proxy routing (server/proxy/routing.ts) gives it an upstream by its name.
 * Local namespaces are never expired. That upstream's `ttl` applies (0: never). An item's last use is its last-pull
 * record (`_wharf/proxy/lastpull/<repository>/<alg>/<hex>`, written by the mirror at most once an hour per process) or
 * the modification time of its own link, whichever is later (without a record: the link's time).
 *
 *   beforeMark(scan):                                          (after the lock, the propagation wait and the cutoff)
 *     old(d, link) := lastUse(d, link) < now - ttl  and  link older than the grace cutoff
 *     for each tag whose current link is old:  remove(current link, digest)   [the sweeper's live-set re-check]
 *                                             removed: delete the tag's folder, drop the tag from the scan
 *     roots := remaining tags + revisions that are not old (+ young ones)  →  mark from them
 *     for each old revision that mark did not reach:  remove(revision link, digest), drop it from the scan
 *   the worker then marks the scan that is left, as usual: layer links, referrers and blobs that only the expired
 *   manifests needed are no longer live, and the normal sweep (grace period, live-set re-check) removes them.
 *   afterRepository(name):  delete the last-pull records whose digest no repository link names any more.
 *
 * Why a re-pull during the run is safe. The mirror records a manifest or blob digest in the GC live set before it
 * looks for it in storage (cache hit or not), and before it writes anything when it fetches. So:
 *  - a tag or revision pulled while the run holds the lock is recorded; the sweeper's second look sees the record
 *    and keeps it (and a kept tag stays in the scan, so what it needs is marked);
 *  - a tag removed just before the pull is fetched again: the mirror finds no tag, asks the upstream, records the
 *    manifest digest and then writes the revision and the tag; the sweeper keeps the recorded revision and its bytes;
 *  - its layers are recorded as the client asks for them: one still in storage is kept, one already removed is
 *    fetched from the upstream again (a mirror serves a layer from storage only after finding it there).
 *  The one loss: a tag written by such a re-fetch between our removal of the old current link and the removal of
 *  the tag's folder goes with the folder. The next pull of that tag fetches the manifest again (one HEAD and GET
 *  upstream); no tag is ever left pointing at a manifest or blob that was deleted.
 *
 * Immutable tags (`policies.immutabletags`, docs/policies.md) never expire: they are skipped, so they stay roots and
 * the manifest each names (with what it needs) is marked and kept.
 *
 * A dry run removes nothing and reports what would expire (tags as `tag`, revisions as `manifest`).
 */
import { ifExists, type StorageDriver } from '../../storage-drivers/driver.js';
import type { ProxyConfig } from '../config/index.js';
import {
  isLinked, lastPullRecords, removeEmptyLastPullFolders, removeTag, tagLink, type RepositoryScan,
} from '../registry/scan.js';
import { isLocal, routeOf } from '../proxy/routing.js';
import { markRepository } from './mark.js';
import type { GcStats } from './report.js';
import type { PolicyRules } from '../policies/rules.js';

export interface ExpiryContext {
  /** The worker's delete with the live-set re-check (always true in a dry run, which deletes nothing). */
  remove(path: string, digest: string): Promise<boolean>;
  /** Links modified at or after this time (ms) are within the grace period: never expired. */
  cutoff: number;
}

/** The worker's per-repository hooks (./worker.ts `GcOptions.expiry`). */
export interface RepositoryExpiry {
  beforeMark(scan: RepositoryScan, context: ExpiryContext): Promise<void>;
  afterRepository(name: string): Promise<void>;
}

export interface ProxyExpiryOptions {
  dryRun: boolean;
  stats: GcStats;
  /** Called for each tag or revision expired (or, in a dry run, that would be). */
  note?: (kind: 'tag' | 'manifest', what: string) => void;
  /** "Now", for tests. */
  now?: () => number;
  /** The content policies of the configuration: tags an immutable-tag rule covers are never expired. */
  policies?: PolicyRules;
}

export class ProxyExpiry implements RepositoryExpiry {
  /** The upstreams the records of the repository just seen by beforeMark name (afterRepository needs them too). */
  private recordedUpstreams?: { name: string; upstreams: Set<string> };

  constructor(
    private readonly driver: StorageDriver,
    private readonly proxy: ProxyConfig,
    private readonly options: ProxyExpiryOptions,
  ) {}

  /**
   * The TTL (ms) for `name`, or undefined when it is not mirrored or never expires. The upstreams its last-pull
   * records name come first (the longest TTL of them, should two have filled one repository): a repository that
   * only containerd's `?ns=` reaches has no route by its name alone. Without such records, the route by name.
   * A local namespace never expires.
   */
  ttlOf(name: string, recordedUpstreams: Set<string> = new Set()): number | undefined {
    if (isLocal(this.proxy, name)) return undefined;
    const named = this.proxy.upstreams.filter((u) => recordedUpstreams.has(u.name));
    const ttls = named.length > 0 ? named.map((u) => u.ttl) : [routeOf(this.proxy, name)?.upstream.ttl];
    if (ttls.some((t) => !t)) return undefined; // not mirrored, or an upstream whose content never expires
    return Math.max(...(ttls as number[]));
  }

  async beforeMark(scan: RepositoryScan, { remove, cutoff }: ExpiryContext): Promise<void> {
    const { pulls, upstreams } = await this.lastPulls(scan.name);
    this.recordedUpstreams = { name: scan.name, upstreams };
    const ttl = this.ttlOf(scan.name, upstreams);
    if (ttl === undefined) return;
    const expiresBefore = (this.options.now?.() ?? Date.now()) - ttl;
    // Last use: the later of the last-pull record and the link's own time (a fetch writes both; either may lag).
    const old = (digest: string, mtime: number) => mtime < cutoff && Math.max(pulls.get(digest) ?? 0, mtime) < expiresBefore;
    const { stats, note, dryRun } = this.options;

    for (const [tag, digest] of [...scan.tags]) {
      if (this.options.policies?.immutableRule(scan.name, tag)) continue;
      const current = await tagLink(this.driver, scan.name, tag);
      if (!current || !old(digest, current.mtime)) continue;
      if (!(await remove(current.path, digest))) continue;
      if (!dryRun) await removeTag(this.driver, scan.name, tag);
      scan.tags.delete(tag);
      stats.expiredTags++;
      note?.('tag', `${scan.name}:${tag}`);
    }

    const expired = [...scan.revisions].filter(([digest, link]) => old(digest, link.mtime));
    if (expired.length === 0) return;
    const expiredSet = new Set(expired.map(([d]) => d));
    // What the remaining roots still need (an index's children, a live subject's referrers) stays.
    const roots: RepositoryScan = { ...scan, revisions: new Map([...scan.revisions].filter(([d]) => !expiredSet.has(d))) };
    const needed = await markRepository(this.driver, roots, { deleteUntagged: false, cutoff });
    for (const [digest, link] of expired) {
      if (needed.manifests.has(digest) || !(await remove(link.path, digest))) continue;
      scan.revisions.delete(digest);
      stats.expiredManifests++;
      stats.manifestsDeleted++;
      note?.('manifest', `${scan.name}@${digest}`);
    }
  }

  async afterRepository(name: string): Promise<void> {
    const upstreams = this.recordedUpstreams?.name === name ? this.recordedUpstreams.upstreams : (await this.lastPulls(name)).upstreams;
    if (this.options.dryRun || this.ttlOf(name, upstreams) === undefined) return;
    for (const [digest, path] of await lastPullRecords(this.driver, name)) {
      if (!(await isLinked(this.driver, name, digest))) await ifExists(this.driver.delete(path));
    }
    await removeEmptyLastPullFolders(this.driver, name);
  }

  /**
   * From `name`'s records (`<ISO date> <upstream>`; older ones hold the date only): digest → last pull (ms), an
   * unreadable date counting by the record's modification time; and the upstreams they name.
   */
  private async lastPulls(name: string): Promise<{ pulls: Map<string, number>; upstreams: Set<string> }> {
    const pulls = new Map<string, number>();
    const upstreams = new Set<string>();
    for (const [digest, path] of await lastPullRecords(this.driver, name)) {
      const text = await ifExists(this.driver.getContent(path));
      const [date = '', upstream] = text ? text.toString('utf8').trim().split(/\s+/, 2) : [];
      if (upstream) upstreams.add(upstream);
      const at = Date.parse(date);
      const time = Number.isNaN(at) ? (await ifExists(this.driver.stat(path)))?.modTime.getTime() : at;
      if (time !== undefined) pulls.set(digest, time);
    }
    return { pulls, upstreams };
  }
}
