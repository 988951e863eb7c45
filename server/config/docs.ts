/**
 * What the schema (schema.ts) generates for people and for the Helm chart: the key tables of docs/configuration.md
 * and the `config` part of helm/wharf/values.schema.json. `npm run docs:config` rewrites both; docs.test.ts fails
 * when either differs from what the schema generates.
 *
 * In the doc, each table sits between `<!-- config-keys: <prefixes> -->` and `<!-- /config-keys -->`: the keys under
 * the given prefixes (a `-` before a prefix leaves those keys out), or, for `unsupported`, the registry:2 keys Wharf
 * recognises but does not implement. Everything outside the markers is prose and is kept as written.
 */
import type { TSchema } from '@sinclair/typebox';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigSchema, kindOf, mapValues } from './schema.js';

/** One documented key. */
export interface KeyRow {
  key: string;
  type: string;
  default: string;
  env: string;
  description: string;
  unsupported: boolean;
}

const MiB = 1024 * 1024;

/** Every key of the schema, in schema order, as the doc lists it. */
export function keyRows(schema: TSchema = ConfigSchema, path = '', env = 'REGISTRY'): KeyRow[] {
  const rows: KeyRow[] = [];
  const required = new Set((schema.required as string[] | undefined) ?? []);
  for (const [name, sub] of Object.entries(schema.properties as Record<string, TSchema>)) {
    if (sub['x-doc-skip']) continue;
    const key = path === '' ? name : `${path}.${name}`;
    const variable = `${env}_${name.toUpperCase()}`;
    const kind = kindOf(sub);
    const row = (type: string): KeyRow => ({
      key, type, env: sub['x-env'] === false ? '' : `\`${variable}\``, unsupported: kind === 'unsupported',
      default: kind === 'section' ? '' : defaultText(sub, required.has(name) && sub.default === undefined),
      description: `${sub['x-deprecated'] ? '**Deprecated.** ' : ''}${(sub.description as string | undefined) ?? ''}`,
    });
    if (kind === 'section') {
      if (sub.description) rows.push(row(Object.keys(sub.properties as object).length === 0 ? 'section, no keys' : 'section'));
      rows.push(...keyRows(sub, key, variable));
    } else if (kind === 'list' && kindOf(sub.items as TSchema) === 'section') {
      rows.push(row('list'));
      rows.push(...keyRows(sub.items as TSchema, `${key}[]`, `${variable}_0`));
    } else {
      rows.push(row(typeText(sub)));
    }
  }
  return rows;
}

function typeText(schema: TSchema): string {
  switch (kindOf(schema)) {
    case 'unsupported':
      return '';
    case 'map':
      return kindOf(mapValues(schema)) === 'list' ? 'mapping of names to lists of strings' : 'mapping';
    case 'list':
      return kindOf(schema.items as TSchema) === 'string' ? 'list of strings' : 'list';
    case 'string':
      return schema.enum ? `one of ${(schema.enum as string[]).map((v) => `\`${v}\``).join(', ')}` : 'string';
    case 'any':
      return 'any';
    default:
      break;
  }
  if (schema['x-duration']) return schema.exclusiveMinimum === 0 ? 'duration > 0' : 'duration ≥ 0';
  if (schema['x-size']) return 'size (bytes, or `500MiB`, `10GiB`, `2TB`)';
  if (schema.type === 'integer') {
    if (schema.maximum !== undefined) return `integer, ${sizeText(schema.minimum as number)} to ${sizeText(schema.maximum as number)}`;
    return schema.minimum !== undefined ? `integer ≥ ${schema.minimum}` : 'integer';
  }
  return String(schema.type);
}

function sizeText(n: number): string {
  if (n === 0 || n % MiB !== 0) return String(n);
  return n % (1024 * MiB) === 0 ? `${n / 1024 / MiB} GiB` : `${n / MiB} MiB`;
}

/** A duration in milliseconds as Go writes it: `168h`, `5m`, `1s`, `300ms`. */
export function durationText(ms: number): string {
  for (const [unit, size] of [['h', 3600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms !== 0 && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

function defaultText(schema: TSchema, required: boolean): string {
  if (schema['x-doc-default'] !== undefined) return schema['x-doc-default'] as string;
  const d: unknown = schema.default;
  if (d === undefined) return required ? '**required**' : '';
  if (schema['x-duration']) return `\`${durationText(d as number)}\``;
  if (Array.isArray(d)) return d.length === 0 ? 'empty' : d.map((v) => `\`${v}\``).join(', ');
  if (typeof d === 'object') return Object.keys(d as object).length === 0 ? 'empty' : `\`${JSON.stringify(d)}\``;
  if (typeof d === 'number' && d >= MiB && d % MiB === 0) return `\`${d}\` (${sizeText(d)})`;
  return d === '' ? '`""`' : `\`${String(d)}\``;
}

const cell = (text: string) => text.replace(/\|/g, '\\|').replace(/\n/g, ' ');

/** The rows a marker selects (`log`, `storage.s3`, `http -http.timeouts`, `unsupported`). */
export function selectRows(rows: KeyRow[], selector: string): KeyRow[] {
  const words = selector.trim().split(/\s+/);
  if (words[0] === 'unsupported') return rows.filter((r) => r.unsupported);
  const under = (key: string, prefix: string) => key === prefix || key.startsWith(`${prefix}.`) || key.startsWith(`${prefix}[]`);
  const include = words.filter((w) => !w.startsWith('-'));
  const exclude = words.filter((w) => w.startsWith('-')).map((w) => w.slice(1));
  return rows.filter((r) => !r.unsupported && include.some((p) => under(r.key, p)) && !exclude.some((p) => under(r.key, p)));
}

export function tableFor(rows: KeyRow[], selector: string): string {
  const selected = selectRows(rows, selector);
  if (selector.trim() === 'unsupported') {
    return ['| Key | What it does in registry:2 |', '| --- | --- |', ...selected.map((r) => `| \`${r.key}\` | ${cell(r.description)} |`)].join('\n');
  }
  return [
    '| Key | Type | Default | Environment | Meaning |',
    '| --- | --- | --- | --- | --- |',
    ...selected.map((r) => `| \`${r.key}\` | ${cell(r.type)} | ${cell(r.default)} | ${r.env || 'none'} | ${cell(r.description)} |`),
  ].join('\n');
}

const MARKED = /(<!-- config-keys: ([^>]*?) -->)[\s\S]*?(<!-- \/config-keys -->)/g;

/** `markdown` with every marked table replaced by the one the schema generates. */
export function renderDoc(markdown: string, rows = keyRows()): string {
  return markdown.replace(MARKED, (_all, open: string, selector: string, close: string) => `${open}\n${tableFor(rows, selector)}\n${close}`);
}

/** The selectors of the marked tables in `markdown`. */
export function selectors(markdown: string): string[] {
  return [...markdown.matchAll(MARKED)].map((m) => m[2]!);
}

// ---- Helm ------------------------------------------------------------------------------------------------------

/** Keys the chart writes itself: values.yaml may not set them under `config`. */
const CHART_MANAGED: Record<string, string> = {
  version: 'set by the chart',
  'http.addr': 'set by the chart (port 5000)',
  'http.debug': 'set from metrics.*',
};
const GO_DURATION = '^(0|([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$';

/**
 * The JSON Schema of values.yaml's `config` (config.yml as written by hand: durations as Go strings, no defaults or
 * required keys, since the chart fills some in). Unknown keys are allowed: Wharf warns about them.
 */
export function helmConfigSchema(): Record<string, unknown> {
  const walk = (schema: TSchema, path: string): Record<string, unknown> | undefined => {
    if (CHART_MANAGED[path] !== undefined) return { not: {}, description: CHART_MANAGED[path] };
    switch (kindOf(schema)) {
      case 'unsupported':
        return undefined;
      case 'any':
        return {};
      case 'section': {
        const properties: Record<string, unknown> = {};
        for (const [name, sub] of Object.entries(schema.properties as Record<string, TSchema>)) {
          const out = walk(sub, path === '' ? name : `${path}.${name}`);
          if (out) properties[name] = out;
        }
        return { type: 'object', properties };
      }
      case 'map':
        return { type: 'object', additionalProperties: walk(mapValues(schema), `${path}.*`) };
      case 'list': {
        const items = walk(schema.items as TSchema, `${path}[]`);
        const list = { type: 'array', items };
        return schema['x-one-or-list'] ? { anyOf: [items, list] } : list;
      }
      case 'string': {
        const out: Record<string, unknown> = { type: 'string' };
        if (schema.enum) out.enum = [...(schema.enum as string[]), ...Object.keys((schema['x-aliases'] as object | undefined) ?? {})];
        if (schema.pattern ?? schema['x-chart-pattern']) out.pattern = schema.pattern ?? schema['x-chart-pattern'];
        return out;
      }
      case 'value':
        if (schema['x-duration']) return { anyOf: [{ type: 'string', pattern: GO_DURATION }, { type: 'integer', minimum: 0 }] };
        if (schema['x-size']) return { anyOf: [{ type: 'string', pattern: '^\\d+(\\.\\d+)?\\s*([KMGTP]i?B?|[kmgtp]i?b?|[Bb])?$' }, { type: 'integer', minimum: 0 }] };
        return {
          type: schema.type,
          ...(schema.minimum !== undefined ? { minimum: schema.minimum } : {}),
          ...(schema.maximum !== undefined ? { maximum: schema.maximum } : {}),
        };
    }
  };
  const config = walk(ConfigSchema, '')!;
  const storage = (config.properties as Record<string, Record<string, unknown>>).storage!;
  const drivers = Object.keys(ConfigSchema.properties.storage.properties).filter(
    (k) => !(ConfigSchema.properties.storage['x-driver'] as { settings: readonly string[] }).settings.includes(k),
  );
  for (const driver of drivers) delete (storage.properties as Record<string, unknown>)[driver];
  storage.description = 'storage settings (maintenance, cache, tag); the driver comes from storage.driver';
  storage.propertyNames = { not: { enum: drivers } };
  return {
    description:
      'config.yml keys as registry:2 names them (generated from server/config/schema.ts by npm run docs:config); the chart manages version, http.addr, http.debug, storage drivers, auth, redis and proxy',
    ...config,
  };
}

/** values.schema.json text with its `config` part replaced by the generated one. */
export function renderHelmSchema(text: string): string {
  const values = JSON.parse(text) as { properties: Record<string, unknown> };
  values.properties.config = helmConfigSchema();
  return `${JSON.stringify(values, null, 2)}\n`;
}

// ---- npm run docs:config -----------------------------------------------------------------------------------------

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../../..');
export const DOC = join(ROOT, 'docs/configuration.md');
export const HELM_SCHEMA = join(ROOT, 'helm/wharf/values.schema.json');

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === '--write') {
  writeFileSync(DOC, renderDoc(readFileSync(DOC, 'utf8')));
  writeFileSync(HELM_SCHEMA, renderHelmSchema(readFileSync(HELM_SCHEMA, 'utf8')));
  console.log(`wrote ${DOC} and ${HELM_SCHEMA}`);
}
