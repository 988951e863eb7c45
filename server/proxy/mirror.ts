/**
 * The pull-through cache: a `Registry` (server/registry/registry.ts) wrapping the local one. A read of a mirrored
 * repository first makes sure the manifest or blob is in local storage (the normal registry:2 layout), fetching it
 * from the upstream that serves the repository when needed, then answers from storage as the local registry does; a
 * blob not yet cached is answered as a stream of the upstream's bytes while they are written through a normal upload
 * session. Writes to a mirrored repository are refused; local repositories (`proxy.localnamespaces`, and names no
 * upstream takes) pass straight through.
 *
 * - Routing (./routing.ts): by the repository name alone; the upstream whose prefix starts it (prefix removed
 *   upstream), else the upstream without a prefix. Local namespaces are never mirrored. containerd's `?ns=` is
 *   resolved before (server/http/app.ts): it only chooses which local repository a read works on.
 * - Manifests by tag: HEAD upstream; GET and store only when the digest changed; when the upstream is unavailable
 *   (timeout, connection error, 5xx, 429) and a cached copy exists that the origin record beside its tag link says
 *   came from this same upstream and remote name, serve it and say so (`warning`). A 404, 401 or 403 from the
 *   upstream is answered as such, never from the cache. By digest: cached copies are immutable.
 * - Blobs: verified by the upload session before they become visible (a mismatch or a failed fetch leaves
 *   nothing); concurrent requests for one blob or manifest share one upstream fetch (in this process; across
 *   replicas through Redis when configured, ./shared-flight.ts); a client going away does not stop the fetch.
 * - Last pulls are recorded under `_wharf/proxy/` (see docs/mirror.md) for TTL expiry.
 */
import { lruOfEntries } from '../lru.js';
import { PassThrough, type Readable } from 'node:stream';
import type { Logger } from 'pino';
import { Counter, type Registry as MetricsRegistry } from 'prom-client';
import type { ProxyConfig, ProxyUpstreamConfig } from '../config/index.js';
import { RegistryError } from '../registry/errors.js';
import * as layout from '../registry/layout.js';
import { parseManifest } from '../registry/manifest-format.js';
import { digestOf, parseDigest, tryParseDigest, type Digest, type Reference } from '../registry/reference.js';
import type { BlobAnswer, BlobWant, LocalRegistry, Manifest, Registry } from '../registry/registry.js';
import type { FlightOutcome, SharedFlights } from './shared-flight.js';
import { namespacedName, routeOf } from './routing.js';
import { UpstreamClient, UpstreamError } from './upstream.js';

/** The warning a response carries when it was served from the cache because the upstream failed. */
export const STALE_WARNING = '299 - "served from cache: upstream unavailable"';

/**
 * The origin record beside a cached tag's link (layout.tagOriginPath, `_manifests/tags/<tag>/wharf-origin`, a file
 * registry:2 ignores and that goes with the tag's folder): which upstream and remote name the tag's current manifest
 * came from. A stale serve needs it to match the repository's current route and tag.
 */
interface OriginRecord {
  upstream: string;
  url: string;
  remote: string;
  digest: string;
}

/** Where last-pull times are recorded: `<root>/_wharf/proxy/lastpull/<repository>/<alg>/<hex>` (`<ISO date> <upstream>`). */
export const LAST_PULL_ROOT = layout.PROXY_LAST_PULL_ROOT;

export interface Upstream {
  config: ProxyUpstreamConfig;
  client: UpstreamClient;
}

export interface Route {
  upstream: Upstream;
  /** The repository name upstream (prefix removed, `library/` added for single components when mapped). */
  remote: string;
}

export interface MirrorCounters {
  hits: number;
  misses: number;
  upstreamErrors: number;
  bytes: number;
}

export interface MirrorOptions {
  manifestMaxSize: number;
  /** For tests: a fetch to use instead of the global one. */
  fetch?: typeof fetch;
  /** The Prometheus registry to add the mirror's metrics to (http.debug.prometheus). */
  metrics?: MetricsRegistry;
  /** Single-flight across replicas through Redis (./shared-flight.ts), when `redis` is configured. */
  sharedFlights?: SharedFlights;
}

/** The mirror's Prometheus metrics, by upstream name. */
function mirrorMetrics(registry: MetricsRegistry) {
  return {
    hits: new Counter({ name: 'wharf_proxy_cache_hits_total', help: 'Mirror pulls served from the cache without fetching, by upstream.', labelNames: ['upstream'] as const, registers: [registry] }),
    misses: new Counter({ name: 'wharf_proxy_cache_misses_total', help: 'Mirror pulls that fetched from the upstream, by upstream.', labelNames: ['upstream'] as const, registers: [registry] }),
    upstreamErrors: new Counter({ name: 'wharf_proxy_upstream_errors_total', help: 'Upstream requests that failed (timeouts, 429, 5xx, bad content), by upstream.', labelNames: ['upstream'] as const, registers: [registry] }),
    bytes: new Counter({ name: 'wharf_proxy_upstream_bytes_total', help: 'Manifest and blob bytes fetched from the upstream, by upstream.', labelNames: ['upstream'] as const, registers: [registry] }),
  };
}

/** Only write a last-pull record when the previous one from this process is older than this. */
const LAST_PULL_INTERVAL_MS = 3600_000;

export class Mirror implements Registry {
  readonly upstreams: Upstream[];
  /** Per upstream name. */
  readonly counters = new Map<string, MirrorCounters>();
  private readonly flights = new Map<string, Promise<unknown>>();
  private readonly blobFlights = new Map<string, Promise<void>>();
  /** Pulls recorded within the interval, by repository and digest (bounded; counted by maxSize so slots grow as used). */
  private readonly lastPulls = lruOfEntries<string, true>(100_000, { ttl: LAST_PULL_INTERVAL_MS });
  /** Origin records known to be in storage, by repository and tag (OriginRecord; bounded like lastPulls). */
  private readonly origins = lruOfEntries<string, string>(100_000);
  /** Immutable tags this process has warned about (upstream moved them), by repository, tag and upstream digest. */
  private readonly immutableWarned = lruOfEntries<string, true>(10_000);
  private readonly metrics?: ReturnType<typeof mirrorMetrics>;
  /** When each upstream last answered and last failed, in this process (the web UI's status page). */
  private readonly health = new Map<string, { lastSuccess?: number; lastFailure?: number; lastError?: string }>();

  constructor(
    readonly config: ProxyConfig,
    private readonly local: LocalRegistry,
    private readonly logger: Logger,
    private readonly options: MirrorOptions,
  ) {
    if (options.metrics) this.metrics = mirrorMetrics(options.metrics);
    this.upstreams = config.upstreams.map((u) => {
      const opts: ConstructorParameters<typeof UpstreamClient>[0] = { url: u.url, timeoutMs: config.timeout };
      if (u.username !== undefined) opts.username = u.username;
      if (u.password !== undefined) opts.password = u.password;
      if (u.realmhosts !== undefined) opts.realmHosts = u.realmhosts;
      opts.logger = logger;
      if (options.fetch) opts.fetch = options.fetch;
      this.counters.set(u.name, { hits: 0, misses: 0, upstreamErrors: 0, bytes: 0 });
      return { config: u, client: new UpstreamClient(opts) };
    });
  }

  /**
   * Each upstream's last success and failure in this process: an answer (a 404 too) is a success; unavailability,
   * rate limits, refusals and bad content are failures, described by kind and status only (never a URL or body).
   */
  upstreamStatus(): { upstream: string; lastSuccess: string | null; lastFailure: string | null; lastError: string | null }[] {
    const iso = (t: number | undefined) => (t === undefined ? null : new Date(t).toISOString());
    return this.upstreams.map((u) => {
      const h = this.health.get(u.config.name) ?? {};
      return { upstream: u.config.name, lastSuccess: iso(h.lastSuccess), lastFailure: iso(h.lastFailure), lastError: h.lastError ?? null };
    });
  }

  private noteUpstream(route: Route, err?: UpstreamError): void {
    const name = route.upstream.config.name;
    const h = this.health.get(name) ?? {};
    if (!err || err.kind === 'notfound') h.lastSuccess = Date.now();
    else {
      h.lastFailure = Date.now();
      h.lastError = err.status !== undefined ? `${err.kind} (HTTP ${err.status})` : err.kind;
    }
    this.health.set(name, h);
  }

  private count(route: Route, key: keyof MirrorCounters, n = 1): void {
    if (key === 'bytes') this.noteUpstream(route);
    const c = this.counters.get(route.upstream.config.name);
    if (c) c[key] += n;
    this.metrics?.[key].inc({ upstream: route.upstream.config.name }, n);
  }

  /** The upstream serving `name` (and the name there), or undefined for a local repository (./routing.ts). */
  route(name: string): Route | undefined {
    const found = routeOf(this.config, name);
    return found && { upstream: this.upstreams[this.config.upstreams.indexOf(found.upstream)]!, remote: found.remote };
  }

  /**
   * The local repository a read of `name` with containerd's `?ns=` works on; undefined: refuse the request
   * (./routing.ts `namespacedName`).
   */
  localName(name: string, ns: string | undefined): string | undefined {
    return namespacedName(this.config, name, ns);
  }

  /** Whether writes to `name` must be refused (it is mirrored, not a local namespace). */
  isMirrored(name: string): boolean {
    return this.route(name) !== undefined;
  }

  /** Refuse a write to a mirrored repository (proxy.localnamespaces lists the ones that take pushes). */
  assertWritable(name: string): void {
    if (this.isMirrored(name)) {
      throw new RegistryError('UNSUPPORTED', 'this repository is a mirror of an upstream registry; pushes are not accepted', {
        detail: { name },
      });
    }
  }

  // The Registry operations: a read of a mirrored repository fills the local registry first.

  async getManifest(name: string, ref: Reference): Promise<Manifest> {
    const route = this.route(name);
    if (!route) return this.local.getManifest(name, ref);
    const warning = await this.fillManifest(route, name, ref);
    const manifest = await this.local.getManifest(name, ref);
    return warning ? { ...manifest, warning } : manifest;
  }

  async statBlob(name: string, digest: Digest, want: BlobWant = {}): Promise<BlobAnswer> {
    const route = this.route(name);
    return (route && (await this.fillBlob(route, name, digest, want))) ?? this.local.statBlob(name, digest);
  }

  // The rest goes to the local registry; a write only for a repository that is not mirrored.
  readBlob: Registry['readBlob'] = (...args) => this.local.readBlob(...args);
  blobURL: Registry['blobURL'] = (...args) => this.local.blobURL(...args);
  listTags: Registry['listTags'] = (...args) => this.local.listTags(...args);
  referrers: Registry['referrers'] = (...args) => this.local.referrers(...args);
  catalog: Registry['catalog'] = (...args) => this.local.catalog(...args);
  uploadStatus: Registry['uploadStatus'] = (...args) => this.local.uploadStatus(...args);
  putManifest: Registry['putManifest'] = async (name, ...rest) => this.writable(name).putManifest(name, ...rest);
  deleteManifest: Registry['deleteManifest'] = async (name, ...rest) => this.writable(name).deleteManifest(name, ...rest);
  deleteBlob: Registry['deleteBlob'] = async (name, ...rest) => this.writable(name).deleteBlob(name, ...rest);
  mount: Registry['mount'] = async (name, ...rest) => this.writable(name).mount(name, ...rest);
  startUpload: Registry['startUpload'] = async (name, ...rest) => this.writable(name).startUpload(name, ...rest);
  appendUpload: Registry['appendUpload'] = async (name, ...rest) => this.writable(name).appendUpload(name, ...rest);
  completeUpload: Registry['completeUpload'] = async (name, ...rest) => this.writable(name).completeUpload(name, ...rest);
  cancelUpload: Registry['cancelUpload'] = async (name, ...rest) => this.writable(name).cancelUpload(name, ...rest);

  private writable(name: string): LocalRegistry {
    this.assertWritable(name);
    return this.local;
  }

  /** Run `fn` once for concurrent callers with the same key. */
  private once<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const running = this.flights.get(key);
    if (running) return running as Promise<T>;
    const p = fn().finally(() => this.flights.delete(key));
    this.flights.set(key, p);
    return p;
  }

  /**
   * Run `fetch` in one process of all replicas for `key` (per upstream); the others wait, and once `isDone()` says
   * the content is in storage, serve it from there. Without Redis: just `fetch`.
   */
  private shared<T>(route: Route, key: string, isDone: () => Promise<boolean>, fetch: () => Promise<T>): Promise<FlightOutcome<T>> {
    const flights = this.options.sharedFlights;
    if (!flights) return fetch().then((value) => ({ fetched: true, value }));
    return flights.run(`${route.upstream.config.name}:${key}`, isDone, fetch);
  }

  /**
   * The client's answer for an upstream failure: generic, naming only what the client asked for (never the
   * upstream's URL, status line or body); the reason goes to the log with the upstream's name.
   */
  private failure(route: Route, err: UpstreamError, what: 'manifest' | 'blob', name: string, reference: string): RegistryError {
    this.count(route, 'upstreamErrors');
    this.noteUpstream(route, err);
    const detail = { name, reference };
    if (err.kind !== 'notfound') {
      this.logger.warn({ upstream: route.upstream.config.name, repository: name, reference, kind: err.kind, status: err.status, reason: err.message }, 'upstream request failed');
    }
    switch (err.kind) {
      case 'notfound':
      case 'denied':
        return new RegistryError(what === 'manifest' ? 'MANIFEST_UNKNOWN' : 'BLOB_UNKNOWN', undefined, { detail });
      case 'ratelimited':
        return new RegistryError('TOOMANYREQUESTS', 'upstream rate limit reached and nothing cached', { detail });
      case 'unavailable':
        return new RegistryError('UNAVAILABLE', 'upstream unavailable and nothing cached', { detail });
      default:
        return new RegistryError('UNKNOWN', 'upstream answered unexpectedly', { reason: { kind: 'upstream-failed' }, detail });
    }
  }

  /**
   * Make sure the manifest `ref` (tag or digest) of mirrored `name` is in storage and current. Returns the warning to
   * send when a cached copy is served because the upstream failed.
   */
  private async fillManifest(route: Route, name: string, ref: Reference): Promise<string | undefined> {
    const manifests = this.local.manifests;
    if (ref.kind === 'digest') {
      const digest = ref.digest;
      const reference = digest.value;
      // Recorded first (a no-op unless a GC run holds its lock), so a collection expiring it keeps it instead.
      await this.local.recordReferences(name, [digest.value]);
      if (await manifests.hasRevision(name, digest)) {
        this.count(route, 'hits');
        this.recordPull(route, name, digest);
        return undefined;
      }
      try {
        const outcome = await this.once(`m\0${name}\0${digest.value}`, () =>
          this.shared(route, `manifest:${name}@${digest.value}`, () => manifests.hasRevision(name, digest), () => {
            this.count(route, 'misses');
            return this.fetchManifest(route, name, digest.value, digest);
          }));
        if (!outcome.fetched) this.count(route, 'hits');
      } catch (err) {
        if (err instanceof UpstreamError) throw this.failure(route, err, 'manifest', name, reference);
        throw err;
      }
      return undefined;
    }

    const reference = ref.tag;
    const local = await manifests.resolveTag(name, reference);
    if (local) await this.local.recordReferences(name, [local.value]);
    const cached = local !== undefined && (await manifests.hasRevision(name, local)) ? local : undefined;
    // An immutable tag (docs/policies.md) is never moved by a refresh: the cached manifest is served.
    if (cached && this.local.policies?.rules.immutableRule(name, reference)) return this.keepImmutable(route, name, reference, cached);
    try {
      await this.once(`t\0${name}\0${reference}`, async () => {
        const head = await route.upstream.client.headManifest(route.remote, reference);
        this.noteUpstream(route);
        if (cached && head.digest === cached.value) {
          this.count(route, 'hits');
          this.recordPull(route, name, cached);
          await this.recordOrigin(route, name, reference, cached);
          return;
        }
        const fetch = () => {
          this.count(route, 'misses');
          return this.fetchManifest(route, name, reference, undefined, reference);
        };
        const wanted = head.digest ? tryParseDigest(head.digest) : undefined;
        if (!wanted) return fetch();
        // The HEAD is per replica; the GET of a changed manifest is shared (keyed by the digest the HEAD named).
        const isDone = async () => (await manifests.resolveTag(name, reference))?.value === wanted.value && (await manifests.hasRevision(name, wanted));
        const outcome = await this.shared(route, `tag:${name}:${reference}@${wanted.value}`, isDone, fetch);
        if (!outcome.fetched) this.count(route, 'hits');
      });
      return undefined;
    } catch (err) {
      if (!(err instanceof UpstreamError)) throw err;
      // Only unavailability leaves the cached copy servable, and only a copy this upstream and remote name gave:
      // a 404 (the tag is gone upstream) or a refusal is the upstream's answer, and is passed on.
      const unavailable = err.kind === 'unavailable' || err.kind === 'ratelimited';
      if (cached && unavailable && (await this.cameFrom(route, name, reference, cached))) {
        this.count(route, 'upstreamErrors');
        this.noteUpstream(route, err);
        this.logger.warn({ upstream: route.upstream.config.name, repository: name, tag: reference, reason: err.message }, 'serving cached manifest: upstream unavailable');
        this.recordPull(route, name, cached);
        return STALE_WARNING;
      }
      throw this.failure(route, err, 'manifest', name, reference);
    }
  }

  /**
   * Serve the cached manifest of immutable tag `tag`: the upstream is still asked (one HEAD) so that a tag it moved
   * is logged, once per process and upstream digest, at warn; its failures change nothing.
   */
  private async keepImmutable(route: Route, name: string, tag: string, cached: Digest): Promise<undefined> {
    this.count(route, 'hits');
    this.recordPull(route, name, cached);
    try {
      const head = await this.once(`i\0${name}\0${tag}`, () => route.upstream.client.headManifest(route.remote, tag));
      this.noteUpstream(route);
      const key = `${name}\0${tag}\0${head.digest ?? ''}`;
      if (head.digest && head.digest !== cached.value && !this.immutableWarned.has(key)) {
        this.immutableWarned.set(key, true);
        this.logger.warn({ upstream: route.upstream.config.name, repository: name, tag, cached: cached.value, upstreamDigest: head.digest }, 'upstream moved an immutable tag: serving the cached manifest');
      }
    } catch (err) {
      if (!(err instanceof UpstreamError)) throw err;
      this.noteUpstream(route, err);
      this.logger.debug({ upstream: route.upstream.config.name, repository: name, tag, reason: err.message }, 'immutable tag served from the cache; upstream not reached');
    }
    return undefined;
  }

  /** GET a manifest upstream, verify its digest, store it as a revision (and tag). */
  private async fetchManifest(route: Route, name: string, reference: string, expected?: Digest, tag?: string): Promise<void> {
    const got = await route.upstream.client.getManifest(route.remote, reference, this.options.manifestMaxSize);
    this.count(route, 'bytes', got.content.byteLength);
    const claimed = got.digest ? tryParseDigest(got.digest) : undefined;
    const algorithm = expected?.algorithm ?? claimed?.algorithm ?? 'sha256';
    const digest = parseDigest(digestOf(got.content, algorithm));
    if ((expected && expected.value !== digest.value) || (claimed && claimed.value !== digest.value)) {
      throw new UpstreamError('invalid', `upstream manifest does not hash to ${expected?.value ?? claimed?.value}`);
    }
    try {
      parseManifest(got.content, got.mediaType);
    } catch (err) {
      throw new UpstreamError('invalid', `upstream sent an invalid manifest: ${(err as Error).message}`);
    }
    await this.local.recordReferences(name, [digest.value]);
    await this.local.blobs.putContent(digest, got.content);
    await this.local.driver.putContent(layout.revisionLinkPath(name, digest), digest.value);
    if (tag !== undefined) {
      try {
        await this.local.manifests.tag(name, tag, digest);
        await this.recordOrigin(route, name, tag, digest, true);
      } catch (err) {
        // An immutable tag another replica set first (to another digest): what it names is served.
        if (!(err instanceof RegistryError && err.code === 'DENIED')) throw err;
        this.logger.warn({ upstream: route.upstream.config.name, repository: name, tag, digest: digest.value, reason: err.message }, 'upstream manifest not cached under an immutable tag');
      }
    }
    this.recordPull(route, name, digest);
    this.logger.info({ upstream: route.upstream.config.name, repository: name, reference, digest: digest.value }, 'cached manifest from upstream');
  }

  /**
   * Make sure a blob of mirrored `name` can be served: undefined when it is (or now is) in storage for `name`;
   * otherwise a stream of the upstream's bytes being cached, or for a `head` the upstream's size. For a `range`, the
   * fetch is finished first and the answer is undefined.
   */
  private async fillBlob(route: Route, name: string, digest: Digest, want: BlobWant): Promise<BlobAnswer | undefined> {
    const blobs = this.local.blobs;
    await this.local.recordReferences(name, [digest.value]);
    const present = await blobs.statContent(digest);
    if (present && (await blobs.isLinked(name, digest))) {
      this.count(route, 'hits');
      this.recordPull(route, name, digest);
      return undefined;
    }
    const key = `${name}\0${digest.value}`;
    try {
      if (present) {
        // In the content store for another repository: link it here once the upstream confirms this one has it.
        await route.upstream.client.headBlob(route.remote, digest.value);
        await this.local.recordReferences(name, [digest.value]);
        await blobs.link(name, digest);
        this.count(route, 'hits');
        this.recordPull(route, name, digest);
        return undefined;
      }
      const running = this.blobFlights.get(key);
      if (running) {
        await running;
        return undefined;
      }
      if (want.head) return { kind: 'upstream', ...(await route.upstream.client.headBlob(route.remote, digest.value)) };
      const body = new PassThrough();
      // Failures reach the client as a broken connection; the reason is logged below.
      body.on('error', () => undefined);
      let announce!: (size: number | undefined) => void;
      const headers = new Promise<number | undefined>((resolve) => (announce = resolve));
      /** Whether this process fetches (else another replica did, and the blob is served from storage). */
      let fetching = false;
      const done = (async () => {
        const isDone = async () => (await blobs.statContent(digest)) !== undefined && (await blobs.isLinked(name, digest));
        const outcome = await this.shared(route, `blob:${name}@${digest.value}`, isDone, async () => {
          fetching = true;
          this.count(route, 'misses');
          const upstream = await route.upstream.client.getBlob(route.remote, digest.value);
          announce(upstream.size);
          await this.store(route, name, digest, upstream.body, want.range ? undefined : body);
        });
        if (!outcome.fetched) {
          this.count(route, 'hits');
          this.recordPull(route, name, digest);
        }
      })();
      this.blobFlights.set(key, done);
      done.then(
        () => this.blobFlights.delete(key),
        (err: unknown) => {
          this.blobFlights.delete(key);
          body.destroy(err as Error);
          this.logger.warn({ upstream: route.upstream.config.name, repository: name, digest: digest.value, reason: (err as Error).message }, 'blob fetch from upstream failed');
        },
      );
      if (want.range) {
        await done;
        return undefined;
      }
      // A blob another replica is fetching is answered from storage once it is there: headers come only then.
      const size = await Promise.race([headers, done.then(() => undefined)]);
      if (!fetching) return undefined;
      return size === undefined ? { kind: 'upstream', body } : { kind: 'upstream', size, body };
    } catch (err) {
      if (err instanceof UpstreamError) throw this.failure(route, err, 'blob', name, digest.value);
      throw err;
    }
  }

  /**
   * Write the upstream's bytes through an upload session (verified against `digest` before they become visible),
   * copying them to `client` while it listens. The last chunk reaches the client only after the digest checked out,
   * so a client never receives a complete body that is wrong.
   */
  private async store(route: Route, name: string, digest: Digest, source: Readable, client?: PassThrough): Promise<void> {
    const uploads = this.local.uploads;
    const { id } = await uploads.start(name, digest.algorithm);
    let listening = client !== undefined;
    client?.once('close', () => (listening = false));
    const toClient = async (chunk: Buffer) => {
      if (!listening || !client || client.destroyed) return;
      if (client.write(chunk)) return;
      // A client that stops reading would hold up the fetch for everyone waiting on it (and trip the upstream's idle
      // timeout): after `proxy.timeout` without progress it is cut off, and the fetch goes on without it.
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          client.off('drain', done);
          client.off('close', done);
          resolve();
        };
        const timer = setTimeout(() => {
          listening = false;
          client.destroy(new Error('client stopped reading'));
          done();
        }, this.config.timeout);
        client.on('drain', done);
        client.on('close', done);
      });
    };
    let held: Buffer | undefined;
    let bytes = 0;
    const count = (n: number) => this.count(route, 'bytes', n);
    async function* tee(): AsyncGenerator<Buffer> {
      for await (const chunk of source as AsyncIterable<Buffer>) {
        if (held) await toClient(held);
        held = chunk;
        bytes += chunk.byteLength;
        yield chunk;
      }
    }
    try {
      await uploads.complete(name, id, digest, tee());
    } catch (err) {
      source.destroy();
      await uploads.cancel(name, id).catch(() => undefined);
      throw err instanceof RegistryError && err.code === 'DIGEST_INVALID'
        ? new UpstreamError('invalid', `upstream blob does not hash to ${digest.value}`)
        : err;
    } finally {
      count(bytes);
    }
    if (held) await toClient(held);
    client?.end();
    this.recordPull(route, name, digest);
    this.logger.info({ upstream: route.upstream.config.name, repository: name, digest: digest.value, size: bytes }, 'cached blob from upstream');
  }

  private originOf(route: Route, digest: Digest): OriginRecord {
    const url = new URL(route.upstream.client.base);
    url.username = '';
    url.password = '';
    return { upstream: route.upstream.config.name, url: url.toString().replace(/\/+$/, ''), remote: route.remote, digest: digest.value };
  }

  /**
   * Write the origin record of tag `tag` of `name` (now naming `digest`), unless it already says so (known in this
   * process, or read back); `fetched`: the tag was just written, write the record too.
   */
  private async recordOrigin(route: Route, name: string, tag: string, digest: Digest, fetched = false): Promise<void> {
    const record = JSON.stringify(this.originOf(route, digest));
    const key = `${name}\0${tag}`;
    if (!fetched && this.origins.get(key) === record) return;
    const path = layout.tagOriginPath(name, tag);
    try {
      const stored = fetched ? undefined : await this.local.driver.getContent(path).then((b) => b.toString('utf8'), () => undefined);
      if (stored !== record) await this.local.driver.putContent(path, record);
      this.origins.set(key, record);
    } catch (err) {
      // Without the record the tag is not served stale; the pull itself goes on.
      this.logger.debug({ err: (err as Error).message }, 'could not record a cached tag\'s origin');
    }
  }

  /** Whether the cached tag `tag` of `name` (naming `digest`) came from this route's upstream and remote name. */
  private async cameFrom(route: Route, name: string, tag: string, digest: Digest): Promise<boolean> {
    // Records are only ever written by recordOrigin, as this exact serialisation.
    const raw = await this.local.driver.getContent(layout.tagOriginPath(name, tag)).catch(() => undefined);
    return raw?.toString('utf8') === JSON.stringify(this.originOf(route, digest));
  }

  /**
   * Note that `name` pulled `digest` now (at most once an hour per process), for TTL expiry: the date, then the
   * upstream's name (the GC finds the TTL by it, also for a repository only `?ns=` routes). Never fails a pull.
   */
  private recordPull(route: Route, name: string, digest: Digest): void {
    const key = `${name}@${digest.value}`;
    if (this.lastPulls.has(key)) return;
    this.lastPulls.set(key, true);
    const now = Date.now();
    this.local.driver
      .putContent(`${LAST_PULL_ROOT}/${name}/${digest.algorithm}/${digest.hex}`, `${new Date(now).toISOString()} ${route.upstream.config.name}`)
      .catch((err: unknown) => this.logger.debug({ err: (err as Error).message }, 'could not record a last pull'));
  }
}
