/**
 * Test harness: start a real Wharf process (the compiled CLI) on loopback and stop it again.
 *
 * Used by the conformance test, the real-client end-to-end tests and the memory tests. The server runs in its own
 * process, exactly as an operator runs it, so what is measured and exercised is the product.
 */
import type { ExecutionContext } from 'ava';
import bcrypt from 'bcryptjs';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { NODE_FLAGS, withMallocEnv } from '../server/node-flags.js';

const here = dirname(fileURLToPath(import.meta.url));
/** dist/server/cli.js (the `wharf` command), found relative to this compiled file (dist/testing/harness.js). */
export const CLI_PATH = resolve(here, '..', 'server', 'cli.js');

export interface RunningWharf {
  /** Base URL, such as http://127.0.0.1:41234 */
  url: string;
  /** host:port, for clients that take a registry host (skopeo, docker). */
  host: string;
  /** The storage root directory (filesystem driver). */
  rootDirectory: string;
  process: ChildProcess;
  /** Everything the server wrote to stdout/stderr so far. */
  output(): string;
  /** SIGTERM, wait for exit; removes the temporary directory unless keepData was set. */
  stop(): Promise<number | null>;
}

export interface StartOptions {
  /**
   * Extra config merged over the defaults (plain object in registry:2 config.yml shape). A `storage` section naming
   * another driver (`s3`, `inmemory`) replaces the default filesystem driver.
   */
  config?: Record<string, any>;
  /** Use this storage root instead of a fresh temporary directory (kept on stop). */
  rootDirectory?: string;
  /** Extra environment variables (e.g. REGISTRY_* overrides). */
  env?: Record<string, string>;
  /** How long to wait for the server to announce its address (default 30 s). */
  startTimeoutMs?: number;
  /** Extra node flags, e.g. ['--max-old-space-size=128']. */
  nodeArgs?: string[];
}

function deepMerge(a: Record<string, any>, b: Record<string, any>): Record<string, any> {
  const out: Record<string, any> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && out[k] && typeof out[k] === 'object'
      ? deepMerge(out[k], v)
      : v;
  }
  return out;
}

export async function startWharf(options: StartOptions = {}): Promise<RunningWharf> {
  const tmp = await mkdtemp(join(tmpdir(), 'wharf-test-'));
  const rootDirectory = options.rootDirectory ?? join(tmp, 'data');
  const config = deepMerge(
    {
      version: '0.1',
      log: { level: 'warn' },
      storage: { filesystem: { rootdirectory: rootDirectory }, delete: { enabled: true } },
      http: { addr: '127.0.0.1:0', draintimeout: '5s' },
    },
    options.config ?? {},
  );
  // A config that names another storage driver (s3, inmemory) replaces the default filesystem one.
  if (Object.keys(options.config?.storage ?? {}).some((k) => k === 's3' || k === 'inmemory')) delete config.storage.filesystem;
  const configPath = join(tmp, 'config.yml');
  await writeFile(configPath, stringify(config));

  const child = spawn(process.execPath, [...NODE_FLAGS, ...(options.nodeArgs ?? []), CLI_PATH, 'serve', configPath], {
    env: { ...withMallocEnv(), ...options.env, WHARF_ANNOUNCE_LISTEN: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.setEncoding('utf8');
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => { out += d; });

  const url = await new Promise<string>((resolveUrl, reject) => {
    const startTimeoutMs = options.startTimeoutMs ?? 30_000;
    const timer = setTimeout(() => reject(new Error(`wharf did not start within ${startTimeoutMs / 1000}s:\n${out}`)), startTimeoutMs);
    child.stdout!.on('data', (d: string) => {
      out += d;
      // The CLI announces `WHARF_LISTENING <url>` on its own line when WHARF_ANNOUNCE_LISTEN is set.
      const m = /^WHARF_LISTENING (\S+)$/m.exec(out);
      if (m) { clearTimeout(timer); resolveUrl(m[1]!); }
    });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`wharf exited with ${code}:\n${out}`)); });
  });

  return { url, host: new URL(url).host, rootDirectory, process: child, output: () => out, stop: stopper(child, tmp) };
}

/** SIGTERM once, wait for the exit, then remove the temporary directory; resolves to the exit code. */
function stopper(child: ChildProcess, tmp: string): () => Promise<number | null> {
  let exited: Promise<number | null> | undefined;
  return () => {
    exited ??= new Promise<number | null>((done) => {
      if (child.exitCode !== null || child.signalCode !== null) return done(child.exitCode);
      child.once('exit', (code) => done(code));
      child.kill('SIGTERM');
    }).then(async (code) => {
      await rm(tmp, { recursive: true, force: true });
      return code;
    });
    return exited;
  };
}

/**
 * Write an htpasswd file for `users` (name → password) as `htpasswd -B` does: bcrypt entries with the `$2y$` prefix.
 * A low `cost` keeps tests fast.
 */
export async function writeHtpasswd(path: string, users: Record<string, string>, cost = 4): Promise<void> {
  const lines = Object.entries(users).map(([user, password]) => `${user}:${bcrypt.hashSync(password, cost).replace(/^\$2b\$/, '$2y$')}`);
  await writeFile(path, `${lines.join('\n')}\n`);
}

/** The registry:2 binary (CNCF distribution 2.8 from Debian's `docker-registry`), used as the reference peer. */
export const REGISTRY2_BIN = process.env.WHARF_E2E_REGISTRY2_BIN ?? '/usr/bin/docker-registry';

/** A free loopback port (registry:2 cannot report a port it picked itself). */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolvePort(port));
    });
  });
}

/**
 * Start the real registry:2 on loopback with the same defaults as `startWharf` (delete enabled, a fresh storage
 * directory unless one is given) and wait until `GET /v2/` answers 200. Fails, never skips, when it is missing.
 */
export async function startRegistry2(options: Omit<StartOptions, 'nodeArgs' | 'env'> = {}): Promise<RunningWharf> {
  const tmp = await mkdtemp(join(tmpdir(), 'wharf-registry2-'));
  const rootDirectory = options.rootDirectory ?? join(tmp, 'data');
  const port = await freePort();
  const config = deepMerge(
    {
      version: '0.1',
      log: { level: 'warn' },
      storage: { filesystem: { rootdirectory: rootDirectory }, delete: { enabled: true } },
      http: { addr: `127.0.0.1:${port}` },
    },
    options.config ?? {},
  );
  const configPath = join(tmp, 'config.yml');
  await writeFile(configPath, stringify(config));
  const child = spawn(REGISTRY2_BIN, ['serve', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  child.once('error', (err) => { out += `\nspawn error: ${err.message}`; });
  const stop = stopper(child, tmp);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null || /spawn error/.test(out)) {
      await stop();
      throw new Error(`registry:2 (${REGISTRY2_BIN}) did not start; install the Debian package docker-registry:\n${out}`);
    }
    try {
      const res = await fetch(`${url}/v2/`);
      await res.arrayBuffer();
      // 401: a registry:2 configured with auth answers, but wants credentials.
      if (res.status === 200 || res.status === 401) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`registry:2 did not answer GET /v2/ within 20 s:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { url, host: `127.0.0.1:${port}`, rootDirectory, process: child, output: () => out, stop };
}

/** A shared storage directory and the replicas started on it; all are stopped and removed when the test ends. */
export interface SharedStorage {
  /** The storage root directory every replica uses. */
  root: string;
  /** Start one more replica on the shared storage. */
  replica(): Promise<RunningWharf>;
  /** A config file for `wharf garbage-collect` over the same storage. */
  gcConfig(): Promise<string>;
}

export async function sharedStorage(t: ExecutionContext): Promise<SharedStorage> {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-faults-replicas-'));
  const root = join(dir, 'data');
  const started: RunningWharf[] = [];
  t.teardown(async () => {
    await Promise.all(started.map((r) => r.stop()));
    await rm(dir, { recursive: true, force: true });
  });
  return {
    root,
    async replica() {
      const r = await startWharf({ rootDirectory: root });
      started.push(r);
      return r;
    },
    async gcConfig() {
      const path = join(dir, 'gc.yml');
      await writeFile(path, stringify({ version: '0.1', log: { level: 'warn' }, storage: { filesystem: { rootdirectory: root } } }));
      return path;
    },
  };
}
