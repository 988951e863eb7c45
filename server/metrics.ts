/**
 * Prometheus metrics (prom-client), served on the debug listener (registry:2's `http.debug.addr` with
 * `http.debug.prometheus`). One registry per process; every metric name starts with `wharf_`.
 *
 *   wharf_http_requests_total{route,method,status}           requests answered
 *   wharf_http_request_duration_seconds{route,method}         latency histogram
 *   wharf_http_received_bytes_total{route}                    bytes read from clients (headers included)
 *   wharf_http_sent_bytes_total{route}                        bytes written to clients (headers included)
 *   wharf_http_requests_in_flight                             requests being served now
 *   wharf_uploads_in_progress                                 upload requests streaming a body now
 *   wharf_storage_operation_duration_seconds{driver,operation} storage driver latency
 *   wharf_storage_operation_errors_total{driver,operation}    storage driver failures (a missing path is not one)
 *   wharf_storage_healthy                                     1 when the storage health check passes
 *   wharf_blob_descriptor_cache_requests_total{backend,kind,result}  cache hits and misses
 *   wharf_auth_failures_total{code}                           requests refused by authentication or access rules
 *   wharf_gc_*                                                the last garbage-collection run (read from storage)
 *   wharf_quota_usage_bytes{rule}, wharf_quota_limit_bytes{rule}, wharf_quota_refusals_total{rule}
 *                                                             quotas (rule: the rule's name), see quotaMetrics()
 *   plus Node's default process metrics (wharf_process_*, wharf_nodejs_*)
 */
import type { Readable } from 'node:stream';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { DescriptorCache } from './cache/index.js';
import {
  PathNotFoundError,
  contentWithInfo,
  type FileInfo,
  type FileWriter,
  type StorageDriver,
  type WalkOptions,
} from '../storage-drivers/driver.js';

export class Metrics {
  readonly registry = new Registry();

  readonly httpRequests = new Counter({
    name: 'wharf_http_requests_total',
    help: 'HTTP requests answered, by route, method and status.',
    labelNames: ['route', 'method', 'status'] as const,
    registers: [this.registry],
  });

  readonly httpDuration = new Histogram({
    name: 'wharf_http_request_duration_seconds',
    help: 'Time from request to response end, by route and method.',
    labelNames: ['route', 'method'] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });

  readonly receivedBytes = new Counter({
    name: 'wharf_http_received_bytes_total',
    help: 'Bytes read from clients, headers included, by route.',
    labelNames: ['route'] as const,
    registers: [this.registry],
  });

  readonly sentBytes = new Counter({
    name: 'wharf_http_sent_bytes_total',
    help: 'Bytes written to clients, headers included, by route.',
    labelNames: ['route'] as const,
    registers: [this.registry],
  });

  readonly inFlight = new Gauge({
    name: 'wharf_http_requests_in_flight',
    help: 'Requests being served now.',
    registers: [this.registry],
  });

  readonly uploadsInProgress = new Gauge({
    name: 'wharf_uploads_in_progress',
    help: 'Blob upload requests streaming a body now.',
    registers: [this.registry],
  });

  readonly storageDuration = new Histogram({
    name: 'wharf_storage_operation_duration_seconds',
    help: 'Storage driver operation latency (for streams: until the stream is open), by driver and operation.',
    labelNames: ['driver', 'operation'] as const,
    buckets: [0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
    registers: [this.registry],
  });

  readonly storageErrors = new Counter({
    name: 'wharf_storage_operation_errors_total',
    help: 'Storage driver operations that failed (a missing path is an answer, not a failure), by driver and operation.',
    labelNames: ['driver', 'operation'] as const,
    registers: [this.registry],
  });

  readonly cacheRequests = new Counter({
    name: 'wharf_blob_descriptor_cache_requests_total',
    help: 'Blob-descriptor cache look-ups by backend, kind (stat: blob exists; link: repository links blob) and result.',
    labelNames: ['backend', 'kind', 'result'] as const,
    registers: [this.registry],
  });

  readonly authFailures = new Counter({
    name: 'wharf_auth_failures_total',
    help: 'Requests refused by authentication or access rules, by error code (UNAUTHORIZED, DENIED, TOOMANYREQUESTS).',
    labelNames: ['code'] as const,
    registers: [this.registry],
  });

  readonly storageHealthy = new Gauge({
    name: 'wharf_storage_healthy',
    help: '1 when the last storage health check passed, 0 when it failed.',
    registers: [this.registry],
  });

  readonly quotaRefusals = new Counter({
    name: 'wharf_quota_refusals_total',
    help: 'Uploads, mounts and manifest pushes refused by a quota rule (rule: its name, e.g. policies.quotas[0] (team-a/**)).',
    labelNames: ['rule'] as const,
    registers: [this.registry],
  });

  /**
   * The quota gauges, read at each scrape: the usage from `figures` (the running count: Redis, or this process's
   * figure from storage; a rule without a figure yet is left out), the limits from the rules in force (no I/O).
   */
  quotaMetrics(figures: () => Promise<Array<{ rule: string; usage?: number }>>, limits: () => Array<{ rule: string; limit: number }>): void {
    const read = async () => {
      try {
        return await figures();
      } catch {
        return [];
      }
    };
    new Gauge({
      name: 'wharf_quota_usage_bytes',
      help: 'Bytes a quota rule counts now (its running count), by rule name.',
      labelNames: ['rule'] as const,
      registers: [this.registry],
      async collect() {
        this.reset();
        for (const f of await read()) if (f.usage !== undefined) this.set({ rule: f.rule }, f.usage);
      },
    });
    new Gauge({
      name: 'wharf_quota_limit_bytes',
      help: 'The maxsize of a quota rule, by rule name.',
      labelNames: ['rule'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const l of limits()) this.set({ rule: l.rule }, l.limit);
      },
    });
  }

  constructor(options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 'wharf_' });
    this.storageHealthy.set(1);
  }

  /** The exposition text and its content type, for a scrape. */
  async scrape(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

/** Count the hits and misses of a blob-descriptor cache; behaviour is unchanged. */
export function countingCache(cache: DescriptorCache, metrics: Metrics): DescriptorCache {
  const count = (kind: 'stat' | 'link', hit: boolean) =>
    metrics.cacheRequests.inc({ backend: cache.backend, kind, result: hit ? 'hit' : 'miss' });
  return {
    get backend() {
      return cache.backend;
    },
    async stat(digest) {
      const found = await cache.stat(digest);
      count('stat', found !== undefined);
      return found;
    },
    async isLinked(repository, digest) {
      const linked = await cache.isLinked(repository, digest);
      count('link', linked);
      return linked;
    },
    set: (digest, descriptor) => cache.set(digest, descriptor),
    setLinked: (repository, digest) => cache.setLinked(repository, digest),
    forget: (digest) => cache.forget(digest),
    forgetLink: (repository, digest) => cache.forgetLink(repository, digest),
    clear: () => cache.clear(),
    healthy: () => cache.healthy(),
    status: () => cache.status(),
    close: () => cache.close(),
  };
}

/**
 * Wrap a storage driver so every operation is timed and its failures counted. Behaviour is unchanged: results and
 * errors pass through as they are, and the driver's optional capabilities stay (callers test for them and fall back
 * without: a listing where a link count would do, claim folders left behind), so turning metrics on changes nothing
 * the registry does.
 */
export function instrumentedDriver(driver: StorageDriver, metrics: Metrics): StorageDriver {
  const timed = async <T>(operation: string, fn: () => Promise<T>): Promise<T> => {
    const end = metrics.storageDuration.startTimer({ driver: driver.name, operation });
    try {
      return await fn();
    } catch (err) {
      if (!(err instanceof PathNotFoundError)) metrics.storageErrors.inc({ driver: driver.name, operation });
      throw err;
    } finally {
      end();
    }
  };
  /** An iteration timed from its first step to its end. */
  const timedIterable = (operation: string, iterate: () => AsyncIterable<FileInfo>): AsyncIterable<FileInfo> =>
    (async function* timedIteration(): AsyncGenerator<FileInfo> {
      const end = metrics.storageDuration.startTimer({ driver: driver.name, operation });
      try {
        yield* iterate();
      } catch (err) {
        if (!(err instanceof PathNotFoundError)) metrics.storageErrors.inc({ driver: driver.name, operation });
        throw err;
      } finally {
        end();
      }
    })();
  const wrapped: StorageDriver = {
    name: driver.name,
    getContent: (path) => timed('getContent', () => driver.getContent(path)),
    getContentWithInfo: (path) => timed('getContentWithInfo', () => contentWithInfo(driver, path)),
    putContent: (path, content) => timed('putContent', () => driver.putContent(path, content)),
    putContentIfAbsent: (path, content) => timed('putContentIfAbsent', () => driver.putContentIfAbsent(path, content)),
    reader: (path, offset, length): Promise<Readable> => timed('reader', () => driver.reader(path, offset, length)),
    writer: (path, append): Promise<FileWriter> => timed('writer', () => driver.writer(path, append)),
    stat: (path): Promise<FileInfo> => timed('stat', () => driver.stat(path)),
    list: (path) => timed('list', () => driver.list(path)),
    move: (from, to, options) => timed('move', () => driver.move(from, to, options)),
    delete: (path, options) => timed('delete', () => driver.delete(path, options)),
    redirectURL: (path, options) => timed('redirectURL', () => driver.redirectURL(path, options)),
    walk: (path: string, options?: WalkOptions) => timedIterable('walk', () => driver.walk(path, options)),
  };
  const { removeEmptyDirectory, countDirectories, listFiles, deleteFiles } = driver;
  if (removeEmptyDirectory) wrapped.removeEmptyDirectory = (path) => timed('removeEmptyDirectory', () => removeEmptyDirectory.call(driver, path));
  if (countDirectories) wrapped.countDirectories = (path) => timed('countDirectories', () => countDirectories.call(driver, path));
  if (listFiles) wrapped.listFiles = (path) => timedIterable('listFiles', () => listFiles.call(driver, path));
  if (deleteFiles) wrapped.deleteFiles = (paths) => timed('deleteFiles', () => deleteFiles.call(driver, paths));
  return wrapped;
}
