/** The `wharf` command (server/cli.ts) starts Node with Wharf's flags. */
import test from 'ava';
import { spawn } from 'node:child_process';
import { chmod, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NODE_FLAGS } from './node-flags.js';

test('run as a command, cli.js starts node with NODE_FLAGS, and npm start passes them too', async (t) => {
  const launcher = join(dirname(fileURLToPath(import.meta.url)), 'cli.js');
  const [firstLine] = (await readFile(launcher, 'utf8')).split('\n');
  t.is(firstLine, `#!/usr/bin/env -S node ${NODE_FLAGS.join(' ')}`);
  const pkg = JSON.parse(await readFile(join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'package.json'), 'utf8'));
  t.true(pkg.scripts.start.includes(`node ${NODE_FLAGS.join(' ')} dist/server/cli.js serve`));

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
