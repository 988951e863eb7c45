/**
 * Starting the servers under test with equivalent configuration (loopback, a fresh storage directory, delete
 * enabled, log level info with the access log on, as both ship by default), and reading their peak memory.
 * The third kind, `floor`, is the durable floor server (bench/floor-server.ts): the least work a durable push can
 * take in Node, run with Wharf's Node flags; it speaks only the blob-upload part of the API.
 *
 * Output goes to a log file in the server's temporary directory, not through a pipe into this process, so that the
 * benchmark does not pay for collecting millions of access-log lines.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, openSync, closeSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { CLI_PATH, REGISTRY2_BIN, freePort } from '../testing/harness.js';
import { NODE_FLAGS, withMallocEnv } from '../server/node-flags.js';

export type ServerKind = 'wharf' | 'registry2' | 'floor';

const FLOOR_SERVER = join(dirname(fileURLToPath(import.meta.url)), 'floor-server.js');

export interface BenchServer {
  kind: ServerKind;
  /** Which of the run's servers this is (`wharf`, `wharf-2` for Wharf with 2 workers, `registry2`, `floor`). */
  key: string;
  url: string;
  host: string;
  pid: number;
  /** The filesystem storage directory (unused when the server stores in S3). */
  rootDirectory: string;
  configPath: string;
  logPath: string;
  stop(): Promise<void>;
}

export interface ServerOptions {
  /** The server's key in the run (default: its kind). */
  key?: string;
  /** Parent directory of the server's temporary directory (default: the OS temp dir). */
  tmp?: string;
  /** Turn the access log off on both servers (log.accesslog.disabled). */
  accessLogOff?: boolean;
  /** Wharf only: extra config merged at the top level. */
  wharfExtra?: Record<string, unknown>;
  /** Wharf only: worker processes (`wharf serve --workers N`). */
  wharfWorkers?: number;
  /** Wharf only: extra node flags, such as --cpu-prof. */
  wharfNodeArgs?: string[];
  /**
   * Store in S3 rather than the filesystem: a `storage.s3` section in registry:2's keys (both servers read the same
   * ones). Each server gets its own root directory in the bucket, and redirects are off so that blob bytes flow
   * through the server under test.
   */
  s3?: Record<string, unknown>;
  /** The floor only: its mode (bench/floor-server.ts; default `durable`, and `s3` whenever `s3` is given). */
  floorMode?: 'durable' | 'layout' | 'write' | 'hash' | 'discard';
}

export function registry2Available(): boolean {
  return existsSync(REGISTRY2_BIN);
}

async function waitForBase(url: string, child: ChildProcess, logPath: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`server exited early:\n${await readFile(logPath, 'utf8').catch(() => '')}`);
    }
    try {
      const res = await fetch(`${url}/v2/`);
      await res.arrayBuffer();
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${url} did not answer GET /v2/ within 30 s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function startServer(kind: ServerKind, options: ServerOptions = {}): Promise<BenchServer> {
  const tmp = await mkdtemp(join(options.tmp ?? tmpdir(), `wharf-bench-${kind}-`));
  const rootDirectory = join(tmp, 'data');
  const port = await freePort();
  const extra = kind === 'wharf' ? options.wharfExtra ?? {} : {};
  const config: Record<string, unknown> = {
    ...extra,
    version: '0.1',
    log: { level: 'info', accesslog: { disabled: options.accessLogOff ?? false } },
    storage: options.s3
      ? { s3: { ...options.s3, rootdirectory: `/${basename(tmp)}` }, delete: { enabled: true }, redirect: { disable: true } }
      : { filesystem: { rootdirectory: rootDirectory }, delete: { enabled: true } },
    http: { ...(extra.http as object | undefined), addr: `127.0.0.1:${port}` },
  };
  const configPath = join(tmp, 'config.yml');
  await writeFile(configPath, stringify(config));
  const logPath = join(tmp, 'server.log');
  const log = openSync(logPath, 'a');
  // The S3 test server speaks plain HTTP on loopback. registry:2's AWS SDK fails to start when AWS_CA_BUNDLE is set
  // (it cannot apply a CA bundle to its transport), so neither server is given one.
  // Wharf and the floor with the allocator settings Wharf runs with (registry:2, a Go program, does not read them).
  const env = withMallocEnv();
  if (options.s3) delete env.AWS_CA_BUNDLE;
  if (kind === 'floor') await mkdir(rootDirectory);
  const child = kind === 'wharf'
    ? spawn(process.execPath, [...NODE_FLAGS, ...(options.wharfNodeArgs ?? []), CLI_PATH, 'serve', configPath,
      ...(options.wharfWorkers ? ['--workers', String(options.wharfWorkers)] : [])], { stdio: ['ignore', log, log], env })
    : kind === 'floor'
      // On S3, the floor streams each monolithic push into one PutObject under its own root in the bucket.
      ? spawn(process.execPath, [...NODE_FLAGS, FLOOR_SERVER, options.s3 ? 's3' : options.floorMode ?? 'durable', String(port), rootDirectory], {
        stdio: ['ignore', log, log],
        env: options.s3 ? { ...env, FLOOR_S3: JSON.stringify({ ...options.s3, rootdirectory: `/${basename(tmp)}` }) } : env,
      })
      : spawn(REGISTRY2_BIN, ['serve', configPath], { stdio: ['ignore', log, log], env });
  closeSync(log);
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      await new Promise<void>((done) => {
        child.once('exit', () => done());
        child.kill('SIGTERM');
        setTimeout(() => child.kill('SIGKILL'), 10_000).unref();
      });
    }
    await rm(tmp, { recursive: true, force: true });
  };
  try {
    await waitForBase(url, child, logPath);
  } catch (err) {
    await stop();
    throw err;
  }
  return { kind, key: options.key ?? kind, url, host: `127.0.0.1:${port}`, pid: child.pid!, rootDirectory, configPath, logPath, stop };
}

async function statusField(pid: number, field: 'VmHWM' | 'VmRSS'): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const m = new RegExp(`^${field}:\\s+(\\d+)\\s+kB$`, 'm').exec(status);
  return m ? Number(m[1]) * 1024 : 0;
}

async function childPids(pid: number): Promise<number[]> {
  const text = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '');
  return text.split(/\s+/).filter(Boolean).map(Number);
}

/**
 * Peak resident set size (VmHWM: the kernel's high-water mark since the process started) of the server, and of
 * each worker process when it runs several (node:cluster). Returns the largest single process and the sum.
 */
export async function peakRss(pid: number): Promise<{ max: number; total: number }> {
  const pids = [pid, ...(await childPids(pid))];
  const values = await Promise.all(pids.map((p) => statusField(p, 'VmHWM')));
  return { max: Math.max(...values), total: values.reduce((a, b) => a + b, 0) };
}

/** CPU seconds (user + system) used so far by the server and its worker processes, from /proc/<pid>/stat. */
export async function cpuSeconds(pid: number): Promise<number> {
  const pids = [pid, ...(await childPids(pid))];
  const ticks = await Promise.all(pids.map(async (p) => {
    const stat = await readFile(`/proc/${p}/stat`, 'utf8').catch(() => '');
    // Fields after the command name (which is in parentheses and may contain spaces): utime is 14th, stime 15th.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11] ?? 0) + Number(fields[12] ?? 0);
  }));
  return ticks.reduce((a, b) => a + b, 0) / CLOCK_TICKS;
}

/** USER_HZ: 100 on every Linux architecture Node runs on. */
const CLOCK_TICKS = 100;
