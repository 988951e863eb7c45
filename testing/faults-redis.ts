/**
 * Helpers for conformance/e2e/faults-redis.test.ts: a real redis-server that can be SIGKILLed and brought back on the
 * same port with the data it had (append-only file, fsync always: what a persistent Redis leaves after a crash),
 * `redis-cli` to look inside it, and bounded HTTP pushes and pulls of small images.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { freePort } from './harness.js';
import { sha256 } from './helpers.js';
import { startRedis, type RunningRedis } from './redis-test-server.js';

/** No request may take longer than this, fault or not. */
export const REQUEST_BOUND_MS = 20_000;

export interface FlappingRedis {
  host: string;
  port: number;
  /** Whether a server is running now. */
  readonly up: boolean;
  /** SIGKILL the running server (by its PID) and wait for it to be gone. */
  kill(): Promise<void>;
  /** Start it again on the same port with the same data directory. */
  start(): Promise<void>;
  /** Freeze it (SIGSTOP): connections stay open, nothing is answered. `resume` thaws it (SIGCONT). */
  pause(): void;
  resume(): void;
  /** `redis-cli -p <port> args...`, its trimmed stdout. */
  cli(...args: string[]): Promise<string>;
  /** Stop whatever runs and remove the data directory. */
  cleanup(): Promise<void>;
}

/**
 * A redis-server on a fixed loopback port with its data in a directory of its own. `down: true` reserves the port and
 * directory but starts nothing (Redis down when Wharf starts).
 */
export async function flappingRedis(options: { down?: boolean } = {}): Promise<FlappingRedis> {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'wharf-faults-redis-'));
  let running: RunningRedis | undefined;
  // While down from the start, the port is held by a listener that drops every connection: test files run two at a
  // time, and another one's Redis could otherwise be started on this free port, which Wharf would then find up.
  let placeholder: Server | undefined;
  const release = () => new Promise<void>((resolve) => {
    const held = placeholder;
    placeholder = undefined;
    if (!held) return resolve();
    held.close(() => resolve());
  });
  if (options.down) {
    placeholder = await new Promise<Server>((resolve, reject) => {
      const server = createServer((socket) => socket.destroy());
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve(server));
    });
  }
  const self: FlappingRedis = {
    host: `127.0.0.1:${port}`,
    port,
    get up() { return running !== undefined; },
    async kill() {
      const r = running;
      if (!r) return;
      running = undefined;
      if (r.process.exitCode !== null || r.process.signalCode !== null) return;
      const gone = new Promise<void>((done) => r.process.once('exit', () => done()));
      process.kill(r.process.pid!, 'SIGKILL');
      await gone;
    },
    async start() {
      if (running) throw new Error('redis is already running');
      await release();
      running = await startRedis({ port, dir });
    },
    pause() {
      if (!running) throw new Error('redis is not running');
      process.kill(running.process.pid!, 'SIGSTOP');
    },
    resume() {
      if (running) process.kill(running.process.pid!, 'SIGCONT');
    },
    cli: (...args) => new Promise((resolve, reject) => {
      execFile('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 10_000 }, (err, stdout) => {
        if (err) reject(err);
        else resolve(stdout.trim());
      });
    }),
    async cleanup() {
      await release();
      const r = running;
      running = undefined;
      await r?.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  if (!options.down) await self.start();
  return self;
}

/** A fetch that gives up after REQUEST_BOUND_MS: a hang becomes an error naming the request. */
export async function boundedFetch(url: string, init: RequestInit = {}): Promise<Response> {
  try {
    return await fetch(url, { ...init, signal: AbortSignal.timeout(REQUEST_BOUND_MS) });
  } catch (err) {
    throw new Error(`${init.method ?? 'GET'} ${url} did not answer within ${REQUEST_BOUND_MS} ms: ${(err as Error).message}`);
  }
}

export interface Image {
  repo: string;
  tag: string;
  manifest: Buffer;
  manifestDigest: string;
  /** Config and layers, by digest. */
  blobs: Map<string, Buffer>;
}

/** An image of `layers` random layers, plus `reuse` (layers some other push stored already) at the end. */
export function makeImage(repo: string, tag: string, layers = 2, layerSize = 4096, reuse: Buffer[] = []): Image {
  const blobs = new Map<string, Buffer>();
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', nonce: randomBytes(8).toString('hex') }));
  blobs.set(sha256(config), config);
  const layerDescs = [];
  const contents = [...Array.from({ length: layers }, () => randomBytes(layerSize)), ...reuse];
  for (const bytes of contents) {
    blobs.set(sha256(bytes), bytes);
    layerDescs.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256(bytes), size: bytes.length });
  }
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
    layers: layerDescs,
  }));
  return { repo, tag, manifest, manifestDigest: sha256(manifest), blobs };
}

/** The outcome of one request that did not succeed: its status and the OCI error code it carried (if any). */
export interface Failure {
  what: string;
  status: number;
  code?: string;
}

async function failure(what: string, res: Response): Promise<Failure> {
  const text = await res.text();
  let code: string | undefined;
  try {
    code = (JSON.parse(text) as { errors?: { code?: string }[] }).errors?.[0]?.code;
  } catch {
    code = undefined;
  }
  return { what, status: res.status, code };
}

/** A clean, retryable server fault: a 5xx with an OCI error envelope. */
export function isCleanFault(f: Failure): boolean {
  return f.status >= 500 && f.status <= 599 && typeof f.code === 'string';
}

/** Push the image's blobs (monolithic) and then its manifest under its tag. Resolves to undefined, or the first failure. */
export async function pushImage(base: string, image: Image): Promise<Failure | undefined> {
  for (const [digest, bytes] of image.blobs) {
    const res = await boundedFetch(`${base}/v2/${image.repo}/blobs/uploads/?digest=${digest}`, {
      method: 'POST', body: bytes, headers: { 'Content-Type': 'application/octet-stream' },
    });
    if (res.status !== 201) return failure(`blob ${digest}`, res);
    await res.arrayBuffer();
  }
  const res = await boundedFetch(`${base}/v2/${image.repo}/manifests/${image.tag}`, {
    method: 'PUT', body: image.manifest, headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
  });
  if (res.status !== 201) return failure('manifest', res);
  await res.arrayBuffer();
  return undefined;
}

/**
 * Pull the image by tag and compare every byte. Resolves to undefined when it pulled back completely, a Failure when
 * a request did not succeed; throws when the registry served wrong bytes (never acceptable).
 */
export async function pullImage(base: string, image: Image): Promise<Failure | undefined> {
  const res = await boundedFetch(`${base}/v2/${image.repo}/manifests/${image.tag}`, {
    headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' },
  });
  if (res.status !== 200) return failure('manifest', res);
  const manifest = Buffer.from(await res.arrayBuffer());
  if (!manifest.equals(image.manifest)) throw new Error(`${image.repo}:${image.tag}: the manifest served is not the one pushed`);
  for (const [digest, bytes] of image.blobs) {
    const blob = await boundedFetch(`${base}/v2/${image.repo}/blobs/${digest}`);
    if (blob.status !== 200) return failure(`blob ${digest}`, blob);
    const got = Buffer.from(await blob.arrayBuffer());
    if (!got.equals(bytes)) throw new Error(`${image.repo}: blob ${digest} served ${got.length} bytes that are not the pushed ones`);
  }
  return undefined;
}

/** Every file under `root`, relative, sorted: to compare storage before and after something that must not touch it. */
export async function listFiles(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath ?? (e as unknown as { path: string }).path, e.name).slice(root.length + 1))
    .sort();
}
