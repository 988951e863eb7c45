/**
 * Loading a Wharf configuration: YAML with registry:2's keys, `REGISTRY_*` environment overrides, defaults and
 * validation, producing a complete `WharfConfig`. Every key is declared in schema.ts; this module only applies it.
 *
 *   text ──parse──▶ tree ──env overrides──▶ tree ──decode (each key as its registry:2 type; unknown-key warnings)──▶
 *   data ──ajv (defaults, bounds, enums, patterns, required keys)──▶ data ──checks (rules across keys)──▶ WharfConfig
 *
 * Problems are collected, not thrown one at a time: `config check` shows every broken key in one run. Each
 * problem names its key (and the environment variable, when one set it), and they are listed in schema order.
 */
import type { TSchema } from '@sinclair/typebox';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { readFile } from 'node:fs/promises';
import { isIP, isIPv6 } from 'node:net';
import { resolve as resolvePath } from 'node:path';
import { nanosToMillis, parseGoDuration } from './duration.js';
import { applyEnvOverrides, switchDriver, type Origins } from './env.js';
import { ConfigError, formatProblem, type Problem } from './errors.js';
import { ConfigSchema, kindOf, mapValues, type DriverRule, type ProxyConfig, type ProxyUpstreamConfig, type WharfConfig } from './schema.js';
import { describe, isMapNode, isScalarNode, isSeqNode, isUnset, parseYamlTree, toPlain, type TreeNode } from './tree.js';

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

/** What the steps share: the tree (to name the variable that set a key), the problems and warnings found. */
interface Run {
  root: Map<string, TreeNode>;
  origins: Origins;
  problems: Problem[];
  warnings: string[];
  cwd: string;
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
  const run: Run = { root, origins: new WeakMap(), problems: [], warnings: [], cwd: options.cwd ?? process.cwd() };

  // `storage: inmemory` in a file is short for `storage: {inmemory: {}}` (and `auth: none` for `auth: {none:}`).
  for (const [key, schema] of Object.entries(ConfigSchema.properties) as [string, TSchema][]) {
    const node = root.get(key);
    const rule = schema['x-driver'] as DriverRule | undefined;
    if (rule && isScalarNode(node) && typeof node.value === 'string') root.set(key, switchDriver(undefined, node.value, rule));
  }
  applyEnvOverrides(root, ConfigSchema, env, run.warnings, run.problems, run.origins);

  const data = (decode(root, ConfigSchema, [], run) ?? {}) as Record<string, any>;
  const driver = storageDriver(data, run);
  const validate = validator();
  if (!validate(data)) for (const err of validate.errors ?? []) schemaProblem(err, run);
  const config = data as WharfConfig;
  config.storage.driver = driver;
  for (const check of CHECKS) check(data, run);

  if (run.problems.length > 0) throw new ConfigError(inSchemaOrder(run.problems).map(formatProblem), source);
  return { config, warnings: run.warnings };
}

// ---- from the tree to plain data -------------------------------------------------------------------------------

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

/**
 * Read `node` as its schema says, the way registry:2 reads YAML into typed Go fields: strings as written (`0755`
 * stays "0755"), YAML 1.1 booleans, Go durations (converted to milliseconds). Absent or empty values are left out
 * (their defaults apply); values of the wrong shape are problems; unknown and unsupported keys are warnings.
 */
function decode(node: TreeNode | undefined, schema: TSchema, path: string[], run: Run): unknown {
  // An empty value is unset, except where one value or a list is taken: there it is a list of none.
  if (isUnset(node)) return node !== undefined && schema['x-one-or-list'] ? [] : undefined;
  const fail = (message: string): undefined => problem(run, path, message);
  const expected = schema['x-expected'] as string | undefined;
  const kind = kindOf(schema);
  switch (kind) {
    case 'unsupported': {
      const note = schema['x-unsupported'];
      run.warnings.push(typeof note === 'string' ? note : `${path.join('.')}: not supported by this Wharf version`);
      return undefined;
    }
    case 'any':
      return toPlain(node!);
    case 'section':
    case 'map': {
      if (!isMapNode(node)) return fail(`expected ${expected ?? 'a mapping'}, got ${describe(node!)}`);
      const out: Record<string, unknown> = {};
      for (const [key, child] of node) {
        const at = [...path, key];
        const sub = kind === 'map' ? mapValues(schema) : (schema.properties as Record<string, TSchema>)[key];
        if (sub === undefined) {
          const unknown = (schema['x-unknown'] as string | undefined) ?? 'warn';
          if (unknown === 'warn') run.warnings.push(`unknown key ${at.join('.')} (ignored)`);
          else if (unknown !== 'silent') problem(run, at, unknown);
          continue;
        }
        const value = decode(child, sub, at, run);
        if (value !== undefined) Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
      }
      return out;
    }
    case 'list': {
      const single = schema['x-one-or-list'] === true;
      const items = isSeqNode(node) ? node : single && isScalarNode(node) ? [node] : undefined;
      if (!items) return fail(`expected ${expected ?? 'a list of strings'}, got ${describe(node!)}`);
      const itemSchema = schema.items as TSchema;
      if (kindOf(itemSchema) === 'string') {
        const bad = items.filter((item) => !isScalarNode(item) || item.value === null);
        if (bad.length > 0) {
          // Where a single value is accepted, each bad item is named; otherwise the list is.
          for (const item of single ? bad : [node!]) fail(`expected ${expected ?? 'a list of strings'}, got ${describe(item)}`);
          return undefined;
        }
        return items.map((item) => (item as { text: string }).text);
      }
      // Entries keep their index (a broken one leaves a hole, already reported) so later problems name the right one.
      return items.map((item, i) => decode(item, itemSchema, [...path, String(i)], run));
    }
    case 'string': {
      if (!isScalarNode(node)) return fail(`expected a string, got ${describe(node!)}`);
      if (node.text === '') return undefined;
      const text = schema['x-case'] === 'lower' ? node.text.toLowerCase() : schema['x-case'] === 'upper' ? node.text.toUpperCase() : node.text;
      return (schema['x-aliases'] as Record<string, string> | undefined)?.[text] ?? text;
    }
    case 'value':
      if (schema.type === 'boolean') {
        if (isScalarNode(node)) {
          if (typeof node.value === 'boolean') return node.value;
          const word = BOOLEAN_WORDS.get(node.text);
          if (word !== undefined) return word;
        }
        return fail(`expected a boolean, got ${describe(node!)}`);
      }
      if (schema['x-size']) return decodeSize(node!, fail);
      if (schema.type === 'integer') {
        let n: number | undefined;
        if (isScalarNode(node)) {
          if (typeof node.value === 'number') n = node.value;
          else if (typeof node.value === 'string' && /^[+-]?\d+$/.test(node.value.trim())) n = Number(node.value);
        }
        if (n === undefined || !Number.isSafeInteger(n)) return fail(`expected an integer, got ${describe(node!)}`);
        return n;
      }
      if (schema['x-duration']) return decodeDuration(node!, fail);
      return toPlain(node!);
  }
}

const SIZE_UNITS: Record<string, number> = {
  '': 1, b: 1,
  kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, pb: 1e15,
  kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, tib: 1024 ** 4, pib: 1024 ** 5,
};

/** A byte size: an integer, or a number with a unit (`KB`/`MB`/`GB`/`TB` decimal; `KiB`/`MiB`/`GiB`/`TiB` binary). */
export function parseSize(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim());
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) return undefined;
  const n = Math.round(Number(m[1]) * unit);
  return Number.isSafeInteger(n) ? n : undefined;
}

function decodeSize(node: TreeNode, fail: (message: string) => undefined): number | undefined {
  const n = isScalarNode(node) && (typeof node.value === 'number' || typeof node.value === 'string') ? parseSize(node.text) : undefined;
  return n ?? fail(`expected a size such as 500MiB, 10GiB or 2TB (or a number of bytes), got ${describe(node)}`);
}

/** A Go-syntax duration (`90s`, `1h30m`) or a bare integer of nanoseconds, in milliseconds. */
function decodeDuration(node: TreeNode, fail: (message: string) => undefined): number | undefined {
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
  if (ns === undefined) return fail(`expected a duration such as 30s, 15m or 1h30m${reason}, got ${describe(node)}`);
  return nanosToMillis(ns);
}

// ---- the schema's own checks (ajv) -----------------------------------------------------------------------------

let compiled: ValidateFunction | undefined;

/** Wharf's annotations (see schema.ts): keywords ajv carries without checking. */
export const ANNOTATIONS = [
  'x-duration', 'x-size', 'x-unsupported', 'x-message', 'x-required', 'x-at-parent', 'x-expected', 'x-case', 'x-aliases',
  'x-one-or-list', 'x-unknown', 'x-driver', 'x-doc-default', 'x-doc-skip', 'x-deprecated', 'x-env', 'x-chart-pattern',
];

/**
 * The schema's validator, compiled on first use and kept. Compiled plainly: the schema is checked against JSON
 * Schema's meta-schema by a test (load.test.ts) rather than in every process, and ajv's code optimiser is off. That
 * halves what the validator costs a process (about 100 ms and 5 MB instead of 300 ms and 12 MB, on the machine of
 * docs/performance.md), for a check that runs once per load.
 */
function validator(): ValidateFunction {
  if (compiled) return compiled;
  const ajv = new Ajv({ allErrors: true, useDefaults: true, verbose: true, strict: true, validateSchema: false, code: { optimize: false } });
  ajv.addVocabulary(ANNOTATIONS);
  return (compiled = ajv.compile(ConfigSchema));
}

/** One ajv error as a problem worded as Wharf words them. */
function schemaProblem(err: ErrorObject, run: Run): void {
  let path = err.instancePath.split('/').slice(1).map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
  const schema = err.parentSchema as TSchema;
  const node = nodeAt(run.root, path);
  const got = node !== undefined ? describe(node) : JSON.stringify(err.data);
  // Errors about a list's items are reported at the list (`auth.token.signingalgorithms: "HS256" is not allowed`).
  if (err.keyword !== 'required' && err.schemaPath.endsWith(`/items/${err.keyword}`)) path = path.slice(0, -1);
  // `{got}`: the value as read (case normalised); for `const` (the version), as written, so `0.2` is not `"0.2"`.
  const custom = (text: string) => text.replace('{got}', typeof err.data === 'string' && err.keyword !== 'const' ? JSON.stringify(err.data) : got);
  switch (err.keyword) {
    case 'type':
      return; // decode has reported it
    case 'required': {
      const key = (err.params as { missingProperty: string }).missingProperty;
      const sub = (schema.properties as Record<string, TSchema>)[key]!;
      return void problem(run, sub['x-at-parent'] ? path : [...path, key], (sub['x-required'] as string | undefined) ?? 'required');
    }
    case 'minimum':
    case 'exclusiveMinimum':
      if (schema['x-duration']) return void problem(run, path, `must be ${err.keyword === 'minimum' ? 'zero or more' : 'greater than zero'}, got ${got}`);
      return void problem(run, path, `must be at least ${(err.params as { limit: number }).limit}, got ${err.data}`);
    case 'maximum': {
      const max = (err.params as { limit: number }).limit;
      return void problem(run, path, `must be at most ${max}${max % 2 ** 30 === 0 ? ` (${max / 2 ** 30} GiB)` : ''}, got ${err.data}`);
    }
    case 'const':
      return void problem(run, path, custom(schema['x-message'] as string));
    case 'enum':
      return void problem(run, path, custom((schema['x-message'] as string | undefined) ?? `expected one of ${(schema.enum as string[]).join(', ')}, got {got}`));
    case 'pattern':
      return void problem(run, path, custom((schema['x-message'] as string | undefined) ?? `expected a value matching ${schema.pattern}, got {got}`));
    default:
      return void problem(run, path, err.message ?? err.keyword);
  }
}

// ---- problems --------------------------------------------------------------------------------------------------

/** The node at `path` in the tree, if the file (or the environment) has one. */
function nodeAt(root: TreeNode, path: readonly string[]): TreeNode | undefined {
  let node: TreeNode | undefined = root;
  for (const key of path) {
    if (isMapNode(node)) node = node.get(key);
    else if (isSeqNode(node)) node = node[Number(key)];
    else return undefined;
  }
  return node;
}

/** Record a problem with the key at `path`; if an environment variable set it, say which. */
function problem(run: Run, path: readonly string[], message: string): undefined {
  const node = nodeAt(run.root, path);
  const origin = node !== undefined ? run.origins.get(node) : undefined;
  run.problems.push(origin ? { path, message, origin } : { path, message });
  return undefined;
}

/** Problems sorted as the schema lists their keys (a key's own problems after those of the keys inside it). */
function inSchemaOrder(problems: Problem[]): Problem[] {
  const rank = (path: readonly string[]): number[] => {
    let schema: TSchema | undefined = ConfigSchema;
    return path.map((key) => {
      const kind = schema ? kindOf(schema) : 'any';
      if (kind === 'section') {
        const keys = Object.keys(schema!.properties as object);
        schema = (schema!.properties as Record<string, TSchema>)[key];
        return keys.includes(key) ? keys.indexOf(key) : keys.length;
      }
      schema = kind === 'map' ? mapValues(schema!) : kind === 'list' ? (schema!.items as TSchema) : undefined;
      return kind === 'list' ? Number(key) : 0;
    });
  };
  const compare = (a: number[], b: number[]): number => {
    for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
    return b.length - a.length;
  };
  return problems.map((p) => ({ p, r: rank(p.path) })).sort((x, y) => compare(x.r, y.r)).map(({ p }) => p);
}

// ---- rules JSON Schema cannot say ------------------------------------------------------------------------------
// Each takes the decoded, defaulted data (typed loosely: it is not a WharfConfig until these have run).

type Data = Record<string, any>;

/** The keys of a driver section (storage, auth) that name drivers, and of those the ones Wharf has. */
function driversOf(schema: TSchema): { all: string[]; supported: string[] } {
  const settings = (schema['x-driver'] as DriverRule).settings;
  const all = Object.keys(schema.properties as object).filter((k) => !settings.includes(k));
  return { all, supported: all.filter((k) => kindOf((schema.properties as Record<string, TSchema>)[k]!) !== 'unsupported') };
}

/** `storage` names exactly one driver, one Wharf has; the other drivers' sections are dropped. */
function storageDriver(data: Data, run: Run): WharfConfig['storage']['driver'] {
  const storageSchema = ConfigSchema.properties.storage;
  const settings = (storageSchema['x-driver'] as DriverRule).settings;
  const SUPPORTED_STORAGE_DRIVERS = driversOf(storageSchema).supported;
  const node = run.root.get('storage');
  let driver: WharfConfig['storage']['driver'] = 'filesystem';
  if (isUnset(node) || isMapNode(node)) {
    const drivers = isMapNode(node) ? [...node.keys()].filter((k) => !settings.includes(k)) : [];
    const available = `(available: ${SUPPORTED_STORAGE_DRIVERS.join(', ')})`;
    if (drivers.length !== 1) {
      problem(run, ['storage'], `exactly one storage driver must be configured (got ${drivers.join(', ') || 'none'})`);
    } else if (SUPPORTED_STORAGE_DRIVERS.includes(drivers[0]!)) {
      driver = drivers[0] as WharfConfig['storage']['driver'];
    } else if (drivers[0]! in storageSchema.properties) {
      problem(run, ['storage', drivers[0]!], `this storage driver is not supported by this Wharf version ${available}`);
    } else {
      problem(run, ['storage', drivers[0]!], `unknown storage driver ${available}`);
    }
  }
  if (data.storage) {
    delete data.storage.inmemory;
    if (driver !== 's3') delete data.storage.s3;
    else data.storage.s3 ??= {}; // `storage: s3` alone still needs its region and bucket
  }
  return driver;
}

function storagePaths(data: Data, run: Run): void {
  data.storage.filesystem.rootdirectory = resolvePath(run.cwd, data.storage.filesystem.rootdirectory);
}

/** registry:2's `storage.s3`: an http(s) endpoint, credentials in pairs, v4auth always on. */
function s3(data: Data, run: Run): void {
  const s3 = data.storage.s3;
  if (!s3) return;
  const at = (key: string) => ['storage', 's3', key];
  if (s3.regionendpoint !== undefined && /^[a-z][a-z0-9+.-]*:\/\//i.test(s3.regionendpoint)) {
    const url = parseUrl(s3.regionendpoint);
    if (!url || !['http:', 'https:'].includes(url.protocol) || url.hostname === '') {
      problem(run, at('regionendpoint'), `expected an http(s) URL such as https://s3.example.com, got ${JSON.stringify(s3.regionendpoint)}`);
    }
  }
  if ((s3.accesskey === undefined) !== (s3.secretkey === undefined)) {
    // Never echo the secret in a message.
    problem(run, at(s3.accesskey === undefined ? 'accesskey' : 'secretkey'), 'accesskey and secretkey must be given together (or neither, to use the AWS default credential chain)');
  }
  if (s3.v4auth === false) run.warnings.push('storage.s3.v4auth: false is ignored; Wharf always signs requests with Signature Version 4');
  delete s3.v4auth;
}

/** `storage.cache`: the deprecated `layerinfo`, and unknown cache types (no cache, as in registry:2). */
function cache(data: Data, run: Run): void {
  const cache = data.storage.cache;
  let key = 'blobdescriptor';
  if (cache.blobdescriptor === undefined && cache.layerinfo !== undefined) {
    cache.blobdescriptor = cache.layerinfo;
    key = 'layerinfo';
    run.warnings.push('storage.cache.layerinfo is deprecated; use storage.cache.blobdescriptor');
  }
  delete cache.layerinfo;
  if (cache.blobdescriptor !== undefined && cache.blobdescriptor !== 'inmemory' && cache.blobdescriptor !== 'redis') {
    run.warnings.push(`storage.cache.${key}: unknown cache type ${JSON.stringify(cache.blobdescriptor)}; blob descriptors are not cached`);
    delete cache.blobdescriptor;
  }
}

/** The level from `log.level`, or else the deprecated top-level `loglevel`; `logstash` is taken as json. */
function log(data: Data, run: Run): void {
  if (run.root.has('loglevel')) {
    if (isUnset(nodeAt(run.root, ['log', 'level']))) {
      if (data.loglevel !== undefined) data.log.level = data.loglevel;
      run.warnings.push('loglevel is deprecated; use log.level');
    } else {
      run.warnings.push('loglevel is deprecated and log.level is set; loglevel is ignored');
    }
  }
  delete data.loglevel;
  const formatter = nodeAt(run.root, ['log', 'formatter']);
  if (isScalarNode(formatter) && formatter.text.toLowerCase() === 'logstash') {
    run.warnings.push('log.formatter: logstash is not supported by this Wharf version; using json');
  }
  data.log.formatter ??= 'auto';
}

/** `http`: the listen address for its network, the external host, the prefix's slashes, TLS in pairs, debug. */
function http(data: Data, run: Run): void {
  const http = data.http;
  const at = (...keys: string[]) => ['http', ...keys];
  const addrGiven = !isUnset(nodeAt(run.root, at('addr')));
  if (http.net === 'unix') {
    if (!addrGiven) problem(run, at('addr'), 'a socket path is required when http.net is unix');
  } else if (addrGiven) {
    const why = tcpAddressProblem(http.addr);
    if (why) problem(run, at('addr'), `${why}, got ${JSON.stringify(http.addr)}`);
  }
  if (http.host !== undefined) {
    const normal = normaliseHost(http.host);
    if (normal === undefined) {
      problem(run, at('host'), `expected scheme://host[:port] with scheme http or https (a path belongs in http.prefix), got ${JSON.stringify(http.host)}`);
    }
    http.host = normal;
    if (normal === undefined) delete http.host;
  }
  if (/[\s?#]/.test(http.prefix)) problem(run, at('prefix'), `expected a URL path such as /registry/, got ${JSON.stringify(http.prefix)}`);
  // registry:2 asks for a leading and a trailing slash; add whichever is missing.
  if (!http.prefix.startsWith('/')) http.prefix = `/${http.prefix}`;
  if (!http.prefix.endsWith('/')) http.prefix += '/';

  (http.trustedproxies as string[]).forEach((entry, i) => {
    const why = trustedProxyProblem(entry);
    if (why) problem(run, at('trustedproxies'), `entry ${i}: ${why}, got ${JSON.stringify(entry)}`);
  });
  http.trustedproxies = (http.trustedproxies as string[]).map((entry) => entry.trim());
  checkHeaders(http.headers, at('headers'), run);

  const tls = http.tls;
  if (tls) {
    delete http.tls;
    if (tls.certificate === undefined && tls.key === undefined) {
      if (tls.clientcas !== undefined) run.warnings.push('http.tls.clientcas: ignored, because http.tls.certificate and http.tls.key are not set');
    } else if (tls.certificate === undefined) {
      problem(run, at('tls', 'certificate'), 'required when http.tls.key is set (TLS needs both certificate and key)');
    } else if (tls.key === undefined) {
      problem(run, at('tls', 'key'), 'required when http.tls.certificate is set (TLS needs both certificate and key)');
    } else {
      http.tls = tls;
    }
  }
  const debug = http.debug;
  if (debug) {
    delete http.debug;
    if (debug.addr !== undefined) {
      const why = tcpAddressProblem(debug.addr);
      if (why) problem(run, at('debug', 'addr'), `${why}, got ${JSON.stringify(debug.addr)}`);
      http.debug = debug;
    } else if (debug.prometheus.enabled) {
      run.warnings.push('http.debug.prometheus: ignored, because http.debug.addr is not set (metrics are served on the debug listener)');
    }
  }
}

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** Header names must be tokens, and values single lines. */
function checkHeaders(headers: Record<string, string[]>, path: string[], run: Run): void {
  for (const [name, values] of Object.entries(headers)) {
    if (!HEADER_NAME.test(name)) problem(run, [...path, name], 'not a valid HTTP header name');
    else if (values.some((v) => /[\r\n\0]/.test(v))) problem(run, [...path, name], 'header values must not contain line breaks');
  }
}

/** The deprecated `validation.enabled` is the inverse of `validation.disabled`. */
function validation(data: Data, run: Run): void {
  const v = data.validation;
  if (v.enabled !== undefined) {
    if (isUnset(nodeAt(run.root, ['validation', 'disabled']))) {
      v.disabled = !v.enabled;
      run.warnings.push('validation.enabled is deprecated; use validation.disabled');
    } else {
      run.warnings.push('validation.enabled is deprecated and validation.disabled is set; validation.enabled is ignored');
    }
  }
  delete v.enabled;
}

/** `validation.manifests`: the URL lists are regular expressions; `platforms: list` needs its list. */
function manifestChecks(data: Data, run: Run): void {
  const m = data.validation.manifests;
  for (const kind of ['allow', 'deny'] as const) {
    (m.urls[kind] as string[]).forEach((re, i) => {
      try {
        new RegExp(re);
      } catch (err) {
        problem(run, ['validation', 'manifests', 'urls', kind, String(i)], `not a regular expression: ${(err as Error).message}`);
      }
    });
  }
  if (m.indexes.platforms === 'list' && m.indexes.platformlist.length === 0) {
    problem(run, ['validation', 'manifests', 'indexes', 'platformlist'], 'required with platforms: list (the platforms whose children must be present)');
  }
}

/** `policies`: every pattern is a glob the rules can use; a retention rule says what it does. */
function policies(data: Data, run: Run): void {
  const p = data.policies;
  const globs = (at: string[], patterns: string[] | undefined) =>
    (patterns ?? []).forEach((pattern, i) => {
      if (pattern === '' || pattern.includes('${user}')) problem(run, [...at, String(i)], `expected a glob pattern, got ${JSON.stringify(pattern)}`);
    });
  for (const kind of ['immutabletags', 'quotas', 'retention'] as const) {
    (p[kind] as (Data | undefined)[]).forEach((rule, i) => {
      if (!rule) return;
      const at = ['policies', kind, String(i)];
      globs([...at, 'repositories'], rule.repositories);
      if (kind === 'immutabletags') globs([...at, 'tags'], rule.tags);
      if (kind === 'retention') {
        globs([...at, 'keep', 'tags'], rule.keep.tags);
        const keeps = rule.keep.mostrecent !== undefined || rule.keep.pulledwithin !== undefined || rule.keep.tags.length > 0;
        if (!keeps && !rule.untagged) problem(run, at, 'a retention rule needs keep (mostrecent, pulledwithin or tags) or untagged');
      }
    });
  }
}

/** `auth`: one driver; token trust; the token server's defaults from `auth.token`; paths; access rules. */
function auth(data: Data, run: Run): void {
  const auth = data.auth;
  const node = run.root.get('auth');
  const names = driversOf(ConfigSchema.properties.auth).all.filter((k) => k !== 'none');
  const drivers = isMapNode(node) ? [...node.keys()].filter((k) => names.includes(k)) : [];
  if (drivers.length > 1) problem(run, ['auth'], `only one of htpasswd, token may be configured (got ${drivers.join(', ')})`);
  delete auth.none;
  const file = (path: string | undefined) => (path === undefined ? undefined : resolvePath(run.cwd, path));
  if (auth.htpasswd) auth.htpasswd.path = file(auth.htpasswd.path);

  const token = auth.token;
  if (token) {
    if (token.realm !== undefined && !/^https?:\/\/\S+$/.test(token.realm)) {
      problem(run, ['auth', 'token', 'realm'], `expected an http(s) URL, got ${JSON.stringify(token.realm)}`);
    }
    if (token.rootcertbundle === undefined && token.jwks === undefined && !auth.tokenserver) {
      problem(run, ['auth', 'token', 'rootcertbundle'], 'required (or auth.token.jwks, or auth.tokenserver, whose certificate is then trusted)');
    }
    for (const key of ['rootcertbundle', 'jwks']) if (token[key] !== undefined) token[key] = file(token[key]);
  }

  const server = auth.tokenserver;
  if (server) {
    if (!/^\/[A-Za-z0-9._~/-]*$/.test(server.path) || /^\/v2(\/|$)/.test(server.path)) {
      problem(run, ['auth', 'tokenserver', 'path'], `expected a URL path outside /v2, such as /auth/token, got ${JSON.stringify(server.path)}`);
    }
    server.path = server.path.replace(/\/+$/, '') || '/auth/token';
    server.issuer ??= token?.issuer ?? 'wharf';
    server.service ??= token?.service ?? 'wharf';
    for (const key of ['key', 'certificate', 'htpasswd']) server[key] = file(server[key]);
  }

  const access = auth.access;
  if (access) {
    (access.rules as (Data | undefined)[]).forEach((rule, i) => {
      if (!rule) return;
      const at = ['auth', 'access', 'rules', String(i)];
      for (const group of rule.groups ?? []) {
        if (!Object.prototype.hasOwnProperty.call(access.groups, group)) {
          problem(run, [...at, 'groups'], `group ${JSON.stringify(group)} is not defined in auth.access.groups`);
        }
      }
      if (!rule.users && !rule.groups) problem(run, at, 'a rule needs users or groups');
      if (!rule.catalog && (!rule.repositories || !rule.actions)) problem(run, at, 'a rule needs repositories and actions (or catalog: true)');
    });
  }
}

/** Endpoint names are unique; URLs are http(s) and carry no credentials. */
function notifications(data: Data, run: Run): void {
  delete data.notifications.events;
  const names = new Set<string>();
  (data.notifications.endpoints as (Data | undefined)[]).forEach((endpoint, i) => {
    if (!endpoint) return;
    const at = (key: string) => ['notifications', 'endpoints', String(i), key];
    if (endpoint.name !== undefined) {
      if (names.has(endpoint.name)) problem(run, at('name'), `duplicate endpoint name ${JSON.stringify(endpoint.name)}`);
      names.add(endpoint.name);
    }
    if (endpoint.url === undefined) return;
    if (!/^https?:\/\/[^\s]+$/.test(endpoint.url)) {
      problem(run, at('url'), `expected an http or https URL, got ${JSON.stringify(withoutUserinfo(endpoint.url))}`);
    } else if (hasUserinfo(endpoint.url)) {
      problem(run, at('url'), `credentials in the URL are not accepted (they would reach logs and errors); send them as a header: ${at('headers').join('.')}.Authorization`);
    }
  });
}

/** registry:2 takes zero or a negative page limit as its default. */
function pageLimits(data: Data): void {
  const positive = (section: Data, key: string, schema: TSchema) => {
    if (section[key] <= 0) section[key] = (schema.properties as Record<string, TSchema>)[key]!.default;
  };
  positive(data.catalog, 'maxentries', ConfigSchema.properties.catalog);
  positive(data.tags, 'maxtags', ConfigSchema.properties.tags);
}

/**
 * `redis` is used when it gives `addr` or `url`; `storage.cache.blobdescriptor: redis` needs it (registry:2 refuses
 * to start too). The URL is never repeated in a message: it may hold the password.
 */
function redis(data: Data, run: Run): void {
  const redis = data.redis;
  if (redis?.url !== undefined) {
    const url = parseUrl(redis.url);
    if (!url || (url.protocol !== 'redis:' && url.protocol !== 'rediss:') || url.hostname === '') {
      problem(run, ['redis', 'url'], 'expected redis://[user][:password]@host[:port][/db] (or rediss:// for TLS)');
    } else if (!/^\/?(\d*)$/.test(url.pathname)) {
      problem(run, ['redis', 'url'], 'the path of a Redis URL is the database number, such as redis://host:6379/0');
    }
  }
  if (redis?.url !== undefined && redis.addr !== undefined) run.warnings.push('redis: both url and addr are set; addr overrides the host and port of url');
  if (redis?.url === undefined && redis?.addr === undefined) {
    if (data.storage.cache.blobdescriptor === 'redis') {
      problem(run, ['storage', 'cache', 'blobdescriptor'], 'redis needs the redis section with redis.addr or redis.url');
    } else if (isMapNode(run.root.get('redis')) && (run.root.get('redis') as Map<string, unknown>).size > 0) {
      run.warnings.push('redis: no addr or url given; Redis is not used');
    }
    delete data.redis;
    return;
  }
  const tls = redis.tls;
  if ((tls.certificate === undefined) !== (tls.key === undefined)) {
    problem(run, ['redis', 'tls', tls.certificate === undefined ? 'certificate' : 'key'], 'redis.tls.certificate and redis.tls.key go together (a client certificate needs its key)');
  }
  if ((tls.certificate !== undefined || tls.clientcas.length > 0) && !tls.enabled && !redis.url?.startsWith('rediss:')) {
    run.warnings.push('redis.tls: certificate, key and clientcas are used only when redis.tls.enabled is true');
  }
}

const REPOSITORY_PREFIX = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;

/**
 * registry:2's `proxy` (one upstream for every repository: `remoteurl`, `username`, `password`, `ttl`) and Wharf's
 * `proxy.upstreams` become one list of upstreams. No mirror when neither is given.
 */
function proxy(data: Data, run: Run): void {
  const section = data.proxy;
  if (!section) return;
  delete data.proxy;
  const upstreams: ProxyUpstreamConfig[] = [];
  const add = (entry: Data, at: string[], urlKey: string, name: string, prefix: string | undefined) => {
    const url = parseUrl(entry[urlKey]);
    if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.hostname === '') {
      return void problem(run, [...at, urlKey], `expected an http or https URL, got ${JSON.stringify(withoutUserinfo(entry[urlKey]))}`);
    }
    if (url.username !== '' || url.password !== '') {
      const key = (k: string) => [...at, k].join('.');
      return void problem(run, [...at, urlKey], `credentials in the URL are not accepted (they would reach logs and errors); use ${key('username')} and ${key('password')}`);
    }
    if ((entry.username === undefined) !== (entry.password === undefined)) problem(run, at, 'username and password go together');
    const dockerHub = /(^|\.)docker\.io$/.test(url.hostname);
    const upstream: ProxyUpstreamConfig = {
      name,
      url: entry[urlKey].replace(/\/+$/, ''),
      ttl: entry.ttl ?? section.ttl,
      namespaces: entry.namespaces ?? [url.host, ...(dockerHub ? ['docker.io'] : [])],
      librarymapping: entry.librarymapping ?? dockerHub,
    };
    if (entry.username !== undefined) upstream.username = entry.username;
    if (entry.password !== undefined) upstream.password = entry.password;
    if (prefix !== undefined) upstream.prefix = prefix;
    if (entry.realmhosts?.length > 0) upstream.realmhosts = (entry.realmhosts as string[]).map((h) => h.toLowerCase());
    upstreams.push(upstream);
  };
  if (section.remoteurl !== undefined) add(section, ['proxy'], 'remoteurl', 'default', undefined);
  else if ((run.root.get('proxy') as Map<string, unknown> | undefined)?.has?.('remoteurl')) problem(run, ['proxy', 'remoteurl'], 'an upstream needs a URL');
  (section.upstreams as (Data | undefined)[] | undefined)?.forEach((entry, i) => {
    if (!entry || entry.url === undefined) return;
    const at = ['proxy', 'upstreams', String(i)];
    const prefix = entry.prefix?.replace(/^\/+|\/+$/g, '');
    if (prefix !== undefined && !REPOSITORY_PREFIX.test(prefix)) {
      problem(run, [...at, 'prefix'], `expected a repository name prefix such as ghcr or quay/mirror, got ${JSON.stringify(prefix)}`);
    }
    add(entry, at, 'url', entry.name ?? prefix ?? `upstream${i}`, prefix === '' ? undefined : prefix);
  });
  if (upstreams.length === 0) {
    const node = run.root.get('proxy');
    if (isMapNode(node) && node.size > 0) {
      problem(run, ['proxy'], 'a mirror needs proxy.remoteurl or proxy.upstreams');
    }
    return;
  }
  const seen = new Set<string>();
  for (const u of upstreams) {
    const key = u.prefix ?? '';
    if (seen.has(key)) problem(run, ['proxy', 'upstreams'], key === '' ? 'only one upstream may take every repository (no prefix)' : `duplicate prefix ${JSON.stringify(key)}`);
    seen.add(key);
  }
  const localnamespaces = (section.localnamespaces as string[]).map((n) => n.replace(/^\/+|\/+$/g, '')).filter((n) => n !== '');
  const result: ProxyConfig = { upstreams, localnamespaces, timeout: section.timeout };
  // registry:2's keys alone: one upstream for every repository, whatever `?ns=` says (registry:2 ignores it).
  if (upstreams.length === 1 && upstreams[0]!.name === 'default' && section.upstreams === undefined) result.ignoresNamespace = true;
  data.proxy = result;
}

/** The checks, in the order their warnings are reported. */
const CHECKS: ReadonlyArray<(data: Data, run: Run) => void> = [log, storagePaths, s3, cache, http, validation, manifestChecks, auth, notifications, pageLimits, redis, proxy, policies];

// ---- helpers ---------------------------------------------------------------------------------------------------

/** What is wrong with an `http.trustedproxies` entry (an IP address, or a CIDR range), or undefined. */
export function trustedProxyProblem(entry: string): string | undefined {
  const m = /^([^/]+)(?:\/(\d{1,3}))?$/.exec(entry.trim());
  const family = m ? isIP(m[1]!) : 0;
  if (!m || family === 0) return 'expected an IP address or a CIDR range such as 10.0.0.0/8';
  if (m[2] !== undefined && Number(m[2]) > (family === 4 ? 32 : 128)) return `the prefix length is at most ${family === 4 ? 32 : 128}`;
  return undefined;
}

/** Why `addr` is not a TCP listen address (`host:port`, `:port`, `[v6]:port`), or undefined if it is one. */
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
  const url = parseUrl(host);
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) return undefined;
  if (url.hostname === '' || url.pathname !== '/' || url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    return undefined;
  }
  return url.origin;
}

function parseUrl(text: string): URL | undefined {
  try {
    return new URL(text);
  } catch {
    return undefined;
  }
}

/** Whether a URL carries credentials (`scheme://user:password@host`). */
function hasUserinfo(url: string): boolean {
  const parsed = parseUrl(url);
  return parsed ? parsed.username !== '' || parsed.password !== '' : /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*@/i.test(url);
}

/** `url` with any credentials before the host replaced, for error messages. */
function withoutUserinfo(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#]*@/i, '$1***@');
}
