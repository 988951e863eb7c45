/**
 * The `wharf` command (server/cli.ts) starts Node with Wharf's flags and allocator settings, and `serve` does however
 * it was started.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MALLOC_ENV, NODE_FLAGS, mallocEnvAssignments, missingMallocEnv, missingNodeFlags } from './node-flags.js';
import { waitFor } from '../testing/helpers.js';

test('run as a command, cli.js starts node with NODE_FLAGS, and npm start passes them too', async (t) => {
  const launcher = join(dirname(fileURLToPath(import.meta.url)), 'cli.js');
  const [firstLine] = (await readFile(launcher, 'utf8')).split('\n');
  t.is(firstLine, `#!/usr/bin/env -S ${mallocEnvAssignments()} node ${NODE_FLAGS.join(' ')}`);
  const pkg = JSON.parse(await readFile(join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'package.json'), 'utf8'));
  t.true(pkg.scripts.start.includes(`${mallocEnvAssignments()} node ${NODE_FLAGS.join(' ')} dist/server/cli.js serve`));

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
  for (const flag of NODE_FLAGS) t.true(cmdline.split('\0').includes(flag), cmdline.replaceAll('\0', ' '));
  const environ = (await readFile(`/proc/${child.pid}/environ`, 'utf8')).split('\0');
  for (const [name, value] of Object.entries(MALLOC_ENV)) t.true(environ.includes(`${name}=${value}`), name);
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

test('missingNodeFlags: by name, from the command line or NODE_OPTIONS; another value is the operator\'s choice', (t) => {
  t.deepEqual(missingNodeFlags([]), [...NODE_FLAGS]);
  t.deepEqual(missingNodeFlags(['--max-semi-space-size=4', '--initial-old-space-size=64', '--no-allocation-site-pretenuring']), []);
  t.deepEqual(missingNodeFlags(['--max_semi_space_size=8']), ['--initial-old-space-size=64', '--no-allocation-site-pretenuring']);
  t.deepEqual(missingNodeFlags(['--inspect', '--initial_old_space_size=32', '--allocation-site-pretenuring'], '--max-old-space-size=512  --max-semi-space-size=4'), []);
  t.deepEqual(missingNodeFlags(['--max-old-space-size=512'], ''), [...NODE_FLAGS]);
});

test('missingMallocEnv: a setting given any value is the operator\'s choice', (t) => {
  t.deepEqual(missingMallocEnv({}), { ...MALLOC_ENV });
  t.deepEqual(missingMallocEnv({ MALLOC_TRIM_THRESHOLD_: '0' }), { MALLOC_MMAP_THRESHOLD_: MALLOC_ENV.MALLOC_MMAP_THRESHOLD_ });
  t.deepEqual(missingMallocEnv({ ...MALLOC_ENV }), {});
});

test('started as `node cli.js serve` without the flags, serve runs itself again with them and passes signals on', async (t) => {
  const cli = join(dirname(fileURLToPath(import.meta.url)), 'cli.js');
  const dir = await mkdtemp(join(tmpdir(), 'wharf-cli-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const config = join(dir, 'config.yml');
  await writeFile(config, `version: 0.1\nlog:\n  level: info\n  formatter: json\nhttp:\n  addr: 127.0.0.1:0\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, 'data')}\n`);
  const env: NodeJS.ProcessEnv = { ...process.env, WHARF_ANNOUNCE_LISTEN: '1' };
  delete env.NODE_OPTIONS;
  delete env.WHARF_RELAUNCHED;
  for (const name of Object.keys(MALLOC_ENV)) delete env[name];
  const parent = spawn(process.execPath, [cli, 'serve', config], { stdio: ['ignore', 'pipe', 'pipe'], env });
  t.teardown(() => { parent.kill('SIGKILL'); });
  let out = '';
  parent.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
  const exited = new Promise<number | null>((resolve) => parent.once('exit', resolve));
  await waitFor('the relaunched server listening', async () => out.includes('WHARF_LISTENING ') || undefined);
  const parentCmdline = (await readFile(`/proc/${parent.pid}/cmdline`, 'utf8')).split('\0');
  t.false(parentCmdline.includes(NODE_FLAGS[0]!), 'the test started node without the flags');
  const children = (await readFile(`/proc/${parent.pid}/task/${parent.pid}/children`, 'utf8')).trim().split(/\s+/).filter(Boolean);
  t.is(children.length, 1);
  const childCmdline = (await readFile(`/proc/${children[0]}/cmdline`, 'utf8')).split('\0');
  for (const flag of NODE_FLAGS) t.true(childCmdline.includes(flag), childCmdline.join(' '));
  t.true(childCmdline.includes('serve') && childCmdline.includes(config));
  const childEnviron = (await readFile(`/proc/${children[0]}/environ`, 'utf8')).split('\0');
  for (const [name, value] of Object.entries(MALLOC_ENV)) t.true(childEnviron.includes(`${name}=${value}`), name);
  const base = /WHARF_LISTENING (\S+)/.exec(out)![1]!;
  t.is((await fetch(`${base}/v2/`)).status, 200);

  // SIGHUP sent to the process the operator started reaches the server (it logs the reload) ...
  parent.kill('SIGHUP');
  await waitFor('the reload logged', async () => out.includes('policies: configuration reloaded') || undefined);
  // ... and SIGTERM drains and stops it; the parent exits with its code.
  parent.kill('SIGTERM');
  t.is(await exited, 0);
  await waitFor('the server process gone', async () => (await readFile(`/proc/${children[0]}/cmdline`, 'utf8').then(() => false, () => true)) || undefined);

  // A launcher killed outright does not leave its server running.
  const second = spawn(process.execPath, [cli, 'serve', config], { stdio: ['ignore', 'pipe', 'pipe'], env });
  t.teardown(() => { second.kill('SIGKILL'); });
  let out2 = '';
  second.stdout.setEncoding('utf8').on('data', (d: string) => { out2 += d; });
  await waitFor('the second server listening', async () => out2.includes('WHARF_LISTENING ') || undefined);
  const [server] = (await readFile(`/proc/${second.pid}/task/${second.pid}/children`, 'utf8')).trim().split(/\s+/);
  second.kill('SIGKILL');
  await waitFor('the orphaned server stopped', async () => (await readFile(`/proc/${server}/cmdline`, 'utf8').then(() => false, () => true)) || undefined);
});

test('started with the flags and the operator\'s own allocator settings, serve runs as it is, keeping them', async (t) => {
  const cli = join(dirname(fileURLToPath(import.meta.url)), 'cli.js');
  const dir = await mkdtemp(join(tmpdir(), 'wharf-cli-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const config = join(dir, 'config.yml');
  await writeFile(config, `version: 0.1\nlog:\n  level: error\nhttp:\n  addr: 127.0.0.1:0\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, 'data')}\n`);
  const env: NodeJS.ProcessEnv = { ...process.env, WHARF_ANNOUNCE_LISTEN: '1', MALLOC_TRIM_THRESHOLD_: '1048576', MALLOC_MMAP_THRESHOLD_: '262144' };
  delete env.NODE_OPTIONS;
  delete env.WHARF_RELAUNCHED;
  const server = spawn(process.execPath, [...NODE_FLAGS, cli, 'serve', config], { stdio: ['ignore', 'pipe', 'pipe'], env });
  t.teardown(() => { server.kill('SIGKILL'); });
  let out = '';
  server.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
  await waitFor('the server listening', async () => out.includes('WHARF_LISTENING ') || undefined);
  const children = (await readFile(`/proc/${server.pid}/task/${server.pid}/children`, 'utf8')).trim();
  t.is(children, '', 'no second process: nothing was missing');
  const environ = (await readFile(`/proc/${server.pid}/environ`, 'utf8')).split('\0');
  t.true(environ.includes('MALLOC_TRIM_THRESHOLD_=1048576'));
  const exited = new Promise<number | null>((resolve) => server.once('exit', resolve));
  server.kill('SIGTERM');
  t.is(await exited, 0);
});
