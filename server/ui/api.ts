/**
 * The web UI's JSON API under `/ui/api/` (the contract is /work docs: docs/ui.md and the helpers' brief): session,
 * login and logout, repositories, tags, a manifest, deletes and the status page.
 *
 * Every answer is decided by the API's own Authorizer and Policy (auth/authorizer.ts `decide`), for the user of the
 * session cookie or an anonymous caller: the UI shows exactly what that user could pull through `/v2/` and deletes
 * only what they could delete there. Everything is read from the local registry's stores (a mirror's cached copies,
 * never a fetch from its upstream); deletes go through the registry the API uses, so a mirror refuses them the
 * same way. Lists are paged from storage; what is worked out per manifest (kind, platforms, size, created) is kept in
 * a bounded LRU keyed by digest, since manifests never change.
 */
import type { Context } from 'koa';
import { lruOfEntries } from '../lru.js';
import pLimit from 'p-limit';
import type { Logger } from 'pino';
import { type Access, type Identity } from '../../auth/index.js';
import { contentWithInfo, ifExists, type FileInfo } from '../../storage-drivers/driver.js';
import type { UiAuth } from '../http/auth-setup.js';
import type { HttpOptions } from '../http/context.js';
import { THROTTLED_MESSAGE } from '../http/auth.js';
import type { Notifier } from '../notifications.js';
import { immutableTagsByDigest, manifestDeleteRefusal } from '../policies/immutable.js';
import { RegistryError } from '../registry/errors.js';
import * as layout from '../registry/layout.js';
import { isIndexType, parseManifestJson } from '../registry/manifest-format.js';
import { isValidTag, parseDigest, parseReference, tryParseDigest, validateRepositoryName, type Digest, type Reference } from '../registry/reference.js';
import type { LocalRegistry, Registry } from '../registry/registry.js';
import { readSessionCookie, sessionCookie, type SessionKeys } from './session.js';

/** The largest image config read (a real one is a few KiB; history-heavy ones some hundreds). */
export const CONFIG_MAX_BYTES = 4 * 1024 * 1024;
/** The largest login body read. */
const LOGIN_MAX_BYTES = 4096;
const DEFAULT_LIMIT = 50;
const MAX_LIMIT = 100;
/** The most manifests whose summaries are kept. */
const SUMMARY_CACHE_ENTRIES = 20_000;
/** Storage reads in flight for one request. */
const CONCURRENCY = 8;
/** The most tag links whose digests are kept against a listing's version names (see `linkOf`): 10,000 tags fit. */
const LISTED_LINK_ENTRIES = 16_384;
/**
 * Keys listed per tag past which a listing of a tags folder is given up for a read of each tag's link. The listing
 * also goes through the index of every digest each tag ever held (a `latest` moved by every build holds thousands):
 * a request per 1,000 keys, against a request per tag when each link is read.
 */
export const LISTED_KEYS_PER_TAG = 1_000;

const IMAGE_CONFIG_TYPES = new Set(['application/vnd.oci.image.config.v1+json', 'application/vnd.docker.container.image.v1+json']);

export interface StatusInfo {
  version: string;
  storageDriver: string;
  uptimeSeconds: number;
  startedAt: string;
  gc: Record<string, unknown> | null;
  mirror: { upstream: string; lastSuccess: string | null; lastFailure: string | null; lastError: string | null }[] | null;
}

export interface UiApiDeps {
  /** Reads: the local registry's stores (never the mirror's upstream). */
  local: LocalRegistry;
  /** Deletes: the registry the API calls (a mirror refuses writes to mirrored repositories). */
  registry: Registry;
  options: HttpOptions;
  /** The current authentication (changes on SIGHUP). */
  auth: () => UiAuth;
  sessions: SessionKeys;
  title: string;
  logger: Logger;
  notifier?: Notifier;
  /** Whether `name` is a mirrored repository, whose deletes the mirror refuses. */
  isMirrored?: (name: string) => boolean;
  status: () => Promise<StatusInfo>;
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  'os.version'?: string;
}

type Kind = 'image' | 'index' | 'artifact';

/** What the lists show of a manifest, worked out once per digest. */
interface Summary {
  mediaType: string;
  kind: Kind;
  artifactType: string | null;
  platforms: Platform[];
  /** Unique bytes of the blobs it references (configs and layers, through an index's children). */
  size: number;
  created: string | null;
  /** The blobs counted in `size`, for a repository's total. */
  blobs: Map<string, number>;
}

// ---- reading the request ----------------------------------------------------------------------------------------

function badRequest(message: string, detail?: unknown): RegistryError {
  return new RegistryError('UNSUPPORTED', message, { detail, reason: { kind: 'invalid-request' } });
}

function param(ctx: Context, key: string): string | undefined {
  const v = ctx.query[key];
  if (Array.isArray(v)) throw badRequest(`query parameter "${key}" given more than once`, { parameter: key });
  return v;
}

function limitParam(ctx: Context): number {
  const raw = param(ctx, 'limit');
  if (raw === undefined || raw === '') return DEFAULT_LIMIT;
  if (!/^\d{1,3}$/.test(raw) || Number(raw) < 1 || Number(raw) > MAX_LIMIT) {
    throw new RegistryError('PAGINATION_NUMBER_INVALID', `limit must be 1 to ${MAX_LIMIT}`, { detail: { limit: raw } });
  }
  return Number(raw);
}

function queryFilter(ctx: Context): string | undefined {
  const q = param(ctx, 'q');
  if (q === undefined || q === '') return undefined;
  if (q.length > 256) throw badRequest('q is longer than 256 characters');
  return q;
}

/** The opaque `next` cursor: base64url JSON of the last item's sort key. */
function encodeCursor(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

function decodeCursor<T>(ctx: Context, check: (v: unknown) => v is T): T | undefined {
  const raw = param(ctx, 'next');
  if (raw === undefined || raw === '') return undefined;
  let value: unknown;
  try {
    if (raw.length > 1024 || !/^[A-Za-z0-9_-]+$/.test(raw)) throw new Error('bad');
    value = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8'));
  } catch {
    throw badRequest('next is not a cursor this API gave');
  }
  if (!check(value)) throw badRequest('next is not a cursor this API gave');
  return value;
}

const isStringCursor = (v: unknown): v is { k: string } => typeof v === 'object' && v !== null && typeof (v as { k?: unknown }).k === 'string';

// ---- the API ----------------------------------------------------------------------------------------------------

export class UiApi {
  private readonly summaries = lruOfEntries<string, Summary>(SUMMARY_CACHE_ENTRIES);
  /** Tag links read after a listing named them, by path: the digest, and the listing's ETag and time of that version. */
  private readonly listedLinks = lruOfEntries<string, { etag: string; modified: number; digest: Digest }>(LISTED_LINK_ENTRIES);

  constructor(private readonly deps: UiApiDeps) {}

  /** Answer `/ui/api/<path>` (path already stripped of the prefix); false when no such endpoint. */
  async handle(ctx: Context, rawPath: string): Promise<boolean> {
    let path: string;
    try {
      path = decodeURIComponent(rawPath);
    } catch {
      throw badRequest('malformed path');
    }
    const method = ctx.method;
    const get = method === 'GET' || method === 'HEAD';
    if (path === '/session') return this.only(ctx, get, () => this.session(ctx));
    if (path === '/login') return this.only(ctx, method === 'POST', () => this.login(ctx), ['POST']);
    if (path === '/logout') return this.only(ctx, method === 'POST', () => this.logout(ctx), ['POST']);
    if (path === '/status') return this.only(ctx, get, () => this.status(ctx));
    if (path === '/repositories') return this.only(ctx, get, () => this.repositories(ctx));
    if (!path.startsWith('/repositories/')) return false;
    const rest = path.slice('/repositories/'.length);
    let m = /^(.+)\/manifests\/([^/]+)$/.exec(rest);
    if (m) {
      const [name, ref] = [m[1]!, m[2]!];
      if (get) return this.run(() => this.manifest(ctx, name, ref));
      if (method === 'DELETE') return this.run(() => this.deleteManifest(ctx, name, ref));
      throw methodNotAllowed(['GET', 'HEAD', 'DELETE']);
    }
    // `<name>/tags` lists (a name may itself end in `/tags`); `<name>/tags/<tag>` deletes.
    m = /^(.+)\/tags$/.exec(rest);
    if (m && get) return this.run(() => this.tags(ctx, m![1]!));
    const t = /^(.+)\/tags\/([^/]+)$/.exec(rest);
    if (t && method === 'DELETE') return this.run(() => this.deleteTag(ctx, t[1]!, t[2]!));
    if (t) throw methodNotAllowed(['DELETE']);
    if (m) throw methodNotAllowed(['GET', 'HEAD']);
    return false;
  }

  private async only(_ctx: Context, ok: boolean, fn: () => Promise<void>, allowed: string[] = ['GET', 'HEAD']): Promise<boolean> {
    if (!ok) throw methodNotAllowed(allowed);
    await fn();
    return true;
  }

  private async run(fn: () => Promise<void>): Promise<boolean> {
    await fn();
    return true;
  }

  // ---- who is asking ----

  /** The caller: the session's user, when the cookie is valid and the user's entry unchanged; else anonymous. */
  async identity(ctx: Context): Promise<Identity> {
    const cached = ctx.state.uiIdentity as Identity | undefined;
    if (cached) return cached;
    let identity: Identity = { authenticated: false };
    const token = readSessionCookie(ctx.get('Cookie') || undefined);
    const auth = this.deps.auth();
    if (token && auth.passwords) {
      const session = await this.deps.sessions.verify(token);
      const credential = session && auth.passwords.users.credentialOf(session.user);
      if (session && credential !== undefined && this.deps.sessions.credentialTag(session.user, credential) === session.cred) {
        identity = { authenticated: true, subject: session.user };
      }
    }
    if (token && !identity.authenticated) {
      // A cookie that no longer names a session (expired, a changed password): cleared so the page knows.
      ctx.append('Set-Cookie', sessionCookie(null, 0, ctx.protocol === 'https'));
    }
    ctx.state.uiIdentity = identity;
    if (identity.subject) ctx.state.user = identity.subject;
    return identity;
  }

  /** Whether the caller has `required` under the API's rules (everything, when auth is off). */
  private async allowed(ctx: Context, required: Access[]): Promise<boolean> {
    const { authorizer } = this.deps.auth();
    if (!authorizer) return true;
    const decision = authorizer.decide(await this.identity(ctx), { required });
    return decision.kind === 'allow';
  }

  /** Throw the API's refusal (without a challenge header) unless the caller has `required`. */
  private async require(ctx: Context, required: Access[]): Promise<void> {
    if (await this.allowed(ctx, required)) return;
    const identity = await this.identity(ctx);
    const detail = required.map((a) => ({ Type: a.type, Name: a.name, Action: a.actions.join(',') }));
    if (!identity.authenticated) throw new RegistryError('UNAUTHORIZED', 'authentication required', { detail });
    throw new RegistryError('DENIED', 'requested access to the resource is denied', { detail });
  }

  /**
   * Whether a delete in `name` by the caller would go ahead: deletion on, not read-only, not a mirrored repository,
   * and the `delete` action granted by the same rules `delete` checks. The page offers delete only then.
   */
  private async canDelete(ctx: Context, name: string): Promise<boolean> {
    const { options, isMirrored } = this.deps;
    if (!options.deleteEnabled || options.readOnly || isMirrored?.(name)) return false;
    return this.allowed(ctx, [{ type: 'repository', name, actions: ['delete'] }]);
  }

  /** `canDelete` of a manifest, and `immutableTags`/`deleteRefusal`: the immutable tags naming it refuse its delete. */
  private async manifestDeletable(ctx: Context, name: string, digest: Digest) {
    const { local } = this.deps;
    const naming = await local.manifests.immutableTagsNaming(name, digest);
    return {
      canDelete: naming.length === 0 && (await this.canDelete(ctx, name)),
      immutableTags: naming.map((n) => ({ tag: n.tag, rule: n.rule.name })),
      deleteRefusal: manifestDeleteRefusal(naming),
    };
  }

  /** A filter of repository names the caller may pull (undefined: every name). */
  private async pullFilter(ctx: Context): Promise<((name: string) => boolean) | undefined> {
    const { authorizer } = this.deps.auth();
    if (!authorizer) return undefined;
    const identity = await this.identity(ctx);
    return (name) => authorizer.decide(identity, { required: [{ type: 'repository', name, actions: ['pull'] }] }).kind === 'allow';
  }

  // ---- session ----

  private async session(ctx: Context): Promise<void> {
    const auth = this.deps.auth();
    const identity = await this.identity(ctx);
    const host = this.deps.options.host;
    json(ctx, 200, {
      title: this.deps.title,
      user: identity.subject ?? null,
      authMode: auth.mode,
      canLogin: auth.passwords !== undefined,
      deleteEnabled: this.deps.options.deleteEnabled && !this.deps.options.readOnly,
      registryHost: host ? hostOf(host) : ctx.host,
    });
  }

  private async login(ctx: Context): Promise<void> {
    const auth = this.deps.auth();
    if (!auth.passwords) {
      throw new RegistryError('UNSUPPORTED', auth.mode === 'external'
        ? 'logging in is not possible here: tokens come from an external token server; the UI browses anonymously'
        : 'logging in is not possible: no users are configured');
    }
    const body = await readJsonBody(ctx, LOGIN_MAX_BYTES);
    const { username, password } = (body ?? {}) as { username?: unknown; password?: unknown };
    if (typeof username !== 'string' || typeof password !== 'string' || username === '' || username.length > 256 || password.length > 1024) {
      throw badRequest('expected a JSON object with "username" and "password" strings');
    }
    const result = await auth.passwords.authenticate({ scheme: 'basic', user: username, password }, ctx.ip);
    if (!result.ok) {
      if (result.refusal === 'throttled') throw new RegistryError('TOOMANYREQUESTS', THROTTLED_MESSAGE);
      this.deps.logger.info({ user: username, remote: ctx.ip }, 'web UI: login failed');
      throw new RegistryError('UNAUTHORIZED', 'invalid username or password');
    }
    const credential = auth.passwords.users.credentialOf(username);
    if (credential === undefined) throw new RegistryError('UNAUTHORIZED', 'invalid username or password');
    const token = await this.deps.sessions.issue(username, credential);
    ctx.state.user = username;
    ctx.append('Set-Cookie', sessionCookie(token, this.deps.sessions.maxAgeSeconds, ctx.protocol === 'https'));
    json(ctx, 200, { user: username });
  }

  private async logout(ctx: Context): Promise<void> {
    ctx.append('Set-Cookie', sessionCookie(null, 0, ctx.protocol === 'https'));
    json(ctx, 200, { user: null });
  }

  // ---- repositories ----

  private async repositories(ctx: Context): Promise<void> {
    const limit = limitParam(ctx);
    const q = queryFilter(ctx);
    const cursor = decodeCursor(ctx, isStringCursor);
    if (cursor && !isValidName(cursor.k)) throw badRequest('next is not a cursor this API gave');
    const mayPull = await this.pullFilter(ctx);
    const include = (name: string) => (q === undefined || name.includes(q)) && (mayPull === undefined || mayPull(name));
    const page = await this.deps.local.catalog(limit, cursor?.k, include);
    const limiter = pLimit(CONCURRENCY);
    const items = await Promise.all(page.repositories.map((name) => limiter(() => this.repositorySummary(name))));
    json(ctx, 200, { items, next: page.next !== undefined ? encodeCursor({ k: page.next }) : null, total: null });
  }

  /** A repository's tag count, last push and the unique bytes its tagged manifests reference. */
  private async repositorySummary(name: string): Promise<{ name: string; tags: number; lastPush: string | null; size: number }> {
    // Where the driver lists files with their times and versions (S3), one listing of the tags folder names every
    // tag and its link's time, and a link listed as read before is not read again.
    const listed = await this.listedTags(name);
    const tags = listed ? [...listed.keys()] : await this.tagNames(name);
    let lastPush = 0;
    const blobs = new Map<string, number>();
    let count = 0;
    await inBatches(tags, CONCURRENCY, async (tag) => {
      const info = await this.linkOf(name, tag, listed?.get(tag));
      if (!info) return;
      count++;
      if (info.modified > lastPush) lastPush = info.modified;
      const summary = await this.summary(name, info.digest);
      for (const [d, s] of summary?.blobs ?? []) blobs.set(d, s);
    });
    let size = 0;
    for (const s of blobs.values()) size += s;
    return { name, tags: count, lastPush: lastPush > 0 ? new Date(lastPush).toISOString() : null, size };
  }

  /** The names in the repository's tags folder that are tag names. */
  private async tagNames(name: string): Promise<string[]> {
    const entries = (await ifExists(this.deps.local.driver.list(layout.tagsPath(name)))) ?? [];
    return entries.map(layout.baseName).filter(isValidTag);
  }

  /**
   * Every tag of the repository with its current link's info (time, version name), from one listing of the tags
   * folder (S3: a ListObjectsV2 per 1,000 keys, instead of a request per tag); undefined when the driver cannot list
   * files so (the filesystem, where a tag's link costs one `stat` once read: small-files.ts), and when the tags'
   * indexes make the listing longer than reading each link (LISTED_KEYS_PER_TAG).
   */
  private async listedTags(name: string): Promise<Map<string, FileInfo> | undefined> {
    const { driver } = this.deps.local;
    if (!driver.listFiles) return undefined;
    const root = `${layout.tagsPath(name)}/`;
    const found = new Map<string, FileInfo>();
    let keys = 0;
    for await (const file of driver.listFiles(layout.tagsPath(name))) {
      if (++keys > LISTED_KEYS_PER_TAG * Math.max(found.size, 1)) return undefined;
      // <tags>/<tag>/current/link; the index of every digest a tag held lies beside it and is passed over.
      const slash = file.path.indexOf('/', root.length);
      if (slash < 0 || file.path.slice(slash) !== '/current/link') continue;
      const tag = file.path.slice(root.length, slash);
      if (isValidTag(tag)) found.set(tag, file);
    }
    return found;
  }

  /**
   * The links of `tags`, in their order, read CONCURRENCY at a time (`listed`: their infos from `listedTags`); a tag
   * removed meanwhile is left out.
   */
  private async linksOf(name: string, tags: readonly string[], listed?: Map<string, FileInfo>): Promise<{ tag: string; link: { digest: Digest; modified: number } }[]> {
    const limiter = pLimit(CONCURRENCY);
    const links = await Promise.all(tags.map((tag) => limiter(async () => ({ tag, link: await this.linkOf(name, tag, listed?.get(tag)) }))));
    return links.filter((l): l is { tag: string; link: { digest: Digest; modified: number } } => l.link !== undefined);
  }

  /**
   * The digest a tag points to and when it was last pushed (its link's modification time), read together: pages
   * that show many tags read one link per tag (one GetObject on S3, not a GetObject and a HEAD). Given the link's
   * info from a listing (`listedTags`), a link read before is not read again while the listing names the same
   * version of it (its ETag, and its time): a tag moved since, here or on another replica, is read anew.
   */
  private async linkOf(name: string, tag: string, listed?: FileInfo): Promise<{ digest: Digest; modified: number } | undefined> {
    const path = layout.tagCurrentLinkPath(name, tag);
    if (listed?.etag !== undefined) {
      const known = this.listedLinks.get(path);
      if (known && known.etag === listed.etag && known.modified === listed.modTime.getTime()) return { digest: known.digest, modified: known.modified };
    }
    const link = await ifExists(contentWithInfo(this.deps.local.driver, path));
    const digest = link && tryParseDigest(link.content.toString('utf8').trim());
    if (!digest) return undefined;
    // Kept only when the read is the version listed: the listing's time is then the one to compare with the next
    // listing's (a read's Last-Modified may be coarser than a listing's).
    if (listed?.etag !== undefined && link.info.etag === listed.etag) {
      const modified = listed.modTime.getTime();
      this.listedLinks.set(path, { etag: listed.etag, modified, digest });
      return { digest, modified };
    }
    return { digest, modified: link.info.modTime.getTime() };
  }

  // ---- tags ----

  private async tags(ctx: Context, rawName: string): Promise<void> {
    const name = repositoryName(rawName);
    await this.require(ctx, [{ type: 'repository', name, actions: ['pull'] }]);
    const limit = limitParam(ctx);
    const q = queryFilter(ctx);
    const sort = param(ctx, 'sort') ?? 'name';
    if (!['name', '-name', 'pushed', '-pushed'].includes(sort)) throw badRequest('sort must be name, -name, pushed or -pushed', { sort });
    const { manifests } = this.deps.local;
    if (!(await manifests.repositoryExists(name))) throw new RegistryError('NAME_UNKNOWN', undefined, { detail: { name } });

    let chosen: { tag: string; link: { digest: Digest; modified: number } }[] = [];
    let next: string | null = null;
    let total: number | null = null;
    if (sort === 'name') {
      // Paged from storage: the tags folder is read from just after the cursor, a bounded batch at a time.
      const cursor = decodeCursor(ctx, isStringCursor);
      let last = cursor?.k;
      if (last !== undefined && !isValidTag(last)) throw badRequest('next is not a cursor this API gave');
      const found: string[] = [];
      for (;;) {
        const page = await manifests.listTags(name, MAX_LIMIT + 1, last);
        for (const tag of page.tags) if (q === undefined || tag.includes(q)) found.push(tag);
        if (found.length > limit || page.next === undefined) break;
        last = page.next;
      }
      if (found.length > limit) next = encodeCursor({ k: found[limit - 1] });
      chosen = await this.linksOf(name, found.slice(0, limit));
    } else {
      // Every tag's name (and for `pushed`, its link time) is read to sort; only the page's manifests are. Where the
      // driver lists files with their times, one listing gives both.
      const listed = sort === '-name' ? undefined : await this.listedTags(name);
      let tags = (listed ? [...listed.keys()] : await this.tagNames(name)).filter((t) => q === undefined || t.includes(q));
      total = tags.length;
      if (sort === '-name') {
        tags.sort((a, b) => (a < b ? 1 : a > b ? -1 : 0));
        const cursor = decodeCursor(ctx, isStringCursor);
        if (cursor) tags = tags.filter((t) => t < cursor.k);
        const page = tags.slice(0, limit);
        if (tags.length > limit) next = encodeCursor({ k: page.at(-1) });
        chosen = await this.linksOf(name, page);
      } else {
        const stamped: { tag: string; t: number }[] = [];
        if (listed) {
          for (const tag of tags) stamped.push({ tag, t: listed.get(tag)!.modTime.getTime() });
        } else {
          await inBatches(tags, CONCURRENCY * 2, async (tag) => {
            const info = await ifExists(this.deps.local.driver.stat(layout.tagCurrentLinkPath(name, tag)));
            if (info) stamped.push({ tag, t: info.modTime.getTime() });
          });
        }
        const dir = sort === 'pushed' ? 1 : -1;
        const cmp = (a: { tag: string; t: number }, b: { tag: string; t: number }) => (a.t - b.t) * dir || (a.tag < b.tag ? -1 : a.tag > b.tag ? 1 : 0);
        stamped.sort(cmp);
        const cursor = decodeCursor(ctx, (v): v is { t: number; k: string } => isStringCursor(v) && typeof (v as { t?: unknown }).t === 'number');
        const after = cursor ? stamped.filter((s) => cmp(s, { tag: cursor.k, t: cursor.t }) > 0) : stamped;
        const page = after.slice(0, limit);
        if (after.length > limit) next = encodeCursor({ k: page.at(-1)!.tag, t: page.at(-1)!.t });
        chosen = await this.linksOf(name, page.map((p) => p.tag), listed);
      }
    }

    const limiter = pLimit(CONCURRENCY);
    // Immutable tags (docs/policies.md): neither such a tag nor the manifest one names can be deleted.
    const { local } = this.deps;
    const locked = await immutableTagsByDigest(local.driver, local.policies, name);
    const items = await Promise.all(chosen.map(({ tag, link }) => limiter(async () => {
      const s = await this.summary(name, link.digest);
      return {
        immutable: local.policies?.rules.immutableRule(name, tag)?.name ?? null,
        manifestImmutable: manifestDeleteRefusal(locked.get(link.digest.value) ?? []),
        tag,
        digest: link.digest.value,
        mediaType: s?.mediaType ?? null,
        kind: s?.kind ?? null,
        artifactType: s?.artifactType ?? null,
        platforms: s?.platforms ?? [],
        size: s?.size ?? 0,
        created: s?.created ?? null,
        lastPush: new Date(link.modified).toISOString(),
      };
    })));
    json(ctx, 200, { items, next, total, canDelete: await this.canDelete(ctx, name) });
  }

  // ---- manifests ----

  /** The manifest's JSON from the repository (the API's size bound and checks), or MANIFEST_UNKNOWN. */
  private async readManifest(name: string, ref: Reference): Promise<{ digest: string; mediaType: string; size: number; doc: Record<string, unknown> }> {
    const stored = await this.deps.local.manifests.get(name, ref);
    const doc = parseManifestJson(stored.content);
    if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new RegistryError('MANIFEST_INVALID', 'manifest is not a JSON object');
    return { digest: stored.digest, mediaType: stored.mediaType, size: stored.content.byteLength, doc: doc as Record<string, unknown> };
  }

  /** An image config blob of the repository, parsed, when it is at most CONFIG_MAX_BYTES; else undefined. */
  private async readConfig(name: string, digest: string): Promise<Record<string, unknown> | undefined> {
    const d = tryParseDigest(digest);
    if (!d) return undefined;
    try {
      const desc = await this.deps.local.blobs.stat(name, d);
      if (desc.size > CONFIG_MAX_BYTES) return undefined;
      const content = await this.deps.local.blobs.getContent(d);
      if (!content || content.byteLength > CONFIG_MAX_BYTES) return undefined;
      const doc = parseManifestJson(content);
      return typeof doc === 'object' && doc !== null && !Array.isArray(doc) ? (doc as Record<string, unknown>) : undefined;
    } catch (err) {
      if (err instanceof RegistryError) return undefined;
      throw err;
    }
  }

  /** What lists show of a manifest of the repository; undefined when it is not there or unreadable. */
  private async summary(name: string, digest: Digest, depth = 0): Promise<Summary | undefined> {
    const hit = this.summaries.get(digest.value);
    if (hit) return hit;
    let m: Awaited<ReturnType<UiApi['readManifest']>>;
    try {
      m = await this.readManifest(name, { kind: 'digest', digest });
    } catch (err) {
      if (err instanceof RegistryError) return undefined;
      throw err;
    }
    const { doc } = m;
    const blobs = new Map<string, number>();
    let summary: Summary;
    if (isIndexType(m.mediaType)) {
      const children = descriptors(doc.manifests);
      const platforms: Platform[] = [];
      for (const c of children) {
        const p = platformOf(c.platform);
        if (p && p.os !== 'unknown') platforms.push(p);
      }
      if (depth < 2) {
        for (const c of children) {
          const d = tryParseDigest(c.digest);
          const child = d && (await this.summary(name, d, depth + 1));
          for (const [k, v] of child?.blobs ?? []) blobs.set(k, v);
        }
      }
      summary = { mediaType: m.mediaType, kind: 'index', artifactType: str(doc.artifactType), platforms, size: 0, created: null, blobs };
    } else {
      const config = descriptors([doc.config])[0];
      if (config) blobs.set(config.digest, config.size);
      for (const l of descriptors(doc.layers)) blobs.set(l.digest, l.size);
      const isImage = config !== undefined && IMAGE_CONFIG_TYPES.has(config.mediaType) && str(doc.artifactType) === null;
      let platforms: Platform[] = [];
      let created: string | null = null;
      if (isImage) {
        const parsed = await this.readConfig(name, config.digest);
        const p = parsed && platformOf(parsed);
        if (p) platforms = [p];
        created = isoDate(parsed?.created);
      } else {
        created = isoDate(annotationsOf(doc.annotations)['org.opencontainers.image.created']);
      }
      summary = {
        mediaType: m.mediaType,
        kind: isImage ? 'image' : 'artifact',
        artifactType: isImage ? null : (str(doc.artifactType) ?? config?.mediaType ?? null),
        platforms,
        size: 0,
        created,
        blobs,
      };
    }
    for (const s of blobs.values()) summary.size += s;
    this.summaries.set(digest.value, summary);
    return summary;
  }

  private async manifest(ctx: Context, rawName: string, rawRef: string): Promise<void> {
    const name = repositoryName(rawName);
    await this.require(ctx, [{ type: 'repository', name, actions: ['pull'] }]);
    const ref = parseReference(rawRef);
    const m = await this.readManifest(name, ref);
    const { doc } = m;
    const digest = parseDigest(m.digest);
    const summary = await this.summary(name, digest);
    const index = isIndexType(m.mediaType);
    const subject = descriptors([doc.subject])[0] ?? null;
    const children = [];
    for (const c of index ? descriptors(doc.manifests) : []) {
      // A sparse index (validation.manifests.indexes) may name children the repository does not hold.
      const d = tryParseDigest(c.digest);
      const missing = !d || !(await this.deps.local.manifests.hasRevision(name, d));
      children.push({
        digest: c.digest, mediaType: c.mediaType, size: c.size, platform: platformOf(c.platform) ?? null,
        artifactType: c.artifactType ?? null, annotations: c.annotations ?? {}, missing,
      });
    }
    let config: Record<string, unknown> | null = null;
    let layers: { digest: string; mediaType: string; size: number; createdBy: string | null }[] = [];
    if (!index) {
      const configDesc = descriptors([doc.config])[0];
      const parsed = configDesc && IMAGE_CONFIG_TYPES.has(configDesc.mediaType) ? await this.readConfig(name, configDesc.digest) : undefined;
      // History entries that made a layer, in order; `empty_layer` ones made none.
      const history = Array.isArray(parsed?.history) ? (parsed.history as unknown[]).filter((h) => !(isObject(h) && h.empty_layer === true)) : [];
      layers = descriptors(doc.layers).map((l, i) => {
        const h = history[i];
        return { digest: l.digest, mediaType: l.mediaType, size: l.size, createdBy: isObject(h) ? str(h.created_by) : null };
      });
      // An image's config, also when it could not be read (then only its descriptor, and `tooLarge` when that is why).
      if (configDesc && IMAGE_CONFIG_TYPES.has(configDesc.mediaType)) {
        const inner = isObject(parsed?.config) ? parsed.config : {};
        config = {
          digest: configDesc.digest,
          mediaType: configDesc.mediaType,
          size: configDesc.size,
          tooLarge: configDesc.size > CONFIG_MAX_BYTES,
          os: str(parsed?.os),
          architecture: str(parsed?.architecture),
          variant: str(parsed?.variant),
          created: isoDate(parsed?.created),
          entrypoint: strings(inner.Entrypoint),
          cmd: strings(inner.Cmd),
          env: strings(inner.Env) ?? [],
          labels: isObject(inner.Labels) ? Object.fromEntries(Object.entries(inner.Labels).filter(([, v]) => typeof v === 'string')) : {},
          raw: parsed ?? null,
        };
      }
    }
    const referrers = (await this.deps.local.manifests.referrers(name, digest)).map((r) => ({
      digest: r.digest, artifactType: r.artifactType ?? null, mediaType: r.mediaType, size: r.size, annotations: r.annotations ?? {},
    }));
    json(ctx, 200, {
      digest: m.digest,
      mediaType: m.mediaType,
      kind: summary?.kind ?? (index ? 'index' : 'artifact'),
      artifactType: summary?.artifactType ?? str(doc.artifactType),
      size: m.size,
      totalSize: summary?.size ?? 0,
      platforms: summary?.platforms ?? [],
      created: summary?.created ?? null,
      raw: doc,
      subject,
      annotations: annotationsOf(doc.annotations),
      children,
      config,
      layers,
      referrers,
      ...(await this.manifestDeletable(ctx, name, digest)),
    });
  }

  // ---- deletes ----

  private async deleteManifest(ctx: Context, rawName: string, rawRef: string): Promise<void> {
    const name = repositoryName(rawName);
    const ref = parseReference(rawRef);
    if (ref.kind !== 'digest') throw badRequest('delete a tag at /tags/<tag>; /manifests/ takes a digest', { reference: rawRef });
    await this.delete(ctx, name, ref);
  }

  private async deleteTag(ctx: Context, rawName: string, tag: string): Promise<void> {
    const name = repositoryName(rawName);
    if (!isValidTag(tag)) throw new RegistryError('MANIFEST_INVALID', 'invalid tag', { detail: { tag } });
    await this.delete(ctx, name, { kind: 'tag', tag });
  }

  /** As the API's DELETE /v2/<name>/manifests/<reference>: the same checks, in the same order, and event. */
  private async delete(ctx: Context, name: string, ref: Reference): Promise<void> {
    const { options, registry, notifier } = this.deps;
    if (options.readOnly) throw new RegistryError('UNSUPPORTED', 'the registry is in read-only mode (storage.maintenance.readonly)');
    await this.require(ctx, [{ type: 'repository', name, actions: ['delete'] }]);
    if (!options.deleteEnabled) throw new RegistryError('UNSUPPORTED', 'deletion is disabled (storage.delete.enabled)');
    await registry.deleteManifest(name, ref);
    this.deps.logger.info({ user: ctx.state.user, repository: name, reference: ref.kind === 'tag' ? ref.tag : ref.digest.value }, 'web UI: deleted');
    if (notifier?.enabled) {
      notifier.emit(
        'delete',
        { repository: name, ...(ref.kind === 'tag' ? { tag: ref.tag } : { digest: ref.digest.value }) },
        { id: String(ctx.state.requestId ?? ''), addr: ctx.ip, host: ctx.host, method: ctx.method, useragent: ctx.get('User-Agent') },
        ctx.state.user ? { name: String(ctx.state.user) } : {},
      );
    }
    ctx.status = 204;
    ctx.body = null;
  }

  // ---- status ----

  private async status(ctx: Context): Promise<void> {
    await this.require(ctx, [{ type: 'registry', name: 'catalog', actions: ['*'] }]);
    json(ctx, 200, await this.deps.status());
  }
}

// ---- helpers ----------------------------------------------------------------------------------------------------

/**
 * Run `fn` over `items`, `width` at a time, by `width` workers taking the next item in turn. Not scan.ts's
 * forEachLimited: that queues one closure per item in p-limit, which for the 10,000 tags of one repository cost
 * a third more CPU and 45 MB more memory in bench workload 8.
 */
async function inBatches<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
}

function methodNotAllowed(allowed: readonly string[]): RegistryError {
  return new RegistryError('UNSUPPORTED', 'method not allowed here', { reason: { kind: 'method-not-allowed', allowed } });
}

function json(ctx: Context, status: number, body: unknown): void {
  ctx.status = status;
  ctx.type = 'application/json';
  ctx.body = JSON.stringify(body);
}

function repositoryName(raw: string): string {
  validateRepositoryName(raw);
  return raw;
}

function isValidName(name: string): boolean {
  try {
    validateRepositoryName(name);
    return true;
  } catch {
    return false;
  }
}

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url.replace(/^[a-z]+:\/\//i, '');
  }
}

async function readJsonBody(ctx: Context, max: number): Promise<unknown> {
  const type = ctx.get('Content-Type');
  if (!/^application\/json\b/i.test(type)) throw badRequest('expected Content-Type: application/json');
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
    size += chunk.byteLength;
    if (size > max) throw new RegistryError('UNSUPPORTED', 'request body too large', { reason: { kind: 'body-too-large', limit: max } });
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw badRequest('request body is not JSON');
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function str(v: unknown): string | null {
  return typeof v === 'string' ? v : null;
}

function strings(v: unknown): string[] | null {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : null;
}

function isoDate(v: unknown): string | null {
  if (typeof v !== 'string') return null;
  const t = Date.parse(v);
  return Number.isNaN(t) ? null : new Date(t).toISOString();
}

function annotationsOf(v: unknown): Record<string, string> {
  return isObject(v) ? (Object.fromEntries(Object.entries(v).filter(([, x]) => typeof x === 'string')) as Record<string, string>) : {};
}

function platformOf(v: unknown): Platform | undefined {
  if (!isObject(v) || typeof v.os !== 'string' || typeof v.architecture !== 'string') return undefined;
  return {
    os: v.os,
    architecture: v.architecture,
    ...(typeof v.variant === 'string' ? { variant: v.variant } : {}),
    ...(typeof v['os.version'] === 'string' ? { 'os.version': v['os.version'] } : {}),
  };
}

interface LooseDescriptor {
  digest: string;
  mediaType: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  platform?: unknown;
}

/** The well-formed descriptors of a list (anything else is skipped: stored manifests were validated on push). */
function descriptors(v: unknown): LooseDescriptor[] {
  if (!Array.isArray(v)) return [];
  const out: LooseDescriptor[] = [];
  for (const d of v) {
    if (!isObject(d) || typeof d.digest !== 'string' || typeof d.mediaType !== 'string' || typeof d.size !== 'number') continue;
    out.push({
      digest: d.digest,
      mediaType: d.mediaType,
      size: d.size,
      ...(typeof d.artifactType === 'string' ? { artifactType: d.artifactType } : {}),
      ...(isObject(d.annotations) ? { annotations: annotationsOf(d.annotations) } : {}),
      ...(d.platform !== undefined ? { platform: d.platform } : {}),
    });
  }
  return out;
}
