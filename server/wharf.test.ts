/** The `wharf` entry point (server/wharf.cts): the size of libuv's thread pool. */
import test from 'ava';
import { readFile } from 'node:fs/promises';
import { startWharf } from '../conformance/harness.js';

/** Threads of a Wharf process started with `env`, once it serves (its thread pool has started by then). */
async function threadsOf(env: Record<string, string>): Promise<number> {
  const wharf = await startWharf({ env });
  try {
    const res = await fetch(`${wharf.url}/v2/`);
    await res.arrayBuffer();
    const status = await readFile(`/proc/${wharf.process.pid}/status`, 'utf8');
    return Number(/^Threads:\s+(\d+)$/m.exec(status)![1]);
  } finally {
    await wharf.stop();
  }
}

test('the wharf command starts the thread pool with 16 threads, or as many as UV_THREADPOOL_SIZE says', async (t) => {
  const byDefault = await threadsOf({ UV_THREADPOOL_SIZE: '' });
  const four = await threadsOf({ UV_THREADPOOL_SIZE: '4' });
  const eight = await threadsOf({ UV_THREADPOOL_SIZE: '8' });
  t.is(eight - four, 4, 'the operator\'s setting is kept');
  t.is(byDefault - four, 12, 'unset: 16 threads');
});
