/**
 * A private Docker engine for the end-to-end tests: its own data root, exec root, socket, pid file and daemon
 * config, all under one short temporary directory (unix socket paths are limited to about 100 bytes). dockerd starts
 * its own containerd underneath (state under the exec root) and stops it again on SIGTERM.
 *
 * It uses the vfs storage driver and no bridge or iptables, so it needs no kernel features beyond what a container
 * running as root has. dockerd trusts registries on 127.0.0.0/8 over plain HTTP by default, so no
 * `insecure-registries` setting is needed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { access, constants, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { run, type RunResult } from './target.js';
import { waitFor } from '../helpers.js';

/** The absolute path of `name` on PATH, or undefined. */
export async function findExecutable(name: string): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    try {
      await access(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

export interface PrivateDocker {
  /** The `-H` value for the docker CLI. */
  host: string;
  process: ChildProcess;
  /** Runs the docker CLI against this daemon (with its own empty client config dir); throws on failure. */
  docker(...args: string[]): Promise<RunResult>;
  /** Same, but returns a failing result instead of throwing. */
  dockerMayFail(...args: string[]): Promise<RunResult>;
  /** Everything dockerd logged so far. */
  output(): string;
  /** SIGTERM to dockerd (by its PID), wait for it to exit, remove its directories. */
  stop(): Promise<void>;
}

/** Environment for dockerd and the CLI: no proxy settings, so requests to 127.0.0.1 go straight to the registry. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  for (const key of Object.keys(env)) if (/^(https?|all|no)_proxy$/i.test(key)) delete env[key];
  return env;
}

export async function startDockerd(dockerd: string): Promise<PrivateDocker> {
  // Under /tmp, not os.tmpdir(): TMPDIR may be long, and containerd's socket lives below this directory.
  const dir = await mkdtemp('/tmp/wd-');
  const configFile = join(dir, 'daemon.json');
  await writeFile(configFile, '{}'); // ignore any /etc/docker/daemon.json of the machine
  const clientConfig = join(dir, 'client');
  const host = `unix://${join(dir, 'docker.sock')}`;

  const child = spawn(dockerd, [
    '--config-file', configFile,
    '--data-root', join(dir, 'root'),
    '--exec-root', join(dir, 'exec'),
    '--pidfile', join(dir, 'pid'),
    '-H', host,
    '--storage-driver=vfs',
    '--bridge=none',
    '--iptables=false',
    '--ip6tables=false',
  ], { env: cleanEnv({}), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  const spawnError = new Promise<never>((_, reject) => child.once('error', reject));
  spawnError.catch(() => {}); // only awaited during start-up; a later 'error' must not become an unhandled rejection

  const cli = (args: string[]) => run('docker', ['-H', host, ...args], { env: { DOCKER_CONFIG: clientConfig }, timeoutMs: 300_000 });

  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise<void>((done) => child.once('exit', () => done()));
        child.kill('SIGTERM');
        // dockerd waits for containerd to shut down; give it a while, then insist.
        const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
        await exited;
        clearTimeout(timer);
      }
      await rm(dir, { recursive: true, force: true });
    })();
    return stopped;
  };

  try {
    await Promise.race([
      spawnError,
      waitFor('dockerd to answer `docker version`', async () => {
        if (child.exitCode !== null) throw new Error(`dockerd exited with ${child.exitCode}`);
        return (await cli(['version'])).code === 0 ? true : undefined;
      }, 60_000, 200),
    ]);
  } catch (error) {
    await stop();
    throw new Error(`private dockerd did not come up: ${String(error)}\n--- dockerd output (tail) ---\n${out.slice(-4000)}`);
  }

  return {
    host,
    process: child,
    output: () => out,
    dockerMayFail: (...args) => cli(args),
    async docker(...args) {
      const result = await cli(args);
      if (result.code !== 0) {
        throw new Error(`\`docker ${args.join(' ')}\` exited with ${result.code}\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}` +
          `\n--- dockerd output (tail) ---\n${out.slice(-3000)}`);
      }
      return result;
    },
    stop,
  };
}
