/**
 * Which keys exist, as registry:2 nests them, and which of them Wharf implements.
 *
 * The loader uses this map for three things: to warn about keys nobody knows (`unknown key auth.foo (ignored)`),
 * to warn about registry:2 keys Wharf recognises but does not implement yet (`health: not supported by this Wharf
 * version`), and to steer `REGISTRY_*` environment overrides through the tree (matching names case-insensitively
 * and knowing which values are plain strings). Reading values into their types happens in `load.ts`.
 */

export type Shape =
  /** A fixed set of keys. `driver` marks a section that names one driver by key (storage, auth). */
  | { kind: 'section'; fields: Record<string, Shape>; driver?: DriverRule }
  /** Keys chosen by the user (header names, log fields); every value has the `values` shape. */
  | { kind: 'map'; values: Shape }
  | { kind: 'list'; items: Shape }
  /** A leaf. `string` leaves take environment values verbatim; the others are parsed as YAML. */
  | { kind: 'value'; type: 'string' | 'other' }
  /** Anything at all, not inspected (a driver's free-form parameters, say). */
  | { kind: 'any' }
  /** A registry:2 key that Wharf recognises but does not implement. `note` replaces the standard warning. */
  | { kind: 'unsupported'; note?: string };

/** How a driver-style section works: every key except `settings` names a driver, and only one may be given. */
export interface DriverRule {
  /** Keys that configure the section rather than name a driver (storage's delete, redirect, ...). */
  settings: readonly string[];
  /**
   * Whether an unknown key is an error (it names a driver nobody has, and the section cannot work without its
   * driver: storage) rather than a warning (auth).
   */
  unknownIsError: boolean;
}

const str: Shape = { kind: 'value', type: 'string' };
const val: Shape = { kind: 'value', type: 'other' };
const any: Shape = { kind: 'any' };
const unsupported: Shape = { kind: 'unsupported' };
const section = (fields: Record<string, Shape>, driver?: DriverRule): Shape => ({ kind: 'section', fields, driver });

/** The storage drivers Wharf has. */
export const SUPPORTED_STORAGE_DRIVERS = ['filesystem', 'inmemory', 's3'] as const;
/** Keys under `storage` that are settings, not drivers (as registry:2 counts them). */
export const STORAGE_SETTINGS = ['delete', 'redirect', 'maintenance', 'cache', 'tag'] as const;
/** Keys under `auth` that are Wharf settings, not registry:2 auth drivers. */
export const AUTH_SETTINGS = ['tokenserver', 'access', 'throttle'] as const;

export const CONFIG_SHAPE: Shape = section({
  version: str,
  loglevel: str, // deprecated form of log.level
  log: section({
    level: str,
    formatter: str,
    fields: { kind: 'map', values: any },
    accesslog: section({ disabled: val }),
    hooks: unsupported,
    reportcaller: unsupported,
  }),
  storage: section(
    {
      filesystem: section({ rootdirectory: str, maxthreads: unsupported }),
      inmemory: section({}),
      s3: section({
        region: str,
        bucket: str,
        regionendpoint: str,
        forcepathstyle: val,
        accesskey: str,
        secretkey: str,
        sessiontoken: str,
        rootdirectory: str,
        chunksize: val,
        multipartcopychunksize: val,
        multipartcopymaxconcurrency: val,
        multipartcopythresholdsize: val,
        secure: val,
        skipverify: val,
        storageclass: str,
        encrypt: val,
        keyid: str,
        v4auth: val,
        useragent: unsupported,
        usedualstack: unsupported,
        accelerate: unsupported,
        objectacl: unsupported,
        loglevel: unsupported,
      }),
      gcs: unsupported,
      azure: unsupported,
      swift: unsupported,
      oss: unsupported,
      delete: section({ enabled: val }),
      redirect: section({ disable: val }),
      maintenance: section({
        uploadpurging: section({ enabled: val, age: val, interval: val, dryrun: val }),
        uploadlimits: section({ perrepository: val, peruser: val }),
        readonly: section({ enabled: val }),
      }),
      cache: section({ blobdescriptor: str, layerinfo: str, blobdescriptorsize: val }),
      tag: unsupported,
    },
    { settings: STORAGE_SETTINGS, unknownIsError: true },
  ),
  http: section({
    addr: str,
    net: str,
    host: str,
    prefix: str,
    secret: {
      kind: 'unsupported',
      note: 'http.secret: not needed by Wharf (upload state lives in storage, not in signed client state); ignored',
    },
    relativeurls: val,
    draintimeout: val,
    tls: section({
      certificate: str,
      key: str,
      clientcas: { kind: 'list', items: str },
      clientauth: unsupported,
      minimumtls: unsupported,
      ciphersuites: unsupported,
      letsencrypt: unsupported,
    }),
    headers: { kind: 'map', values: { kind: 'list', items: str } },
    debug: section({ addr: str, prometheus: section({ enabled: val, path: str }), tls: unsupported }),
    http2: unsupported,
    h2c: unsupported,
    // Wharf's own: which proxies' forwarded headers to believe, connection timeouts, connections per address.
    trustedproxies: { kind: 'list', items: str },
    timeouts: section({ readheader: val, stall: val, idle: val }),
    maxconnectionsperaddress: val,
  }),
  validation: section({
    disabled: val,
    enabled: val, // deprecated form of `disabled`
    manifests: section({
      maxsize: val,
      urls: unsupported,
      indexes: unsupported,
    }),
  }),
  auth: section(
    {
      none: any,
      silly: unsupported,
      htpasswd: section({ realm: str, path: str }),
      token: section({
        realm: str,
        service: str,
        issuer: str,
        rootcertbundle: str,
        jwks: str,
        signingalgorithms: { kind: 'list', items: str },
        autoredirect: val,
        autoredirectpath: unsupported,
      }),
      // Wharf's own: the built-in token server, access rules, password throttling (settings, not drivers).
      tokenserver: section({
        path: str, issuer: str, service: str, key: str, certificate: str, htpasswd: str, realm: str,
        expiration: val, refreshexpiration: val,
      }),
      access: section({ groups: { kind: 'map', values: { kind: 'list', items: str } }, anonymous: { kind: 'list', items: str }, rules: any }),
      throttle: section({ accountfailures: val, addressfailures: val, accounttotalfailures: val, window: val }),
    },
    { settings: AUTH_SETTINGS, unknownIsError: false },
  ),
  middleware: unsupported,
  reporting: unsupported,
  notifications: section({
    // Entries are checked field by field when read (load.ts), so the list's items are not described here.
    endpoints: any,
    events: section({ includereferences: unsupported }),
    maxqueue: val,
  }),
  redis: section({
    url: str,
    addr: str,
    addrs: { kind: 'unsupported', note: 'redis.addrs: several Redis addresses (cluster/sentinel) are not supported by this Wharf version; use redis.addr' },
    username: str,
    password: str,
    db: val,
    tls: section({ enabled: val, certificate: str, key: str, clientcas: { kind: 'list', items: str } }),
    dialtimeout: val,
    readtimeout: val,
    writetimeout: val,
    pool: section({ maxidle: val, maxactive: val, idletimeout: val }),
  }),
  health: section({
    storagedriver: section({ enabled: val, interval: val, threshold: val }),
    file: unsupported,
    http: unsupported,
    tcp: unsupported,
  }),
  catalog: section({ maxentries: val }),
  tags: section({ maxtags: val }),
  proxy: section({
    remoteurl: str,
    username: str,
    password: str,
    ttl: val,
    // Wharf's own: several upstreams (entries checked field by field in load.ts), local namespaces, a timeout.
    upstreams: any,
    localnamespaces: { kind: 'list', items: str },
    timeout: val,
    librarymapping: val,
    realmhosts: { kind: 'list', items: str },
  }),
  compatibility: unsupported,
  policy: unsupported,
});

/** The field of a section whose name matches `name` ignoring case, as the schema spells it. */
export function fieldNamed(shape: Shape, name: string): string | undefined {
  if (shape.kind !== 'section') return undefined;
  const upper = name.toUpperCase();
  return Object.keys(shape.fields).find((k) => k.toUpperCase() === upper);
}
