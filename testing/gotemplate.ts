/**
 * A static pass over Helm (Go text/template) sources, for checking the chart where no `helm` binary exists:
 * splits a template into text and actions, checks that every `{{`/`}}` pair, string, parenthesis and
 * if/range/with/define/block ... end block is balanced, and collects the names a template defines and includes and
 * every `.Values` path it reads (following variables bound to a `.Values` path, such as `$r := .Values.redis`).
 */

export interface Action {
  /** The action's text between the delimiters and trim markers, trimmed. */
  body: string;
  /** 1-based line of the opening `{{`. */
  line: number;
  comment: boolean;
}

export interface TemplateInfo {
  errors: string[];
  actions: Action[];
  defines: string[];
  /** Names used with include or template (static strings only). */
  includes: string[];
  /** Every `.Values` path read, as key lists (["storage", "s3", "bucket"]). */
  valuesPaths: string[][];
}

const BLOCK_OPENERS = new Set(['if', 'range', 'with', 'define', 'block']);

function lineAt(source: string, index: number): number {
  let line = 1;
  for (let i = 0; i < index && i < source.length; i++) if (source[i] === '\n') line++;
  return line;
}

/** Splits a template into actions, reporting unbalanced delimiters, strings and parentheses. */
export function tokenize(source: string, file = 'template'): { actions: Action[]; errors: string[] } {
  const actions: Action[] = [];
  const errors: string[] = [];
  let i = 0;
  while (i < source.length) {
    const open = source.indexOf('{{', i);
    const textEnd = open === -1 ? source.length : open;
    const stray = source.slice(i, textEnd).indexOf('}}');
    if (stray !== -1) errors.push(`${file}:${lineAt(source, i + stray)}: "}}" without a matching "{{"`);
    if (open === -1) break;
    const line = lineAt(source, open);
    let j = open + 2;
    if (source[j] === '-' && /\s/.test(source[j + 1] ?? '')) {
      j += 2;
    } else if (source[j] === '-' && !/[0-9]/.test(source[j + 1] ?? '')) {
      errors.push(`${file}:${line}: a left trim marker needs a space after it ("{{- ")`);
    }
    const rest = source.slice(j).trimStart();
    if (rest.startsWith('/*')) {
      const close = source.indexOf('*/', j);
      if (close === -1) {
        errors.push(`${file}:${line}: comment "/*" is never closed`);
        break;
      }
      const after = source.slice(close + 2).match(/^(\s+-)?}}/);
      if (!after) {
        errors.push(`${file}:${line}: a comment must end with "*/}}" or "*/ -}}"`);
        i = close + 2;
        continue;
      }
      actions.push({ body: source.slice(j, close + 2).trim(), line, comment: true });
      i = close + 2 + after[0].length;
      continue;
    }
    // An action: scan to the closing "}}", skipping strings, raw strings and character literals.
    let depth = 0;
    let k = j;
    let closed = false;
    while (k < source.length) {
      const c = source[k];
      if (c === '"' || c === '`' || c === "'") {
        const end = c === '"' ? findStringEnd(source, k) : source.indexOf(c, k + 1);
        if (end === -1 || (c !== '`' && source.slice(k, end).includes('\n'))) {
          errors.push(`${file}:${lineAt(source, k)}: unterminated ${c === '`' ? 'raw string' : 'string'}`);
          k = source.indexOf('}}', k + 1);
          if (k === -1) k = source.length;
          break;
        }
        k = end + 1;
        continue;
      }
      if (c === '(') depth++;
      if (c === ')') {
        depth--;
        if (depth < 0) errors.push(`${file}:${lineAt(source, k)}: ")" without "("`);
      }
      if (c === '{' && source[k + 1] === '{') {
        errors.push(`${file}:${lineAt(source, k)}: "{{" inside an action opened on line ${line} (missing "}}"?)`);
        break;
      }
      if (c === '}' && source[k + 1] === '}') {
        closed = true;
        break;
      }
      k++;
    }
    if (!closed) {
      if (k >= source.length) errors.push(`${file}:${line}: "{{" is never closed`);
      i = Math.max(k, j);
      continue;
    }
    if (depth > 0) errors.push(`${file}:${line}: unbalanced parentheses in action`);
    let body = source.slice(j, k);
    if (/-$/.test(body)) {
      if (/\s-$/.test(body)) body = body.slice(0, -1);
      else errors.push(`${file}:${line}: a right trim marker needs a space before it (" -}}")`);
    }
    actions.push({ body: body.trim(), line, comment: false });
    i = k + 2;
  }
  return { actions, errors };
}

function findStringEnd(source: string, start: number): number {
  for (let k = start + 1; k < source.length; k++) {
    if (source[k] === '\\') k++;
    else if (source[k] === '"') return k;
  }
  return -1;
}

/** Checks block structure and collects defines, includes and `.Values` paths. */
export function analyze(source: string, file = 'template'): TemplateInfo {
  const { actions, errors } = tokenize(source, file);
  const stack: { keyword: string; line: number }[] = [];
  const defines: string[] = [];
  const includes: string[] = [];
  const valuesPaths: string[][] = [];
  const aliases = new Map<string, string[]>();

  for (const action of actions) {
    if (action.comment) continue;
    const body = action.body;
    const keyword = /^([a-z]+)\b/.exec(body)?.[1] ?? '';
    if (BLOCK_OPENERS.has(keyword)) {
      if (keyword === 'define' && stack.length > 0) {
        errors.push(`${file}:${action.line}: define inside a ${stack[stack.length - 1].keyword} block`);
      }
      if (keyword === 'define') {
        const name = /^define\s+"([^"]+)"/.exec(body)?.[1];
        if (!name) errors.push(`${file}:${action.line}: define needs a quoted name`);
        else defines.push(name);
      }
      stack.push({ keyword, line: action.line });
    } else if (keyword === 'else') {
      const top = stack[stack.length - 1];
      if (!top || !['if', 'with', 'range'].includes(top.keyword)) {
        errors.push(`${file}:${action.line}: else outside an if, with or range block`);
      }
    } else if (keyword === 'end') {
      if (body !== 'end') errors.push(`${file}:${action.line}: "end" takes no arguments`);
      if (!stack.pop()) errors.push(`${file}:${action.line}: end without an open block`);
    }
    if (/^(if|range|with|else if|else with)$/.test(body)) {
      errors.push(`${file}:${action.line}: "${body}" needs an argument`);
    }

    for (const m of body.matchAll(/\b(?:include|template)\s+"([^"]+)"/g)) includes.push(m[1]);

    // Variables bound to a .Values path: {{- $r := .Values.redis }}
    const binding = /^(?:(?:if|with|range)\s+)?(\$[A-Za-z_][A-Za-z0-9_]*)\s*:?=\s*\$?\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*$/.exec(body);
    if (binding) aliases.set(binding[1], binding[2].split('.').filter(Boolean));

    for (const m of body.matchAll(/(^|[\s(|,])\$?\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)/g)) {
      valuesPaths.push(m[2].split('.').filter(Boolean));
    }
    for (const m of body.matchAll(/(^|[\s(|,])(\$[A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z_][A-Za-z0-9_]*)+)/g)) {
      const base = aliases.get(m[2]);
      if (base) valuesPaths.push([...base, ...m[3].split('.').filter(Boolean)]);
    }
  }
  for (const open of stack) errors.push(`${file}:${open.line}: ${open.keyword} block is never closed with end`);
  return { errors, actions, defines, includes, valuesPaths };
}

/** The path's missing part, or undefined when every key exists in values. */
export function missingPath(values: unknown, path: string[]): string | undefined {
  let node: unknown = values;
  for (let n = 0; n < path.length; n++) {
    if (node === null || typeof node !== 'object' || Array.isArray(node) || !(path[n] in (node as object))) {
      return path.slice(0, n + 1).join('.');
    }
    node = (node as Record<string, unknown>)[path[n]];
  }
  return undefined;
}

/** Every leaf key path of a values tree (maps are descended; lists and scalars are leaves; an empty map is a leaf). */
export function leafPaths(values: unknown, prefix: string[] = []): string[][] {
  if (values === null || typeof values !== 'object' || Array.isArray(values)) return [prefix];
  const entries = Object.entries(values as Record<string, unknown>);
  if (entries.length === 0) return [prefix];
  return entries.flatMap(([key, value]) => leafPaths(value, [...prefix, key]));
}
