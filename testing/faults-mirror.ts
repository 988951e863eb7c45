/**
 * Faults between a Wharf mirror and its upstream: a small HTTP front on loopback that forwards to a real upstream
 * (registry:2) and, per request kind (manifest or blob GET/HEAD), can answer a status of its own (429 with
 * Retry-After, 500, 503), accept and then send nothing, send the headers and part of the body and then stall, or
 * send part of the body and then reset the connection. It counts the blob GETs that reach the upstream.
 */
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Image } from './e2e/image.js';

export type FaultMode =
  | { kind: 'pass' }
  | { kind: 'status'; status: number; retryAfter?: string }
  /** Accept the request, then send nothing at all. */
  | { kind: 'silent' }
  /** Send the upstream's headers and the first `bytes` of the body, then nothing. */
  | { kind: 'stall-body'; bytes: number }
  /**
   * Send the upstream's headers and the first `bytes` of the body, then reset the connection (TCP RST); with `held`,
   * only once `resetHeld()` is called (`holding` counts the transfers waiting for it).
   */
  | { kind: 'reset'; bytes: number; held?: boolean };

export type Target = 'manifest' | 'blob';

export class FaultFront {
  readonly server: Server;
  /** Faults by what is asked for; anything not listed passes through. */
  modes: Partial<Record<Target, FaultMode>> = {};
  /** Blob GETs that reached the upstream (forwarded), and blob GETs the front answered itself. */
  blobGetsForwarded = 0;
  blobGetsSeen = 0;
  private readonly held: (() => void)[] = [];
  /** Transfers waiting for `resetHeld()`. */
  get holding(): number {
    return this.held.length;
  }

  /** Reset the transfers held so far. */
  resetHeld(): void {
    for (const reset of this.held.splice(0)) reset();
  }

  /** Requests the front is holding open (silent or stalled); ended on `close`. */
  private readonly open = new Set<Socket>();

  constructor(private readonly upstreamUrl: string) {
    this.server = createServer((req, res) => this.handle(req, res));
    this.server.on('connection', (socket) => {
      this.open.add(socket);
      socket.on('close', () => this.open.delete(socket));
    });
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as { port: number }).port}`;
  }

  listen(): Promise<void> {
    return new Promise((resolve) => this.server.listen(0, '127.0.0.1', resolve));
  }

  async close(): Promise<void> {
    this.resetHeld();
    for (const s of this.open) s.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const target: Target | undefined = /\/blobs\/sha256:/.test(req.url ?? '') ? 'blob' : /\/manifests\//.test(req.url ?? '') ? 'manifest' : undefined;
    const mode: FaultMode = (target && this.modes[target]) ?? { kind: 'pass' };
    const blobGet = target === 'blob' && req.method === 'GET';
    if (blobGet) this.blobGetsSeen++;
    if (mode.kind === 'status') {
      res.writeHead(mode.status, { 'Content-Type': 'application/json', ...(mode.retryAfter ? { 'Retry-After': mode.retryAfter } : {}) });
      res.end(`{"errors":[{"code":"UNKNOWN","message":"front answered ${mode.status}"}]}`);
      return;
    }
    if (mode.kind === 'silent') {
      req.resume();
      return;
    }
    if (blobGet) this.blobGetsForwarded++;
    const up = new URL(this.upstreamUrl);
    const fwd = httpRequest({ host: up.hostname, port: up.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      const cut = (mode.kind === 'stall-body' || mode.kind === 'reset') && req.method === 'GET' && r.statusCode === 200 ? mode : undefined;
      if (!cut) {
        r.pipe(res);
        return;
      }
      let sent = 0;
      r.on('data', (chunk: Buffer) => {
        if (sent >= cut.bytes) return;
        const part = chunk.subarray(0, cut.bytes - sent);
        sent += part.length;
        res.write(part);
        if (sent < cut.bytes) return;
        r.destroy();
        // Let the bytes sent so far leave before the connection breaks (or stalls, for good).
        const reset = () => res.write('', () => res.socket?.resetAndDestroy());
        if (cut.kind === 'reset' && cut.held) this.held.push(reset);
        else if (cut.kind === 'reset') reset();
      });
    });
    fwd.on('error', () => res.destroy());
    req.pipe(fwd);
  }
}

/** Push an image (its blobs, then its manifest under `tag`) into a registry without auth, such as registry:2. */
export async function pushImage(base: string, repository: string, image: Image, tag: string): Promise<void> {
  for (const blob of image.blobs) {
    const start = await fetch(`${base}/v2/${repository}/blobs/uploads/`, { method: 'POST' });
    await start.arrayBuffer();
    if (start.status !== 202) throw new Error(`upload start answered ${start.status}`);
    const location = new URL(start.headers.get('location')!, base);
    location.searchParams.set('digest', blob.digest);
    const put = await fetch(location, { method: 'PUT', body: blob.bytes, headers: { 'Content-Type': 'application/octet-stream' } });
    await put.arrayBuffer();
    if (put.status !== 201) throw new Error(`blob put answered ${put.status}`);
  }
  const put = await fetch(`${base}/v2/${repository}/manifests/${tag}`, {
    method: 'PUT',
    body: image.manifest.bytes,
    headers: { 'Content-Type': image.manifest.mediaType },
  });
  await put.arrayBuffer();
  if (put.status !== 201) throw new Error(`manifest put answered ${put.status}`);
}
