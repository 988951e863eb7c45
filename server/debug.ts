/**
 * The debug listener (registry:2 `http.debug.addr`): for operators and scrapers, never for clients.
 *
 *   GET /metrics (or http.debug.prometheus.path)   Prometheus metrics, when http.debug.prometheus.enabled, followed
 *                                                  by the last garbage-collection run's (wharf_gc_*)
 *   GET /debug/health                              registry:2's health answer: {} when healthy, else 503 with
 *                                                  {"<check>": "<error>"}
 *   GET /healthz, /readyz                          the same probes as on the main listener
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Health } from './health.js';
import type { Metrics } from './metrics.js';

export interface DebugOptions {
  addr: { host?: string; port: number };
  health: Health;
  /** Metrics to serve at `metricsPath`, when Prometheus is enabled. */
  metrics?: Metrics;
  metricsPath: string;
  /** More exposition text to append to a scrape (the last garbage-collection run's metrics, kept in storage). */
  extraMetrics?: () => Promise<string>;
}

function send(res: ServerResponse, status: number, contentType: string, body: string): void {
  res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

async function handle(req: IncomingMessage, res: ServerResponse, options: DebugOptions): Promise<void> {
  const path = new URL(req.url ?? '/', 'http://debug').pathname;
  if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'text/plain', 'method not allowed\n');
  if (options.metrics && path === options.metricsPath) {
    const { contentType, body } = await options.metrics.scrape();
    const extra = (await options.extraMetrics?.().catch(() => '')) ?? '';
    return send(res, 200, contentType, extra ? `${body}${body.endsWith('\n') ? '' : '\n'}${extra}` : body);
  }
  if (path === '/debug/health') {
    const report = await options.health.readiness();
    const failing = Object.fromEntries(Object.entries(report.checks).filter(([, v]) => v !== 'ok'));
    return send(res, report.ready ? 200 : 503, 'application/json', JSON.stringify(failing));
  }
  if (path === '/healthz') return send(res, 200, 'application/json', '{"status":"ok","checks":{}}');
  if (path === '/readyz') {
    const report = await options.health.readiness();
    const body = JSON.stringify({ status: report.ready ? 'ok' : 'unavailable', checks: report.checks });
    return send(res, report.ready ? 200 : 503, 'application/json', body);
  }
  send(res, 404, 'text/plain', 'not found\n');
}

export async function startDebugServer(options: DebugOptions): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    handle(req, res, options).catch((err: unknown) => send(res, 500, 'text/plain', `${(err as Error).message}\n`));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.addr.port, options.addr.host, () => resolve());
  });
  const { address, port, family } = server.address() as AddressInfo;
  const host = address === '::' || address === '0.0.0.0' ? '127.0.0.1' : family === 'IPv6' ? `[${address}]` : address;
  return { server, url: `http://${host}:${port}` };
}
