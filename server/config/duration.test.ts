import test from 'ava';
import { nanosToMillis, parseGoDuration } from './duration.js';

const cases: Array<[string, number]> = [
  ['0', 0],
  ['300ms', 300e6],
  ['5s', 5e9],
  ['1h30m', 5400e9],
  ['168h', 168 * 3600e9],
  ['1.5h', 5400e9],
  ['.5s', 0.5e9],
  ['2h45m30.5s', (2 * 3600 + 45 * 60 + 30.5) * 1e9],
  ['100ns', 100],
  ['7us', 7000],
  ['7µs', 7000], // micro sign
  ['7μs', 7000], // Greek mu
  ['-1m', -60e9],
  ['+10s', 10e9],
];

for (const [text, ns] of cases) {
  test(`parses ${text}`, (t) => {
    t.is(parseGoDuration(text), ns);
  });
}

const bad: Array<[string, RegExp]> = [
  ['', /empty/],
  ['10', /missing unit/],
  ['1h30', /missing unit/],
  ['5 s', /invalid duration/],
  ['5sec', /invalid duration/],
  ['s', /invalid duration/],
  ['.s', /invalid duration/],
  ['1d', /invalid duration/],
  ['3000000h', /too long/],
];

for (const [text, message] of bad) {
  test(`rejects ${JSON.stringify(text)}`, (t) => {
    t.throws(() => parseGoDuration(text), { message });
  });
}

test('converts nanoseconds to milliseconds', (t) => {
  t.is(nanosToMillis(parseGoDuration('1h30m')), 5_400_000);
  t.is(nanosToMillis(500_000), 0.5);
});
