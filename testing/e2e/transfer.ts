/**
 * Helpers for the memory tests: a large deterministic byte stream that never exists in memory as a whole, streaming
 * HTTP requests with and without Content-Length, and a sampler of another process's resident set size.
 */
import { createCipheriv, createHash, type Hash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { request, type IncomingHttpHeaders } from 'node:http';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

/**
 * `size` pseudo-random bytes (the AES-256-CTR keystream of a key derived from `seed`, so they neither compress nor
 * repeat, and the same seed gives the same bytes), produced on demand as the consumer reads, and hashed with SHA-256
 * on the way out. `digest` is known once the stream ended.
 */
export class PseudoRandomStream extends Readable {
  private readonly cipher;
  private readonly hash: Hash = createHash('sha256');
  private readonly zeros: Buffer;
  private remaining: number;
  private result: string | undefined;

  constructor(readonly size: number, seed = 1, private readonly chunkSize = 256 * 1024) {
    super({ highWaterMark: chunkSize });
    // The whole seed goes into the key, so that distinct seeds always give distinct bytes.
    const key = Buffer.alloc(32);
    key.writeUInt32BE(seed >>> 0);
    this.cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16, 0));
    this.remaining = size;
    this.zeros = Buffer.alloc(chunkSize);
  }

  override _read(): void {
    if (this.remaining === 0) {
      this.result = 'sha256:' + this.hash.digest('hex');
      this.push(null);
      return;
    }
    const n = Math.min(this.chunkSize, this.remaining);
    const chunk = this.cipher.update(n === this.chunkSize ? this.zeros : this.zeros.subarray(0, n));
    this.hash.update(chunk);
    this.remaining -= n;
    this.push(chunk);
  }

  /** The SHA-256 digest of everything produced; throws if the stream has not been read to the end. */
  get digest(): string {
    if (this.result === undefined) throw new Error('PseudoRandomStream: digest asked before the end of the stream');
    return this.result;
  }
}

export interface Response {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/**
 * Sends `body` as a streamed request body. With `contentLength` the request carries that Content-Length; without
 * it, Node sends `Transfer-Encoding: chunked` (as docker does for layer PATCHes). Resolves with the response.
 */
export function streamRequest(
  method: string, url: string, body: Readable, headers: Record<string, string>, contentLength?: number,
): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = request(url, {
      method,
      headers: contentLength === undefined
        ? { ...headers, 'Transfer-Encoding': 'chunked' }
        : { ...headers, 'Content-Length': String(contentLength) },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    // A server that answers early (an error) and closes makes the pipe fail; the response or the request's own
    // 'error' event settles the promise, so the pipe's rejection carries no extra information.
    pipeline(body, req).catch(() => {});
  });
}

/** A plain request with a small (or no) body. */
export function simpleRequest(method: string, url: string, headers: Record<string, string> = {}, body?: Buffer): Promise<Response> {
  return streamRequest(method, url, Readable.from(body ? [body] : []), headers, body?.length ?? 0);
}

/**
 * GETs `url` and streams the response body through SHA-256 without keeping it. Resolves with the status, the
 * headers, the number of body bytes and their digest.
 */
export function hashingGet(url: string): Promise<{ status: number; headers: IncomingHttpHeaders; bytes: number; digest: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'GET' }, (res) => {
      const hash = createHash('sha256');
      let bytes = 0;
      const sink = new Writable({
        write(chunk: Buffer, _encoding, callback) {
          hash.update(chunk);
          bytes += chunk.length;
          callback();
        },
      });
      pipeline(res, sink).then(
        () => resolve({ status: res.statusCode ?? 0, headers: res.headers, bytes, digest: 'sha256:' + hash.digest('hex') }),
        reject,
      );
    });
    req.on('error', reject);
    req.end();
  });
}

/** The VmRSS of process `pid` in bytes, from /proc/<pid>/status. */
export async function residentBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  if (!match) throw new Error(`no VmRSS line in /proc/${pid}/status`);
  return Number(match[1]) * 1024;
}

/**
 * Samples the resident set size of `pid` every `intervalMs` until stopped, keeping only the peak and the count.
 * Samples are taken on a timer while the transfer runs in the same event loop; the transfer is I/O-bound, so the
 * timer keeps firing.
 */
export class RssSampler {
  peak = 0;
  samples = 0;
  private timer: NodeJS.Timeout | undefined;
  private pending: Promise<void> = Promise.resolve();
  private failure: unknown;

  constructor(private readonly pid: number, private readonly intervalMs = 20) {}

  start(): this {
    const sample = () => {
      this.pending = residentBytes(this.pid).then(
        (rss) => { this.peak = Math.max(this.peak, rss); this.samples++; },
        (error) => { this.failure = error; },
      );
    };
    sample();
    this.timer = setInterval(sample, this.intervalMs);
    return this;
  }

  /** Stops sampling, takes one last sample, and returns the peak resident size in bytes. */
  async stop(): Promise<number> {
    clearInterval(this.timer);
    await this.pending;
    this.peak = Math.max(this.peak, await residentBytes(this.pid));
    this.samples++;
    if (this.failure) throw this.failure;
    return this.peak;
  }
}
