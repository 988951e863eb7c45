/**
 * Notifications (registry:2 `notifications.endpoints`): push, pull, mount and delete events POSTed to webhooks in
 * registry:2's envelope (`{"events":[…]}`, Content-Type `application/vnd.docker.distribution.events.v1+json`).
 *
 * Delivery never blocks a request: `emit` only queues. Each endpoint has its own queue and one sender that delivers
 * events in order, one envelope per event. A failed delivery (network error, timeout, non-2xx) is retried after
 * `backoff`; after `threshold` failures in a row the endpoint is logged as failing (once) and retries go on at the
 * backoff pace. Queues are bounded (`maxQueue` events per endpoint): when a dead endpoint lets one fill up, the oldest
 * events are dropped and counted, so memory never grows without bound. The endpoint's answer body is never read, and
 * a failure is logged by status or error code only (the config refuses credentials in the URL; headers carry them).
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { NotificationEndpointConfig } from './config/index.js';

export const EVENTS_MEDIA_TYPE = 'application/vnd.docker.distribution.events.v1+json';

export type EventAction = 'push' | 'pull' | 'mount' | 'delete';

export interface EventTarget {
  mediaType?: string;
  size?: number;
  digest?: string;
  length?: number;
  repository: string;
  url?: string;
  tag?: string;
  /** For mounts: the repository the blob came from. */
  fromRepository?: string;
}

export interface EventRequest {
  id: string;
  addr: string;
  host: string;
  method: string;
  useragent: string;
}

export interface RegistryEvent {
  id: string;
  timestamp: string;
  action: EventAction;
  target: EventTarget;
  request: EventRequest;
  actor: { name?: string };
  source: { addr: string; instanceID: string };
}

/** One webhook, as configured (registry:2 `notifications.endpoints[]`; durations in ms). */
export type EndpointConfig = NotificationEndpointConfig;

/** What the notifier needs: the endpoints and the queue bound. */
export interface NotifierConfig {
  endpoints: EndpointConfig[];
  /** The most events queued per endpoint (default 10000); beyond it the oldest are dropped. */
  maxQueue?: number;
}

const DEFAULT_MAX_QUEUE = 10_000;

/** One webhook: a bounded queue and a sender loop. */
class Endpoint {
  private readonly queue: RegistryEvent[] = [];
  private sending = false;
  private failures = 0;
  private closed = false;
  private wake: (() => void) | undefined;
  dropped = 0;
  delivered = 0;

  constructor(
    readonly config: EndpointConfig,
    private readonly maxQueue: number,
    private readonly logger?: Logger,
  ) {}

  accepts(event: RegistryEvent): boolean {
    const { ignore, ignoredmediatypes } = this.config;
    const mediaType = event.target.mediaType;
    if (mediaType && (ignoredmediatypes.includes(mediaType) || ignore.mediatypes.includes(mediaType))) return false;
    return !ignore.actions.includes(event.action);
  }

  enqueue(event: RegistryEvent): void {
    if (this.queue.length >= this.maxQueue) {
      this.queue.shift();
      this.dropped++;
      if (this.dropped === 1 || this.dropped % 1000 === 0) {
        this.logger?.warn({ endpoint: this.config.name, dropped: this.dropped }, 'notification queue full: dropping oldest events');
      }
    }
    this.queue.push(event);
    if (!this.sending) void this.run();
  }

  get pending(): number {
    return this.queue.length;
  }

  private async deliver(event: RegistryEvent): Promise<void> {
    const headers: Record<string, string> = { 'Content-Type': EVENTS_MEDIA_TYPE };
    for (const [name, values] of Object.entries(this.config.headers)) headers[name] = values.join(', ');
    const res = await fetch(this.config.url, {
      method: 'POST',
      headers,
      body: JSON.stringify({ events: [event] }),
      signal: AbortSignal.timeout(this.config.timeout),
      redirect: 'error',
    });
    // The answer's body means nothing to us: never read it (an endpoint could send without end).
    await res.body?.cancel().catch(() => undefined);
    if (res.status < 200 || res.status >= 300) throw new Error(`endpoint answered ${res.status}`);
  }

  /** Wait `ms`, or less if the endpoint is closed meanwhile. */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      timer.unref();
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  private async run(): Promise<void> {
    this.sending = true;
    while (this.queue.length > 0 && !this.closed) {
      const event = this.queue[0]!;
      try {
        await this.deliver(event);
        // The event may have been dropped meanwhile by a full queue; only remove it if it is still first.
        if (this.queue[0] === event) this.queue.shift();
        this.delivered++;
        if (this.failures >= this.config.threshold) {
          this.logger?.info({ endpoint: this.config.name }, 'notification endpoint is delivering again');
        }
        this.failures = 0;
      } catch (err) {
        this.failures++;
        if (this.failures === this.config.threshold) {
          this.logger?.warn({ endpoint: this.config.name, err: describeFailure(err), pending: this.queue.length },
            'notification endpoint failing; retrying with backoff');
        }
        await this.pause(this.config.backoff);
      }
    }
    this.sending = false;
  }

  close(): void {
    this.closed = true;
    this.wake?.();
  }
}

export class Notifier {
  private readonly endpoints: Endpoint[];
  private readonly source = { addr: hostname(), instanceID: randomUUID() };

  constructor(config: NotifierConfig, logger?: Logger) {
    this.endpoints = config.endpoints
      .filter((e) => !e.disabled)
      .map((e) => new Endpoint(e, config.maxQueue ?? DEFAULT_MAX_QUEUE, logger));
  }

  get enabled(): boolean {
    return this.endpoints.length > 0;
  }

  /** Record the listener's address for `source.addr` (registry:2 sends host:port). */
  setSourceAddr(addr: string): void {
    this.source.addr = addr;
  }

  /** Queue an event for every endpoint that wants it. Never throws, never waits. */
  emit(action: EventAction, target: EventTarget, request: EventRequest, actor: { name?: string } = {}): void {
    if (this.endpoints.length === 0) return;
    const event: RegistryEvent = {
      id: randomUUID(),
      timestamp: new Date().toISOString(),
      action,
      target,
      request,
      actor,
      source: this.source,
    };
    for (const endpoint of this.endpoints) if (endpoint.accepts(event)) endpoint.enqueue(event);
  }

  /** Per endpoint: events waiting, delivered and dropped. */
  stats(): { name: string; pending: number; delivered: number; dropped: number }[] {
    return this.endpoints.map((e) => ({ name: e.config.name, pending: e.pending, delivered: e.delivered, dropped: e.dropped }));
  }

  close(): void {
    for (const e of this.endpoints) e.close();
  }
}

/** A failed delivery for the log: our own status message, or the network error's code; never a message quoting the URL. */
function describeFailure(err: unknown): string {
  const e = err as { message?: unknown; name?: unknown; code?: unknown; cause?: { code?: unknown } } | undefined;
  if (typeof e?.message === 'string' && /^endpoint answered \d{3}$/.test(e.message)) return e.message;
  const code = typeof e?.cause?.code === 'string' ? e.cause.code : typeof e?.code === 'string' ? e.code : undefined;
  if (code && /^[A-Z0-9_]{2,40}$/.test(code)) return code;
  return e?.name === 'TimeoutError' || e?.name === 'AbortError' ? 'timeout' : 'network error';
}
