/**
 * The client side of the benchmark: blob pushes (monolithic PUT and streamed PATCH), blob downloads with curl, and
 * manifest load with wrk (or a small keep-alive loader in Node when wrk is missing). The client does the same work
 * against both servers, so its own cost cancels out of the ratios.
 */
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { PseudoRandomStream, simpleRequest } from '../testing/e2e/transfer.js';
import { sha256 } from '../testing/helpers.js';
import { median } from './ratios.js';

export const MB = 1_000_000;

/**
 * Write `size` pseudo-random bytes to `path` and return their sha256 digest. The file is flushed to disk before
 * this resolves, so that its write-back does not compete with the pushes measured next.
 */
export async function makeBlobFile(path: string, size: number, seed: number): Promise<string> {
  const source = new PseudoRandomStream(size, seed, 1 << 20);
  await pipeline(source, createWriteStream(path));
  const handle = await open(path, 'r+');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
  return source.digest;
}

function resolveLocation(base: string, location: string | string[] | undefined): URL {
  if (typeof location !== 'string') throw new Error('upload response without Location');
  return new URL(location, base);
}

async function startUpload(base: string, repo: string): Promise<URL> {
  const res = await simpleRequest('POST', `${base}/v2/${repo}/blobs/uploads/`);
  if (res.status !== 202) throw new Error(`POST upload: ${res.status} ${res.body}`);
  return resolveLocation(base, res.headers.location);
}

/**
 * Blob bodies are sent by curl, as downloads are read by it. A Node client in the benchmark process cannot push
 * faster than about 300 MB/s on a 2-core machine even into a server that throws the bytes away, so it measured
 * itself rather than the registries; curl pushes the same file at over 1 GB/s. `Expect:` turns off curl's
 * `Expect: 100-continue` round trip, which docker and containerd do not make either.
 */
const CURL_UPLOAD = ['-sS', '-H', 'Expect:', '-H', 'Content-Type: application/octet-stream'];

function withDigest(location: URL, digest: string): string {
  const url = new URL(location);
  url.searchParams.set('digest', digest);
  return url.href;
}

async function curlUpload(args: string[], what: string): Promise<string[]> {
  const r = await runProcess('curl', [...CURL_UPLOAD, ...args]);
  if (r.code !== 0) throw new Error(`${what}: curl exit ${r.code} ${r.stderr}`);
  return r.stdout.trim().split('\n');
}

/** POST a session, then PUT ?digest= with the whole blob as the body (Content-Length known). */
export async function pushMonolithic(base: string, repo: string, path: string, size: number, digest: string): Promise<void> {
  const location = await startUpload(base, repo);
  const [status] = await curlUpload(['-T', path, '-o', '/dev/null', '-w', '%{http_code} %{size_upload}', withDigest(location, digest)], 'PUT blob');
  if (status !== `201 ${size}`) throw new Error(`PUT blob: ${status}`);
}

/** Monolithic pushes of all `files` at once: the sessions are opened first, then one curl sends every body. */
export async function pushConcurrently(base: string, repoPrefix: string, files: Array<{ path: string; digest: string }>): Promise<void> {
  const locations = await Promise.all(files.map((_, i) => startUpload(base, `${repoPrefix}-${i}`)));
  const args = ['-Z', '--parallel-max', String(files.length), '-w', '%{http_code}\n'];
  files.forEach((f, i) => args.push('-T', f.path, '-o', '/dev/null', withDigest(locations[i]!, f.digest)));
  const statuses = await curlUpload(args, 'concurrent PUTs');
  if (statuses.length !== files.length || statuses.some((s) => s !== '201')) throw new Error(`concurrent PUTs: ${statuses.join(' ')}`);
}

/** POST a session, PATCH the blob as one chunked stream (as docker pushes layers), then PUT ?digest= empty. */
export async function pushStreamed(base: string, repo: string, path: string, digest: string): Promise<void> {
  const location = await startUpload(base, repo);
  const [patched] = await curlUpload(['-X', 'PATCH', '-T', path, '-H', 'Transfer-Encoding: chunked', '-o', '/dev/null',
    '-w', '%{http_code} %header{location}', location.href], 'PATCH blob');
  const [status, next] = patched!.split(' ');
  if (status !== '202') throw new Error(`PATCH blob: ${patched}`);
  const res = await simpleRequest('PUT', withDigest(resolveLocation(base, next), digest));
  if (res.status !== 201) throw new Error(`PUT blob: ${res.status} ${res.body}`);
}

/** Push small content (a config) in one PUT. */
export async function pushSmallBlob(base: string, repo: string, content: Buffer): Promise<string> {
  const digest = sha256(content);
  const location = await startUpload(base, repo);
  location.searchParams.set('digest', digest);
  const res = await simpleRequest('PUT', location.href, { 'Content-Type': 'application/octet-stream' }, content);
  if (res.status !== 201) throw new Error(`PUT blob: ${res.status} ${res.body}`);
  return digest;
}

export async function putManifest(base: string, repo: string, reference: string, content: Buffer, mediaType: string): Promise<void> {
  const res = await simpleRequest('PUT', `${base}/v2/${repo}/manifests/${reference}`, { 'Content-Type': mediaType }, content);
  if (res.status !== 201) throw new Error(`PUT manifest: ${res.status} ${res.body}`);
}

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

/** Push a minimal image (a config and one small layer) and tag it; returns the manifest bytes. */
export async function pushSmallImage(base: string, repo: string, tag: string): Promise<Buffer> {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
  const layer = Buffer.alloc(4096, 7);
  const configDigest = await pushSmallBlob(base, repo, config);
  const layerDigest = await pushSmallBlob(base, repo, layer);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layerDigest, size: layer.length }],
  }));
  await putManifest(base, repo, tag, manifest, OCI_MANIFEST);
  return manifest;
}

export interface ProcessResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runProcess(command: string, args: string[], timeoutMs = 600_000): Promise<ProcessResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (err) => { clearTimeout(timer); reject(err); });
    child.once('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

/** GET `url` with curl into /dev/null; resolves with bytes received and curl's own transfer time in seconds. */
export async function curlGet(url: string): Promise<{ bytes: number; seconds: number }> {
  const r = await runProcess('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code} %{size_download} %{time_total}', url]);
  const [status, bytes, seconds] = r.stdout.trim().split(' ');
  if (r.code !== 0 || status !== '200') throw new Error(`curl ${url}: exit ${r.code}, status ${status} ${r.stderr}`);
  return { bytes: Number(bytes), seconds: Number(seconds) };
}

export function wrkAvailable(): boolean {
  return existsSync('/usr/bin/wrk') || existsSync('/usr/local/bin/wrk');
}

/** Requests per second of GET `url` at `connections` keep-alive connections for `seconds`, with wrk. */
export async function wrkRate(url: string, headers: Record<string, string>, connections: number, seconds: number, threads = 2): Promise<{ rps: number; errors: number }> {
  const args = ['-t', String(threads), '-c', String(connections), '-d', `${seconds}s`];
  for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
  args.push(url);
  const r = await runProcess('wrk', args, (seconds + 30) * 1000);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(r.stdout);
  if (r.code !== 0 || !rps) throw new Error(`wrk failed: ${r.stdout}\n${r.stderr}`);
  const non2xx = /Non-2xx or 3xx responses:\s+(\d+)/.exec(r.stdout);
  const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(r.stdout);
  const errors = Number(non2xx?.[1] ?? 0) + (socketErrors ? socketErrors.slice(1).reduce((a, b) => a + Number(b), 0) : 0);
  return { rps: Number(rps[1]), errors };
}

/** The same measurement without wrk: `connections` loops of keep-alive GETs in this process. */
export async function nodeRate(url: string, headers: Record<string, string>, connections: number, seconds: number): Promise<{ rps: number; errors: number }> {
  const agent = new Agent({ keepAlive: true, maxSockets: connections });
  const until = Date.now() + seconds * 1000;
  let done = 0;
  let errors = 0;
  const one = () => new Promise<void>((resolve) => {
    const req = request(url, { agent, headers }, (res) => {
      if (res.statusCode !== 200) errors++;
      res.resume();
      res.on('end', () => resolve());
      res.on('error', () => { errors++; resolve(); });
    });
    req.on('error', () => { errors++; resolve(); });
    req.end();
  });
  const started = Date.now();
  await Promise.all(Array.from({ length: connections }, async () => {
    while (Date.now() < until) {
      await one();
      done++;
    }
  }));
  agent.destroy();
  return { rps: done / ((Date.now() - started) / 1000), errors };
}

/** Median latency in milliseconds of `count` sequential GETs of `url` (after one warm-up). */
export async function latencyMs(url: string, count: number): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i <= count; i++) {
    const started = process.hrtime.bigint();
    const res = await fetch(url);
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error(`GET ${url}: ${res.status}`);
    if (i > 0) times.push(Number(process.hrtime.bigint() - started) / 1e6);
  }
  return median(times);
}

export { median, sha256 };
