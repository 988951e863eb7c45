/**
 * Faults between Wharf (or an S3Driver) and a real S3 (the Ceph RADOS Gateway of testing/s3-test-server.ts): a
 * loopback HTTP proxy that forwards every request untouched (signatures stay valid) unless a fault rule the test set
 * picks it. The rules can be changed at any time while traffic flows.
 *
 *   const proxy = await S3FaultProxy.start(s3.endpoint);
 *   proxy.set({ fault: { kind: 'status', status: 503 }, match: firstAttempt, times: 10 });
 *   ... Wharf with storage.s3.regionendpoint = proxy.url ...
 *   proxy.clear();  proxy.down();  proxy.up();  await proxy.close();
 *
 * Faults, each answering one request:
 *   - `status`: an S3 error answer of its own (409 ConditionalRequestConflict, 500 InternalError, 503 SlowDown), the
 *     body read and dropped;
 *   - `reset-before-body`: the connection reset (TCP RST) as soon as the request headers arrived, no byte of a body read;
 *   - `reset-in-request-body`: `after` bytes of the request body read, then the connection reset;
 *   - `reset-in-response-body`: forwarded; S3's headers and the first `after` bytes of its body sent, then a reset;
 *   - `cut-response`: forwarded; S3's headers (its Content-Length included) and the first `after` bytes of the
 *     body sent, then the connection closed cleanly (FIN): a response cut short;
 *   - `stall-body`: forwarded; S3's headers and the first `after` bytes of its body sent, then nothing more (the
 *     connection left open);
 *   - `latency`: forwarded after `ms`;
 *   - `stall`: the request accepted and never answered (until the proxy closes).
 * And one state: `down()` makes the gateway unreachable (every open connection reset, every new one reset at once)
 * until `up()`.
 */
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { readdirSync, readlinkSync } from 'node:fs';

export type S3Fault =
  | { kind: 'status'; status: 409 | 500 | 503 }
  | { kind: 'reset-before-body' }
  | { kind: 'reset-in-request-body'; after: number }
  | { kind: 'reset-in-response-body'; after: number }
  | { kind: 'cut-response'; after: number }
  | { kind: 'stall-body'; after: number }
  | { kind: 'latency'; ms: number }
  | { kind: 'stall' };

/** What a rule sees of a request. */
export interface S3Request {
  method: string;
  /** The path without the query: /<bucket>/<key> (path style). */
  path: string;
  query: URLSearchParams;
  headers: IncomingMessage['headers'];
  /** The SDK's attempt number (its `amz-sdk-request: attempt=N` header), 1 when absent. */
  attempt: number;
}

export interface FaultRule {
  fault: S3Fault;
  /** Which requests; all when absent. */
  match?: (req: S3Request) => boolean;
  /** How many requests it answers before it is spent; unlimited when absent. */
  times?: number;
  /** The name it has in `faults` (default: the fault's kind). */
  label?: string;
}

// ---- what requests are --------------------------------------------------------------------------------------------

/** A GET of a blob's bytes (`…/blobs/sha256/xx/<hex>/data`). */
export const isBlobDataGet = (r: S3Request): boolean => r.method === 'GET' && /\/blobs\/sha256\/[0-9a-f]{2}\/[0-9a-f]{64}\/data$/.test(r.path);
/** One part of a multipart upload (not a part copy). */
export const isUploadPart = (r: S3Request): boolean =>
  r.method === 'PUT' && r.query.has('partNumber') && r.query.has('uploadId') && !r.headers['x-amz-copy-source'];
/** A PutObject (one request holding the whole object). */
export const isPutObject = (r: S3Request): boolean => r.method === 'PUT' && !r.query.has('uploadId') && !r.headers['x-amz-copy-source'];
/** A request with a body (PUT or POST) that carries one. */
export const hasBody = (r: S3Request): boolean => Number(r.headers['content-length'] ?? 0) > 0;
/** The SDK's first attempt of a request (its retries pass). */
export const firstAttempt = (r: S3Request): boolean => r.attempt === 1;

const ERROR_BODIES: Record<number, string> = {
  409: '<?xml version="1.0" encoding="UTF-8"?><Error><Code>ConditionalRequestConflict</Code><Message>A conflicting conditional operation is currently in progress against this resource.</Message></Error>',
  500: '<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message></Error>',
  503: '<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>',
};

export class S3FaultProxy {
  private readonly server: Server;
  private readonly upstream: URL;
  private rules: FaultRule[] = [];
  private isDown = false;
  private readonly sockets = new Set<Socket>();
  /** Every request seen, in order. */
  requests = 0;
  /** The faults dealt, `<METHOD> <label>` each, in order. */
  readonly faults: string[] = [];
  /** Optional hook consulted before the rules (n: the request's number, from 1). */
  decide?: (n: number, req: IncomingMessage) => { fault: S3Fault; label?: string } | undefined;

  private constructor(target: string) {
    this.upstream = new URL(target);
    this.server = createServer((req, res) => this.handle(req, res));
    this.server.keepAliveTimeout = 60_000;
    this.server.on('connection', (socket: Socket) => {
      if (this.isDown) {
        socket.resetAndDestroy();
        return;
      }
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
  }

  static async start(target: string): Promise<S3FaultProxy> {
    const proxy = new S3FaultProxy(target);
    await new Promise<void>((resolve) => proxy.server.listen(0, '127.0.0.1', resolve));
    return proxy;
  }

  /** http://127.0.0.1:<port>, the endpoint to give the client. */
  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Replace the rules (the first matching rule that is not spent answers a request). */
  set(...rules: FaultRule[]): void {
    this.rules = rules.map((r) => ({ ...r }));
  }

  /** No more faults: everything is forwarded. */
  clear(): void {
    this.rules = [];
  }

  /** Whether every rule with a count has been spent. */
  spent(): boolean {
    return this.rules.every((r) => r.times !== undefined && r.times <= 0);
  }

  /** The gateway goes away: open connections are reset, new ones reset as they arrive. */
  down(): void {
    this.isDown = true;
    for (const s of this.sockets) s.resetAndDestroy();
  }

  up(): void {
    this.isDown = false;
  }

  /** Connections from clients open now. */
  get openConnections(): number {
    return this.sockets.size;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private pick(n: number, req: IncomingMessage): { fault: S3Fault; label: string } | undefined {
    const hooked = this.decide?.(n, req);
    if (hooked) return { fault: hooked.fault, label: hooked.label ?? hooked.fault.kind };
    if (this.rules.length === 0) return undefined;
    const url = new URL(req.url ?? '/', 'http://x');
    const attempt = Number(/attempt=(\d+)/.exec(String(req.headers['amz-sdk-request'] ?? ''))?.[1] ?? 1);
    const view: S3Request = { method: req.method ?? '', path: url.pathname, query: url.searchParams, headers: req.headers, attempt };
    for (const rule of this.rules) {
      if (rule.times !== undefined && rule.times <= 0) continue;
      if (rule.match && !rule.match(view)) continue;
      if (rule.times !== undefined) rule.times--;
      return { fault: rule.fault, label: rule.label ?? rule.fault.kind };
    }
    return undefined;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const n = ++this.requests;
    const picked = this.pick(n, req);
    if (picked) this.faults.push(`${req.method} ${picked.label}`);
    const fault = picked?.fault;
    switch (fault?.kind) {
      case 'status':
        req.resume();
        res.writeHead(fault.status, { 'Content-Type': 'application/xml' });
        res.end(ERROR_BODIES[fault.status]);
        return;
      case 'reset-before-body':
        req.socket.resetAndDestroy();
        return;
      case 'reset-in-request-body': {
        let seen = 0;
        req.on('data', (chunk: Buffer) => {
          seen += chunk.length;
          if (seen >= fault.after) req.socket.resetAndDestroy();
        });
        req.on('end', () => req.socket.resetAndDestroy());
        return;
      }
      case 'stall':
        req.resume();
        return;
      case 'latency':
        setTimeout(() => this.forward(req, res), fault.ms);
        return;
      default:
        this.forward(req, res, fault);
    }
  }

  private forward(req: IncomingMessage, res: ServerResponse, fault?: S3Fault): void {
    if (req.socket.destroyed) return;
    const out = httpRequest(
      { host: this.upstream.hostname, port: this.upstream.port, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode!, up.headers);
        const cut = fault?.kind === 'reset-in-response-body' || fault?.kind === 'cut-response' || fault?.kind === 'stall-body' ? fault : undefined;
        if (!cut) {
          up.pipe(res);
          return;
        }
        let sent = 0;
        const breakOff = () => {
          up.destroy();
          if (cut.kind === 'stall-body') return;
          // Let what was written leave, then break the connection: a reset, or a clean close before the end.
          res.write('', () => (cut.kind === 'reset-in-response-body' ? res.socket?.resetAndDestroy() : res.socket?.end()));
        };
        if (cut.after === 0) return breakOff();
        up.on('data', (chunk: Buffer) => {
          if (sent >= cut.after) return;
          const part = chunk.subarray(0, cut.after - sent);
          sent += part.length;
          res.write(part);
          if (sent >= cut.after) breakOff();
        });
        up.on('end', () => {
          if (sent < cut.after) res.end();
        });
      },
    );
    out.on('error', () => res.destroy());
    res.on('close', () => out.destroy());
    req.pipe(out);
  }
}

/**
 * The small proxy the driver tests use: `fault` picks, per request number, a 503 SlowDown or a reset (before the
 * body); the rest is forwarded.
 */
export async function faultyProxy(
  target: string,
  fault: (n: number, req: IncomingMessage) => 'slowdown' | 'reset' | undefined,
): Promise<{ url: string; faults: string[]; count(): number; close(): Promise<void> }> {
  const proxy = await S3FaultProxy.start(target);
  proxy.decide = (n, req) => {
    const what = fault(n, req);
    if (what === 'slowdown') return { fault: { kind: 'status', status: 503 }, label: 'slowdown' };
    if (what === 'reset') return { fault: { kind: 'reset-before-body' }, label: 'reset' };
    return undefined;
  };
  return { url: proxy.url, faults: proxy.faults, count: () => proxy.requests, close: () => proxy.close() };
}

// ---- the Wharf process's resources ----------------------------------------------------------------------------------

/** The sockets a process holds open now (its /proc/<pid>/fd entries that are sockets). */
export function openSockets(pid: number): number {
  let count = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) count++;
    } catch {
      // closed meanwhile
    }
  }
  return count;
}
