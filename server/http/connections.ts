/**
 * Limits on connections, so that a client cannot hold the server's sockets and file descriptors:
 *
 * - the request line and headers must arrive within `readheader` (Node's `headersTimeout`);
 * - a kept-alive connection may wait `idle` for its next request (Node's `keepAliveTimeout`);
 * - a transfer may stand still for at most `stall`: while the server waits for a request body the client has
 *   announced, or for the client to take a response it has not read. Only time without a byte moving counts, and
 *   only time spent waiting on the client: a 2 GiB push that keeps moving is never cut, nor is a request the server
 *   itself is slow to handle (its socket is paused then, or has nothing to send);
 * - one client address may hold at most `maxPerAddress` connections; further ones are closed at once. Trusted
 *   proxies are exempt (every client behind them shares their address). With `--workers N` each worker counts its
 *   own connections, so an address may hold up to N times the limit.
 */
import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { normalizeAddress } from '../../auth/index.js';
import type { TrustedProxies } from './forwarded.js';
import { SOCKET_HIGH_WATER_MARK } from '../node-flags.js';

export interface ConnectionLimits {
  readHeaderMs: number;
  stallMs: number;
  idleMs: number;
  /** 0: no limit. */
  maxPerAddress: number;
}

/** How often open connections are checked against `readheader` (Node checks on an interval of its own). */
export function headerCheckInterval(limits: ConnectionLimits): number {
  return Math.max(100, Math.min(5_000, Math.floor(limits.readHeaderMs / 4)));
}

/**
 * Options of the registry's HTTP(S) server: the header-timeout check's interval, and, with filesystem storage, the
 * sockets' buffer size (SOCKET_HIGH_WATER_MARK). With S3 a push is bound by the service, not by the server's CPU, and
 * a push waiting for a part buffer would hold the larger buffer: Node's default there (20 concurrent pushes to S3
 * peaked at 202 MB with it against 189 MB without).
 */
export function httpServerOptions(limits: ConnectionLimits, storage: string): { connectionsCheckingInterval: number; highWaterMark?: number } {
  return {
    connectionsCheckingInterval: headerCheckInterval(limits),
    ...(storage === 'filesystem' ? { highWaterMark: SOCKET_HIGH_WATER_MARK } : {}),
  };
}

/**
 * One kept-alive connection's watch: the request whose transfer may stall (none between requests) and how far its
 * bytes had moved at the last check.
 */
interface Watched {
  socket: Socket;
  req: IncomingMessage | undefined;
  res: ServerResponse | undefined;
  read: number;
  written: number;
  /** When a byte last moved, or the server last stopped waiting on the client. */
  since: number;
  /** Where it sits in the list of watches (moved when another leaves). */
  index: number;
}

/** The watch of a socket that has carried a request. */
const WATCH = Symbol('wharf.stallWatch');
type WatchedSocket = Socket & { [WATCH]?: Watched };

export interface ConnectionGuard {
  /** Stop the stall checks. */
  stop(): void;
  /** Requests whose transfer is being watched for stalls now. */
  readonly watching: number;
}

/**
 * Apply the limits to a listening (or about to listen) server.
 * The server must have been created with `connectionsCheckingInterval: headerCheckInterval(limits)`.
 */
export function guardConnections(server: Server, limits: ConnectionLimits, trusted: TrustedProxies, logger: Logger): ConnectionGuard {
  // Total request time is not limited: a large layer upload takes as long as it takes, as long as it moves.
  server.requestTimeout = 0;
  server.headersTimeout = limits.readHeaderMs;
  server.keepAliveTimeout = limits.idleMs;

  // ---- connections per address ----
  const open = new Map<string, number>();
  const warned = new Map<string, number>();
  if (limits.maxPerAddress > 0) {
    // Before the HTTP machinery sees the socket: a refused connection costs no parser and no timer.
    server.prependListener('connection', (socket: Socket) => {
      const address = normalizeAddress(socket.remoteAddress ?? '');
      if (address === '' || trusted.has(address)) return;
      const count = open.get(address) ?? 0;
      if (count >= limits.maxPerAddress) {
        const now = Date.now();
        if ((warned.get(address) ?? 0) < now - 60_000) {
          warned.set(address, now);
          logger.warn({ remote: address, limit: limits.maxPerAddress }, 'too many connections from one address; closing new ones (http.maxconnectionsperaddress)');
        }
        socket.destroy();
        return;
      }
      open.set(address, count + 1);
      socket.once('close', () => {
        const left = (open.get(address) ?? 1) - 1;
        if (left <= 0) open.delete(address);
        else open.set(address, left);
      });
    });
  }

  // ---- stalled transfers ----
  // One watch per connection, made at its first request and dropped when it closes, in an array rather than a Set.
  // A Set that gains and loses an entry per request is rehashed every few dozen requests, and V8 links each replaced
  // table to its successor: once one table had been moved to the old generation (a push's long requests are enough),
  // every table after it, with the requests it held, survived the young-generation collections through that link and
  // was moved there too, until the next full collection. Under a manifest load after pushes that was 350-500 KB a
  // collection, 20 MB a second of old generation: peak RSS 170-225 MB instead of about 120, and 30% more CPU per GET.
  const watches: Watched[] = [];
  const forget = (w: Watched) => {
    w.req = undefined;
    w.res = undefined;
  };
  /** The socket's watch, made and listed at its first request; it leaves the list when the socket closes. */
  const watchOf = (socket: WatchedSocket): Watched => {
    const existing = socket[WATCH];
    if (existing) return existing;
    const watch: Watched = { socket, req: undefined, res: undefined, read: 0, written: 0, since: 0, index: watches.length };
    socket[WATCH] = watch;
    watches.push(watch);
    socket.once('close', () => {
      const last = watches.pop()!;
      if (last !== watch) {
        watches[watch.index] = last;
        last.index = watch.index;
      }
      forget(watch);
    });
    return watch;
  };
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket as WatchedSocket;
    const watch = watchOf(socket);
    watch.req = req;
    watch.res = res;
    watch.read = socket.bytesRead;
    watch.written = socket.bytesWritten;
    watch.since = Date.now();
    // Most requests are done by the time their response finishes: forget them now rather than at the next check, so
    // that nothing holds a finished request's objects (held until the check, they outlived several young-generation
    // collections and filled the old one).
    res.once('finish', () => {
      if (watch.req === req && req.complete && socket.writableLength === 0) forget(watch);
    });
  });
  const check = () => {
    const now = Date.now();
    for (const w of watches) {
      const { req, res, socket } = w;
      if (!req || !res) continue;
      const pendingOutput = socket.writableLength > 0;
      if (socket.destroyed || (req.complete && res.writableFinished && !pendingOutput)) {
        forget(w);
        continue;
      }
      // Waiting on the client: for body bytes it announced (and the server wants: the socket is not paused by
      // backpressure), or for it to take response bytes already queued.
      const waitingOnClient = (!req.complete && !socket.isPaused()) || pendingOutput;
      const read = socket.bytesRead;
      const written = socket.bytesWritten;
      if (!waitingOnClient || read !== w.read || written !== w.written) {
        w.read = read;
        w.written = written;
        w.since = now;
      } else if (now - w.since >= limits.stallMs) {
        forget(w);
        logger.info({ remote: normalizeAddress(socket.remoteAddress ?? ''), method: req.method, stalledMs: now - w.since }, 'closing a stalled connection (http.timeouts.stall)');
        socket.destroy();
      }
    }
  };
  const timer = setInterval(check, Math.max(50, Math.min(1_000, Math.floor(limits.stallMs / 4))));
  timer.unref();
  return {
    stop: () => clearInterval(timer),
    get watching() {
      return watches.filter((w) => w.req !== undefined).length;
    },
  };
}
