/**
 * The shape of a loaded, validated, defaulted Wharf configuration.
 *
 * Keys follow registry:2's config.yml (same names, same nesting), so a registry:2 config for the features Wharf
 * implements loads unchanged. Everything here is filled in: the loader applies defaults, so code reading the
 * config never checks for undefined except where a key is genuinely optional.
 */

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';

export interface LogConfig {
  /** registry:2 `log.level`; 'warning' in a file is accepted as 'warn'. Default 'info'. */
  level: LogLevel;
  /** registry:2 `log.formatter`: 'json' (default) or 'text'. */
  formatter: 'json' | 'text';
  /** registry:2 `log.accesslog.disabled`. Default false. */
  accesslog: { disabled: boolean };
  /** registry:2 `log.fields`: static fields added to every log line. */
  fields: Record<string, unknown>;
}

export interface FilesystemStorageConfig {
  /** registry:2 `storage.filesystem.rootdirectory`. Default '/var/lib/registry'; the embedded default uses './data'. */
  rootdirectory: string;
}

export interface StorageConfig {
  /** Which driver section was given. Exactly one driver section is allowed. */
  driver: 'filesystem' | 'inmemory';
  filesystem: FilesystemStorageConfig;
  /** registry:2 `storage.delete.enabled`. Default false (as registry:2). */
  delete: { enabled: boolean };
  /** registry:2 `storage.redirect.disable`. Default false. */
  redirect: { disable: boolean };
  /**
   * registry:2 `storage.cache`: the blob-descriptor cache (which blobs exist, their size and media type).
   * `blobdescriptor` is absent when no cache is configured. registry:2 also offers 'redis'; the loader accepts
   * it only once the `redis` section is supported, so today it is always 'inmemory' or absent.
   */
  cache: { blobdescriptor?: 'inmemory'; /** Most descriptors kept in memory; 0 means no limit. Default 10000. */ blobdescriptorsize: number };
  maintenance: {
    /** registry:2 `storage.maintenance.readonly.enabled`: refuse every write with 405 UNSUPPORTED. */
    readonly: { enabled: boolean };
    /** registry:2 `storage.maintenance.uploadpurging` (used by the garbage collector). */
    uploadpurging: { enabled: boolean; age: number /* ms */; interval: number /* ms */; dryrun: boolean };
  };
}

export interface HttpConfig {
  /** registry:2 `http.addr`: 'host:port', ':port', or a unix socket path when `net` is 'unix'. Default ':5000'. */
  addr: string;
  /** registry:2 `http.net`: 'tcp' (default) or 'unix'. */
  net: 'tcp' | 'unix';
  /** registry:2 `http.host`: external base URL (scheme://host[:port]) used to build absolute Location URLs. */
  host?: string;
  /** registry:2 `http.prefix`: a path prefix the registry is served under, such as '/registry/'. Default '/'. */
  prefix: string;
  /** registry:2 `http.relativeurls`: answer relative Location headers. Default false. */
  relativeurls: boolean;
  /** registry:2 `http.draintimeout`: how long graceful shutdown waits for in-flight requests (ms). Default 60000. */
  draintimeout: number;
  /** registry:2 `http.headers`: extra headers on every response. */
  headers: Record<string, string[]>;
  /** registry:2 `http.tls.certificate` / `http.tls.key` (PEM file paths). Both or neither. */
  tls?: { certificate: string; key: string; clientcas?: string[] };
  /**
   * registry:2 `http.debug`: a second listener for operators (health, metrics). Absent when `http.debug.addr` is not
   * set. `prometheus.enabled` serves Prometheus metrics at `prometheus.path` (default /metrics) on it.
   */
  debug?: { addr: string; prometheus: { enabled: boolean; path: string } };
}

export interface ValidationConfig {
  /**
   * registry:2 `validation.disabled`: turns off the optional checks configured in this section (in registry:2, the
   * manifest URL allow/deny lists). The size limit and the checks the OCI spec requires always apply. Default false.
   */
  disabled: boolean;
  /** Wharf: the largest manifest accepted, in bytes. Default 4 MiB (the spec's recommended minimum). */
  manifests: { maxsize: number };
}

export interface WharfConfig {
  /** registry:2 `version`; must be '0.1'. */
  version: '0.1';
  log: LogConfig;
  storage: StorageConfig;
  http: HttpConfig;
  validation: ValidationConfig;
  /**
   * registry:2 `health.storagedriver`: check storage every `interval` (ms); after `threshold` failures in a row the
   * API answers 503 until a check passes. Default disabled, 10 s, 3.
   */
  health: { storagedriver: { enabled: boolean; interval: number; threshold: number } };
}
