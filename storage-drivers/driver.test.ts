/** Path validation without a string per component, and the filesystem driver's OS paths without `path.join`. */
import test from 'ava';
import { join } from 'node:path';
import { MAX_COMPONENT_LENGTH, MAX_PATH_LENGTH, isValidPath } from './driver.js';
import { FilesystemDriver } from './filesystem.js';
import { INVALID_PATHS } from '../testing/storage-suite.js';

/** The rule as the module comment states it, written the plain way (split and a regular expression). */
function reference(path: string): boolean {
  if (path === '/') return true;
  if (path.length > MAX_PATH_LENGTH || !path.startsWith('/') || path.endsWith('/')) return false;
  return path.slice(1).split('/').every((part) => part.length <= MAX_COMPONENT_LENGTH && /^[A-Za-z0-9._-]+$/.test(part) && part !== '.' && part !== '..');
}

/** A deterministic stream of numbers in [0, 1) (a linear congruential generator), so a failure can be replayed. */
function numbers(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state * 1_103_515_245 + 12_345) % 2 ** 31;
    return state / 2 ** 31;
  };
}

test('isValidPath agrees with the rule on edge cases and on 200,000 random paths', (t) => {
  const edges = [
    ...INVALID_PATHS, '/', '/a', '/a/b', '/a.b', '/.a', '/a.', '/..a', '/a..', '/...', '/a/.../b', '/_', '/-', '/A-Z_0.9',
    '/' + 'a'.repeat(MAX_COMPONENT_LENGTH), '/' + 'a'.repeat(MAX_COMPONENT_LENGTH + 1), '/a/' + 'b'.repeat(MAX_COMPONENT_LENGTH),
    ('/' + 'a'.repeat(99)).repeat(10) + '/' + 'b'.repeat(MAX_PATH_LENGTH - 1001), ('/' + 'a'.repeat(99)).repeat(10) + '/' + 'b'.repeat(MAX_PATH_LENGTH - 1000),
  ];
  for (const path of edges) t.is(isValidPath(path), reference(path), JSON.stringify(path));
  const next = numbers(7);
  const alphabet = ['/', '/', '/', '.', '.', 'a', 'Z', '0', '_', '-', ' ', ':', '\\', '\0', '\u00e9', '\u{1F600}'];
  let valid = 0;
  for (let i = 0; i < 200_000; i++) {
    const length = Math.floor(next() * 12);
    let path = '';
    for (let j = 0; j < length; j++) path += alphabet[Math.floor(next() * alphabet.length)];
    const expected = reference(path);
    if (isValidPath(path) !== expected) t.fail(`isValidPath(${JSON.stringify(path)}) should be ${expected}`);
    if (expected) valid++;
  }
  t.true(valid > 1_000, `only ${valid} of the random paths were valid: the sample says little`);
});

test("the filesystem driver's OS path of a valid path is what path.join makes of it", (t) => {
  for (const root of ['/', '/srv/registry', '/tmp/x/']) {
    const driver = new FilesystemDriver({ rootDirectory: root });
    t.is(driver.fullPath('/'), driver.rootDirectory);
    for (const path of ['/a', '/docker/registry/v2/repositories/a/b/_manifests/tags/latest/current/link', '/.a/..b/c.']) {
      t.true(isValidPath(path));
      t.is(driver.fullPath(path), join(driver.rootDirectory, path), `${root} ${path}`);
    }
  }
});
