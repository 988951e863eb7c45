/**
 * `npm run test:unit` stays what it promises: every file in scripts/unit-tests.mjs exists and neither starts a process
 * nor opens a port, going by what it imports and calls.
 */
import test from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url)); // dist/testing/ -> the repository
const { UNIT_TESTS } = (await import(new URL('scripts/unit-tests.mjs', `file://${root}`).href)) as { UNIT_TESTS: string[] };

/** What a unit test may not use: the launchers of testing/, process spawning and listening sockets. */
const FORBIDDEN: [RegExp, string][] = [
  [/from '[^']*testing\/(harness|redis-test-server|s3-test-server|compat-fixtures|e2e\/(target|upstream|dockerd))\.js'/, 'a server launcher'],
  [/\bspawn(Sync)?\(|(?<![.\w])exec(Sync)?\(|(?<![.\w])fork\(/, 'a spawned process'],
  [/execFileSync\('(?!stat')/, 'a program other than stat'],
  [/\.listen\(|\bcreateServer\(|\bstartServer\(/, 'a listening socket'],
];

test('the unit set is a non-empty list of existing test files without duplicates', (t) => {
  t.true(UNIT_TESTS.length > 0);
  t.is(new Set(UNIT_TESTS).size, UNIT_TESTS.length);
  for (const file of UNIT_TESTS) {
    t.regex(file, /\.test\.ts$/);
    t.true(existsSync(`${root}${file}`), file);
  }
});

test('no file of the unit set starts a process or opens a port', (t) => {
  for (const file of UNIT_TESTS) {
    if (file === 'testing/unit-set.test.ts') continue; // this file quotes the patterns in its own examples
    const source = readFileSync(`${root}${file}`, 'utf8');
    for (const [pattern, what] of FORBIDDEN) t.false(pattern.test(source), `${file} uses ${what}`);
  }
});

test('the guard catches what it is there for', (t) => {
  const hits = (source: string) => FORBIDDEN.filter(([pattern]) => pattern.test(source)).map(([, what]) => what);
  t.deepEqual(hits("import { startWharf } from '../../testing/harness.js';"), ['a server launcher']);
  t.deepEqual(hits("execFileSync('openssl', ['version'])"), ['a program other than stat']);
  t.deepEqual(hits("execFileSync('stat', ['-c', '%a', path])"), []);
  t.deepEqual(hits('server.listen(0)'), ['a listening socket']);
  t.deepEqual(hits("spawn('redis-server', [])"), ['a spawned process']);
  t.deepEqual(hits("execSync('redis-server')"), ['a spawned process']);
  t.deepEqual(hits('/x/.exec(text)'), []);
});
