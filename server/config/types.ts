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
  /**
   * registry:2 `log.formatter`: 'json' or 'text'. When the file does not set it, 'auto': text lines when standard
   * output is a terminal, JSON otherwise.
   */
  formatter: 'json' | 'text' | 'auto';
  /** registry:2 `log.accesslog.disabled`. Default false. */
  accesslog: { disabled: boolean };
  /** registry:2 `log.fields`: static fields added to every log line. */
  fields: Record<string, unknown>;
}

export interface FilesystemStorageConfig {
  /** registry:2 `storage.filesystem.rootdirectory`. Default '/var/lib/registry'; the embedded default uses './data'. */
  rootdirectory: string;
}

/** registry:2 `storage.s3` (see docs/storage-s3.md). Sizes in bytes. */
export interface S3StorageConfig {
  /** AWS region (required, as in registry:2); any name an S3-compatible service accepts with `regionendpoint`. */
  region: string;
  bucket: string;
  /** Endpoint URL of an S3-compatible service (MinIO, Ceph, R2); unset for AWS. */
  regionendpoint?: string;
  /** Path-style requests (http://host/bucket/key). Default false. */
  forcepathstyle: boolean;
  /** Static credentials; both or neither. Without them the SDK's default chain is used (env, profile, IAM role). */
  accesskey?: string;
  secretkey?: string;
  sessiontoken?: string;
  /** Key prefix in the bucket. Default '' (the bucket root). */
  rootdirectory: string;
  /** Smallest multipart upload part. Default 10 MiB, at least 5 MiB. */
  chunksize: number;
  /** Part size of multipart copies. Default 32 MiB, 5 MiB to 5 GiB. */
  multipartcopychunksize: number;
  /** Parts copied at once in a multipart copy. Default 100. */
  multipartcopymaxconcurrency: number;
  /** Objects above this size are moved by multipart copy. Default 32 MiB, at most 5 GiB. */
  multipartcopythresholdsize: number;
  /** https for an endpoint given without a scheme. Default true. */
  secure: boolean;
  /** Skip TLS certificate verification. Default false. */
  skipverify: boolean;
  /** Storage class of new objects, or NONE to send none. Default STANDARD. */
  storageclass: string;
  /** Server-side encryption (AES256, or aws:kms with `keyid`). Default false. */
  encrypt: boolean;
  keyid?: string;
}

export interface StorageConfig {
  /** Which driver section was given. Exactly one driver section is allowed. */
  driver: 'filesystem' | 'inmemory' | 's3';
  filesystem: FilesystemStorageConfig;
  /** Present when `driver` is 's3'. */
  s3?: S3StorageConfig;
  /** registry:2 `storage.delete.enabled`. Default false (as registry:2). */
  delete: { enabled: boolean };
  /** registry:2 `storage.redirect.disable`. Default false. */
  redirect: { disable: boolean };
  /**
   * registry:2 `storage.cache`: the blob-descriptor cache (which blobs exist, their size and media type).
   * `blobdescriptor` is absent when no cache is configured; 'redis' needs the `redis` section (see server/cache/).
   */
  cache: { blobdescriptor?: 'inmemory' | 'redis'; /** Most descriptors kept in memory; 0 means no limit. Default 10000. */ blobdescriptorsize: number };
  maintenance: {
    /** registry:2 `storage.maintenance.readonly.enabled`: refuse every write with 405 UNSUPPORTED. */
    readonly: { enabled: boolean };
    /** registry:2 `storage.maintenance.uploadpurging` (used by the garbage collector). */
    uploadpurging: { enabled: boolean; age: number /* ms */; interval: number /* ms */; dryrun: boolean };
    /**
     * Wharf `storage.maintenance.uploadlimits`: the most open upload sessions per repository (counted in storage,
     * so across replicas) and per user (anonymous pushers by client address; counted in each process). A new
     * session beyond either is refused with 429 TOOMANYREQUESTS. Sessions older than `uploadpurging.age` do not
     * count. 0 means no limit. Defaults 1000 and 500.
     */
    uploadlimits: { perrepository: number; peruser: number };
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
  /**
   * Wharf `http.trustedproxies`: addresses and CIDR ranges of reverse proxies whose `X-Forwarded-For`,
   * `X-Forwarded-Host` and `X-Forwarded-Proto` are believed. Empty by default: forwarded headers are ignored.
   */
  trustedproxies: string[];
  /** Wharf `http.timeouts` (ms). */
  timeouts: {
    /** The request line and headers must arrive within this. Default 30 s. */
    readheader: number;
    /**
     * How long a transfer may stand still while the server waits on the client: receiving a request body, or
     * sending a response the client does not read. Only time without a byte moving counts. Default 60 s.
     */
    stall: number;
    /** How long a kept-alive connection may wait for its next request. Default 75 s. */
    idle: number;
  };
  /**
   * Wharf `http.maxconnectionsperaddress`: open connections one client address may hold (per process); further ones
   * are closed at once. Trusted proxies are exempt. 0: no limit. Default 100.
   */
  maxconnectionsperaddress: number;
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

/** One access rule (Wharf `auth.access.rules[]`); see docs/auth.md. */
export interface AccessRuleConfig {
  users?: string[];
  groups?: string[];
  repositories?: string[];
  actions?: string[];
  catalog?: boolean;
}

export interface AuthConfig {
  /** registry:2 `auth.htpasswd`: Basic authentication against a bcrypt htpasswd file. */
  htpasswd?: { realm: string; path: string };
  /** registry:2 `auth.token`: Bearer tokens from a token server. */
  token?: {
    realm: string;
    service: string;
    issuer: string;
    /** PEM bundle of trusted certificates; defaults to `auth.tokenserver.certificate` when the built-in server runs. */
    rootcertbundle?: string;
    /** A JWKS file of trusted public keys. */
    jwks?: string;
    /** Accepted JWT algorithms (asymmetric only). Default: RS/PS/ES 256-512 and EdDSA. */
    signingalgorithms: string[];
    /** Build the realm from the request's host (registry:2 3.0 `autoredirect`). */
    autoredirect: boolean;
  };
  /** Wharf `auth.tokenserver`: the built-in token server (Docker token spec), served by `wharf serve`. */
  tokenserver?: {
    /** URL path the token endpoint answers on. Default '/auth/token'. */
    path: string;
    /** `iss` of the tokens. Default: auth.token.issuer, else 'wharf'. */
    issuer: string;
    /** The service tokens are for (their `aud`). Default: auth.token.service, else 'wharf'. */
    service: string;
    /** PEM private key (ECDSA or RSA); generated when absent. */
    key: string;
    /** PEM certificate for the key; generated (self-signed) when absent. */
    certificate: string;
    /** htpasswd file of the users who may log in. */
    htpasswd: string;
    /** Basic realm named when credentials are refused. Default 'wharf'. */
    realm: string;
    /** Access token lifetime (ms). Default 5 minutes. */
    expiration: number;
    /** Refresh token lifetime (ms). Default 30 days. */
    refreshexpiration: number;
  };
  /** Wharf `auth.access`: groups, anonymous pull and access rules. Absent: every user may do everything. */
  access?: { groups: Record<string, string[]>; anonymous: string[]; rules: AccessRuleConfig[] };
  /** Wharf `auth.throttle`: brute-force throttling of password attempts. */
  throttle: { accountfailures: number; addressfailures: number; accounttotalfailures: number; window: number /* ms */ };
}

/**
 * registry:2 `redis` (plus Wharf's `redis.url`): the Redis shared by replicas (blob-descriptor cache). Present only
 * when the section gives `addr` or `url`.
 */
export interface RedisConfig {
  /** Wharf `redis.url`: `redis://[user][:password]@host[:port][/db]`, or `rediss://` for TLS. */
  url?: string;
  /** registry:2 `redis.addr`: `host:port`. */
  addr?: string;
  /** registry:2 3.x `redis.username` (Redis ACL user). */
  username?: string;
  /** registry:2 `redis.password`. Never logged. */
  password?: string;
  /** registry:2 `redis.db`. Default 0 (or the url's). */
  db?: number;
  /** registry:2 `redis.tls`: `enabled`, and (registry:2 3.x) a client `certificate`/`key` and `clientcas` to trust. */
  tls: { enabled: boolean; certificate?: string; key?: string; clientcas: string[] };
  /** registry:2 `redis.dialtimeout` (ms). Default 5 s. */
  dialtimeout: number;
  /** registry:2 `redis.readtimeout` / `redis.writetimeout` (ms). Default 3 s each. */
  readtimeout: number;
  writetimeout: number;
  /** registry:2 `redis.pool`: accepted; Wharf uses one pipelined connection per process, so they change nothing. */
  pool: { maxidle?: number; maxactive?: number; idletimeout?: number };
}

export interface WharfConfig {
  /** registry:2 `version`; must be '0.1'. */
  version: '0.1';
  log: LogConfig;
  storage: StorageConfig;
  http: HttpConfig;
  validation: ValidationConfig;
  redis?: RedisConfig;
  auth: AuthConfig;
  /**
   * registry:2 `health.storagedriver`: check storage every `interval` (ms); after `threshold` failures in a row the
   * API answers 503 until a check passes. Default disabled, 10 s, 3.
   */
  health: { storagedriver: { enabled: boolean; interval: number; threshold: number } };
  /** registry:2 `notifications`: webhook endpoints for push, pull, mount and delete events. */
  notifications: NotificationsConfig;
  /** registry:2 `catalog.maxentries`: the largest catalog page. Default 1000. */
  catalog: { maxentries: number };
  /** registry:2 `tags.maxtags`: the largest tags list page (a larger or absent `n` is cut to it). Default 1000. */
  tags: { maxtags: number };
  /** registry:2 `proxy` plus Wharf's `proxy.upstreams`: a pull-through cache (docs/mirror.md). Absent: no mirror. */
  proxy?: ProxyConfig;
}

/** One upstream registry the mirror pulls from (docs/mirror.md). Durations in ms. */
export interface ProxyUpstreamConfig {
  /** A name for logs and metrics ('default' for registry:2's `proxy.remoteurl`). */
  name: string;
  /** Base URL, such as https://registry-1.docker.io. */
  url: string;
  /** Credentials for the upstream (Basic, or for its token server). Never logged. */
  username?: string;
  password?: string;
  /** How long cached content that is not pulled again is kept (the GC expires it). Default 7 days (168h); 0: forever. */
  ttl: number;
  /** Repositories under this prefix (`ghcr` for `ghcr/owner/app`) go to this upstream, prefix removed. */
  prefix?: string;
  /**
   * containerd `?ns=` values that mean this upstream (default: the URL's host, plus docker.io for Docker Hub); they
   * choose the local repository a read works on (server/proxy/routing.ts `namespacedName`).
   */
  namespaces: string[];
  /** Map single-component names (`alpine`) to `library/alpine` upstream. Default: true for Docker Hub. */
  librarymapping: boolean;
  /**
   * Wharf `realmhosts`: hosts (`host` or `host:port`) other than the upstream's own that may receive its credentials
   * as a token realm. Default none (the upstream's host, and auth.docker.io for Docker Hub, always may).
   */
  realmhosts?: string[];
}

export interface ProxyConfig {
  /** The upstreams; the one without a prefix (if any) takes every repository no other one claims. */
  upstreams: ProxyUpstreamConfig[];
  /** Wharf `proxy.localnamespaces`: repository prefixes that are local (pushable), never mirrored. */
  localnamespaces: string[];
  /** Wharf `proxy.timeout`: how long to wait for an upstream's response headers. Default 10 s. */
  timeout: number;
  /**
   * Set when the only upstream is registry:2's `proxy.remoteurl` (no `proxy.upstreams`): containerd's `?ns=` is
   * ignored and every repository is mirrored from it, as registry:2 does.
   */
  ignoresNamespace?: boolean;
}

/** registry:2 `notifications.endpoints[]`. Durations in ms. */
export interface NotificationEndpointConfig {
  name: string;
  url: string;
  headers: Record<string, string[]>;
  /** Per delivery attempt. Default 1 s. */
  timeout: number;
  /** Failures in a row before the endpoint is reported as failing. Default 10. */
  threshold: number;
  /** Pause before retrying a failed delivery. Default 1 s. */
  backoff: number;
  ignoredmediatypes: string[];
  ignore: { mediatypes: string[]; actions: string[] };
  disabled: boolean;
}

export interface NotificationsConfig {
  endpoints: NotificationEndpointConfig[];
  /** Wharf: the most events queued per endpoint; the oldest are dropped beyond it. Default 10000. */
  maxqueue: number;
}
