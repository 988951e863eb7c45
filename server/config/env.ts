/**
 * `REGISTRY_*` environment overrides, with registry:2's rules.
 *
 * - The name after `REGISTRY_` is a key path with `_` between levels: `REGISTRY_STORAGE_DELETE_ENABLED` sets
 *   `storage.delete.enabled`. Each part is matched against the config tree ignoring case; a key the user chose
 *   (a header name, a log field) that is not in the file yet is created in lower case, as registry:2 does.
 *   A numeric part indexes a list (`REGISTRY_HTTP_TLS_CLIENTCAS_0`); the index one past the end appends.
 * - Variables are applied in lexical order of their names, so a whole section (`REGISTRY_STORAGE`) is applied
 *   before the keys inside it (`REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY`), which then refine it.
 * - Values are YAML: `true`, `10`, `{inmemory: {}}` mean what they would in the file. A key that holds a plain
 *   string (paths, addresses) takes the value verbatim, so `REGISTRY_HTTP_ADDR=[::1]:5000` needs no quoting.
 * - A plain value given for a driver section switches the driver: `REGISTRY_STORAGE=inmemory` makes inmemory
 *   the storage driver. Unlike registry:2, which throws the whole `storage` section away in that case, Wharf
 *   keeps the section's settings (`delete`, `maintenance`, ...) and keeps the driver's parameters when the named
 *   driver is the one already configured.
 * - A variable that matches no key is ignored with a warning (Kubernetes injects `REGISTRY_PORT` and the like
 *   for a Service named "registry"); `REGISTRY_VERSION` is ignored too: the version describes the file.
 */
import type { TSchema } from '@sinclair/typebox';
import type { Problem } from './errors.js';
import { fieldNamed, kindOf, mapValues, type DriverRule } from './schema.js';
import { isMapNode, isScalarNode, isSeqNode, parseYamlTree, scalar, type MapNode, type TreeNode } from './tree.js';

/** Which environment variable set a node, so error messages can point at it. */
export type Origins = WeakMap<object, string>;

interface Context {
  readonly variable: string;
  readonly raw: string;
  readonly warnings: string[];
  readonly problems: Problem[];
  readonly origins: Origins;
}

/** Keys whose schema says nothing: anything goes below them. */
const ANY: TSchema = {} as TSchema;

const PREFIX = 'REGISTRY_';

/** Apply every `REGISTRY_*` variable in `env` to `root` (in place). */
export function applyEnvOverrides(
  root: MapNode,
  schema: TSchema,
  env: Record<string, string | undefined>,
  warnings: string[],
  problems: Problem[],
  origins: Origins,
): void {
  const names = Object.keys(env)
    .filter((name) => name.startsWith(PREFIX) && env[name] !== undefined)
    .sort();
  for (const variable of names) {
    const parts = variable.slice(PREFIX.length).split('_');
    if (parts.some((p) => p === '')) {
      warnings.push(`environment variable ${variable} matches no configuration key (ignored)`);
      continue;
    }
    const top = parts.length === 1 ? fieldNamed(schema, parts[0]!) : undefined;
    if (top !== undefined && (schema.properties as Record<string, TSchema>)[top]!['x-env'] === false) {
      warnings.push(`environment variable ${variable}: the configuration ${top} cannot be overridden (ignored)`);
      continue;
    }
    const ctx: Context = { variable, raw: env[variable]!, warnings, problems, origins };
    apply(root, schema, parts, [], ctx);
  }
}

/**
 * Set the value at `parts` below `node` (whose schema is `schema` and whose key path is `path`), and return the
 * node that should now stand in `node`'s place.
 */
function apply(node: TreeNode | undefined, schema: TSchema, parts: string[], path: string[], ctx: Context): TreeNode | undefined {
  if (parts.length === 0) return valueFor(node, schema, ctx);
  const [head, ...rest] = parts as [string, ...string[]];
  const driver = schema['x-driver'] as DriverRule | undefined;

  switch (kindOf(schema)) {
    case 'section': {
      let map = isMapNode(node) ? node : created(new Map(), node, ctx);
      if (driver && isScalarNode(node) && typeof node.value === 'string') {
        map = created(switchDriver(undefined, node.value, driver), node, ctx);
      }
      const name = fieldNamed(schema, head) ?? (driver ? head.toLowerCase() : undefined);
      if (name === undefined) {
        ctx.warnings.push(`environment variable ${ctx.variable} matches no configuration key (ignored)`);
        return node;
      }
      const child = apply(map.get(name), (schema.properties as Record<string, TSchema>)[name] ?? ANY, rest, [...path, name], ctx);
      if (child !== undefined) map.set(name, child);
      return map;
    }
    case 'map':
    case 'any':
    case 'unsupported': {
      const map = isMapNode(node) ? node : created(new Map(), node, ctx);
      const name = [...map.keys()].find((k) => k.toUpperCase() === head.toUpperCase()) ?? head.toLowerCase();
      const child = apply(map.get(name), kindOf(schema) === 'map' ? mapValues(schema) : ANY, rest, [...path, name], ctx);
      if (child !== undefined) map.set(name, child);
      return map;
    }
    case 'list': {
      const list = isSeqNode(node) ? node : created([], node, ctx);
      if (!/^\d+$/.test(head) || Number(head) > list.length) {
        ctx.problems.push({
          path,
          origin: ctx.variable,
          message: `${head} is not an index of this list (it has ${list.length} item${list.length === 1 ? '' : 's'}; the next index appends)`,
        });
        return node;
      }
      const index = Number(head);
      const child = apply(list[index], schema.items as TSchema, rest, [...path, head], ctx);
      if (child !== undefined) list[index] = child;
      return list;
    }
    case 'string':
    case 'value':
      ctx.warnings.push(`environment variable ${ctx.variable}: ${path.join('.')} holds a single value, not a section (ignored)`);
      return node;
  }
}

/**
 * Record where a container made to replace `replaced` came from: wherever `replaced` came from (so a driver named
 * by `REGISTRY_STORAGE` stays attributed to it when `REGISTRY_STORAGE_S3_BUCKET` fills it in), else this variable.
 */
function created<T extends MapNode | TreeNode[]>(container: T, replaced: TreeNode | undefined, ctx: Context): T {
  const origin = replaced !== undefined ? ctx.origins.get(replaced) : undefined;
  ctx.origins.set(container, origin ?? ctx.variable);
  return container;
}

/** The node an environment value becomes, given the schema of the key it is set on. */
function valueFor(existing: TreeNode | undefined, schema: TSchema, ctx: Context): TreeNode {
  let value: TreeNode;
  const driver = schema['x-driver'] as DriverRule | undefined;
  if (kindOf(schema) === 'string') {
    value = scalar(ctx.raw, ctx.raw);
  } else if (ctx.raw.trim() === '') {
    value = scalar(null);
  } else {
    try {
      value = parseYamlTree(ctx.raw);
    } catch {
      value = scalar(ctx.raw, ctx.raw); // not YAML: take it as a plain string, the reader will judge it
    }
  }
  if (driver && isScalarNode(value) && typeof value.value === 'string') {
    // Only the section and a newly named driver come from the variable; kept settings still come from the file.
    const switched = switchDriver(existing, value.value, driver);
    ctx.origins.set(switched, ctx.variable);
    for (const [key, child] of switched) {
      if (!(isMapNode(existing) && existing.get(key) === child)) markOrigin(child, ctx);
    }
    return switched;
  }
  markOrigin(value, ctx);
  return value;
}

function markOrigin(node: TreeNode, ctx: Context): void {
  if (ctx.origins.has(node)) return;
  ctx.origins.set(node, ctx.variable);
  if (isMapNode(node)) for (const child of node.values()) markOrigin(child, ctx);
  else if (isSeqNode(node)) for (const child of node) markOrigin(child, ctx);
}

/**
 * A driver section whose driver is `driver`: the section's settings are kept, every other driver is dropped,
 * and the named driver keeps its parameters if it was already there (otherwise it has none).
 */
export function switchDriver(existing: TreeNode | undefined, driver: string, rule: DriverRule): MapNode {
  const name = driver.trim().toLowerCase();
  const out: MapNode = new Map();
  if (isMapNode(existing)) {
    for (const [key, value] of existing) if (rule.settings.includes(key) || key === name) out.set(key, value);
  }
  if (!out.has(name)) out.set(name, scalar(null));
  return out;
}
