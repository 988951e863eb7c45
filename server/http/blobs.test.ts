import test from 'ava';
import { parseRange } from './blobs.js';

test('single byte ranges per RFC 9110', (t) => {
  t.deepEqual(parseRange('bytes=0-9', 100), { start: 0, end: 9 });
  t.deepEqual(parseRange('bytes=90-', 100), { start: 90, end: 99 });
  t.deepEqual(parseRange('bytes=-10', 100), { start: 90, end: 99 });
  t.deepEqual(parseRange('bytes=-1000', 100), { start: 0, end: 99 });
  t.deepEqual(parseRange('bytes=50-5000', 100), { start: 50, end: 99 });
  t.is(parseRange('bytes=100-', 100), 'unsatisfiable');
  t.is(parseRange('bytes=-0', 100), 'unsatisfiable');
  t.is(parseRange('bytes=0-', 0), 'unsatisfiable');
});

test('absent, malformed and multi-range headers serve the whole body', (t) => {
  for (const h of [undefined, '', 'bytes=', 'bytes=-', 'items=0-1', 'bytes=5-1', 'bytes=0-1,3-4', 'bytes=a-b']) {
    t.is(parseRange(h, 100), undefined, String(h));
  }
});
