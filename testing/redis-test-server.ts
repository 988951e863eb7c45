/**
 * Test harness: a throw-away `redis-server` on loopback (Debian package `redis-server`), for the cache suite, the
 * replica tests and anyone else who needs a real Redis.
 *
 *   const redis = await startRedis();          // fresh, empty, no persistence
 *   ... redis.url (redis://127.0.0.1:<port>) ...
 *   await redis.stop();                        // SIGTERM, wait for exit, remove its directory
 *
 * `startRedis({ port, dir })` starts one on a known port with its data kept in `dir` (append-only file), so a test
 * can stop Redis and bring it back with its old data, as a production Redis with persistence comes back.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './harness.js';

export const REDIS_SERVER_BIN = process.env.WHARF_TEST_REDIS_SERVER ?? 'redis-server';

export interface RunningRedis {
  url: string;
  host: string;
  port: number;
  process: ChildProcess;
  output(): string;
  /** SIGTERM, wait for the exit; removes the data directory unless `dir` was given. */
  stop(): Promise<void>;
  /** Freeze (SIGSTOP) and thaw (SIGCONT) the server: connections stay open but nothing answers. */
  pause(): void;
  resume(): void;
}

export interface StartRedisOptions {
  port?: number;
  /** Keep data in this directory (append-only file) across restarts; it is left in place on stop. */
  dir?: string;
  /** requirepass */
  password?: string;
}

/** One RESP PING, answered +PONG (or -NOAUTH, which also proves the server is up). */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    let reply = '';
    socket.setTimeout(1000, () => { socket.destroy(); resolve(false); });
    socket.once('error', () => resolve(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (d) => {
      reply += d.toString('latin1');
      if (reply.includes('\r\n')) {
        socket.destroy();
        resolve(reply.startsWith('+PONG') || reply.startsWith('-NOAUTH'));
      }
    });
  });
}

export async function startRedis(options: StartRedisOptions = {}): Promise<RunningRedis> {
  // A free port picked here can be taken by another test file's process before redis-server binds it (files run two
  // at a time): then another port is picked. A port the caller chose is its to keep.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startRedisOn(options.port ?? (await freePort()), options);
    } catch (err) {
      if (options.port !== undefined || attempt >= 5 || !/Address already in use/.test((err as Error).message)) throw err;
    }
  }
}

async function startRedisOn(port: number, options: StartRedisOptions): Promise<RunningRedis> {
  const ownDir = options.dir === undefined;
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'wharf-redis-')));
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--daemonize', 'no',
    '--protected-mode', 'yes', '--loglevel', 'warning'];
  if (ownDir) args.push('--appendonly', 'no');
  else args.push('--appendonly', 'yes', '--appendfsync', 'always');
  if (options.password !== undefined) args.push('--requirepass', options.password);
  const child = spawn(REDIS_SERVER_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  child.once('error', (err) => { out += `\nspawn error: ${err.message}`; });

  let exited: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    exited ??= new Promise<void>((done) => {
      if (child.exitCode !== null || child.signalCode !== null) return done();
      child.once('exit', () => done());
      child.kill('SIGCONT'); // a paused server cannot act on SIGTERM
      child.kill('SIGTERM');
    }).then(async () => {
      if (ownDir) await rm(dir, { recursive: true, force: true });
    });
    return exited;
  };

  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null || /spawn error/.test(out)) {
      await stop();
      throw new Error(`redis-server did not start (install the Debian package redis-server):\n${out}`);
    }
    if (await ping(port)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`redis-server did not answer PING within 20 s:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    port,
    process: child,
    output: () => out,
    stop,
    pause: () => { child.kill('SIGSTOP'); },
    resume: () => { child.kill('SIGCONT'); },
  };
}

/** Wait until `condition` holds, checking every 10 ms (at most about 30 s; then throws naming `what`). */
export async function until(condition: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; !(await condition()); i++) {
    if (i > 3000) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
