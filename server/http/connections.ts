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

interface Watched {
  req: IncomingMessage;
  res: ServerResponse;
  socket: Socket;
  read: number;
  written: number;
  /** When a byte last moved, or the server last stopped waiting on the client. */
  since: number;
}

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
  const watched = new Set<Watched>();
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    const w: Watched = { req, res, socket, read: socket.bytesRead, written: socket.bytesWritten, since: Date.now() };
    watched.add(w);
    // Most requests are done by the time their response finishes: forget them now rather than at the next check.
    // Held until then, every request's objects outlived several young-generation collections and were moved to the
    // old one; under a manifest load of thousands of requests a second that grew the heap by 20 MB a second between
    // full collections (peak RSS 190-220 MB instead of about 100).
    res.once('finish', () => {
      if (req.complete && socket.writableLength === 0) watched.delete(w);
    });
  });
  const check = () => {
    const now = Date.now();
    for (const w of watched) {
      const { req, res, socket } = w;
      const pendingOutput = socket.writableLength > 0;
      if (socket.destroyed || (req.complete && res.writableFinished && !pendingOutput)) {
        watched.delete(w);
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
        watched.delete(w);
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
      return watched.size;
    },
  };
}
