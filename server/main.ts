/**
 * Assemble and run the registry from a loaded configuration: storage driver, registry domain, Koa app, HTTP(S)
 * listener, and graceful shutdown.
 */
import { readFile } from 'node:fs/promises';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { createDriver } from '../storage-drivers/index.js';
import type { StorageDriver } from '../storage-drivers/driver.js';
import type { WharfConfig } from './config/index.js';
import { createApp } from './http/app.js';
import { createLogger } from './logging.js';
import type { HttpOptions } from './http/context.js';
import { purgeUploads } from './registry/purge.js';
import { Registry } from './registry/registry.js';

export interface RunningServer {
  server: Server;
  /** Base URL of the listener (the first address for wildcard binds), e.g. http://127.0.0.1:5000 */
  url: string;
  /** Stop accepting, let in-flight requests finish (up to http.draintimeout), then close everything. */
  close(): Promise<void>;
}

export function driverFor(config: WharfConfig): StorageDriver {
  if (config.storage.driver === 'inmemory') return createDriver({ driver: 'inmemory' });
  return createDriver({ driver: 'filesystem', rootDirectory: config.storage.filesystem.rootdirectory });
}

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
    catalogMaxEntries: 1000,
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
  const registry = new Registry(driverFor(config), {
    descriptorCacheSize: config.storage.cache.blobdescriptor === 'inmemory' ? config.storage.cache.blobdescriptorsize : undefined,
  });
  const app = createApp({
    registry,
    logger,
    options: httpOptions(config),
    accessLogDisabled: config.log.accesslog.disabled,
  });
  const handler = app.callback();
  const server = config.http.tls
    ? createHttpsServer(
        { cert: await readFile(config.http.tls.certificate), key: await readFile(config.http.tls.key) },
        handler,
      )
    : createHttpServer(handler);
  // Large layer uploads can take long; never cut a request that is still sending.
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  server.keepAliveTimeout = 75_000;

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

  const stopPurging = schedulePurging(config, registry, logger);

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    stopPurging();
    closing ??= new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        logger.warn({ drainTimeoutMs: config.http.draintimeout }, 'drain timeout reached; closing open connections');
        server.closeAllConnections();
      }, config.http.draintimeout);
      timer.unref();
      server.close(() => {
        clearTimeout(timer);
        resolve();
      });
      server.closeIdleConnections();
    });
    return closing;
  };
  return { server, url, close };
}

/**
 * registry:2's upload purging inside the server: the first run after a random delay of up to an hour (so replicas
 * started together do not all walk storage at once), then every `interval`. Off in read-only mode. Returns a stop
 * function.
 */
function schedulePurging(config: WharfConfig, registry: Registry, logger: Logger): () => void {
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
