import test from 'ava';
import { RegistryError } from './errors.js';
import { isValidRepositoryName, isValidTag, parseDigest, parseReference } from './reference.js';

test('repository names follow the spec grammar', (t) => {
  for (const ok of ['a', 'library/alpine', 'a.b/c_d/e__f/g-h', 'a--b', 'x0/1y', `${'a'.repeat(255)}`]) {
    t.true(isValidRepositoryName(ok), ok);
  }
  for (const bad of ['', 'A', 'a/', '/a', 'a//b', 'a/../b', '..', 'a/./b', '-a', 'a-', 'a___b', 'a b', 'a%2fb', 'a:b',
    `${'a'.repeat(256)}`, 'a/_layers', 'é']) {
    t.false(isValidRepositoryName(bad), bad);
  }
});

test('tags follow the spec grammar', (t) => {
  for (const ok of ['latest', 'v1.2.3', '_x', 'A-b_c.d', 'a'.repeat(128)]) t.true(isValidTag(ok), ok);
  for (const bad of ['', '.x', '-x', 'a/b', 'a:b', 'a'.repeat(129), 'ünï']) t.false(isValidTag(bad), bad);
});

test('digests: sha256 and sha512 accepted; anything else DIGEST_INVALID', (t) => {
  const hex256 = 'a'.repeat(64);
  const hex512 = 'b'.repeat(128);
  t.deepEqual(parseDigest(`sha256:${hex256}`), { algorithm: 'sha256', hex: hex256, value: `sha256:${hex256}` });
  t.is(parseDigest(`sha512:${hex512}`).algorithm, 'sha512');
  for (const bad of [`sha256:${'A'.repeat(64)}`, `sha256:${hex256}0`, 'sha256:', `md5:${hex256}`, `sha256:../${hex256}`,
    hex256, `sha512:${hex256}`, `SHA256:${hex256}`]) {
    const err = t.throws(() => parseDigest(bad), { instanceOf: RegistryError }, bad);
    t.is(err?.code, 'DIGEST_INVALID');
  }
});

test('references are tags or digests', (t) => {
  t.deepEqual(parseReference('v1'), { kind: 'tag', tag: 'v1' });
  t.is(parseReference(`sha256:${'c'.repeat(64)}`).kind, 'digest');
  t.throws(() => parseReference('bad/tag'), { instanceOf: RegistryError });
});
