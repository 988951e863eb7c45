/**
 * Assemble and run the registry from a loaded configuration: storage driver, registry domain (the local registry,
 * wrapped by the pull-through cache when `proxy` is configured), Koa app, HTTP(S) listener, and graceful shutdown.
 */
import { readFile } from 'node:fs/promises';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { verifyDriver } from '../storage-drivers/index.js';
import { createDescriptorCache, redisConnectionOptions } from './cache/index.js';
import type { WharfConfig } from './config/index.js';
import { startDebugServer } from './debug.js';
import { Health } from './health.js';
import { GcRecorder } from './gc/recorder.js';
import { serverGcState } from './gc/redis-state.js';
import { createApp } from './http/app.js';
import { UploadLimits } from './http/upload-limits.js';
import { guardConnections, httpServerOptions, type ConnectionLimits } from './http/connections.js';
import { TrustedProxies } from './http/forwarded.js';
import { Mirror } from './proxy/mirror.js';
import { SharedFlights } from './proxy/shared-flight.js';
import { createAuth } from './http/auth-setup.js';
import { createUi } from './ui/index.js';
import { createLogger } from './logging.js';
import { Metrics, countingCache, instrumentedDriver } from './metrics.js';
import { GC_METRICS_PATH } from './registry/layout.js';
import { Notifier } from './notifications.js';
import type { HttpOptions } from './http/context.js';
import { purgeUploads } from './registry/purge.js';
import { LocalRegistry } from './registry/registry.js';
import { PullRecorder, pullsFlushMsFromEnv } from './policies/pulls.js';
import { Policies } from './policies/rules.js';
import { createQuotas } from './policies/quota-setup.js';
import { driverFor, driverOptionsFor } from './storage.js';

export interface RunningServer {
  server: Server;
  /** Base URL of the listener (the first address for wildcard binds), e.g. http://127.0.0.1:5000 */
  url: string;
  /** Base URL of the debug listener, when http.debug.addr is set. */
  debugUrl?: string;
  /** Stop accepting, let in-flight requests finish (up to http.draintimeout), then close everything. */
  close(): Promise<void>;
  /**
   * Apply a re-read configuration (SIGHUP): access rules, users and trusted certificates, and the content policies
   * and manifest validation (`policies`, `validation.manifests`); connections stay.
   */
  reload(config: WharfConfig): void;
}

export { driverFor, driverOptionsFor };

export function httpOptions(config: WharfConfig): HttpOptions {
  const prefix = config.http.prefix.replace(/\/+$/, '');
  return {
    host: config.http.host?.replace(/\/+$/, ''),
    prefix: prefix === '' ? '' : prefix.startsWith('/') ? prefix : `/${prefix}`,
    relativeUrls: config.http.relativeurls,
    deleteEnabled: config.storage.delete.enabled,
    readOnly: config.storage.maintenance.readonly.enabled,
    redirectEnabled: !config.storage.redirect.disable,
    manifestMaxSize: config.validation.manifests.maxsize,
    headers: config.http.headers,
    catalogMaxEntries: config.catalog.maxentries,
    maxTags: config.tags.maxtags,
    trustedProxies: config.http.trustedproxies,
  };
}

/** Split registry:2's `http.addr` (`:5000`, `host:port`, `[v6]:port`) into host and port. */
export function parseAddr(addr: string): { host?: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(addr);
  if (!m) throw new Error(`http.addr: expected host:port, got "${addr}"`);
  const host = m[1] ?? m[2];
  return { host: host === '' ? undefined : host, port: Number(m[3]) };
}

export async function startServer(config: WharfConfig, logger = createLogger(config)): Promise<RunningServer> {
  // A missing bucket or bad credentials stop the start here, with a StorageError saying which.
  for (const warning of await verifyDriver(driverOptionsFor(config))) logger.warn({ storage: config.storage.driver }, warning);
  const metrics = config.http.debug?.prometheus.enabled ? new Metrics() : undefined;
  const driver = metrics ? instrumentedDriver(driverFor(config), metrics) : driverFor(config);
  const health = new Health(driver, config.health.storagedriver, logger, metrics);
  health.start();
  // The garbage collector's live set: record what is linked while a GC run holds its lock (server/gc/worker.ts).
  // In Redis when the `redis` section is configured, else in storage (server/gc/redis-state.ts).
  const gcState = await serverGcState(config, driver);
  const gcRecorder = new GcRecorder(driver, {
    probe: gcState.probe,
    liveSet: gcState.liveSet,
    redis: gcState.redis,
    onError: (err) => logger.warn({ err }, 'gc lock check failed'),
  });
  await gcRecorder.start();
  // Authentication first: it may generate the token signing key and certificate, and it decides mount rules.
  const auth = await createAuth(config, logger);
  // Immutable tags, quotas, retention and manifest validation; swapped on SIGHUP.
  const policies = new Policies(config);
  // Last-pulled times for retention, written to storage in batches (server/policies/pulls.ts); none in read-only mode.
  const pulls = config.storage.maintenance.readonly.enabled
    ? undefined
    : new PullRecorder(driver, {
        flushMs: pullsFlushMsFromEnv(),
        onError: (err) => logger.warn({ err }, 'pulls: writing last-pull records failed'),
        // Only where a retention rule asks for pull times: a registry without one writes nothing when serving pulls.
        shouldRecord: (name) => policies.rules.retentionFor(name)?.keep?.pulledWithinMs !== undefined,
        anyRecorded: () => policies.rules.retention.some((r) => r.keep?.pulledWithinMs !== undefined),
      });
  pulls?.start();
  const quotas = await createQuotas(config, driver, policies, {
    logger,
    ...(metrics ? { onRefused: (rule) => metrics.quotaRefusals.inc({ rule: rule.name }) } : {}),
  });
  if (metrics) metrics.quotaMetrics(() => quotas.figures(), () => quotas.limits());
  const registry = new LocalRegistry(driver, {
    policies,
    ...(pulls ? { pulls } : {}),
    quotas: quotas.quotas,
    // With access checks, a mount without `from` could reveal blobs of repositories the caller cannot read.
    mayMountWithoutFrom: auth.checksRequests ? () => false : undefined,
    // storage.cache.blobdescriptor (inmemory or redis); a Redis that is down only means no cache until it is back.
    descriptorCache: await createDescriptorCache(config, { logger }).then((cache) =>
      cache && metrics ? countingCache(cache, metrics) : cache),
    recorder: gcRecorder,
    onCorruptContent: (digest) => logger.error({ digest }, 'stored content does not hash to its digest; not served'),
  });
  if (registry.descriptorCache) gcRecorder.guard(registry.descriptorCache);
  const cache = registry.descriptorCache;
  if (cache && cache.backend === 'redis') {
    health.addAdvisory('redis', async () => {
      if (!cache.healthy()) throw new Error(`unavailable, serving from storage: ${cache.status().lastError ?? 'not connected'}`);
    });
  }
  // With Redis, the mirror's replicas share each upstream fetch; a Redis that is down only means duplicate fetches.
  const sharedFlights = config.proxy && config.redis ? new SharedFlights({ ...redisConnectionOptions(config.redis), logger }) : undefined;
  await sharedFlights?.connect();
  const notifier = new Notifier(
    { endpoints: config.notifications.endpoints, maxQueue: config.notifications.maxqueue },
    logger,
  );
  const mirror = config.proxy
    ? new Mirror(config.proxy, registry, logger, { manifestMaxSize: config.validation.manifests.maxsize, ...(metrics ? { metrics: metrics.registry } : {}), ...(sharedFlights ? { sharedFlights } : {}) })
    : undefined;
  const ui = config.ui.enabled
    ? await createUi({
        driver,
        local: registry,
        registry: mirror ?? registry,
        options: httpOptions(config),
        auth: () => auth.ui(),
        title: config.ui.title,
        sessionLifetimeMs: config.ui.sessionlifetime,
        logger,
        notifier,
        storageDriver: config.storage.driver,
        ...(mirror ? { mirrorStatus: () => mirror.upstreamStatus(), isMirrored: (name: string) => mirror.isMirrored(name) } : {}),
      })
    : undefined;
  const app = createApp({
    // Handlers call one Registry: the pull-through cache wrapping the local registry, or the local registry.
    registry: mirror ?? registry,
    logger,
    options: httpOptions(config),
    accessLogDisabled: config.log.accesslog.disabled,
    metrics,
    health,
    auth: auth.hooks,
    notifier,
    uploadLimits: new UploadLimits(driver, {
      perRepository: config.storage.maintenance.uploadlimits.perrepository,
      perUser: config.storage.maintenance.uploadlimits.peruser,
      maxAgeMs: config.storage.maintenance.uploadpurging.age,
    }),
    ...(mirror ? { proxy: mirror } : {}),
    ...(ui ? { ui } : {}),
  });
  const handler = app.callback();
  const limits: ConnectionLimits = {
    readHeaderMs: config.http.timeouts.readheader,
    stallMs: config.http.timeouts.stall,
    idleMs: config.http.timeouts.idle,
    maxPerAddress: config.http.maxconnectionsperaddress,
  };
  const serverOptions = httpServerOptions(limits, config.storage.driver);
  const server = config.http.tls
    ? createHttpsServer(
        { ...serverOptions, cert: await readFile(config.http.tls.certificate), key: await readFile(config.http.tls.key) },
        handler,
      )
    : createHttpServer(serverOptions, handler);
  // Header, keep-alive and stall timeouts and connections per address (http.timeouts, http.maxconnectionsperaddress).
  // Large layer uploads can take long: the total time of a request is not limited, only time standing still.
  const guard = guardConnections(server, limits, new TrustedProxies(config.http.trustedproxies), logger);

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if (config.http.net === 'unix') {
      server.listen(config.http.addr, () => resolve());
    } else {
      const { host, port } = parseAddr(config.http.addr);
      server.listen(port, host, () => resolve());
    }
  });

  const scheme = config.http.tls ? 'https' : 'http';
  const address = server.address();
  let url: string;
  if (typeof address === 'string') {
    url = `unix:${address}`;
  } else {
    const { address: host, port, family } = address as AddressInfo;
    const shown = host === '::' || host === '0.0.0.0' ? '127.0.0.1' : family === 'IPv6' ? `[${host}]` : host;
    url = `${scheme}://${shown}:${port}`;
  }
  logger.info({ addr: config.http.addr, url, storage: config.storage.driver }, 'listening');
  notifier.setSourceAddr(new URL(url).host);

  const debug = config.http.debug
    ? await startDebugServer({
        addr: parseAddr(config.http.debug.addr),
        health,
        metrics,
        metricsPath: config.http.debug.prometheus.path,
        // The collector runs in its own process and leaves its last run's figures in storage.
        extraMetrics: async () => (await driver.getContent(GC_METRICS_PATH)).toString('utf8'),
      })
    : undefined;
  if (debug) logger.info({ addr: config.http.debug!.addr, url: debug.url, metrics: Boolean(metrics) }, 'debug listener');

  const stopPurging = schedulePurging(config, registry, logger);

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    stopPurging();
    gcRecorder.stop();
    health.stop();
    notifier.close();
    debug?.server.close();
    closing ??= new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        logger.warn({ drainTimeoutMs: config.http.draintimeout }, 'drain timeout reached; closing open connections');
        server.closeAllConnections();
      }, config.http.draintimeout);
      timer.unref();
      server.close(() => {
        clearTimeout(timer);
        guard.stop();
        void registry.descriptorCache?.close().catch(() => {});
        void sharedFlights?.close();
        void gcState.close();
        void quotas.close();
        // The last batch of pull records, then done.
        void (pulls?.close() ?? Promise.resolve()).finally(resolve);
      });
      server.closeIdleConnections();
    });
    return closing;
  };
  const reload = (next: WharfConfig) => {
    auth.reload(next);
    policies.reload(next);
    logger.info({ immutabletags: next.policies.immutabletags.length, quotas: next.policies.quotas.length, retention: next.policies.retention.length }, 'policies: configuration reloaded');
  };
  return { server, url, debugUrl: debug?.url, close, reload };
}

/**
 * registry:2's upload purging inside the server: the first run after a random delay of up to an hour (so replicas
 * started together do not all walk storage at once), then every `interval`. Off in read-only mode. Returns a stop
 * function.
 */
function schedulePurging(config: WharfConfig, registry: LocalRegistry, logger: Logger): () => void {
  const { enabled, age, interval, dryrun } = config.storage.maintenance.uploadpurging;
  if (!enabled || config.storage.maintenance.readonly.enabled) return () => {};
  let timer: NodeJS.Timeout;
  const run = async () => {
    try {
      const result = await purgeUploads(registry.driver, { olderThanMs: age, dryRun: dryrun });
      logger.info({ purged: result.purged.length, examined: result.examined, dryRun: dryrun }, 'upload purge finished');
    } catch (err) {
      logger.error({ err }, 'upload purge failed');
    }
    timer = setTimeout(run, interval);
    timer.unref();
  };
  timer = setTimeout(run, Math.floor(Math.random() * Math.min(interval, 60 * 60 * 1000)));
  timer.unref();
  return () => clearTimeout(timer);
}
