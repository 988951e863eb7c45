/** The `wharf` command (server/cli.ts) starts Node with Wharf's flags. */
import test from 'ava';
import { spawn } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NODE_FLAGS } from './node-flags.js';

test('run as a command, cli.js starts node with NODE_FLAGS, and npm start passes them too', async (t) => {
  const launcher = join(dirname(fileURLToPath(import.meta.url)), 'cli.js');
  const [firstLine] = (await readFile(launcher, 'utf8')).split('\n');
  t.is(firstLine, `#!/usr/bin/env -S node ${NODE_FLAGS.join(' ')}`);
  const pkg = JSON.parse(await readFile(join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'package.json'), 'utf8'));
  t.true(pkg.scripts.start.includes(`node ${NODE_FLAGS.join(' ')} dist/server/cli.js serve`));

  // Executed through its first line, as the `wharf` command (npm's bin link, the container image) runs it: a server
  // that stays up until it is stopped, so its command line can be read whatever the machine's load.
  await chmod(launcher, 0o755);
  const dir = await mkdtemp(join(tmpdir(), 'wharf-cli-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const config = join(dir, 'config.yml');
  await writeFile(config, `version: 0.1\nlog:\n  level: error\nhttp:\n  addr: 127.0.0.1:0\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, 'data')}\n`);
  const child = spawn(launcher, ['serve', config], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, WHARF_ANNOUNCE_LISTEN: '1' } });
  t.teardown(() => { child.kill('SIGKILL'); });
  let out = '';
  const listening = new Promise<void>((resolve, reject) => {
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.includes('WHARF_LISTENING ')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`wharf serve exited (${code}) before listening: ${out}`)));
  });
  await listening;
  const cmdline = await readFile(`/proc/${child.pid}/cmdline`, 'utf8');
  t.true(cmdline.split('\0').includes(NODE_FLAGS[0]!), cmdline.replaceAll('\0', ' '));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  t.is(await exited, 0, 'it stops cleanly on SIGTERM');

  // And a command that only prints its usage runs through the same first line.
  const help = spawn(launcher, ['--help'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let usage = '';
  help.stdout.setEncoding('utf8').on('data', (d: string) => { usage += d; });
  t.is(await new Promise<number | null>((resolve) => help.once('close', resolve)), 0);
  t.regex(usage, /usage:/);
});
