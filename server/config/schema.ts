/**
 * The configuration, declared once: every key of config.yml (registry:2's names and nesting, plus Wharf's own keys)
 * with its type, default, bounds and the text that documents it.
 *
 * Everything else is derived from this module: the TypeScript types (`Static<>`), the defaults and the checks (ajv,
 * in load.ts), the unknown-key warnings, the `REGISTRY_*` environment mapping (env.ts), the key tables in
 * docs/configuration.md and the `config` part of helm/wharf/values.schema.json (docs.ts). To add a key, add it here
 * with a `description` and run `npm run docs:config`. Only rules that involve several keys, or registry:2 quirks
 * JSON Schema cannot say, live in load.ts as small named checks.
 *
 * Wharf's own annotations (all optional, prefixed `x-`):
 * - `x-duration`: a Go duration (`90s`, or a bare integer of nanoseconds) in the file, milliseconds in the config.
 * - `x-size`: a byte size (an integer, or a number with a unit: `512MiB`, `10GiB`, `2TB`) in the file, bytes in the config.
 * - `x-unsupported`: a registry:2 key Wharf recognises but does not implement; a warning (this text, if a string).
 * - `x-message`: the problem reported when the value breaks `enum`, `const` or `pattern`; `{got}` is the value.
 * - `x-required`: the problem reported when the key is missing (default `required`); `x-at-parent` reports it at
 *   the enclosing entry rather than at the key.
 * - `x-expected`: what a value of the wrong shape should have been (`expected <this>, got ...`).
 * - `x-case`: `lower`/`upper`: case does not matter; the value is normalised before it is checked.
 * - `x-one-or-list`: a list where a single value is taken as a list of one.
 * - `x-unknown`: what an unknown key in this section is: `warn` (default), `silent` (reported by a check in
 *   load.ts), or a message for an error.
 * - `x-driver`: a section keyed by driver name (storage, auth); see `DriverRule`.
 * - `x-doc-default`: the default as the docs show it, when it is not a plain value (derived from other keys).
 * - `x-deprecated`: an old spelling of another key, read with a warning.
 * - `x-aliases`: other words accepted for a value (`warning` for `warn`).
 * - `x-env`: false for a key no `REGISTRY_*` variable may set.
 * - `x-chart-pattern`: a pattern only the Helm chart's schema checks (Wharf checks the key in load.ts, more precisely).
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';

/** How a driver-style section works: every key except `settings` names a driver, and only one may be given. */
export interface DriverRule {
  /** Keys that configure the section rather than name a driver (storage's delete, redirect, ...). */
  settings: readonly string[];
}

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** Strings in the realm of a challenge header: no quotes, backslashes or line breaks. */
const CHALLENGE_SAFE = { pattern: '^[^"\\\\\\r\\n]*$', 'x-message': 'must not contain quotes, backslashes or line breaks' };

// ---- builders: one per kind of key ----------------------------------------------------------------------------

type Opts = Record<string, unknown>;
const str = (description: string, opts: Opts = {}) => Type.String({ description, ...opts });
const bool = (dflt: boolean, description: string) => Type.Boolean({ default: dflt, description });
const int = (dflt: number | undefined, minimum: number | undefined, description: string, opts: Opts = {}) =>
  Type.Integer({ ...(dflt === undefined ? {} : { default: dflt }), ...(minimum === undefined ? {} : { minimum }), description, ...opts });
/** A Go duration; `dfltMs` in milliseconds. `positive`: zero is refused too. */
const duration = (dfltMs: number | undefined, positive: boolean, description: string, opts: Opts = {}) =>
  Type.Number({
    'x-duration': true,
    ...(positive ? { exclusiveMinimum: 0 } : { minimum: 0 }),
    ...(dfltMs === undefined ? {} : { default: dfltMs }),
    description,
    ...opts,
  });
/** One of a fixed set of strings. */
const oneOf = <const T extends readonly string[]>(values: T, description: string, opts: Opts = {}) =>
  Type.Unsafe<T[number]>(Type.String({ enum: [...values], description, ...opts }));
const strList = (description: string, opts: Opts = {}) => Type.Array(Type.String(), { description, ...opts });
/** Header name → values (a single value is a list of one). Names and values are checked in load.ts. */
const headerMap = (description: string) =>
  Type.Record(Type.String(), Type.Array(Type.String(), { 'x-one-or-list': true, 'x-expected': 'a list of header values' }), {
    default: {},
    description,
    'x-expected': 'a mapping of header names to lists of values',
  });
/** A section whose keys all have defaults (so it is always present in the config). */
const section = <P extends Record<string, TSchema>>(properties: P, opts: Opts = {}) =>
  Type.Object(properties, { default: {}, ...opts });
/** A section that is absent from the config unless the file has it. */
const optionalSection = <P extends Record<string, TSchema>>(properties: P, opts: Opts = {}) =>
  Type.Optional(Type.Object(properties, opts));
const unsupported = (description: string, note: string | true = true) =>
  Type.Optional(Type.Unknown({ 'x-unsupported': note, description }));
const opt = Type.Optional;
/** A key read for registry:2's sake but not kept in the loaded config (typed `unknown`, so the types leave it out). */
const notKept = (schema: TSchema) => Type.Optional(Type.Unsafe<unknown>(schema));

// ---- the keys --------------------------------------------------------------------------------------------------

const Log = section({
  level: oneOf(['error', 'warn', 'info', 'debug'], 'The least severe messages logged: `error`, `warn`, `info` or `debug`. `warning` means `warn`. Case does not matter.', {
    default: 'info', 'x-case': 'lower', 'x-aliases': { warning: 'warn' }, 'x-message': 'expected one of error, warn (or warning), info, debug, got {got}',
  }),
  formatter: opt(oneOf(['json', 'text'], '`json` writes one JSON object a line; `text` writes logfmt lines for people. Without the key, Wharf picks text when standard output is a terminal and JSON otherwise. registry:2\'s `logstash` is accepted with a warning and gives `json`. (registry:2\'s own default is `text`.)', {
    'x-case': 'lower', 'x-aliases': { logstash: 'json' }, 'x-message': 'expected json or text, got {got}', 'x-doc-default': '`json` in files and pipes, `text` on a terminal',
  })),
  accesslog: section({ disabled: bool(false, '`true` turns off the line logged for every request.') }),
  fields: Type.Record(Type.String(), Type.Unknown(), { default: {}, description: 'Fixed fields added to every log line, such as `service: registry` or `environment: staging`.' }),
  hooks: unsupported('Mail hooks on log levels.'),
  reportcaller: unsupported('Caller information in log lines.'),
});

const S3 = Type.Object({
  region: str('The AWS region (any value the service accepts when `regionendpoint` is set; `us-east-1` for most).', { 'x-required': 'required by the s3 storage driver' }),
  bucket: str('The bucket; it must exist.', { 'x-required': 'required by the s3 storage driver' }),
  regionendpoint: opt(str('Endpoint of an S3-compatible service, such as `http://minio:9000`. Without a scheme, `secure` picks one.', { 'x-doc-default': 'AWS' })),
  forcepathstyle: bool(false, 'Path-style requests (`http://host/bucket/key`) instead of virtual-hosted ones; most non-AWS services need `true`.'),
  accesskey: opt(str('Static access key; `accesskey` and `secretkey` go together. Without them the AWS default chain is used: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, a shared profile, web identity (EKS), or the instance role.')),
  secretkey: opt(str('Static secret key, with `accesskey`. Never logged.')),
  sessiontoken: opt(str('Session token for temporary static credentials.')),
  rootdirectory: str('Key prefix everything is stored under (`<rootdirectory>/docker/registry/v2/...`); empty: the bucket root.', { default: '' }),
  chunksize: int(10 * MiB, 5 * MiB, 'The smallest multipart upload part (10 MiB by default, 5 MiB to 5 GiB); smaller PATCH chunks are combined. Part sizes double every 1000 parts, so one upload can exceed 100 GiB within S3\'s 10,000 parts. Each upload in progress buffers up to two parts in memory, within `uploadbuffermemory`.', { maximum: 5 * GiB }),
  multipartcopychunksize: int(32 * MiB, 5 * MiB, 'Part size of multipart server-side copies (32 MiB by default, 5 MiB to 5 GiB).', { maximum: 5 * GiB }),
  multipartcopymaxconcurrency: int(100, 1, 'Parts copied at the same time.'),
  multipartcopythresholdsize: int(32 * MiB, 0, 'Blobs larger than this (32 MiB by default, at most 5 GiB) are committed by a multipart server-side copy (needed above 5 GiB, faster above a few tens of MiB).', { maximum: 5 * GiB }),
  uploadbuffermemory: int(32 * MiB, 5 * MiB, '**Wharf key.** The most memory all uploads in progress hold in part buffers at once (32 MiB by default). An upload reserves a buffer before it buffers bytes: the next part (`chunksize`), or less when the request says its length; beyond this budget further uploads wait, unread, until one gives a buffer back (when its part reaches S3, or its request ends: a client that stops sending is cut after `http.timeouts.stall`). A client that sends slowly but keeps sending is not cut, and holds its buffer until its part fills: with the defaults, three such chunked pushes hold the whole budget and other pushes wait for them. Where accounts that may push are not trusted, raise the budget or keep `storage.maintenance.uploadlimits.peruser` low. Peak memory of pushes to S3 is therefore bounded, whatever their number; raise it for many concurrent large pushes of unannounced length (chunked `PATCH`). Buffers given back are kept for the next uploads, within the same budget, and freed after 30 s without any.'),
  stalltimeout: duration(30_000, true, '**Wharf key.** How long a request to S3 may stand still (no byte sent or received) before it is abandoned and retried; a request that keeps moving is never cut, whatever its size. Each request is tried 5 times (the first and 4 retries, with exponential backoff and jitter), so a stalled S3 fails a registry request with a 503 after at most about five times this.'),
  secure: bool(true, 'Use https for an endpoint given without a scheme (and for AWS).'),
  skipverify: bool(false, 'Do not verify the endpoint\'s TLS certificate.'),
  storageclass: oneOf(['STANDARD', 'REDUCED_REDUNDANCY', 'STANDARD_IA', 'ONEZONE_IA', 'INTELLIGENT_TIERING', 'OUTPOSTS', 'GLACIER_IR', 'NONE'], 'Storage class of new objects, or `NONE` to send none (for services that reject the header). Case does not matter.', { default: 'STANDARD', 'x-case': 'upper' }),
  encrypt: bool(false, 'Server-side encryption of new objects: `AES256`, or `aws:kms` when `keyid` is set.'),
  keyid: opt(str('The KMS key for `encrypt`.')),
  v4auth: notKept(Type.Boolean({ description: 'Accepted for compatibility; requests are always signed with Signature Version 4 (`false` gives a warning).', 'x-doc-default': '`true`' })),
  useragent: unsupported('Finer S3 client setting.'),
  usedualstack: unsupported('Finer S3 client setting.'),
  accelerate: unsupported('Finer S3 client setting.'),
  objectacl: unsupported('Finer S3 client setting.'),
  loglevel: unsupported('Finer S3 client setting.'),
}, { description: 'Store everything in an S3 bucket (AWS, or an S3-compatible service: MinIO, Ceph RGW, Cloudflare R2), in registry:2\'s layout. Details: [storage-s3.md](storage-s3.md).' });

const STORAGE_SETTINGS = ['delete', 'redirect', 'maintenance', 'cache', 'tag'] as const;

const Storage = section({
  filesystem: section({
    rootdirectory: str('The directory holding `docker/registry/v2/...`. A relative path is resolved against the directory Wharf is started from.', { default: '/var/lib/registry', 'x-doc-default': '`/var/lib/registry` (embedded default: `./data`)' }),
    maxthreads: unsupported('A limit on concurrent filesystem operations.'),
  }, { description: 'Store everything in a local directory, in registry:2\'s layout, so a directory written by registry:2 is served as it is (and the other way round).' }),
  inmemory: optionalSection({}, { description: 'Keep everything in the process\'s memory; lost on exit. For tests and experiments.' }),
  s3: opt(S3),
  gcs: unsupported('Cloud storage driver. Naming it as the driver is an error.'),
  azure: unsupported('Cloud storage driver. Naming it as the driver is an error.'),
  swift: unsupported('Cloud storage driver. Naming it as the driver is an error.'),
  oss: unsupported('Cloud storage driver. Naming it as the driver is an error.'),
  delete: section({ enabled: bool(false, 'Allow `DELETE` of manifests, tags and blobs. When `false` such requests are refused with 405 `UNSUPPORTED`, as in registry:2. Deleting unlinks content; the garbage collector reclaims the space.') }),
  redirect: section({ disable: bool(false, 'Serve blob bytes through the registry instead of redirecting clients to the storage backend. Only drivers that can hand out direct URLs ever redirect: with `s3`, a blob `GET` answers 307 to a presigned URL valid for 20 minutes (`HEAD` never redirects); `filesystem` and `inmemory` always serve the bytes themselves.') }),
  cache: section({
    blobdescriptor: opt(str('Cache blob descriptors (digest → size, and which repositories link a digest) so repeated existence and size look-ups skip the storage backend. `inmemory`: per process (one replica only: another replica\'s deletes do not reach it). `redis`: shared by every replica and the garbage collector, needs the `redis` section (an error without it, as in registry:2); see [redis.md](redis.md). An unknown value gives a warning and no cache, as in registry:2.', { 'x-doc-default': 'none (no cache)' })),
    layerinfo: notKept(str('Old name of `blobdescriptor`, used only when that is not set. Produces a warning.', { 'x-deprecated': true })),
    blobdescriptorsize: int(10_000, 0, 'The most descriptors the in-memory cache keeps; `0` means no limit.'),
  }),
  maintenance: section({
    uploadpurging: section({
      enabled: bool(true, 'Remove upload sessions that were started but never finished.'),
      age: duration(168 * 3600_000, false, 'How old an unfinished upload must be before it is removed (by the server\'s purging; `wharf garbage-collect` uses its own `--upload-age`, default `24h`, see [garbage-collection.md](garbage-collection.md)).'),
      interval: duration(24 * 3600_000, true, 'How often purging runs.'),
      dryrun: bool(false, 'Only report what would be removed.'),
    }),
    uploadlimits: section({
      perrepository: int(1000, 0, '**Wharf key.** The most open upload sessions one repository may have; starting another (`POST /v2/<name>/blobs/uploads/`, also a single-request upload) is refused with 429 `TOOMANYREQUESTS`. Counted in storage, so every replica sees the same count. `0`: no limit.'),
      peruser: int(500, 0, '**Wharf key.** The most open upload sessions one user may have, over all repositories; pushers without credentials are counted by client address (IPv6 by /64). Counted in each process (see below). `0`: no limit.'),
    }),
    readonly: section({ enabled: bool(false, 'Read-only mode: pulls work, every write (push, upload, delete) is refused with 405 `UNSUPPORTED`. Meant for running the garbage collector while replicas keep serving. Note that `readonly` is a section: `readonly: true` is an error, `readonly: {enabled: true}` is right.') }),
  }),
  tag: unsupported('`concurrencylimit` for tag look-ups.'),
}, { 'x-driver': { settings: STORAGE_SETTINGS }, 'x-unknown': 'silent' });

const Http = section({
  addr: str('Where to listen. With `net: tcp`: `host:port` or `:port` (all interfaces); IPv6 addresses in brackets, `[::1]:5000`. With `net: unix`: the socket\'s path, which is then required.', { default: ':5000' }),
  net: oneOf(['tcp', 'unix'], '`tcp` or `unix`.', { default: 'tcp', 'x-case': 'lower', 'x-message': 'expected tcp or unix, got {got}' }),
  host: opt(str('The address clients reach the registry at, as `scheme://host[:port]` with scheme `http` or `https`. When set, absolute URLs the registry hands out (such as upload `Location` headers) use it; otherwise they are derived from each request. A trailing slash is dropped; a path is an error (use `http.prefix`).', { 'x-chart-pattern': '^(|https?://[^/]+)$' })),
  prefix: str('Serve the API under this path (`/registry/` serves `/registry/v2/...`). registry:2 asks for a leading and a trailing slash; Wharf adds either if it is missing.', { default: '/' }),
  secret: unsupported('The key registry:2 signs upload state with. Wharf keeps upload state in storage, so it needs no secret; the warning says so.', 'http.secret: not needed by Wharf (upload state lives in storage, not in signed client state); ignored'),
  relativeurls: bool(false, 'Answer relative `Location` headers instead of absolute ones.'),
  draintimeout: duration(60_000, false, 'On SIGTERM or SIGINT, how long to let running requests finish before exiting.'),
  tls: optionalSection({
    certificate: opt(str('PEM certificate (chain) file. Setting it together with `http.tls.key` makes the server speak HTTPS.')),
    key: opt(str('PEM private key file for the certificate. `certificate` and `key` go together: one without the other is an error.')),
    clientcas: opt(strList('PEM files of certificate authorities for client certificates. Ignored, with a warning, when TLS is not configured.')),
    clientauth: unsupported('Finer TLS setting.'),
    minimumtls: unsupported('Finer TLS setting.'),
    ciphersuites: unsupported('Finer TLS setting.'),
    letsencrypt: unsupported('ACME certificates.'),
  }),
  headers: headerMap('Extra headers on every response. `X-Content-Type-Options: nosniff` and a `Content-Security-Policy` are sent anyway (see [api.md](api.md)); a header given here replaces Wharf\'s. A single value is taken as a list of one (registry:2 insists on a list).'),
  debug: optionalSection({
    addr: opt(str('A second, plain-HTTP listener for operators: `/debug/health` (registry:2\'s health answer), `/healthz`, `/readyz`, and metrics when enabled. Bind it to an address clients cannot reach.', { 'x-doc-default': 'none (no debug listener)' })),
    prometheus: section({
      enabled: bool(false, 'Serve Prometheus metrics on the debug listener (see [monitoring.md](monitoring.md)). Ignored, with a warning, without `http.debug.addr`.'),
      path: str('Where the metrics are served.', { default: '/metrics', pattern: '^/', 'x-message': 'expected a path starting with /, got {got}' }),
    }),
    tls: unsupported('TLS on the debug listener.'),
  }),
  http2: unsupported('HTTP/2 settings.'),
  h2c: unsupported('HTTP/2 settings.'),
  trustedproxies: Type.Array(Type.String({ 'x-chart-pattern': '^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$' }), { description: '**Wharf key.** The reverse proxies (IP addresses and CIDR ranges) whose `X-Forwarded-For`, `X-Forwarded-Host` and `X-Forwarded-Proto` are believed. From any other peer these headers are ignored: the connection\'s address is the client (in logs, notification events and the per-address login throttle) and the `Host` header names the host. From a listed proxy, the client is the right-most `X-Forwarded-For` address that is not itself listed. List exactly your proxies (an ingress controller\'s pod range, a load balancer\'s address); listing a range clients can connect from lets them choose their address. See [api.md](api.md#client-address-host-and-scheme).', default: [] }),
  timeouts: section({
    readheader: duration(30_000, true, '**Wharf key.** The request line and headers must arrive within this (then 408 and the connection is closed). Checked every quarter of the value, at most every 5 s.'),
    stall: duration(60_000, true, '**Wharf key.** How long a transfer may stand still while the server waits on the client: a request body the client announced and stopped sending, or a response it stopped reading. Only time without a byte moving counts, so a push or pull of any size that keeps moving is never cut, and neither is a request the server itself is slow to answer (a slow storage backend).'),
    idle: duration(75_000, true, '**Wharf key.** How long a kept-alive connection waits for its next request. Keep it above the idle timeout of a load balancer in front (60 s on AWS), so the balancer closes first.'),
  }),
  maxconnectionsperaddress: int(100, 0, '**Wharf key.** Open connections one client address may hold; further ones are closed at once, without an answer (a warning is logged once a minute per address). `0`: no limit. Proxies in `http.trustedproxies` are exempt, since every client behind them shares their address. Counted per process: with `--workers N` an address may hold up to N times this. Clients behind one NAT address share the limit; raise it if many of them push in parallel.'),
});

const Platform = Type.Object({
  os: str('The operating system, as in an index\'s `platform.os` (`linux`).', { 'x-required': 'a platform needs os and architecture', 'x-at-parent': true }),
  architecture: str('The architecture, as in `platform.architecture` (`amd64`, `arm64`).', { 'x-required': 'a platform needs os and architecture', 'x-at-parent': true }),
  variant: opt(str('The variant (`v8`); when absent, any variant matches.')),
}, { 'x-unknown': 'unknown platform key (expected os, architecture, variant)', 'x-expected': 'a mapping with os and architecture' });

const Validation = section({
  disabled: bool(false, 'Turns off the optional checks configured in this section (in registry:2, the manifest URL allow and deny lists). The size limit below and the checks the OCI distribution spec requires always apply.'),
  enabled: notKept(Type.Boolean({ description: 'Old inverse of `validation.disabled`, used only when `disabled` is not set. Produces a warning.', 'x-deprecated': true })),
  manifests: section({
    maxsize: int(4 * MiB, 1, '**Wharf key.** The largest manifest accepted, in bytes (4 MiB by default); larger pushes are refused. 4 MiB is the size the OCI spec says registries should accept at least.'),
    urls: section({
      allow: strList('Regular expressions (JavaScript syntax, unanchored as in registry:2) of the foreign-layer URLs a manifest may carry. A manifest with a layer URL that no `allow` expression matches is refused with `MANIFEST_INVALID`. As in registry:2, with neither `allow` nor `deny` given no URL is accepted, and with `deny` alone every URL it does not deny is. See [policies.md](policies.md#foreign-layer-urls).', { default: [] }),
      deny: strList('Regular expressions of layer URLs refused even when `allow` matches them.', { default: [] }),
    }),
    indexes: section({
      platforms: oneOf(['all', 'none', 'list'], 'Which children of an image index (or manifest list) must already be in the repository when the index is pushed: `all` (every child), `none` (sparse indexes are accepted: children may be missing), `list` (only the children whose platform is in `platformlist`). See [policies.md](policies.md#sparse-indexes).', { default: 'all', 'x-case': 'lower', 'x-message': 'expected one of all, none, list, got {got}' }),
      platformlist: Type.Array(Platform, { default: [], description: 'With `platforms: list`: the platforms whose children must be present. Each entry: `os` and `architecture` (and optionally `variant`).', 'x-expected': 'a list of platforms (os, architecture)' }),
    }),
  }),
});

export const TOKEN_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;
const RULE_KEYS = ['users', 'groups', 'repositories', 'actions', 'catalog'];

const AccessRule = Type.Object({
  users: opt(strList('Users the rule is for (`"*"`: every user).')),
  groups: opt(strList('Groups the rule is for.')),
  repositories: opt(strList('Repository glob patterns; `${user}` is the caller\'s name.')),
  actions: opt(Type.Array(oneOf(['pull', 'push', 'delete', '*'], 'An action.', { 'x-message': 'unknown action {got} (pull, push, delete or *)' }), { description: '`pull`, `push`, `delete`, `*`.' })),
  catalog: opt(Type.Boolean({ description: 'The rule allows listing the catalog.' })),
}, {
  'x-unknown': `unknown rule key (expected ${RULE_KEYS.join(', ')})`,
  'x-expected': 'a mapping with users or groups, repositories and actions',
});

const Auth = section({
  none: opt(Type.Unknown({ description: 'No authentication (the same as no `auth` section).', 'x-doc-skip': true })),
  silly: unsupported('A test-only authenticator.'),
  htpasswd: optionalSection({
    realm: str('The realm of the `Basic` challenge.', { ...CHALLENGE_SAFE, 'x-required': 'required (the realm named in the Basic challenge)' }),
    path: str('htpasswd file with bcrypt entries (`$2y$`, `$2a$`, `$2b$`, as `htpasswd -B` makes). Other hash kinds stop the server at start, naming the line.', { 'x-required': 'required (the htpasswd file with bcrypt entries)' }),
  }),
  token: optionalSection({
    realm: str('Where clients get tokens (an http(s) URL): named in the `Bearer` challenge.', CHALLENGE_SAFE),
    service: str('The service: named in the challenge, and the audience (`aud`) a token must carry.', CHALLENGE_SAFE),
    issuer: str('The issuer (`iss`) a token must carry.', CHALLENGE_SAFE),
    rootcertbundle: opt(str('PEM bundle of certificates whose keys sign tokens: a token\'s `x5c` chain must end at one of them, or its `kid` must be one of their keys\' IDs (libtrust fingerprint or RFC 7638 thumbprint).', { 'x-doc-default': '`auth.tokenserver.certificate` when the built-in server runs; else required unless `jwks` is set' })),
    jwks: opt(str('A JWKS file (`{"keys":[…]}`) of trusted public keys, found by the token\'s `kid`.')),
    signingalgorithms: Type.Array(oneOf(TOKEN_ALGORITHMS, 'An algorithm.', { 'x-message': `{got} is not allowed (allowed: ${TOKEN_ALGORITHMS.join(', ')}; never none or HMAC)` }), {
      default: [...TOKEN_ALGORITHMS], description: 'Accepted JWT algorithms. `none` and HMAC algorithms are refused as configuration errors.',
    }),
    autoredirect: bool(false, 'Build the challenge\'s realm from the request\'s scheme and host, keeping the realm\'s path.'),
    autoredirectpath: unsupported('A custom path for `autoredirect`.'),
  }),
  tokenserver: optionalSection({
    path: str('**Wharf key.** Serve the built-in token server at this path (outside `/v2` and `http.prefix`). The section\'s presence turns the server on.', { default: '/auth/token' }),
    issuer: opt(str('**Wharf key.** `iss` of issued tokens.', { 'x-doc-default': '`auth.token.issuer`, else `wharf`' })),
    service: opt(str('**Wharf key.** The service tokens are for (`aud`); requests naming another service get 400.', { 'x-doc-default': '`auth.token.service`, else `wharf`' })),
    key: str('**Wharf key.** PEM private key (ECDSA P-256/384/521 or RSA) that signs tokens. Created (ECDSA P-256, mode 0600) when the file does not exist.', { 'x-required': 'required (PEM private key file; generated when it does not exist)' }),
    certificate: str('**Wharf key.** PEM certificate for the key, to hand to registries as `rootcertbundle`. Created self-signed (ten years) when the file does not exist; it must belong to the key.', { 'x-required': 'required (PEM certificate file; generated when it does not exist)' }),
    htpasswd: str('**Wharf key.** htpasswd file (bcrypt) of the users who may log in.', { 'x-required': 'required (htpasswd file of the users who may log in)' }),
    realm: str('**Wharf key.** The realm of the `Basic` challenge when credentials are refused.', { default: 'wharf', ...CHALLENGE_SAFE }),
    expiration: duration(5 * 60_000, true, '**Wharf key.** Lifetime of access tokens.'),
    refreshexpiration: duration(30 * 24 * 3600_000, true, '**Wharf key.** Lifetime of refresh tokens (`offline_token=true`, `access_type=offline`). A refresh token also ends as soon as its user\'s password changes or the user is removed (after the users file is reloaded).'),
  }),
  access: optionalSection({
    groups: Type.Record(Type.String(), Type.Array(Type.String()), { default: {}, description: '**Wharf key.** Groups for the rules: group name → list of users.', 'x-expected': 'a mapping of group names to lists of users' }),
    anonymous: strList('**Wharf key.** Repositories (patterns) anyone may pull without credentials.', { default: [] }),
    rules: Type.Array(AccessRule, {
      default: [], 'x-expected': 'a list of rules',
      description: '**Wharf key.** Each rule: `users` and/or `groups` (lists; `users: ["*"]` is every user), `repositories` (glob patterns, `${user}` for the caller\'s name), `actions` (`pull`, `push`, `delete`, `*`), `catalog` (boolean). Unknown keys, actions and groups are errors. Without an `access` section every authenticated user may do everything.',
    }),
  }),
  throttle: section({
    accountfailures: int(5, 1, '**Wharf key.** Failed passwords for one account from one client address within the window before that account is refused (429) *from that address* for the window; the account stays open from other addresses.'),
    addressfailures: int(20, 1, '**Wharf key.** Failed passwords per client address (an IPv6 address counts by its /64), over any accounts, within the window before the address is refused for every account.'),
    accounttotalfailures: int(100, 1, '**Wharf key.** Failed passwords for one account from all addresses together within the window before the account is refused (429) from every address that has not logged in to it successfully in the last 30 days; its owner\'s known addresses still get in. Bounds guessing from many addresses.'),
    window: duration(60_000, true, '**Wharf key.** The throttling window; a lock ends when the window has passed since the latest failure.'),
  }),
}, { 'x-driver': { settings: ['tokenserver', 'access', 'throttle'] } });

const Endpoint = Type.Object({
  name: str('A name for logs; unique.', { 'x-required': 'an endpoint needs a name', 'x-at-parent': true }),
  url: str('Where events are POSTed (http or https). Credentials in it (`user:pw@`) are refused: use `headers`.', { 'x-required': 'an endpoint needs a url', 'x-at-parent': true }),
  headers: Type.Record(Type.String(), Type.Array(Type.String()), { default: {}, description: 'Headers sent with every delivery (an `Authorization` token, say): header name → list of values.' }),
  timeout: duration(1000, true, 'Per delivery attempt.'),
  threshold: int(10, 1, 'Failures in a row before the endpoint is logged as failing.'),
  backoff: duration(1000, true, 'Pause before retrying a failed delivery.'),
  ignoredmediatypes: strList('Events about content of these media types are not sent (`application/octet-stream` is every blob).', { default: [] }),
  ignore: section({
    mediatypes: strList('The same as `ignoredmediatypes`, registry:2\'s newer spelling.', { default: [] }),
    actions: strList('Actions not sent: `push`, `pull`, `mount`, `delete`.', { default: [] }),
  }),
  disabled: bool(false, 'Keep the entry but send nothing.'),
}, { 'x-expected': 'a mapping with name and url' });

const Notifications = section({
  endpoints: Type.Array(Endpoint, { default: [], description: 'The webhooks. Each entry has the keys below.', 'x-expected': 'a list of endpoints' }),
  events: optionalSection({ includereferences: unsupported('Adding the references of a manifest to its events.') }),
  maxqueue: int(10_000, 1, '**Wharf key.** Events kept per endpoint while it cannot be reached; the oldest are dropped beyond this.'),
});

const Redis = optionalSection({
  url: opt(str('**Wharf key.** The server as a URL: `redis://[user][:password]@host[:port][/db]`, or `rediss://` for TLS. Keys set beside it (`addr`, `password`, `db`, `tls`) override its parts. Error messages never repeat it (it may hold the password).')),
  addr: opt(str('The Redis server, `host:port`.', { pattern: '^(\\[[^\\]]+\\]|[^:\\s]+):\\d{1,5}$', 'x-message': 'expected host:port, such as redis:6379, got {got}' })),
  addrs: unsupported('Several Redis addresses (cluster, sentinel); use `redis.addr`.', 'redis.addrs: several Redis addresses (cluster/sentinel) are not supported by this Wharf version; use redis.addr'),
  username: opt(str('ACL user (Redis 6+; registry:2 3.x key).')),
  password: opt(str('Password (`requirepass` or the ACL user\'s). Never logged.')),
  db: opt(int(undefined, 0, 'Database number.', { 'x-doc-default': '`0`' })),
  tls: section({
    enabled: bool(false, 'TLS to Redis (verified against the system roots, or `clientcas`).'),
    certificate: opt(str('Client certificate for mutual TLS, with `key` (registry:2 3.x key).')),
    key: opt(str('Client key for mutual TLS, with `certificate` (registry:2 3.x key).')),
    clientcas: strList('CA certificates Redis\'s certificate must chain to (registry:2 3.x key); empty: the system roots.', { default: [] }),
  }),
  dialtimeout: duration(5000, true, 'Connect timeout; also the longest `wharf serve` waits for Redis at start before serving without the cache.'),
  readtimeout: duration(3000, true, 'The larger of `readtimeout` and `writetimeout` is the time one Redis command may take; past it the cache is switched off until Redis answers again (requests go to storage meanwhile), and a write that had to be recorded for the garbage collector fails with 503.'),
  writetimeout: duration(3000, true, 'See `readtimeout`.'),
  pool: section({
    maxidle: opt(int(undefined, 0, 'Accepted for registry:2 compatibility and validated; changes nothing (Wharf uses pipelined connections).')),
    maxactive: opt(int(undefined, 0, 'Accepted for registry:2 compatibility and validated; changes nothing.')),
    idletimeout: opt(duration(undefined, false, 'Accepted for registry:2 compatibility and validated; changes nothing.')),
  }),
}, { description: 'The Redis replicas share (see [redis.md](redis.md)). Used when `addr` or `url` is given.' });

const REALM_HOSTS = { pattern: '^([A-Za-z0-9.-]+(:\\d{1,5})?|\\[[0-9A-Fa-f:.]+\\](:\\d{1,5})?)$', 'x-message': 'expected host names such as auth.example.com or auth.example.com:5001, got {got}' };

const Upstream = Type.Object({
  name: opt(str('A name for logs and metrics. Default: the prefix, else `upstream<index>`.')),
  url: str('Base URL (http or https, no credentials), such as https://registry-1.docker.io.', { 'x-required': 'an upstream needs a URL' }),
  username: opt(str('Credentials for the upstream (Basic, or for its token server); with `password`.')),
  password: opt(str('With `username`. Never logged.')),
  ttl: opt(duration(undefined, false, 'How long cached content not pulled again is kept; `0`: forever.', )),
  prefix: opt(str('Repositories under this prefix go to this upstream, prefix removed.')),
  namespaces: opt(strList('containerd `?ns=` values meaning this upstream: a read with one works on the repository that routes there by name (the name itself, or under this upstream\'s `prefix`); see [mirror.md](mirror.md#containerd-and-nerdctl-kubernetes-nodes).', { 'x-doc-default': 'the URL\'s host (plus `docker.io` for Docker Hub)' })),
  librarymapping: opt(Type.Boolean({ description: 'Map single-component names (`alpine`) to `library/alpine` upstream.', 'x-doc-default': 'true for `*.docker.io`' })),
  realmhosts: opt(Type.Array(Type.String(REALM_HOSTS), { description: 'Token-realm hosts, besides the upstream\'s own host (and `auth.docker.io` for Docker Hub), that may receive the upstream\'s credentials. Any other realm is asked for an anonymous token.' })),
}, { 'x-expected': 'a mapping with url (and prefix or namespaces)' });

const Proxy = optionalSection({
  remoteurl: opt(str('The upstream for every repository no other upstream claims (registry:2). Credentials in it (`user:pw@`) are refused: use `proxy.username`/`proxy.password`. Alone (without `upstreams`) it mirrors every repository whatever containerd\'s `?ns=` says, as registry:2 does.')),
  username: opt(str('Credentials for `remoteurl` (its token server, or Basic); with `password`.')),
  password: opt(str('With `username`. Never logged.')),
  ttl: duration(168 * 3600_000, false, 'How long cached content not pulled again is kept before `wharf garbage-collect` expires it ([mirror.md](mirror.md#expiry-ttl)); `0` keeps it forever. Also the default of each upstream\'s `ttl`.'),
  upstreams: opt(Type.Array(Upstream, { description: '**Wharf key.** More upstreams, each with the keys below. At most one without a `prefix`.', 'x-expected': 'a list of upstreams' })),
  localnamespaces: strList('**Wharf key.** Repositories (prefixes) that are local: pushable, never mirrored. Pushes elsewhere answer 405 `UNSUPPORTED`.', { default: [] }),
  timeout: duration(10_000, true, '**Wharf key.** Wait for an upstream\'s response headers; a blob body stalled four times this long is aborted.'),
  librarymapping: opt(Type.Boolean({ description: '**Wharf key.** Map single-component names (`alpine`) to `library/alpine` for `remoteurl`.', 'x-doc-default': 'true for `*.docker.io`' })),
  realmhosts: opt(Type.Array(Type.String(REALM_HOSTS), { description: '**Wharf key.** Token-realm hosts, besides the upstream\'s own host (and `auth.docker.io` for Docker Hub), that may receive the credentials of `remoteurl`.' })),
}, { description: 'A pull-through cache; see [mirror.md](mirror.md). Without `remoteurl` or `upstreams` there is no mirror.' });

/** A byte size: an integer of bytes, or a number with a unit (`512MiB`, `10GiB`, `1.5TB`); bytes in the config. */
const size = (minimum: number, description: string) => Type.Integer({ 'x-size': true, minimum, description });
const REPOSITORY_GLOBS = 'Repository glob patterns, as in `auth.access` rules: `*` within one path component, `**` across components (`team-a/**` is every repository below `team-a/`).';

const ImmutableTagRule = Type.Object({
  repositories: strList(REPOSITORY_GLOBS, { 'x-required': 'a rule needs repositories', 'x-at-parent': true, minItems: 1 }),
  tags: strList('Tag glob patterns (`v*`, `release-*`, `*` for every tag). A matching tag, once pushed, may not be moved to another manifest or deleted, and the manifest it names may not be deleted.', { 'x-required': 'a rule needs tags', 'x-at-parent': true, minItems: 1 }),
}, { 'x-unknown': 'unknown immutabletags key (expected repositories, tags)', 'x-expected': 'a mapping with repositories and tags' });

const QuotaRule = Type.Object({
  repositories: strList(REPOSITORY_GLOBS, { 'x-required': 'a rule needs repositories', 'x-at-parent': true, minItems: 1 }),
  maxsize: size(1, 'The most unique bytes (blobs and manifests, each counted once however many repositories of the rule link it) that the repositories matching the rule may reference together: bytes, or with a unit (`500MiB`, `10GiB`, `2TB`).'),
}, { 'x-unknown': 'unknown quotas key (expected repositories, maxsize)', 'x-expected': 'a mapping with repositories and maxsize' });

const RetentionRule = Type.Object({
  repositories: strList(REPOSITORY_GLOBS + ' A repository follows the first rule that matches it.', { 'x-required': 'a rule needs repositories', 'x-at-parent': true, minItems: 1 }),
  keep: section({
    mostrecent: opt(int(undefined, 0, 'Keep this many of the most recently pushed tags.')),
    pulledwithin: opt(duration(undefined, true, 'Keep every tag pulled (by tag, or its manifest by digest) within this long.')),
    tags: strList('Tag glob patterns always kept.', { default: [] }),
  }, { 'x-unknown': 'unknown keep key (expected mostrecent, pulledwithin, tags)' }),
  untagged: optionalSection({
    olderthan: duration(undefined, false, 'Delete manifests no tag names once their revision is older than this (never a child of an index that is kept, nor a referrer of a kept manifest).', { 'x-required': 'required (how old an untagged manifest must be to go)' }),
  }, { 'x-unknown': 'unknown untagged key (expected olderthan)' }),
}, { 'x-unknown': 'unknown retention key (expected repositories, keep, untagged)', 'x-expected': 'a mapping with repositories, keep and untagged' });

const Policies = section({
  immutabletags: Type.Array(ImmutableTagRule, { default: [], description: '**Wharf key.** Tags that may not be moved or deleted once pushed. See [policies.md](policies.md#immutable-tags).', 'x-expected': 'a list of rules' }),
  quotas: Type.Array(QuotaRule, { default: [], description: '**Wharf key.** Storage quotas over groups of repositories. See [policies.md](policies.md#quotas).', 'x-expected': 'a list of rules' }),
  retention: Type.Array(RetentionRule, { default: [], description: '**Wharf key.** Which tags and untagged manifests `wharf garbage-collect` and `wharf retention` remove. See [policies.md](policies.md#retention).', 'x-expected': 'a list of rules' }),
}, { 'x-unknown': 'unknown policies key (expected immutabletags, quotas, retention)' });

/** The whole of config.yml. */
export const ConfigSchema = Type.Object({
  version: Type.Literal('0.1', { description: 'The configuration format version. Must be `0.1`. It describes the file, so the environment cannot override it.', 'x-env': false, 'x-required': 'must be "0.1" (missing)', 'x-message': 'must be "0.1", got {got}' }),
  loglevel: notKept(oneOf(['error', 'warn', 'info', 'debug'], 'Old top-level form of `log.level`, used only when `log.level` is not set. Produces a warning.', {
    'x-deprecated': true, 'x-case': 'lower', 'x-aliases': { warning: 'warn' }, 'x-message': 'expected one of error, warn (or warning), info, debug, got {got}',
  })),
  log: Log,
  storage: Storage,
  http: Http,
  validation: Validation,
  auth: Auth,
  redis: Redis,
  health: section({
    storagedriver: section({
      enabled: bool(false, 'Check storage periodically. After `threshold` failed checks in a row, every registry API request is answered 503 `UNAVAILABLE` until a check passes again (registry:2\'s behaviour). `/readyz` checks storage on every call whether this is on or not.'),
      interval: duration(10_000, true, 'Time between checks.'),
      threshold: int(3, 1, 'Failures in a row before the API answers 503.'),
    }),
    file: unsupported('Health checks of files.'),
    http: unsupported('Health checks of HTTP endpoints.'),
    tcp: unsupported('Health checks of TCP endpoints.'),
  }),
  notifications: Notifications,
  catalog: section({ maxentries: int(1000, undefined, 'The most repository names one `/v2/_catalog` page holds; a larger or absent `n` is cut to it and `Link` leads to the next page (as registry:2). Zero or less means the default, as in registry:2.') }),
  tags: section({ maxtags: int(1000, undefined, 'The most tags one tags list page holds, also when the request gives no `n` or a larger one; `Link` leads to the next page. Zero or less means the default.') }),
  proxy: Proxy,
  ui: section({
    enabled: bool(true, '**Wharf key.** Serve the web UI on the registry listener: `GET /` and the pages under `/ui/` (the API stays under `/v2/`). When false, those paths answer 404 as any unknown path. See [ui.md](ui.md).'),
    title: str('**Wharf key.** The registry\'s name in the web UI\'s header and page title (shown as text).', { default: 'Wharf', minLength: 1, maxLength: 100 }),
    sessionlifetime: duration(8 * 3600_000, true, '**Wharf key.** How long a web UI login lasts. The session cookie is a signed token that expires then; its key is kept in storage (`_wharf/ui/session-key`), so every replica and worker accepts it. A password change or a removed user ends it at once.'),
  }),
  policies: Policies,
  middleware: unsupported('Registry, repository and storage middleware (CloudFront, redirect, ...).'),
  reporting: unsupported('Error reporting to Bugsnag or New Relic.'),
  compatibility: unsupported('Schema 1 manifest support.'),
  policy: unsupported('Repository classes.'),
});

// ---- the types the rest of Wharf reads -----------------------------------------------------------------------
// The loaded config is the file's shape with defaults filled in, less the keys it does not keep (unsupported and
// deprecated keys, typed `unknown`), plus a few values derived from several keys (the storage driver, the upstreams).

/** `T` without its `unknown` keys (keys of maps chosen by the user are kept whatever their type). */
type Loaded<T> = T extends readonly (infer U)[]
  ? Loaded<U>[]
  : T extends object
    ? { [K in keyof T as string extends K ? K : unknown extends T[K] ? never : K]: string extends K ? T[K] : Loaded<T[K]> }
    : T;
type File = Loaded<Static<typeof ConfigSchema>>;

export type LogLevel = File['log']['level'];
export type LogConfig = Omit<File['log'], 'formatter'> & { formatter: 'json' | 'text' | 'auto' };
export type S3StorageConfig = Loaded<Static<typeof S3>>;
export interface StorageConfig extends Omit<File['storage'], 'inmemory' | 'cache'> {
  /** Which driver section was given. Exactly one driver section is allowed. */
  driver: 'filesystem' | 'inmemory' | 's3';
  cache: { blobdescriptor?: 'inmemory' | 'redis'; blobdescriptorsize: number };
}
type HttpFile = File['http'];
export interface HttpConfig extends Omit<HttpFile, 'tls' | 'debug'> {
  tls?: Omit<NonNullable<HttpFile['tls']>, 'certificate' | 'key'> & { certificate: string; key: string };
  debug?: { addr: string; prometheus: NonNullable<HttpFile['debug']>['prometheus'] };
}
export type ValidationConfig = File['validation'];
export type PoliciesConfig = File['policies'];
export type ImmutableTagRuleConfig = Loaded<Static<typeof ImmutableTagRule>>;
export type QuotaRuleConfig = Loaded<Static<typeof QuotaRule>>;
export type RetentionRuleConfig = Loaded<Static<typeof RetentionRule>>;
export type PlatformConfig = Loaded<Static<typeof Platform>>;
export type AccessRuleConfig = Loaded<Static<typeof AccessRule>>;
type TokenServerFile = NonNullable<File['auth']['tokenserver']>;
export interface AuthConfig extends Omit<File['auth'], 'tokenserver'> {
  tokenserver?: Omit<TokenServerFile, 'issuer' | 'service'> & { issuer: string; service: string };
}
export type RedisConfig = NonNullable<File['redis']>;
export type NotificationEndpointConfig = Loaded<Static<typeof Endpoint>>;
export type NotificationsConfig = Omit<File['notifications'], 'events'>;
type UpstreamFile = Loaded<Static<typeof Upstream>>;
/** One upstream registry the mirror pulls from (docs/mirror.md). Durations in ms. */
export type ProxyUpstreamConfig = Omit<UpstreamFile, 'name' | 'ttl' | 'namespaces' | 'librarymapping'> & {
  name: string; ttl: number; namespaces: string[]; librarymapping: boolean;
};
export interface ProxyConfig extends Pick<NonNullable<File['proxy']>, 'localnamespaces' | 'timeout'> {
  /** The upstreams; the one without a prefix (if any) takes every repository no other one claims. */
  upstreams: ProxyUpstreamConfig[];
  /** Set when the only upstream is registry:2's `proxy.remoteurl`: containerd's `?ns=` is ignored, as registry:2 does. */
  ignoresNamespace?: boolean;
}
export interface WharfConfig extends Omit<File, 'log' | 'storage' | 'http' | 'auth' | 'notifications' | 'proxy'> {
  log: LogConfig;
  storage: StorageConfig;
  http: HttpConfig;
  auth: AuthConfig;
  notifications: NotificationsConfig;
  proxy?: ProxyConfig;
}

// ---- walking the schema ----------------------------------------------------------------------------------------

/** What a schema node is, for the walkers (load.ts, env.ts, docs.ts). */
export type Kind = 'section' | 'map' | 'list' | 'string' | 'value' | 'any' | 'unsupported';

export function kindOf(schema: TSchema): Kind {
  if (schema['x-unsupported']) return 'unsupported';
  if (schema.type === 'object') return schema.properties ? 'section' : 'map';
  if (schema.type === 'array') return 'list';
  if (schema.type === 'string') return 'string';
  if (schema.type === undefined && schema.const === undefined) return 'any';
  return 'value';
}

/** The schema of a map's values (a `Type.Record`). */
export function mapValues(schema: TSchema): TSchema {
  return Object.values(schema.patternProperties as Record<string, TSchema>)[0]!;
}

/** The field of a section whose name matches `name` ignoring case, as the schema spells it. */
export function fieldNamed(schema: TSchema, name: string): string | undefined {
  if (kindOf(schema) !== 'section') return undefined;
  const upper = name.toUpperCase();
  return Object.keys(schema.properties).find((k) => k.toUpperCase() === upper);
}
