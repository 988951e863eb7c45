/**
 * Loading a Wharf configuration: YAML with registry:2's keys, `REGISTRY_*` environment overrides, defaults and
 * validation, producing a complete `WharfConfig`.
 *
 *   text ──parse──▶ tree ──env overrides──▶ tree ──warnings (unknown / unsupported keys)
 *                                              └──read every key as its registry:2 type──▶ WharfConfig
 *
 * Problems are collected, not thrown one at a time: `config check` shows every broken key in one run. Each
 * problem names its key (and the environment variable, when one set it).
 */
import { readFile } from 'node:fs/promises';
import { isIP, isIPv6 } from 'node:net';
import { resolve as resolvePath } from 'node:path';
import { nanosToMillis, parseGoDuration } from './duration.js';
import { applyEnvOverrides, switchDriver, type Origins } from './env.js';
import { ConfigError } from './errors.js';
import { CONFIG_SHAPE, STORAGE_SETTINGS, SUPPORTED_STORAGE_DRIVERS, type Shape } from './schema.js';
import {
  describe,
  isMapNode,
  isScalarNode,
  isSeqNode,
  isUnset,
  parseYamlTree,
  toPlain,
  type MapNode,
  type TreeNode,
} from './tree.js';
import type { AccessRuleConfig, AuthConfig, HttpConfig, LogConfig, LogLevel, NotificationEndpointConfig, NotificationsConfig, ProxyConfig, ProxyUpstreamConfig, RedisConfig, S3StorageConfig, StorageConfig, ValidationConfig, WharfConfig } from './types.js';

export interface LoadOptions {
  /** A YAML config file. Without one, the embedded default is used (still subject to `REGISTRY_*` overrides). */
  path?: string;
  /** The environment to take `REGISTRY_*` overrides from; usually `process.env`. None when omitted. */
  env?: Record<string, string | undefined>;
  /** Directory relative paths in the config (the storage root) are resolved against. Default: `process.cwd()`. */
  cwd?: string;
}

export interface LoadResult {
  config: WharfConfig;
  /** Things worth telling the operator that do not stop the server: ignored keys, deprecated forms. */
  warnings: string[];
}

/** How the embedded default is named in messages. */
export const EMBEDDED_SOURCE = '<embedded default>';

/**
 * The configuration used when no file is given: a development setup that needs no root rights, with data under
 * `./data` in the working directory. Everything else takes the usual defaults (log level info, delete disabled).
 */
export const EMBEDDED_DEFAULT_YAML = `version: 0.1
storage:
  filesystem:
    rootdirectory: ./data
http:
  addr: :5000
`;

/** The storage classes registry:2 accepts for `storage.s3.storageclass` (NONE: send no class). */
const S3_STORAGE_CLASSES = ['STANDARD', 'REDUCED_REDUNDANCY', 'STANDARD_IA', 'ONEZONE_IA', 'INTELLIGENT_TIERING', 'OUTPOSTS', 'GLACIER_IR', 'NONE'];

/** registry:2's defaults for keys a config file leaves out. */
export const DEFAULTS = {
  rootdirectory: '/var/lib/registry',
  addr: ':5000',
  draintimeoutMs: 60_000,
  uploadPurgeAgeMs: 168 * 3600_000,
  uploadPurgeIntervalMs: 24 * 3600_000,
  uploadSessionsPerRepository: 1000,
  uploadSessionsPerUser: 500,
  blobDescriptorSize: 10_000,
  redisDialTimeoutMs: 5_000,
  redisIoTimeoutMs: 3_000,
  manifestMaxSize: 4 * 1024 * 1024,
  notificationTimeoutMs: 1000,
  notificationThreshold: 10,
  notificationBackoffMs: 1000,
  notificationMaxQueue: 10_000,
  healthIntervalMs: 10_000,
  healthThreshold: 3,
  proxyTtlMs: 168 * 3600_000,
  proxyTimeoutMs: 10_000,
  prometheusPath: '/metrics',
  readHeaderTimeoutMs: 30_000,
  stallTimeoutMs: 60_000,
  keepAliveTimeoutMs: 75_000,
  maxConnectionsPerAddress: 100,
  catalogMaxEntries: 1000,
  maxTags: 1000,
} as const;

/** Load the config file at `options.path` (or the embedded default) and apply `REGISTRY_*` overrides. */
export async function loadConfig(options: LoadOptions = {}): Promise<LoadResult> {
  const env = options.env ?? {};
  if (options.path === undefined) return parseConfig(EMBEDDED_DEFAULT_YAML, env, EMBEDDED_SOURCE, options);
  let text: string;
  try {
    text = await readFile(options.path, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message;
    throw new ConfigError(`cannot read configuration file ${options.path}: ${reason}`, options.path);
  }
  return parseConfig(text, env, options.path, options);
}

/**
 * Parse, override, default and validate a configuration given as YAML text. `source` names it in messages.
 * Throws `ConfigError` listing every problem found.
 */
export function parseConfig(
  yamlText: string,
  env: Record<string, string | undefined> = {},
  source = '<inline>',
  options: { cwd?: string } = {},
): LoadResult {
  let root: TreeNode;
  try {
    root = parseYamlTree(yamlText);
  } catch (err) {
    throw new ConfigError(`invalid YAML: ${(err as Error).message}`, source);
  }
  if (!isMapNode(root)) throw new ConfigError(`the configuration must be a YAML mapping, got ${describe(root)}`, source);

  const warnings: string[] = [];
  const problems: string[] = [];
  const origins: Origins = new WeakMap();

  // The version describes the file, so it is checked before the environment has its say (as registry:2 does).
  const version = root.get('version');
  if (isUnset(version)) problems.push('version: must be "0.1" (missing)');
  else if (!isScalarNode(version) || version.text !== '0.1') problems.push(`version: must be "0.1", got ${describe(version!)}`);

  // `storage: inmemory` in a file is short for `storage: {inmemory: {}}`.
  for (const key of ['storage', 'auth']) {
    const node = root.get(key);
    const shape = CONFIG_SHAPE.kind === 'section' ? CONFIG_SHAPE.fields[key] : undefined;
    if (isScalarNode(node) && typeof node.value === 'string' && shape?.kind === 'section' && shape.driver) {
      root.set(key, switchDriver(undefined, node.value, shape.driver));
    }
  }

  applyEnvOverrides(root, CONFIG_SHAPE, env, warnings, problems, origins);
  collectWarnings(root, CONFIG_SHAPE, '', warnings);

  const reader = new Reader(problems, warnings, origins, options.cwd ?? process.cwd());
  const top: Sec = { map: root, path: '' };
  const config: WharfConfig = {
    version: '0.1',
    log: reader.log(top),
    storage: reader.storage(top),
    http: reader.http(top),
    validation: reader.validation(top),
    auth: reader.auth(top),
    health: reader.health(top),
    notifications: reader.notifications(top),
    catalog: { maxentries: reader.positiveOrDefault(reader.sectionOf(top, 'catalog'), 'maxentries', DEFAULTS.catalogMaxEntries) },
    tags: { maxtags: reader.positiveOrDefault(reader.sectionOf(top, 'tags'), 'maxtags', DEFAULTS.maxTags) },
  };
  const redis = reader.redis(top, config.storage);
  if (redis) config.redis = redis;
  const proxy = reader.proxy(top);
  if (proxy) config.proxy = proxy;
  if (problems.length > 0) throw new ConfigError(problems, source);
  return { config, warnings };
}

/** Warn about keys that are unknown, or known to registry:2 but not implemented by Wharf. */
function collectWarnings(node: TreeNode | undefined, shape: Shape, path: string, warnings: string[]): void {
  const at = (key: string | number) => (path === '' ? String(key) : `${path}.${key}`);
  switch (shape.kind) {
    case 'section':
      if (!isMapNode(node)) return;
      for (const [key, child] of node) {
        const field = shape.fields[key];
        if (field) collectWarnings(child, field, at(key), warnings);
        else if (!shape.driver?.unknownIsError) warnings.push(`unknown key ${at(key)} (ignored)`);
        // (an unknown storage driver is an error, reported by the reader)
      }
      return;
    case 'map':
      if (isMapNode(node)) for (const [key, child] of node) collectWarnings(child, shape.values, at(key), warnings);
      return;
    case 'list':
      if (isSeqNode(node)) node.forEach((child, i) => collectWarnings(child, shape.items, at(i), warnings));
      return;
    case 'unsupported':
      warnings.push(shape.note ?? `${path}: not supported by this Wharf version`);
      return;
    case 'value':
    case 'any':
      return;
  }
}

/** A section of the tree being read, with its key path. `map` is undefined when the section is absent. */
interface Sec {
  map: MapNode | undefined;
  path: string;
}

const BOOLEAN_WORDS = new Map<string, boolean>();
// registry:2 reads booleans with a YAML 1.1 decoder, which also knows yes/no/on/off/y/n.
for (const [words, value] of [
  ['true yes on y', true],
  ['false no off n', false],
] as const) {
  for (const w of words.split(' ')) {
    for (const form of [w, w[0]!.toUpperCase() + w.slice(1), w.toUpperCase()]) BOOLEAN_WORDS.set(form, value);
  }
}

const LOG_LEVELS: readonly LogLevel[] = ['error', 'warn', 'info', 'debug'];
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** Reads each key of the tree as its type, applying defaults and recording problems. */
class Reader {
  constructor(
    private readonly problems: string[],
    private readonly warnings: string[],
    private readonly origins: Origins,
    private readonly cwd: string,
  ) {}

  // ---- sections ------------------------------------------------------------------------------------------

  log(top: Sec): LogConfig {
    const log = this.section(top, 'log');
    // The level comes from log.level, or else from the deprecated top-level loglevel.
    let levelAt: [Sec, string] = [log, 'level'];
    let level = this.string(log, 'level');
    if (top.map?.has('loglevel')) {
      if (level === undefined) {
        levelAt = [top, 'loglevel'];
        level = this.string(top, 'loglevel');
        this.warnings.push('loglevel is deprecated; use log.level');
      } else {
        this.warnings.push('loglevel is deprecated and log.level is set; loglevel is ignored');
      }
    }
    let parsedLevel: LogLevel = 'info';
    if (level !== undefined) {
      const lower = level.toLowerCase();
      const normal = lower === 'warning' ? 'warn' : lower;
      if ((LOG_LEVELS as readonly string[]).includes(normal)) parsedLevel = normal as LogLevel;
      else this.fail(...levelAt, `expected one of error, warn (or warning), info, debug, got ${JSON.stringify(level)}`);
    }

    let formatter: LogConfig['formatter'] = 'auto';
    const fmt = this.string(log, 'formatter')?.toLowerCase();
    if (fmt === 'json' || fmt === 'text') formatter = fmt;
    else if (fmt === 'logstash') {
      this.warnings.push('log.formatter: logstash is not supported by this Wharf version; using json');
      formatter = 'json';
    }
    else if (fmt !== undefined) this.fail(log, 'formatter', `expected json or text, got ${JSON.stringify(fmt)}`);

    const fieldsNode = log.map?.get('fields');
    let fields: Record<string, unknown> = {};
    if (isMapNode(fieldsNode)) fields = toPlain(fieldsNode) as Record<string, unknown>;
    else if (!isUnset(fieldsNode)) this.fail(log, 'fields', `expected a mapping, got ${describe(fieldsNode!)}`);

    return {
      level: parsedLevel,
      formatter,
      accesslog: { disabled: this.boolean(this.section(log, 'accesslog'), 'disabled', false) },
      fields,
    };
  }

  storage(top: Sec): StorageConfig {
    const storage = this.section(top, 'storage');
    const drivers = storage.map ? [...storage.map.keys()].filter((k) => !(STORAGE_SETTINGS as readonly string[]).includes(k)) : [];
    let driver: StorageConfig['driver'] = 'filesystem';
    const malformed = !storage.map && !isUnset(top.map?.get('storage')); // section() has reported it
    if (malformed) {
      // a storage value that is not a mapping says nothing about drivers
    } else if (drivers.length !== 1) {
      this.problem('storage', storage.map, `exactly one storage driver must be configured (got ${drivers.join(', ') || 'none'})`);
    } else {
      const name = drivers[0]!;
      const known = CONFIG_SHAPE.kind === 'section' && CONFIG_SHAPE.fields.storage?.kind === 'section' && name in CONFIG_SHAPE.fields.storage.fields;
      if ((SUPPORTED_STORAGE_DRIVERS as readonly string[]).includes(name)) driver = name as StorageConfig['driver'];
      else if (known) this.fail(storage, name, `this storage driver is not supported by this Wharf version (available: ${SUPPORTED_STORAGE_DRIVERS.join(', ')})`);
      else this.fail(storage, name, `unknown storage driver (available: ${SUPPORTED_STORAGE_DRIVERS.join(', ')})`);
    }

    const fs = this.section(storage, 'filesystem');
    const rootdirectory = resolvePath(this.cwd, this.string(fs, 'rootdirectory') ?? DEFAULTS.rootdirectory);
    this.section(storage, 'inmemory'); // takes no parameters, but must be a mapping if it has any
    const s3 = driver === 's3' ? this.s3(this.section(storage, 's3')) : undefined;

    const maintenance = this.section(storage, 'maintenance');
    const purging = this.section(maintenance, 'uploadpurging');
    const uploadLimits = this.section(maintenance, 'uploadlimits');
    return {
      driver,
      filesystem: { rootdirectory },
      ...(s3 ? { s3 } : {}),
      delete: { enabled: this.boolean(this.section(storage, 'delete'), 'enabled', false) },
      redirect: { disable: this.boolean(this.section(storage, 'redirect'), 'disable', false) },
      cache: this.cache(this.section(storage, 'cache')),
      maintenance: {
        readonly: { enabled: this.boolean(this.section(maintenance, 'readonly'), 'enabled', false) },
        uploadpurging: {
          enabled: this.boolean(purging, 'enabled', true),
          age: this.duration(purging, 'age', DEFAULTS.uploadPurgeAgeMs),
          interval: this.duration(purging, 'interval', DEFAULTS.uploadPurgeIntervalMs, { positive: true }),
          dryrun: this.boolean(purging, 'dryrun', false),
        },
        uploadlimits: {
          perrepository: this.integer(uploadLimits, 'perrepository', DEFAULTS.uploadSessionsPerRepository, 0),
          peruser: this.integer(uploadLimits, 'peruser', DEFAULTS.uploadSessionsPerUser, 0),
        },
      },
    };
  }

  /** registry:2's `storage.s3` keys, with its defaults and limits (S3's multipart rules). */
  private s3(s3: Sec): S3StorageConfig {
    const MiB = 1024 * 1024;
    const GiB = 1024 * MiB;
    const required = (key: string): string => {
      const value = this.string(s3, key);
      if (value === undefined) this.fail(s3, key, 'required by the s3 storage driver');
      return value ?? '';
    };
    const size = (key: string, fallback: number, min: number, max: number): number => {
      const n = this.integer(s3, key, fallback, min);
      if (n > max) {
        this.fail(s3, key, `must be at most ${max} (${max / GiB} GiB), got ${n}`);
        return fallback;
      }
      return n;
    };
    const region = required('region');
    const bucket = required('bucket');
    const regionendpoint = this.string(s3, 'regionendpoint');
    if (regionendpoint !== undefined && /^[a-z][a-z0-9+.-]*:\/\//i.test(regionendpoint)) {
      let ok = false;
      try {
        const url = new URL(regionendpoint);
        ok = (url.protocol === 'http:' || url.protocol === 'https:') && url.hostname !== '';
      } catch {
        // not a URL
      }
      if (!ok) this.fail(s3, 'regionendpoint', `expected an http(s) URL such as https://s3.example.com, got ${JSON.stringify(regionendpoint)}`);
    }
    const accesskey = this.string(s3, 'accesskey');
    const secretkey = this.string(s3, 'secretkey');
    if ((accesskey === undefined) !== (secretkey === undefined)) {
      // Never echo the secret in a message.
      this.fail(s3, accesskey === undefined ? 'accesskey' : 'secretkey', 'accesskey and secretkey must be given together (or neither, to use the AWS default credential chain)');
    }
    const storageclass = (this.string(s3, 'storageclass') ?? 'STANDARD').toUpperCase();
    if (!S3_STORAGE_CLASSES.includes(storageclass)) {
      this.fail(s3, 'storageclass', `expected one of ${S3_STORAGE_CLASSES.join(', ')}, got ${JSON.stringify(storageclass)}`);
    }
    if (s3.map?.has('v4auth') && !this.boolean(s3, 'v4auth', true)) {
      this.warnings.push('storage.s3.v4auth: false is ignored; Wharf always signs requests with Signature Version 4');
    }
    const result: S3StorageConfig = {
      region,
      bucket,
      forcepathstyle: this.boolean(s3, 'forcepathstyle', false),
      rootdirectory: this.string(s3, 'rootdirectory') ?? '',
      chunksize: size('chunksize', 10 * MiB, 5 * MiB, 5 * GiB),
      multipartcopychunksize: size('multipartcopychunksize', 32 * MiB, 5 * MiB, 5 * GiB),
      multipartcopymaxconcurrency: this.integer(s3, 'multipartcopymaxconcurrency', 100, 1),
      multipartcopythresholdsize: size('multipartcopythresholdsize', 32 * MiB, 0, 5 * GiB),
      secure: this.boolean(s3, 'secure', true),
      skipverify: this.boolean(s3, 'skipverify', false),
      storageclass,
      encrypt: this.boolean(s3, 'encrypt', false),
    };
    if (regionendpoint !== undefined) result.regionendpoint = regionendpoint;
    if (accesskey !== undefined && secretkey !== undefined) {
      result.accesskey = accesskey;
      result.secretkey = secretkey;
    }
    const sessiontoken = this.string(s3, 'sessiontoken');
    if (sessiontoken !== undefined) result.sessiontoken = sessiontoken;
    const keyid = this.string(s3, 'keyid');
    if (keyid !== undefined) result.keyid = keyid;
    return result;
  }

  private cache(cache: Sec): StorageConfig['cache'] {
    let kind = this.string(cache, 'blobdescriptor');
    let key = 'blobdescriptor';
    if (kind === undefined && cache.map?.has('layerinfo')) {
      kind = this.string(cache, 'layerinfo');
      key = 'layerinfo';
      this.warnings.push('storage.cache.layerinfo is deprecated; use storage.cache.blobdescriptor');
    }
    const blobdescriptorsize = this.integer(cache, 'blobdescriptorsize', DEFAULTS.blobDescriptorSize, 0);
    if (kind === undefined) return { blobdescriptorsize };
    if (kind === 'inmemory') return { blobdescriptor: 'inmemory', blobdescriptorsize };
    if (kind === 'redis') {
      return { blobdescriptor: 'redis', blobdescriptorsize };
    } else {
      // registry:2 also runs on, uncached, when it does not know the cache type.
      this.warnings.push(`storage.cache.${key}: unknown cache type ${JSON.stringify(kind)}; blob descriptors are not cached`);
    }
    return { blobdescriptorsize };
  }

  http(top: Sec): HttpConfig {
    const http = this.section(top, 'http');

    const netName = this.string(http, 'net')?.toLowerCase();
    let net: HttpConfig['net'] = 'tcp';
    if (netName === 'unix' || netName === 'tcp') net = netName;
    else if (netName !== undefined) this.fail(http, 'net', `expected tcp or unix, got ${JSON.stringify(netName)}`);

    let addr = this.string(http, 'addr');
    if (net === 'unix') {
      if (addr === undefined) this.fail(http, 'addr', 'a socket path is required when http.net is unix');
    } else if (addr !== undefined) {
      const problem = tcpAddressProblem(addr);
      if (problem) this.fail(http, 'addr', `${problem}, got ${JSON.stringify(addr)}`);
    }
    addr ??= DEFAULTS.addr;

    let host = this.string(http, 'host');
    if (host !== undefined) {
      const normal = normaliseHost(host);
      if (normal === undefined) {
        this.fail(http, 'host', `expected scheme://host[:port] with scheme http or https (a path belongs in http.prefix), got ${JSON.stringify(host)}`);
      }
      host = normal;
    }

    let prefix = '/';
    const rawPrefix = this.string(http, 'prefix');
    if (rawPrefix !== undefined) {
      if (/[\s?#]/.test(rawPrefix)) this.fail(http, 'prefix', `expected a URL path such as /registry/, got ${JSON.stringify(rawPrefix)}`);
      // registry:2 asks for a leading and a trailing slash; add whichever is missing.
      prefix = rawPrefix.startsWith('/') ? rawPrefix : `/${rawPrefix}`;
      if (!prefix.endsWith('/')) prefix += '/';
    }

    const timeouts = this.section(http, 'timeouts');
    const result: HttpConfig = {
      addr,
      net,
      prefix,
      relativeurls: this.boolean(http, 'relativeurls', false),
      draintimeout: this.duration(http, 'draintimeout', DEFAULTS.draintimeoutMs),
      headers: this.headers(http),
      trustedproxies: this.trustedProxies(http),
      timeouts: {
        readheader: this.duration(timeouts, 'readheader', DEFAULTS.readHeaderTimeoutMs, { positive: true }),
        stall: this.duration(timeouts, 'stall', DEFAULTS.stallTimeoutMs, { positive: true }),
        idle: this.duration(timeouts, 'idle', DEFAULTS.keepAliveTimeoutMs, { positive: true }),
      },
      maxconnectionsperaddress: this.integer(http, 'maxconnectionsperaddress', DEFAULTS.maxConnectionsPerAddress, 0),
    };
    if (host !== undefined) result.host = host;
    const tls = this.tls(this.section(http, 'tls'));
    if (tls) result.tls = tls;
    const debug = this.section(http, 'debug');
    const debugAddr = this.string(debug, 'addr');
    const prometheus = this.section(debug, 'prometheus');
    const prometheusEnabled = this.boolean(prometheus, 'enabled', false);
    const prometheusPath = this.string(prometheus, 'path') ?? DEFAULTS.prometheusPath;
    if (!prometheusPath.startsWith('/')) this.fail(prometheus, 'path', `expected a path starting with /, got ${JSON.stringify(prometheusPath)}`);
    if (debugAddr !== undefined) {
      const problem = tcpAddressProblem(debugAddr);
      if (problem) this.fail(debug, 'addr', `${problem}, got ${JSON.stringify(debugAddr)}`);
      result.debug = { addr: debugAddr, prometheus: { enabled: prometheusEnabled, path: prometheusPath } };
    } else if (prometheusEnabled) {
      this.warnings.push('http.debug.prometheus: ignored, because http.debug.addr is not set (metrics are served on the debug listener)');
    }
    return result;
  }

  /** `http.trustedproxies`: IP addresses and CIDR ranges (`10.0.0.0/8`, `fd00::/8`), each checked. */
  private trustedProxies(http: Sec): string[] {
    const list = this.stringList(http, 'trustedproxies') ?? [];
    list.forEach((entry, i) => {
      const problem = trustedProxyProblem(entry);
      if (problem) this.fail(http, 'trustedproxies', `entry ${i}: ${problem}, got ${JSON.stringify(entry)}`);
    });
    return list.map((entry) => entry.trim());
  }

  /** A section for readers outside this class (top-level sections with one key). */
  sectionOf(top: Sec, key: string): Sec {
    return this.section(top, key);
  }

  /**
   * A count that must be positive. registry:2 reads zero or a negative value of its page limits as "the default", so
   * those are taken as the default too rather than refused.
   */
  positiveOrDefault(sec: Sec, key: string, fallback: number): number {
    const n = this.integer(sec, key, fallback, Number.MIN_SAFE_INTEGER);
    return n > 0 ? n : fallback;
  }

  private headers(http: Sec): Record<string, string[]> {
    const headers: Record<string, string[]> = {};
    const node = http.map?.get('headers');
    if (isUnset(node)) return headers;
    if (!isMapNode(node)) {
      this.fail(http, 'headers', `expected a mapping of header names to lists of values, got ${describe(node!)}`);
      return headers;
    }
    const sec: Sec = { map: node, path: `${http.path}.headers` };
    for (const [name, value] of node) {
      if (!HEADER_NAME.test(name)) {
        this.fail(sec, name, 'not a valid HTTP header name');
        continue;
      }
      // registry:2 wants a list; a single value is accepted here as a list of one.
      const items = isSeqNode(value) ? value : isUnset(value) ? [] : [value];
      const values: string[] = [];
      for (const item of items) {
        if (!isScalarNode(item) || item.value === null) {
          this.fail(sec, name, `expected a list of header values, got ${describe(item)}`);
        } else if (/[\r\n\0]/.test(item.text)) {
          this.fail(sec, name, 'header values must not contain line breaks');
        } else {
          values.push(item.text);
        }
      }
      Object.defineProperty(headers, name, { value: values, enumerable: true, writable: true, configurable: true });
    }
    return headers;
  }

  private tls(tls: Sec): HttpConfig['tls'] {
    if (!tls.map) return undefined;
    const certificate = this.string(tls, 'certificate');
    const key = this.string(tls, 'key');
    const clientcas = this.stringList(tls, 'clientcas');
    if (certificate === undefined && key === undefined) {
      if (clientcas !== undefined) this.warnings.push('http.tls.clientcas: ignored, because http.tls.certificate and http.tls.key are not set');
      return undefined;
    }
    if (certificate === undefined) {
      this.fail(tls, 'certificate', 'required when http.tls.key is set (TLS needs both certificate and key)');
      return undefined;
    }
    if (key === undefined) {
      this.fail(tls, 'key', 'required when http.tls.certificate is set (TLS needs both certificate and key)');
      return undefined;
    }
    return clientcas === undefined ? { certificate, key } : { certificate, key, clientcas };
  }

  notifications(top: Sec): NotificationsConfig {
    const section = this.section(top, 'notifications');
    const endpoints: NotificationEndpointConfig[] = [];
    const node = section.map?.get('endpoints');
    if (isSeqNode(node)) {
      const names = new Set<string>();
      node.forEach((item, i) => {
        const at = `${section.path}.endpoints.${i}`;
        if (!isMapNode(item)) {
          this.problem(at, item, `expected a mapping with name and url, got ${describe(item)}`);
          return;
        }
        const sec: Sec = { map: item, path: at };
        const known = ['name', 'url', 'headers', 'timeout', 'threshold', 'backoff', 'ignoredmediatypes', 'ignore', 'disabled'];
        for (const key of item.keys()) if (!known.includes(key)) this.warnings.push(`unknown key ${at}.${key} (ignored)`);
        const name = this.string(sec, 'name');
        const url = this.string(sec, 'url');
        if (name === undefined) this.problem(at, item, 'an endpoint needs a name');
        else if (names.has(name)) this.fail(sec, 'name', `duplicate endpoint name ${JSON.stringify(name)}`);
        else names.add(name);
        if (url === undefined) this.problem(at, item, 'an endpoint needs a url');
        else if (!/^https?:\/\/[^\s]+$/.test(url)) this.fail(sec, 'url', `expected an http or https URL, got ${JSON.stringify(withoutUserinfo(url))}`);
        else if (hasUserinfo(url)) {
          this.fail(sec, 'url', `credentials in the URL are not accepted (they would reach logs and errors); send them as a header: ${at}.headers.Authorization`);
        }
        const headers: Record<string, string[]> = {};
        const headersSec = this.section(sec, 'headers');
        for (const [header] of headersSec.map ?? []) {
          const values = this.stringList(headersSec, header) ?? [this.string(headersSec, header) ?? ''];
          Object.defineProperty(headers, header, { value: values, enumerable: true, writable: true, configurable: true });
        }
        const ignore = this.section(sec, 'ignore');
        endpoints.push({
          name: name ?? '',
          url: url ?? '',
          headers,
          timeout: this.duration(sec, 'timeout', DEFAULTS.notificationTimeoutMs, { positive: true }),
          threshold: this.integer(sec, 'threshold', DEFAULTS.notificationThreshold, 1),
          backoff: this.duration(sec, 'backoff', DEFAULTS.notificationBackoffMs, { positive: true }),
          ignoredmediatypes: this.stringList(sec, 'ignoredmediatypes') ?? [],
          ignore: { mediatypes: this.stringList(ignore, 'mediatypes') ?? [], actions: this.stringList(ignore, 'actions') ?? [] },
          disabled: this.boolean(sec, 'disabled', false),
        });
      });
    } else if (!isUnset(node)) {
      this.fail(section, 'endpoints', `expected a list of endpoints, got ${describe(node!)}`);
    }
    return { endpoints, maxqueue: this.integer(section, 'maxqueue', DEFAULTS.notificationMaxQueue, 1) };
  }

  /**
   * registry:2's `proxy` (one upstream for every repository: `remoteurl`, `username`, `password`, `ttl`) and Wharf's
   * `proxy.upstreams` list. Undefined when neither is given (no mirror).
   */
  proxy(top: Sec): ProxyConfig | undefined {
    const section = this.section(top, 'proxy');
    const upstreams: ProxyUpstreamConfig[] = [];
    // A ttl of 0 means cached content never expires.
    const ttlDefault = this.duration(section, 'ttl', DEFAULTS.proxyTtlMs);
    const read = (sec: Sec, name: string, urlKey: string, prefix: string | undefined, namespaces: string[] | undefined) => {
      const url = this.string(sec, urlKey);
      if (url === undefined) {
        this.problem(join(sec.path, urlKey), undefined, 'an upstream needs a URL');
        return;
      }
      let parsed: URL | undefined;
      try {
        parsed = new URL(url);
      } catch {
        parsed = undefined;
      }
      if (!parsed || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') || parsed.hostname === '') {
        this.fail(sec, urlKey, `expected an http or https URL, got ${JSON.stringify(withoutUserinfo(url))}`);
        return;
      }
      if (parsed.username !== '' || parsed.password !== '') {
        this.fail(sec, urlKey, `credentials in the URL are not accepted (they would reach logs and errors); use ${join(sec.path, 'username')} and ${join(sec.path, 'password')}`);
        return;
      }
      const dockerHub = /(^|\.)docker\.io$/.test(parsed.hostname);
      const username = this.string(sec, 'username');
      const password = this.string(sec, 'password');
      if ((username === undefined) !== (password === undefined)) {
        this.problem(sec.path, sec.map, 'username and password go together');
      }
      const upstream: ProxyUpstreamConfig = {
        name,
        url: url.replace(/\/+$/, ''),
        ttl: this.duration(sec, 'ttl', ttlDefault),
        namespaces: namespaces ?? [parsed.host, ...(dockerHub ? ['docker.io'] : [])],
        librarymapping: this.boolean(sec, 'librarymapping', dockerHub),
      };
      if (username !== undefined) upstream.username = username;
      if (password !== undefined) upstream.password = password;
      if (prefix !== undefined) upstream.prefix = prefix;
      const realmhosts = this.stringList(sec, 'realmhosts');
      if (realmhosts !== undefined) {
        const bad = realmhosts.find((h) => !/^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$/.test(h));
        if (bad !== undefined) this.fail(sec, 'realmhosts', `expected host names such as auth.example.com or auth.example.com:5001, got ${JSON.stringify(bad)}`);
        else if (realmhosts.length > 0) upstream.realmhosts = realmhosts.map((h) => h.toLowerCase());
      }
      upstreams.push(upstream);
    };
    if (section.map?.has('remoteurl')) read(section, 'default', 'remoteurl', undefined, undefined);
    const node = section.map?.get('upstreams');
    if (isSeqNode(node)) {
      node.forEach((item, i) => {
        const at = `${section.path}.upstreams.${i}`;
        if (!isMapNode(item)) {
          this.problem(at, item, `expected a mapping with url (and prefix or namespaces), got ${describe(item)}`);
          return;
        }
        const sec: Sec = { map: item, path: at };
        const known = ['name', 'url', 'username', 'password', 'ttl', 'prefix', 'namespaces', 'librarymapping', 'realmhosts'];
        for (const key of item.keys()) if (!known.includes(key)) this.warnings.push(`unknown key ${at}.${key} (ignored)`);
        const prefix = this.string(sec, 'prefix')?.replace(/^\/+|\/+$/g, '');
        if (prefix !== undefined && !/^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/.test(prefix)) {
          this.fail(sec, 'prefix', `expected a repository name prefix such as ghcr or quay/mirror, got ${JSON.stringify(prefix)}`);
        }
        read(sec, this.string(sec, 'name') ?? prefix ?? `upstream${i}`, 'url', prefix === '' ? undefined : prefix, this.stringList(sec, 'namespaces'));
      });
    } else if (!isUnset(node)) {
      this.fail(section, 'upstreams', `expected a list of upstreams, got ${describe(node!)}`);
    }
    if (upstreams.length === 0) {
      if (section.map && section.map.size > 0) this.problem(section.path, section.map, 'a mirror needs proxy.remoteurl or proxy.upstreams');
      return undefined;
    }
    const seen = new Set<string>();
    for (const u of upstreams) {
      const key = u.prefix ?? '';
      if (seen.has(key)) this.problem(`${section.path}.upstreams`, undefined, key === '' ? 'only one upstream may take every repository (no prefix)' : `duplicate prefix ${JSON.stringify(key)}`);
      seen.add(key);
    }
    const localnamespaces = (this.stringList(section, 'localnamespaces') ?? []).map((n) => n.replace(/^\/+|\/+$/g, '')).filter((n) => n !== '');
    const proxy: ProxyConfig = { upstreams, localnamespaces, timeout: this.duration(section, 'timeout', DEFAULTS.proxyTimeoutMs, { positive: true }) };
    // registry:2's keys alone: one upstream for every repository, whatever `?ns=` says (registry:2 ignores it).
    if (upstreams.length === 1 && upstreams[0]!.name === 'default' && isUnset(node)) proxy.ignoresNamespace = true;
    return proxy;
  }

  health(top: Sec): WharfConfig['health'] {
    const storagedriver = this.section(this.section(top, 'health'), 'storagedriver');
    return {
      storagedriver: {
        enabled: this.boolean(storagedriver, 'enabled', false),
        interval: this.duration(storagedriver, 'interval', DEFAULTS.healthIntervalMs, { positive: true }),
        threshold: this.integer(storagedriver, 'threshold', DEFAULTS.healthThreshold, 1),
      },
    };
  }

  /**
   * registry:2's `redis` section, plus Wharf's `redis.url`. Undefined when neither `addr` nor `url` is given;
   * `storage.cache.blobdescriptor: redis` then is a problem (registry:2 refuses to start too).
   */
  redis(top: Sec, storage: StorageConfig): RedisConfig | undefined {
    const redis = this.section(top, 'redis');
    const url = this.string(redis, 'url');
    const addr = this.string(redis, 'addr');
    if (url !== undefined) {
      let parsed: URL | undefined;
      try {
        parsed = new URL(url);
      } catch {
        // reported below
      }
      // The message never repeats the URL: it may hold the password.
      if (!parsed || (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') || parsed.hostname === '') {
        this.fail(redis, 'url', 'expected redis://[user][:password]@host[:port][/db] (or rediss:// for TLS)');
      } else if (!/^\/?(\d*)$/.test(parsed.pathname)) {
        this.fail(redis, 'url', 'the path of a Redis URL is the database number, such as redis://host:6379/0');
      }
    }
    if (addr !== undefined && !/^(\[[^\]]+\]|[^:\s]+):\d{1,5}$/.test(addr)) {
      this.fail(redis, 'addr', `expected host:port, such as redis:6379, got ${JSON.stringify(addr)}`);
    }
    if (url !== undefined && addr !== undefined) this.warnings.push('redis: both url and addr are set; addr overrides the host and port of url');
    if (url === undefined && addr === undefined) {
      if (storage.cache.blobdescriptor === 'redis') {
        this.problem('storage.cache.blobdescriptor', undefined, 'redis needs the redis section with redis.addr or redis.url');
      } else if (redis.map && redis.map.size > 0) {
        this.warnings.push('redis: no addr or url given; Redis is not used');
      }
      return undefined;
    }
    const tls = this.section(redis, 'tls');
    const pool = this.section(redis, 'pool');
    const result: RedisConfig = {
      tls: {
        enabled: this.boolean(tls, 'enabled', false),
        clientcas: this.stringList(tls, 'clientcas') ?? [],
      },
      dialtimeout: this.duration(redis, 'dialtimeout', DEFAULTS.redisDialTimeoutMs, { positive: true }),
      readtimeout: this.duration(redis, 'readtimeout', DEFAULTS.redisIoTimeoutMs, { positive: true }),
      writetimeout: this.duration(redis, 'writetimeout', DEFAULTS.redisIoTimeoutMs, { positive: true }),
      pool: {},
    };
    if (url !== undefined) result.url = url;
    if (addr !== undefined) result.addr = addr;
    const username = this.string(redis, 'username');
    if (username !== undefined) result.username = username;
    const password = this.string(redis, 'password');
    if (password !== undefined) result.password = password;
    if (redis.map?.has('db') && !isUnset(redis.map.get('db'))) result.db = this.integer(redis, 'db', 0, 0);
    const certificate = this.string(tls, 'certificate');
    const key = this.string(tls, 'key');
    if ((certificate === undefined) !== (key === undefined)) {
      this.fail(tls, certificate === undefined ? 'certificate' : 'key', 'redis.tls.certificate and redis.tls.key go together (a client certificate needs its key)');
    }
    if (certificate !== undefined) result.tls.certificate = certificate;
    if (key !== undefined) result.tls.key = key;
    if ((certificate !== undefined || result.tls.clientcas.length > 0) && !result.tls.enabled && !url?.startsWith('rediss:')) {
      this.warnings.push('redis.tls: certificate, key and clientcas are used only when redis.tls.enabled is true');
    }
    for (const k of ['maxidle', 'maxactive'] as const) {
      if (pool.map?.has(k) && !isUnset(pool.map.get(k))) result.pool[k] = this.integer(pool, k, 0, 0);
    }
    if (pool.map?.has('idletimeout') && !isUnset(pool.map.get('idletimeout'))) result.pool.idletimeout = this.duration(pool, 'idletimeout', 0);
    return result;
  }

  validation(top: Sec): ValidationConfig {
    const validation = this.section(top, 'validation');
    let disabled = this.boolean(validation, 'disabled', false);
    if (validation.map?.has('enabled')) {
      const enabled = this.boolean(validation, 'enabled', true);
      if (isUnset(validation.map.get('disabled'))) {
        disabled = !enabled;
        this.warnings.push('validation.enabled is deprecated; use validation.disabled');
      } else {
        this.warnings.push('validation.enabled is deprecated and validation.disabled is set; validation.enabled is ignored');
      }
    }
    const manifests = this.section(validation, 'manifests');
    return { disabled, manifests: { maxsize: this.integer(manifests, 'maxsize', DEFAULTS.manifestMaxSize, 1) } };
  }

  auth(top: Sec): AuthConfig {
    const auth = this.section(top, 'auth');
    const drivers = auth.map ? [...auth.map.keys()].filter((k) => k in AUTH_DRIVER_KEYS) : [];
    if (drivers.length > 1) this.problem('auth', auth.map, `only one of htpasswd, token may be configured (got ${drivers.join(', ')})`);
    const throttle = this.section(auth, 'throttle');
    const result: AuthConfig = {
      throttle: {
        accountfailures: this.integer(throttle, 'accountfailures', 5, 1),
        addressfailures: this.integer(throttle, 'addressfailures', 20, 1),
        accounttotalfailures: this.integer(throttle, 'accounttotalfailures', 100, 1),
        window: this.duration(throttle, 'window', 60_000, { positive: true }),
      },
    };
    const quoted = /["\\\r\n]/;

    const htpasswd = this.section(auth, 'htpasswd');
    if (htpasswd.map) {
      const realm = this.string(htpasswd, 'realm');
      const path = this.string(htpasswd, 'path');
      if (realm === undefined) this.fail(htpasswd, 'realm', 'required (the realm named in the Basic challenge)');
      else if (quoted.test(realm)) this.fail(htpasswd, 'realm', 'must not contain quotes, backslashes or line breaks');
      if (path === undefined) this.fail(htpasswd, 'path', 'required (the htpasswd file with bcrypt entries)');
      if (realm !== undefined && path !== undefined) result.htpasswd = { realm, path: resolvePath(this.cwd, path) };
    }

    const tokenserver = this.section(auth, 'tokenserver');
    const token = this.section(auth, 'token');
    if (token.map) {
      const realm = this.string(token, 'realm');
      const service = this.string(token, 'service');
      const issuer = this.string(token, 'issuer');
      const rootcertbundle = this.string(token, 'rootcertbundle');
      const jwks = this.string(token, 'jwks');
      for (const [key, value] of [['realm', realm], ['service', service], ['issuer', issuer]] as const) {
        if (value === undefined) this.fail(token, key, 'required');
        else if (quoted.test(value)) this.fail(token, key, 'must not contain quotes, backslashes or line breaks');
      }
      if (realm !== undefined && !/^https?:\/\/\S+$/.test(realm)) this.fail(token, 'realm', `expected an http(s) URL, got ${JSON.stringify(realm)}`);
      if (rootcertbundle === undefined && jwks === undefined && !tokenserver.map) {
        this.fail(token, 'rootcertbundle', 'required (or auth.token.jwks, or auth.tokenserver, whose certificate is then trusted)');
      }
      const algorithms = this.stringList(token, 'signingalgorithms') ?? [...TOKEN_ALGORITHMS];
      for (const alg of algorithms) {
        if (!(TOKEN_ALGORITHMS as readonly string[]).includes(alg)) {
          this.fail(token, 'signingalgorithms', `${JSON.stringify(alg)} is not allowed (allowed: ${TOKEN_ALGORITHMS.join(', ')}; never none or HMAC)`);
        }
      }
      const autoredirect = this.boolean(token, 'autoredirect', false);
      if (realm !== undefined && service !== undefined && issuer !== undefined) {
        result.token = { realm, service, issuer, signingalgorithms: algorithms, autoredirect };
        if (rootcertbundle !== undefined) result.token.rootcertbundle = resolvePath(this.cwd, rootcertbundle);
        if (jwks !== undefined) result.token.jwks = resolvePath(this.cwd, jwks);
      }
    }

    if (tokenserver.map) {
      let path = this.string(tokenserver, 'path') ?? '/auth/token';
      if (!/^\/[A-Za-z0-9._~/-]*$/.test(path) || /^\/v2(\/|$)/.test(path)) {
        this.fail(tokenserver, 'path', `expected a URL path outside /v2, such as /auth/token, got ${JSON.stringify(path)}`);
      }
      path = path.replace(/\/+$/, '') || '/auth/token';
      const key = this.string(tokenserver, 'key');
      const certificate = this.string(tokenserver, 'certificate');
      const users = this.string(tokenserver, 'htpasswd');
      if (key === undefined) this.fail(tokenserver, 'key', 'required (PEM private key file; generated when it does not exist)');
      if (certificate === undefined) this.fail(tokenserver, 'certificate', 'required (PEM certificate file; generated when it does not exist)');
      if (users === undefined) this.fail(tokenserver, 'htpasswd', 'required (htpasswd file of the users who may log in)');
      const realm = this.string(tokenserver, 'realm') ?? 'wharf';
      if (quoted.test(realm)) this.fail(tokenserver, 'realm', 'must not contain quotes, backslashes or line breaks');
      const issuer = this.string(tokenserver, 'issuer') ?? result.token?.issuer ?? 'wharf';
      const service = this.string(tokenserver, 'service') ?? result.token?.service ?? 'wharf';
      const expiration = this.duration(tokenserver, 'expiration', 5 * 60_000, { positive: true });
      const refreshexpiration = this.duration(tokenserver, 'refreshexpiration', 30 * 24 * 3600_000, { positive: true });
      if (key !== undefined && certificate !== undefined && users !== undefined) {
        result.tokenserver = {
          path, issuer, service, realm, expiration, refreshexpiration,
          key: resolvePath(this.cwd, key),
          certificate: resolvePath(this.cwd, certificate),
          htpasswd: resolvePath(this.cwd, users),
        };
      }
    }

    const access = this.section(auth, 'access');
    if (access.map) result.access = this.access(access);
    return result;
  }

  private access(access: Sec): NonNullable<AuthConfig['access']> {
    const groups: Record<string, string[]> = {};
    const groupsNode = access.map?.get('groups');
    if (isMapNode(groupsNode)) {
      const sec: Sec = { map: groupsNode, path: `${access.path}.groups` };
      for (const [name] of groupsNode) {
        const members = this.stringList(sec, name);
        if (members) Object.defineProperty(groups, name, { value: members, enumerable: true, writable: true, configurable: true });
      }
    } else if (!isUnset(groupsNode)) {
      this.fail(access, 'groups', `expected a mapping of group names to lists of users, got ${describe(groupsNode!)}`);
    }
    const anonymous = this.stringList(access, 'anonymous') ?? [];
    const rules: AccessRuleConfig[] = [];
    const rulesNode = access.map?.get('rules');
    if (isSeqNode(rulesNode)) {
      rulesNode.forEach((item, i) => {
        const at = `${access.path}.rules.${i}`;
        if (!isMapNode(item)) {
          this.problem(at, item, `expected a mapping with users or groups, repositories and actions, got ${describe(item)}`);
          return;
        }
        const sec: Sec = { map: item, path: at };
        for (const key of item.keys()) {
          if (!['users', 'groups', 'repositories', 'actions', 'catalog'].includes(key)) {
            this.fail(sec, key, 'unknown rule key (expected users, groups, repositories, actions, catalog)');
          }
        }
        const rule: AccessRuleConfig = {};
        const users = this.stringList(sec, 'users');
        const ruleGroups = this.stringList(sec, 'groups');
        const repositories = this.stringList(sec, 'repositories');
        const actions = this.stringList(sec, 'actions');
        if (users) rule.users = users;
        if (ruleGroups) rule.groups = ruleGroups;
        if (repositories) rule.repositories = repositories;
        if (actions) {
          for (const action of actions) {
            if (!['pull', 'push', 'delete', '*'].includes(action)) this.fail(sec, 'actions', `unknown action ${JSON.stringify(action)} (pull, push, delete or *)`);
          }
          rule.actions = actions;
        }
        if (item.has('catalog')) rule.catalog = this.boolean(sec, 'catalog', false);
        if (!users && !ruleGroups) this.problem(at, item, 'a rule needs users or groups');
        if (!rule.catalog && (!repositories || !actions)) this.problem(at, item, 'a rule needs repositories and actions (or catalog: true)');
        for (const group of ruleGroups ?? []) {
          if (!Object.prototype.hasOwnProperty.call(groups, group)) this.fail(sec, 'groups', `group ${JSON.stringify(group)} is not defined in auth.access.groups`);
        }
        rules.push(rule);
      });
    } else if (!isUnset(rulesNode)) {
      this.fail(access, 'rules', `expected a list of rules, got ${describe(rulesNode!)}`);
    }
    return { groups, anonymous, rules };
  }

  // ---- typed keys ----------------------------------------------------------------------------------------

  /** A nested section; absent or empty gives an empty section. Anything but a mapping is a problem. */
  private section(parent: Sec, key: string): Sec {
    const path = join(parent.path, key);
    const node = parent.map?.get(key);
    if (isMapNode(node)) return { map: node, path };
    if (!isUnset(node)) this.fail(parent, key, `expected a mapping, got ${describe(node!)}`);
    return { map: undefined, path };
  }

  /** A string key, as written (registry:2 reads `5000` into a string field as "5000"). Empty means unset. */
  private string(sec: Sec, key: string): string | undefined {
    const node = sec.map?.get(key);
    if (isUnset(node)) return undefined;
    if (!isScalarNode(node)) {
      this.fail(sec, key, `expected a string, got ${describe(node!)}`);
      return undefined;
    }
    return node.text === '' ? undefined : node.text;
  }

  private stringList(sec: Sec, key: string): string[] | undefined {
    const node = sec.map?.get(key);
    if (isUnset(node)) return undefined;
    if (!isSeqNode(node) || !node.every((item) => isScalarNode(item) && item.value !== null)) {
      this.fail(sec, key, `expected a list of strings, got ${describe(node!)}`);
      return undefined;
    }
    return node.map((item) => (item as { text: string }).text);
  }

  private boolean(sec: Sec, key: string, fallback: boolean): boolean {
    const node = sec.map?.get(key);
    if (isUnset(node)) return fallback;
    if (isScalarNode(node)) {
      if (typeof node.value === 'boolean') return node.value;
      const word = BOOLEAN_WORDS.get(node.text);
      if (word !== undefined) return word;
    }
    this.fail(sec, key, `expected a boolean, got ${describe(node!)}`);
    return fallback;
  }

  private integer(sec: Sec, key: string, fallback: number, min: number): number {
    const node = sec.map?.get(key);
    if (isUnset(node)) return fallback;
    let n: number | undefined;
    if (isScalarNode(node)) {
      if (typeof node.value === 'number') n = node.value;
      else if (typeof node.value === 'string' && /^[+-]?\d+$/.test(node.value.trim())) n = Number(node.value);
    }
    if (n === undefined || !Number.isSafeInteger(n)) {
      this.fail(sec, key, `expected an integer, got ${describe(node!)}`);
      return fallback;
    }
    if (n < min) {
      this.fail(sec, key, `must be at least ${min}, got ${n}`);
      return fallback;
    }
    return n;
  }

  /** A Go-syntax duration (`90s`, `1h30m`) or a bare integer of nanoseconds, returned in milliseconds. */
  private duration(sec: Sec, key: string, fallbackMs: number, opts: { positive?: boolean } = {}): number {
    const node = sec.map?.get(key);
    if (isUnset(node)) return fallbackMs;
    let ns: number | undefined;
    let reason = '';
    if (isScalarNode(node)) {
      if (typeof node.value === 'number') {
        if (Number.isInteger(node.value) && /^[+-]?\d+$/.test(node.text)) ns = node.value;
      } else if (typeof node.value === 'string') {
        try {
          ns = parseGoDuration(node.value.trim());
        } catch (err) {
          reason = ` (${(err as Error).message})`;
        }
      }
    }
    if (ns === undefined) {
      this.fail(sec, key, `expected a duration such as 30s, 15m or 1h30m${reason}, got ${describe(node!)}`);
      return fallbackMs;
    }
    if (ns < 0 || (opts.positive && ns === 0)) {
      this.fail(sec, key, `must be ${opts.positive ? 'greater than zero' : 'zero or more'}, got ${describe(node!)}`);
      return fallbackMs;
    }
    return nanosToMillis(ns);
  }

  // ---- problems ------------------------------------------------------------------------------------------

  /** Record a problem with `sec.key`. */
  private fail(sec: Sec, key: string, message: string): void {
    this.problem(join(sec.path, key), sec.map?.get(key), message);
  }

  /** Record a problem with the key at `path`; if an environment variable set it, say which. */
  private problem(path: string, node: TreeNode | undefined, message: string): void {
    const origin = node !== undefined ? this.origins.get(node) : undefined;
    this.problems.push(`${path}${origin ? ` (from ${origin})` : ''}: ${message}`);
  }
}

/** The registry:2 auth drivers (Wharf implements htpasswd and token; none is no auth). */
const AUTH_DRIVER_KEYS = { htpasswd: true, token: true, silly: true } as const;
const TOKEN_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;

function join(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`;
}

/** Why `addr` is not a TCP listen address (`host:port`, `:port`, `[v6]:port`), or undefined if it is one. */
/** What is wrong with an `http.trustedproxies` entry (an IP address, or a CIDR range), or undefined. */
export function trustedProxyProblem(entry: string): string | undefined {
  const m = /^([^/]+)(?:\/(\d{1,3}))?$/.exec(entry.trim());
  const family = m ? isIP(m[1]!) : 0;
  if (!m || family === 0) return 'expected an IP address or a CIDR range such as 10.0.0.0/8';
  if (m[2] !== undefined && Number(m[2]) > (family === 4 ? 32 : 128)) return `the prefix length is at most ${family === 4 ? 32 : 128}`;
  return undefined;
}

function tcpAddressProblem(addr: string): string | undefined {
  const usage = 'expected host:port or :port, such as :5000 or 127.0.0.1:5000';
  let host: string;
  let port: string;
  if (addr.startsWith('[')) {
    const end = addr.indexOf(']');
    if (end < 0 || addr[end + 1] !== ':') return usage;
    host = addr.slice(1, end);
    port = addr.slice(end + 2);
    if (!isIPv6(host.replace(/%.*$/, ''))) return 'the part in brackets must be an IPv6 address';
  } else {
    const colon = addr.lastIndexOf(':');
    if (colon < 0) return usage;
    host = addr.slice(0, colon);
    port = addr.slice(colon + 1);
    if (host.includes(':')) return 'an IPv6 address needs brackets, as in [::1]:5000';
    if (host !== '' && !/^[A-Za-z0-9.-]+$/.test(host)) return `${usage}; the host is not a valid name or address`;
  }
  if (!/^\d{1,5}$/.test(port) || Number(port) > 65535) return `${usage}; the port must be a number from 0 to 65535`;
  return undefined;
}

/** `scheme://host[:port]` without a trailing slash, or undefined if `host` is not such a URL. */
function normaliseHost(host: string): string | undefined {
  let url: URL;
  try {
    url = new URL(host);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined;
  if (url.hostname === '' || url.pathname !== '/' || url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    return undefined;
  }
  return url.origin;
}

/** Whether a URL carries credentials (`scheme://user:password@host`). */
function hasUserinfo(url: string): boolean {
  try {
    const parsed = new URL(url);
    return parsed.username !== '' || parsed.password !== '';
  } catch {
    return /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*@/i.test(url);
  }
}

/** `url` with any credentials before the host replaced, for error messages. */
function withoutUserinfo(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#]*@/i, '$1***@');
}
