import test from 'ava';
import { PartBudget, partBufferSize } from './part-budget.js';
import { waitFor } from '../testing/helpers.js';

const MiB = 1024 * 1024;

test('part budget: a reservation takes a kept buffer of its size, makes room by dropping kept ones, and kept ones go when idle', async (t) => {
  const budget = new PartBudget(4 * MiB, 50);
  const a = await budget.reserve(MiB);
  const b = await budget.reserve(MiB + 1);
  t.is(a.length, MiB);
  t.is(b.length, 2 * MiB, 'sizes are rounded up to whole MiB');
  budget.release(a);
  budget.release(b);
  t.is(budget.pooled, 3 * MiB);
  const c = await budget.reserve(MiB - 1000);
  t.is(c, a, 'the kept buffer of that size is reused');
  t.is(budget.pooled, 2 * MiB);
  // 1 MiB held + 2 MiB kept: a new 3 MiB buffer drops the kept 2 MiB one to stay within 4 MiB.
  const d = await budget.reserve(3 * MiB);
  t.not(d, b);
  t.is(budget.held, 4 * MiB);
  t.is(budget.pooled, 0);
  // A reservation that does not fit waits for a buffer to come back.
  let waited: Buffer | undefined;
  const e = budget.reserve(MiB).then((buffer) => { waited = buffer; });
  await new Promise((resolve) => setImmediate(resolve));
  t.is(waited, undefined);
  budget.release(c);
  await e;
  t.is(waited, c);
  budget.release(waited!);
  budget.release(d);
  t.is(budget.held, 0);
  t.true(budget.pooled > 0);
  const deadline = Date.now() + 5000;
  while (budget.pooled > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  t.is(budget.pooled, 0, 'kept buffers were dropped once idle');
  t.is(partBufferSize(1), 64 * 1024);
  t.is(partBufferSize(300_000), 5 * 64 * 1024);
  t.is(partBufferSize(5 * MiB), 5 * MiB);
});

test('part budget, as uploads use it: grow takes a kept buffer before making one, and the kept ones stay while one is held', async (t) => {
  const budget = new PartBudget(3 * 64 * 1024, 30);
  const a = budget.grow(64 * 1024);
  const b = budget.grow(64 * 1024);
  t.is(a.length, 64 * 1024);
  t.is(budget.allocated, 2);
  budget.release(b);
  t.is(budget.pooled, 64 * 1024);
  t.is(budget.grow(64 * 1024), b, 'the kept buffer is taken again');
  t.is(budget.allocated, 2);
  // Past the budget, grow still gives a buffer (it never waits), and what comes back beyond it is not kept.
  const c = budget.grow(64 * 1024);
  const d = budget.grow(64 * 1024);
  t.is(budget.held, 4 * 64 * 1024);
  for (const buffer of [b, c, d]) budget.release(buffer);
  t.is(budget.pooled, 2 * 64 * 1024, 'kept and held together stay within the budget');
  // One is still held: the kept ones stay however long that lasts (three idle times here; what is checked is that
  // nothing happens, so this waits a fixed time).
  await new Promise((resolve) => setTimeout(resolve, 90));
  t.is(budget.pooled, 2 * 64 * 1024);
  budget.release(a);
  await waitFor('the kept buffers to go', async () => (budget.pooled === 0 ? true : undefined), 5_000, 5);
  t.is(budget.held, 0);
});
