/**
 * A YAML document as a small, mutable tree that remembers how each scalar was written.
 *
 * registry:2 decodes YAML into typed Go fields, so how a scalar is read depends on the key it sits under:
 * `rootdirectory: 0755` is the string "0755", `enabled: yes` is a boolean, `interval: 10` is ten nanoseconds.
 * Keeping each scalar's source text lets the loader read every key as its registry:2 type, rather than as
 * whatever a generic YAML schema guessed. Environment overrides are grafted into the same tree before it is read.
 */
import { isAlias, isMap, isScalar, isSeq, parseDocument, type Document, type Node as YamlNode } from 'yaml';

/** A scalar: its value as YAML 1.2 resolves it, and its text as written (quotes removed). */
export interface ScalarNode {
  readonly value: string | number | boolean | null;
  readonly text: string;
}
export type MapNode = Map<string, TreeNode>;
export type SeqNode = TreeNode[];
export type TreeNode = MapNode | SeqNode | ScalarNode;

export function isMapNode(node: TreeNode | undefined): node is MapNode {
  return node instanceof Map;
}
export function isSeqNode(node: TreeNode | undefined): node is SeqNode {
  return Array.isArray(node);
}
export function isScalarNode(node: TreeNode | undefined): node is ScalarNode {
  return node !== undefined && !(node instanceof Map) && !Array.isArray(node);
}
/** Absent, or written as an empty value / `~` / `null`: registry:2 treats all of these as "not set". */
export function isUnset(node: TreeNode | undefined): boolean {
  return node === undefined || (isScalarNode(node) && node.value === null);
}

export function scalar(value: string | number | boolean | null, text?: string): ScalarNode {
  return { value, text: text ?? (value === null ? '' : String(value)) };
}

/**
 * Parse YAML text into a tree. Throws an `Error` carrying the parser's message (with line and column) when the
 * text is not valid YAML. An empty document yields an empty map.
 */
export function parseYamlTree(text: string): TreeNode {
  const doc = parseDocument(text, { merge: true });
  if (doc.errors.length > 0) throw new Error(doc.errors[0]!.message.trim());
  if (doc.contents === null) return new Map();
  return convert(doc.contents, doc, 0);
}

const MAX_DEPTH = 64;

function convert(node: unknown, doc: Document, depth: number): TreeNode {
  if (depth > MAX_DEPTH) throw new Error('document nested too deeply');
  if (isAlias(node)) return convert(node.resolve(doc), doc, depth + 1);
  if (isScalar(node)) {
    const v = node.value;
    const value = v === null || v === undefined ? null : typeof v === 'number' || typeof v === 'boolean' || typeof v === 'string' ? v : String(v);
    const quoted = node.type === 'QUOTE_DOUBLE' || node.type === 'QUOTE_SINGLE' || node.type === 'BLOCK_FOLDED' || node.type === 'BLOCK_LITERAL';
    const text = !quoted && typeof node.source === 'string' ? node.source : value === null ? '' : String(value);
    return { value, text };
  }
  if (isSeq(node)) return node.items.map((item) => convert(item, doc, depth + 1));
  if (isMap(node)) {
    const out: MapNode = new Map();
    const merged: MapNode[] = [];
    for (const pair of node.items) {
      const key = pair.key;
      // `<<: *anchor` (YAML merge key, which registry:2's YAML library also honours).
      if (isScalar(key) && typeof key.value === 'symbol') {
        const source = convert(pair.value, doc, depth + 1);
        for (const m of isSeqNode(source) ? source : [source]) if (isMapNode(m)) merged.push(m);
        continue;
      }
      const keyNode = key === null ? scalar(null) : convert(key, doc, depth + 1);
      const name = isScalarNode(keyNode) ? keyNode.text : JSON.stringify(toPlain(keyNode));
      out.set(name, pair.value === null ? scalar(null) : convert(pair.value, doc, depth + 1));
    }
    // Explicit keys win over merged ones; earlier merge sources win over later ones.
    for (const m of merged) for (const [k, v] of m) if (!out.has(k)) out.set(k, v);
    return out;
  }
  if (node === null || node === undefined) return scalar(null);
  throw new Error(`unsupported YAML node ${(node as YamlNode).constructor?.name ?? typeof node}`);
}

/** The tree as plain JS data (maps become objects), for free-form keys such as `log.fields`. */
export function toPlain(node: TreeNode): unknown {
  if (isMapNode(node)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of node) {
      Object.defineProperty(out, k, { value: toPlain(v), enumerable: true, writable: true, configurable: true });
    }
    return out;
  }
  if (isSeqNode(node)) return node.map(toPlain);
  return node.value;
}

/** A short description of a node for error messages: `"yes please"`, `12`, `a list`, `a mapping`. */
export function describe(node: TreeNode): string {
  if (isMapNode(node)) return 'a mapping';
  if (isSeqNode(node)) return 'a list';
  if (node.value === null) return 'nothing';
  return typeof node.value === 'string' ? JSON.stringify(node.value) : node.text;
}
