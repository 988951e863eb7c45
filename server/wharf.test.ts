/** The `wharf` entry point (server/wharf.cts): the size of libuv's thread pool, and Node's flags. */
import test from 'ava';
import { spawn } from 'node:child_process';
import { chmod, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startWharf } from '../conformance/harness.js';
import { NODE_FLAGS } from './node-flags.js';

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

test('run as a command, the wharf file starts node with NODE_FLAGS, and npm start passes them too', async (t) => {
  const launcher = join(dirname(fileURLToPath(import.meta.url)), 'wharf.cjs');
  const [firstLine] = (await readFile(launcher, 'utf8')).split('\n');
  t.is(firstLine, `#!/usr/bin/env -S node ${NODE_FLAGS.join(' ')}`);
  const pkg = JSON.parse(await readFile(join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'package.json'), 'utf8'));
  t.true(pkg.scripts.start.includes(`node ${NODE_FLAGS.join(' ')} dist/server/wharf.cjs serve`));

  // Executed through its first line, as the `wharf` command (npm's bin link, the container image) runs it.
  await chmod(launcher, 0o755);
  const child = spawn(launcher, ['--help'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
  const cmdline = await new Promise<string>((resolve) => {
    // The process is node by the time it writes its usage; its command line then shows how it was started.
    child.stdout.once('data', () => resolve(readFile(`/proc/${child.pid}/cmdline`, 'utf8').catch(() => '')));
  });
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
  t.is(code, 0);
  t.regex(out, /usage:/);
  t.true(cmdline.split('\0').includes(NODE_FLAGS[0]!), cmdline.replaceAll('\0', ' '));
});
