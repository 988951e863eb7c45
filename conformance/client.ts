/**
 * A small HTTP client for talking to a registry under test, built on Node's fetch.
 *
 * It knows three things beyond plain fetch:
 * - paths are resolved against the registry URL, and so are `Location` headers (which the spec allows to be absolute
 *   or relative);
 * - credentials: Basic auth is sent when a user is configured, and a `WWW-Authenticate: Bearer` challenge is answered
 *   by fetching a token from the challenge's realm (Docker token flow) and retrying once;
 * - every reply is read completely into a Buffer, so checks can compare bytes and error messages can quote the body.
 *
 * It deliberately does not hide anything the registry says: statuses and headers are passed through untouched.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';

export interface ClientOptions {
  /** Base URL of the registry, such as http://127.0.0.1:5000 */
  url: string;
  user?: string;
  password?: string;
  /** Per-request timeout; a registry that hangs fails the check instead of the whole run. */
  timeoutMs?: number;
}

/** A request body. A function producing a stream is called again if the request has to be retried (auth). */
export type Body = Uint8Array | string | (() => ReadableStream<Uint8Array>);

export interface RequestOptions {
  headers?: Record<string, string>;
  body?: Body;
  /** Query parameters added to the URL; an array adds the parameter several times (`?tag=a&tag=b`). */
  query?: Record<string, string | number | string[]>;
  /**
   * The server may answer before it has read the whole body and then close the connection (a 413 for an
   * oversized upload, as RFC 9110 § 15.5.14 allows). Node's fetch reports that as a failed write (EPIPE) and loses
   * the answer, so such requests go through node:http, which delivers the response it already received.
   * Only for Uint8Array/string bodies.
   */
  earlyReply?: boolean;
}

/** A completed HTTP exchange, with the response body read. */
export class Reply {
  constructor(
    readonly method: string,
    readonly url: URL,
    readonly status: number,
    readonly headers: Headers,
    readonly body: Buffer,
  ) {}

  /** Header value, or undefined (fetch gives null). Repeated headers are joined with ", ". */
  header(name: string): string | undefined {
    return this.headers.get(name) ?? undefined;
  }

  text(): string {
    return this.body.toString('utf8');
  }

  /** The body parsed as JSON; throws a readable error if it is not JSON. */
  json<T = any>(): T {
    try {
      return JSON.parse(this.text()) as T;
    } catch {
      throw new Error(`${this.describe()}: expected a JSON body, got ${JSON.stringify(this.snippet())}`);
    }
  }

  /** The start of the body, for error messages. */
  snippet(max = 300): string {
    const t = this.text();
    return t.length > max ? `${t.slice(0, max)}…` : t;
  }

  /** "PUT /v2/x/manifests/latest → 400", used as the prefix of every failure message about this reply. */
  describe(): string {
    return `${this.method} ${this.url.pathname}${this.url.search} → ${this.status}`;
  }
}

interface BearerChallenge {
  realm: string;
  service?: string;
  scope?: string;
}

/** Parses `Bearer realm="…",service="…",scope="…"` (RFC 6750 auth-param list). */
export function parseBearerChallenge(header: string): BearerChallenge | undefined {
  const m = /^\s*Bearer\s+(.*)$/i.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  for (const p of m[1]!.matchAll(/([a-zA-Z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))/g)) {
    params[p[1]!.toLowerCase()] = (p[2] ?? p[3] ?? '').replace(/\\(.)/g, '$1');
  }
  if (!params.realm) return undefined;
  return { realm: params.realm, service: params.service, scope: params.scope };
}

/** Every manifest media type the suite pushes, as one Accept header. */
export const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ');

export class RegistryClient {
  readonly base: URL;
  private readonly basic?: string;
  private readonly timeoutMs: number;
  /** Bearer tokens by repository name ('' for registry-wide requests), reused until a 401 says otherwise. */
  private readonly tokens = new Map<string, string>();

  constructor(options: ClientOptions) {
    this.base = new URL(options.url.endsWith('/') ? options.url : `${options.url}/`);
    if (options.user !== undefined) {
      this.basic = `Basic ${Buffer.from(`${options.user}:${options.password ?? ''}`).toString('base64')}`;
    }
    this.timeoutMs = options.timeoutMs ?? 60_000;
  }

  /** Resolves a path (`/v2/…`) or a Location header value (absolute or relative) against the registry URL. */
  resolve(pathOrUrl: string): URL {
    return new URL(pathOrUrl, this.base);
  }

  async request(method: string, pathOrUrl: string | URL, options: RequestOptions = {}): Promise<Reply> {
    const url = typeof pathOrUrl === 'string' ? this.resolve(pathOrUrl) : new URL(pathOrUrl);
    for (const [k, v] of Object.entries(options.query ?? {})) {
      if (Array.isArray(v)) for (const item of v) url.searchParams.append(k, item);
      else url.searchParams.set(k, String(v));
    }
    const repoKey = repositoryOf(url.pathname);
    let reply = await this.send(method, url, options, this.authorization(repoKey));
    if (reply.status === 401) {
      const challenge = parseBearerChallenge(reply.header('www-authenticate') ?? '');
      if (challenge) {
        const token = await this.fetchToken(challenge);
        this.tokens.set(repoKey, token);
        reply = await this.send(method, url, options, `Bearer ${token}`);
      }
    }
    return reply;
  }

  private authorization(repoKey: string): string | undefined {
    const token = this.tokens.get(repoKey);
    return token ? `Bearer ${token}` : this.basic;
  }

  private async send(method: string, url: URL, options: RequestOptions, authorization?: string): Promise<Reply> {
    const headers: Record<string, string> = { ...options.headers };
    // Like every real client, ask for all manifest types unless the check says otherwise: registry:2 answers 404
    // for an OCI manifest when the Accept header does not name its media type.
    if (/\/manifests\/[^/]+$/.test(url.pathname) && !hasHeader(headers, 'accept')) headers.accept = MANIFEST_ACCEPT;
    if (authorization && !hasHeader(headers, 'authorization')) headers.authorization = authorization;
    const body = typeof options.body === 'function' ? options.body() : options.body;
    if (options.earlyReply && !(body instanceof ReadableStream)) return sendWithNodeHttp(method, url, headers, body);
    const init: RequestInit & { duplex?: 'half' } = {
      method,
      headers,
      body: body as RequestInit['body'],
      signal: AbortSignal.timeout(this.timeoutMs),
    };
    // A stream body needs half-duplex mode in Node's fetch; it is sent with Transfer-Encoding: chunked.
    if (body instanceof ReadableStream) init.duplex = 'half';
    // Redirects (which the spec allows) are followed by hand: the registry's own answer carries headers such as
    // Docker-Content-Digest that a storage backend's answer (a presigned S3 URL, say) does not.
    init.redirect = 'manual';
    let res: Response;
    let registryHeaders: Headers | undefined;
    try {
      res = await fetch(url, init);
      for (let hops = 0; hops < 5 && (method === 'GET' || method === 'HEAD') && isRedirect(res); hops++) {
        registryHeaders ??= res.headers;
        await res.arrayBuffer();
        const next = new URL(res.headers.get('location')!, url);
        const nextHeaders = { ...headers };
        // Never forward credentials across hosts (spec.md § API).
        if (next.host !== url.host) delete nextHeaders.authorization;
        res = await fetch(next, { method, headers: nextHeaders, redirect: 'manual', signal: AbortSignal.timeout(this.timeoutMs) });
      }
    } catch (err) {
      const cause = (err as { cause?: unknown }).cause;
      throw new Error(`${method} ${url.pathname}${url.search}: request failed: ${String(cause ?? err)}`);
    }
    let bytes: Buffer;
    try {
      bytes = Buffer.from(await res.arrayBuffer());
    } catch (err) {
      throw new Error(`${method} ${url.pathname}${url.search} → ${res.status}: reading the response body failed `
        + `(Content-Length: ${res.headers.get('content-length') ?? 'none'}): ${String(err)}`);
    }
    // The reply is described by the URL we asked for: after a redirect, the final status and body, with the
    // registry's own headers filling in what the final answer lacks.
    const replyHeaders = new Headers(res.headers);
    for (const [k, v] of registryHeaders ?? []) if (!replyHeaders.has(k)) replyHeaders.set(k, v);
    return new Reply(method, url, res.status, replyHeaders, bytes);
  }

  /** Docker token flow: GET realm?service=&scope= with Basic credentials when we have them. */
  private async fetchToken(challenge: BearerChallenge): Promise<string> {
    const url = new URL(challenge.realm);
    if (challenge.service) url.searchParams.set('service', challenge.service);
    if (challenge.scope) url.searchParams.set('scope', challenge.scope);
    const res = await fetch(url, {
      headers: this.basic ? { authorization: this.basic } : {},
      signal: AbortSignal.timeout(this.timeoutMs),
    });
    const text = await res.text();
    if (res.status !== 200) throw new Error(`token request to ${url.origin}${url.pathname} → ${res.status}: ${text}`);
    const body = JSON.parse(text) as { token?: string; access_token?: string };
    const token = body.token ?? body.access_token;
    if (!token) throw new Error(`token response from ${url.origin}${url.pathname} has no token`);
    return token;
  }
}

/** One request over node:http(s); resolves with the response even if sending the body failed after it arrived. */
function sendWithNodeHttp(method: string, url: URL, headers: Record<string, string>,
  body: Uint8Array | string | undefined): Promise<Reply> {
  const data = body === undefined ? Buffer.alloc(0) : Buffer.from(body);
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, {
      method,
      headers: { ...headers, 'content-length': String(data.length) },
      signal: AbortSignal.timeout(60_000),
    }, (res) => {
      answered = true;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const h = new Headers();
        for (const [k, v] of Object.entries(res.headers)) {
          for (const item of Array.isArray(v) ? v : v === undefined ? [] : [v]) h.append(k, item);
        }
        resolve(new Reply(method, url, res.statusCode ?? 0, h, Buffer.concat(chunks)));
      });
    });
    req.on('error', (err) => {
      if (answered) return;
      const code = (err as NodeJS.ErrnoException).code;
      const hint = code === 'EPIPE' || code === 'ECONNRESET'
        ? ' — the server closed the connection before its answer could be read; after answering early it should '
          + 'read and discard the rest of the body or close gracefully (RFC 9112 § 9.6), or clients never see the status'
        : '';
      reject(new Error(`${method} ${url.pathname}${url.search}: request failed: ${err.message}${hint}`));
    });
    req.end(data);
  });
}

function hasHeader(headers: Record<string, string>, name: string): boolean {
  return Object.keys(headers).some((k) => k.toLowerCase() === name);
}

/** The repository name in a /v2/<name>/<endpoint>/… path, or '' for registry-wide endpoints. */
function repositoryOf(pathname: string): string {
  const m = /^\/v2\/(.+?)\/(?:blobs|manifests|tags|referrers)\//.exec(pathname);
  return m ? m[1]! : '';
}

function isRedirect(res: Response): boolean {
  return [301, 302, 303, 307, 308].includes(res.status) && res.headers.has('location');
}
