import test from 'ava';
import { median, orientedRatio, pairedRatio } from './ratios.js';

const rounds = (values: number[]) => values.map((value, round) => ({ round, value }));

test('a ratio above 1 means faster for rates and lighter for times and sizes', (t) => {
  t.is(orientedRatio(300, 200, 'higher'), 1.5);
  t.is(orientedRatio(100, 200, 'lower'), 2);
  t.is(orientedRatio(0, 200, 'higher'), undefined);
  t.is(orientedRatio(100, 0, 'lower'), undefined);
  t.is(orientedRatio(Number.NaN, 1, 'higher'), undefined);
  t.is(orientedRatio(Number.POSITIVE_INFINITY, 1, 'higher'), undefined);
});

test('median of an odd and an even count, and of none', (t) => {
  t.is(median([3, 1, 2]), 2);
  t.is(median([4, 1, 3, 2]), 2.5);
  t.true(Number.isNaN(median([])));
});

test('the paired ratio leaves out a change of speed that hits both servers of a round', (t) => {
  // A is 5% faster than B in every round, and the machine runs at half speed in some rounds. The slow rounds fall
  // unevenly (two of A's three middle rounds, B's last two), so the medians compare A's slow rounds with B's fast ones.
  const a = rounds([420, 210, 210, 210, 420]);
  const b = rounds([400, 400, 400, 200, 200]);
  t.is(median(a.map((x) => x.value)) / median(b.map((x) => x.value)), 0.525);
  const paired = pairedRatio(a, b, 'higher')!;
  t.is(paired.count, 5);
  t.is(paired.median, 1.05);
  t.deepEqual([paired.min, paired.max], [0.525, 2.1]);
  // Where the machine's speed is the same for both in every round, every pair gives the same ratio.
  const steady = pairedRatio(rounds([420, 210, 315]), rounds([400, 200, 300]), 'higher')!;
  t.true(Math.abs(steady.min - 1.05) < 1e-12 && Math.abs(steady.max - 1.05) < 1e-12);
});

test('pairs are matched by round, not by position; rounds with one sample are left out', (t) => {
  const a = [{ round: 2, value: 30 }, { round: 0, value: 10 }, { round: 5, value: 99 }];
  const b = [{ round: 0, value: 20 }, { round: 2, value: 15 }, { round: 3, value: 7 }];
  const ratio = pairedRatio(a, b, 'lower')!;
  // Times: round 0 20/10 = 2, round 2 15/30 = 0.5.
  t.is(ratio.count, 2);
  t.deepEqual([ratio.min, ratio.median, ratio.max], [0.5, 1.25, 2]);
  t.is(pairedRatio(a, [{ round: 9, value: 1 }], 'lower'), undefined);
  t.is(pairedRatio([], b, 'higher'), undefined);
});

test('a pair with a zero or missing measurement does not count', (t) => {
  const ratio = pairedRatio(rounds([0, 100, 120]), rounds([100, 100, 100]), 'higher')!;
  t.is(ratio.count, 2);
  t.is(ratio.median, 1.1);
});
