/** The layout's string-free name checks agree with comparing the last component. */
import test from 'ava';
import { baseName, isNamed, isUnderscored } from './layout.js';

test('isNamed: the last component is the name, whole', (t) => {
  for (const [path, name] of [
    ['/docker/registry/v2/repositories/a/_layers', '_layers'],
    ['_layers', '_layers'],
    ['/a/b/x_layers', '_layers'],
    ['/a/_layers/b', '_layers'],
    ['/a/_manifests', '_layers'],
    ['/a/my_manifests', '_manifests'],
    ['/', '_layers'],
  ] as const) {
    t.is(isNamed(path, name), baseName(path) === name, `${path} ${name}`);
  }
});

test('isUnderscored: the last component starts with _', (t) => {
  for (const path of ['/a/_uploads', '_x', '/a/b', '/a_/b', '/a/b_', '', '/']) {
    t.is(isUnderscored(path), baseName(path).startsWith('_'), path);
  }
});
