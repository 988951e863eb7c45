/**
 * The product's modules import each other without cycles (type-only imports included): a cycle makes load order
 * matter and hides which layer depends on which. Read from the sources, so it needs no build of its own.
 */
import test from 'ava';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url)); // dist/testing/ -> the repository
const PRODUCT_DIRS = ['server', 'auth', 'storage-drivers'];

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sources(path);
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts') ? [path] : [];
  });
}

/** The repository-relative `.ts` files a module imports by relative path (`import`, `import type`, `export … from`). */
export function localImports(file: string, source: string): string[] {
  const found: string[] = [];
  for (const match of source.matchAll(/^\s*(?:import|export)\b[^;'"]*?from\s*'(\.{1,2}\/[^']+)\.js'/gm)) {
    found.push(relative(root, resolve(dirname(join(root, file)), `${match[1]}.ts`)));
  }
  return found;
}

/** Every cycle's path (`a -> b -> a`), found by a depth-first walk of `graph`. */
export function findCycles(graph: Map<string, string[]>): string[] {
  const cycles: string[] = [];
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (node: string): void => {
    state.set(node, 'open');
    stack.push(node);
    for (const next of graph.get(node) ?? []) {
      if (state.get(next) === 'open') cycles.push([...stack.slice(stack.indexOf(next)), next].join(' -> '));
      else if (!state.has(next)) visit(next);
    }
    stack.pop();
    state.set(node, 'done');
  };
  for (const node of [...graph.keys()].sort()) if (!state.has(node)) visit(node);
  return cycles;
}

test('the cycle finder sees a cycle, and only a cycle', (t) => {
  t.deepEqual(findCycles(new Map([['a', ['b']], ['b', ['c']], ['c', ['a']]])), ['a -> b -> c -> a']);
  t.deepEqual(findCycles(new Map([['a', ['b', 'c']], ['b', ['c']], ['c', []]])), []);
  t.deepEqual(localImports('server/http/x.ts', "import type { A } from '../registry/y.js';\nexport { b } from './z.js';"),
    ['server/registry/y.ts', 'server/http/z.ts']);
});

test('no import cycle among the product modules', (t) => {
  const files = PRODUCT_DIRS.flatMap((dir) => sources(join(root, dir))).map((path) => relative(root, path));
  t.true(files.length > 50, `found ${files.length} modules`);
  const graph = new Map(files.map((file) => [file, localImports(file, readFileSync(join(root, file), 'utf8'))]));
  t.deepEqual(findCycles(graph), []);
});
