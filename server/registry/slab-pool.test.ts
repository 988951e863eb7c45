import test from 'ava';
import { SlabPool } from './slab-pool.js';
import { waitFor } from '../../testing/helpers.js';

test('buffers given back are taken again before new ones are made, and at most maxKept are kept', (t) => {
  const pool = new SlabPool(1024, 2);
  const a = pool.take();
  const b = pool.take();
  const c = pool.take();
  t.is(a.length, 1024);
  t.is(pool.allocated, 3);
  t.is(pool.held, 3);
  pool.give(a);
  pool.give(b);
  pool.give(c); // past maxKept: left to the garbage collector
  t.is(pool.held, 0);
  t.is(pool.pooled, 2);
  const again = [pool.take(), pool.take()];
  t.is(pool.allocated, 3);
  t.true(again.includes(b) && again.includes(a));
  t.false(pool.take() === c);
  t.is(pool.allocated, 4);
});

test('the kept buffers go once none has been held for the idle time, and not while one is held', async (t) => {
  const pool = new SlabPool(1024, 8, 30);
  const held = pool.take();
  const other = pool.take();
  pool.give(other);
  t.is(pool.pooled, 1);
  // One is still held: the kept one stays however long that lasts (three idle times here; what is checked is that
  // nothing happens, so this waits a fixed time).
  await new Promise((r) => setTimeout(r, 90));
  t.is(pool.pooled, 1);
  pool.give(held);
  await waitFor('the kept buffers to go', async () => (pool.pooled === 0 ? true : undefined), 5_000, 5);
  t.is(pool.held, 0);
  t.is(pool.take().length, 1024);
  t.is(pool.allocated, 3);
});
