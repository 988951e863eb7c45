/**
 * A client for one upstream registry (Docker Hub, ghcr.io, another Wharf): `/v2/` ping, manifest HEAD/GET, blob
 * GET as a stream, with the Docker token flow (401 + `WWW-Authenticate: Bearer realm,service,scope` → token from
 * the realm, Basic credentials when configured → retry), tokens cached per scope until they expire, and Basic auth.
 *
 * Every failure is an `UpstreamError` whose `kind` says what the caller should do: `notfound` (the upstream does
 * not have it), `ratelimited` (429), `unavailable` (timeout, connection refused or reset, a stalled body, 5xx),
 * `denied` (401/403 after authenticating), `invalid` (an answer that makes no sense). Its message is for the log: it names the request
 * path and status or an error code, never a URL (which could carry a signed query), a body, credentials or tokens.
 *
 * Credentials go only where they belong: to the upstream itself, and to a token realm on the upstream's host (any
 * port), `auth.docker.io` for Docker Hub, or a host listed in `realmHosts`; never from https to plain http. A realm
 * anywhere else is asked for an anonymous token (what a public pull needs), so an upstream cannot send the
 * configured password to a server of its choosing (redirects are followed, and fetch drops the Authorization header
 * on a redirect to another origin). Bodies read into memory (manifests, token answers) are bounded in
 * size and time; error bodies are never read.
 */
import { LRUCache } from 'lru-cache';
import { pipeline, Readable, Transform } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { Logger } from 'pino';

export type UpstreamErrorKind = 'notfound' | 'ratelimited' | 'unavailable' | 'denied' | 'invalid';

export class UpstreamError extends Error {
  constructor(
    readonly kind: UpstreamErrorKind,
    message: string,
    readonly status?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'UpstreamError';
  }
}

/** Every manifest media type a registry may answer with; sent as Accept so the upstream never down-converts. */
export const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.v1+prettyjws',
  'application/vnd.docker.distribution.manifest.v1+json',
].join(', ');

export interface UpstreamOptions {
  url: string;
  username?: string;
  password?: string;
  /** How long to wait for response headers (ms). */
  timeoutMs: number;
  /** How long a blob body may stall before the fetch is aborted (ms). Default: 4 × timeoutMs. */
  idleTimeoutMs?: number;
  /** Hosts (`host` or `host:port`) besides the upstream's own that may receive the credentials as a token realm. */
  realmHosts?: string[];
  /** Where to say that a realm was refused the credentials (once per realm host). */
  logger?: Logger;
  /** For tests: a fetch to use instead of the global one. */
  fetch?: typeof fetch;
}

/** The largest token-server answer read (Docker Hub's are a few KiB). */
export const MAX_TOKEN_RESPONSE_BYTES = 1 << 20;

/** What a manifest HEAD or GET found. `content` only for GET. */
export interface UpstreamManifest {
  digest?: string;
  mediaType?: string;
  size?: number;
  content?: Buffer;
}

export interface UpstreamBlob {
  /** Content-Length, when the upstream sent one. */
  size?: number;
  body: Readable;
}

/** The parameters of a `WWW-Authenticate` challenge: scheme (lower case) and its auth-params. */
export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parse `Bearer realm="…",service="…",scope="…"` (quoted or token values; commas inside quotes kept). */
export function parseChallenge(header: string): Challenge | undefined {
  const m = /^\s*([A-Za-z][A-Za-z0-9-]*)\s*(.*)$/s.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  const re = /([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?\s*/gy;
  const rest = m[2]!;
  re.lastIndex = 0;
  let p: RegExpExecArray | null;
  while (re.lastIndex < rest.length && (p = re.exec(rest))) {
    params[p[1]!.toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3]!;
  }
  return { scheme: m[1]!.toLowerCase(), params };
}

/** Tokens are refreshed this long before they expire, so one does not run out between check and use. */
const TOKEN_MARGIN_MS = 10_000;

export class UpstreamClient {
  readonly base: string;
  /** Bearer tokens by scope, each kept until shortly before it expires (lru-cache's per-entry ttl). */
  private readonly tokens = new LRUCache<string, string>({ max: 10_000 });
  /** Set once the upstream asked for Basic auth: send credentials up front from then on. */
  private basic = false;
  private readonly doFetch: typeof fetch;
  /** Realm hosts already logged as refused the credentials. */
  private readonly refusedRealms = new Set<string>();

  constructor(private readonly options: UpstreamOptions) {
    this.base = options.url.replace(/\/+$/, '');
    this.doFetch = options.fetch ?? fetch;
  }

  /** Whether a token realm may receive the upstream's credentials (see the top of this file). */
  realmMayReceiveCredentials(realm: URL): boolean {
    const upstream = new URL(this.base);
    if (upstream.protocol === 'https:' && realm.protocol !== 'https:') return false;
    if (realm.hostname === upstream.hostname) return true;
    if (/(^|\.)docker\.io$/.test(upstream.hostname) && realm.hostname === 'auth.docker.io') return true;
    return (this.options.realmHosts ?? []).some((h) => h === realm.hostname || h === realm.host);
  }

  private basicHeader(): string | undefined {
    const { username, password } = this.options;
    if (username === undefined || password === undefined) return undefined;
    return `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
  }

  /** Fetch with a timeout for the response headers only; the body is not bound by it. */
  private async send(url: string, init: RequestInit): Promise<Response> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new Error('timeout')), this.options.timeoutMs);
    try {
      return await this.doFetch(url, { ...init, signal: controller.signal, redirect: 'follow' });
    } catch (err) {
      const timedOut = controller.signal.aborted;
      throw new UpstreamError('unavailable', timedOut ? `upstream did not answer within ${this.options.timeoutMs} ms` : `upstream unreachable (${errorCode(err)})`, undefined, { cause: err });
    } finally {
      clearTimeout(timer);
    }
  }

  /** A token for `scope` from the challenge's realm (cached per scope until it expires). */
  private async token(challenge: Challenge, scope: string): Promise<string> {
    const cached = this.tokens.get(scope);
    if (cached) return cached;
    const realm = challenge.params.realm;
    if (!realm) throw new UpstreamError('invalid', 'upstream sent a Bearer challenge without a realm');
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new UpstreamError('invalid', 'upstream sent a Bearer challenge with an invalid realm');
    }
    if ((url.protocol !== 'https:' && url.protocol !== 'http:') || url.username !== '' || url.password !== '') {
      throw new UpstreamError('invalid', 'upstream sent a Bearer challenge with a realm that is not a plain http(s) URL');
    }
    if (challenge.params.service) url.searchParams.set('service', challenge.params.service);
    url.searchParams.set('scope', challenge.params.scope ?? scope);
    const headers: Record<string, string> = {};
    const basic = this.basicHeader();
    if (basic && this.realmMayReceiveCredentials(url)) headers.Authorization = basic;
    else if (basic && !this.refusedRealms.has(url.host)) {
      this.refusedRealms.add(url.host);
      this.options.logger?.warn({ upstream: new URL(this.base).host, realm: url.host },
        'the upstream\'s token realm is on another host: asking it for an anonymous token, without the credentials (proxy realmhosts allows a host)');
    }
    const res = await this.send(url.toString(), { headers });
    if (res.status === 429) {
      await res.body?.cancel();
      throw new UpstreamError('ratelimited', 'upstream token server answered 429', 429);
    }
    if (res.status === 401 || res.status === 403) {
      await res.body?.cancel();
      throw new UpstreamError('denied', `upstream token server refused the credentials (${res.status})`, res.status);
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw new UpstreamError(res.status >= 500 ? 'unavailable' : 'invalid', `upstream token server answered ${res.status}`, res.status);
    }
    const raw = await this.readBody(res, MAX_TOKEN_RESPONSE_BYTES, 'token server answer');
    let body: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      body = JSON.parse(raw.toString('utf8')) as typeof body;
      if (body === null || typeof body !== 'object') throw new Error('not an object');
    } catch {
      throw new UpstreamError('invalid', 'upstream token server answered with something other than a JSON object');
    }
    const token = typeof body.token === 'string' ? body.token : typeof body.access_token === 'string' ? body.access_token : undefined;
    if (!token) throw new UpstreamError('invalid', 'upstream token server answered without a token');
    // The spec's default lifetime is 60 s when expires_in is missing.
    const expiresIn = typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : 60;
    // A token that would not outlive the margin is used once and not kept (a ttl of 0 would keep it forever).
    const ttl = expiresIn * 1000 - TOKEN_MARGIN_MS;
    if (ttl > 0) this.tokens.set(scope, token, { ttl });
    return token;
  }

  /**
   * A request to `path` (below /v2/) with the repository's pull scope. Authenticates on a 401 challenge and retries
   * once. Non-2xx answers become UpstreamErrors; the returned response is 2xx.
   */
  async request(method: 'GET' | 'HEAD', path: string, repository: string | undefined, headers: Record<string, string> = {}): Promise<Response> {
    const scope = repository ? `repository:${repository}:pull` : '';
    const url = `${this.base}/v2/${path}`;
    const withAuth = (): Record<string, string> => {
      const cached = this.tokens.get(scope);
      if (cached) return { ...headers, Authorization: `Bearer ${cached}` };
      const basic = this.basic ? this.basicHeader() : undefined;
      return basic ? { ...headers, Authorization: basic } : headers;
    };
    let res = await this.send(url, { method, headers: withAuth() });
    if (res.status === 401) {
      await res.body?.cancel();
      const challenge = parseChallenge(res.headers.get('www-authenticate') ?? '');
      if (challenge?.scheme === 'bearer') {
        this.tokens.delete(scope);
        const token = await this.token(challenge, scope);
        res = await this.send(url, { method, headers: { ...headers, Authorization: `Bearer ${token}` } });
      } else if (challenge?.scheme === 'basic' && this.basicHeader() && !this.basic) {
        this.basic = true;
        res = await this.send(url, { method, headers: { ...headers, Authorization: this.basicHeader()! } });
      }
    }
    if (res.ok) return res;
    await res.body?.cancel().catch(() => undefined);
    const what = `upstream answered ${res.status} to ${method} /v2/${path}`;
    if (res.status === 404) throw new UpstreamError('notfound', what, 404);
    if (res.status === 429) throw new UpstreamError('ratelimited', what, 429);
    if (res.status === 401 || res.status === 403) throw new UpstreamError('denied', what, res.status);
    if (res.status >= 500) throw new UpstreamError('unavailable', what, res.status);
    throw new UpstreamError('invalid', what, res.status);
  }

  /** GET /v2/: whether the upstream answers at all (a 401 counts: it is there, and wants credentials). */
  async ping(): Promise<boolean> {
    try {
      const res = await this.send(`${this.base}/v2/`, { method: 'GET' });
      await res.body?.cancel();
      return res.ok || res.status === 401;
    } catch {
      return false;
    }
  }

  private static describe(res: Response): UpstreamManifest {
    const out: UpstreamManifest = {};
    const digest = res.headers.get('docker-content-digest');
    const type = res.headers.get('content-type');
    const length = res.headers.get('content-length');
    if (digest) out.digest = digest.trim();
    if (type) out.mediaType = type.split(';')[0]!.trim();
    if (length && /^\d+$/.test(length)) out.size = Number(length);
    return out;
  }

  /** HEAD a manifest: its digest (Docker-Content-Digest), type and size. Does not count against Docker Hub's limit. */
  async headManifest(repository: string, reference: string): Promise<UpstreamManifest> {
    const res = await this.request('HEAD', `${repository}/manifests/${reference}`, repository, { Accept: MANIFEST_ACCEPT });
    await res.body?.cancel();
    return UpstreamClient.describe(res);
  }

  /** GET a manifest, at most `maxBytes` of it. */
  async getManifest(repository: string, reference: string, maxBytes: number): Promise<UpstreamManifest & { content: Buffer }> {
    const res = await this.request('GET', `${repository}/manifests/${reference}`, repository, { Accept: MANIFEST_ACCEPT });
    const out = UpstreamClient.describe(res);
    return { ...out, content: await this.readBody(res, maxBytes, 'manifest') };
  }

  /**
   * A response body of at most `maxBytes`, read within the idle timeout as a whole (a body trickling in byte by
   * byte cannot hold the caller longer than one stalled body would).
   */
  private async readBody(res: Response, maxBytes: number, what: string): Promise<Buffer> {
    const length = res.headers.get('content-length');
    if (length && /^\d+$/.test(length) && Number(length) > maxBytes) {
      await res.body?.cancel().catch(() => undefined);
      throw new UpstreamError('invalid', `upstream ${what} is larger than ${maxBytes} bytes`);
    }
    const body = this.bodyOf(res);
    const limit = this.options.idleTimeoutMs ?? this.options.timeoutMs * 4;
    const deadline = setTimeout(() => body.destroy(new UpstreamError('unavailable', `upstream ${what} took longer than ${limit} ms`)), limit);
    const chunks: Buffer[] = [];
    let size = 0;
    try {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        size += chunk.byteLength;
        if (size > maxBytes) throw new UpstreamError('invalid', `upstream ${what} is larger than ${maxBytes} bytes`);
        chunks.push(chunk);
      }
    } catch (err) {
      body.destroy();
      if (err instanceof UpstreamError) throw err;
      throw new UpstreamError('unavailable', `upstream ${what} body failed (${errorCode(err)})`, undefined, { cause: err });
    } finally {
      clearTimeout(deadline);
    }
    return Buffer.concat(chunks, size);
  }

  /** HEAD a blob: its size, or notfound. */
  async headBlob(repository: string, digest: string): Promise<{ size?: number }> {
    const res = await this.request('HEAD', `${repository}/blobs/${digest}`, repository);
    await res.body?.cancel();
    return { size: UpstreamClient.describe(res).size };
  }

  /**
   * GET a blob as a stream. The stream errors when the body stalls for longer than the idle timeout. Redirects (to
   * a CDN, as Docker Hub does) are followed.
   */
  async getBlob(repository: string, digest: string): Promise<UpstreamBlob> {
    const res = await this.request('GET', `${repository}/blobs/${digest}`, repository);
    const blob: UpstreamBlob = { body: this.bodyOf(res) };
    const size = UpstreamClient.describe(res).size;
    if (size !== undefined) blob.size = size;
    return blob;
  }

  /** The response body as a Node stream that fails when no byte arrives for the idle timeout. */
  private bodyOf(res: Response): Readable {
    if (!res.body) return Readable.from([]);
    const source = Readable.fromWeb(res.body as unknown as WebReadableStream<Uint8Array>);
    const idle = this.options.idleTimeoutMs ?? this.options.timeoutMs * 4;
    let timer: NodeJS.Timeout | undefined;
    const out = new Transform({
      transform(chunk: Buffer, _enc, done) {
        arm();
        done(null, chunk);
      },
    });
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => out.destroy(new UpstreamError('unavailable', `upstream body stalled for ${idle} ms`)), idle);
    };
    arm();
    // A connection reset or cut in the middle of the body is the upstream being unavailable, like a stall: said so
    // before pipeline (listening after this) passes the network error on, so a client waiting for this fetch gets
    // 503, not a 500.
    source.once('error', (err) => {
      out.destroy(err instanceof UpstreamError ? err : new UpstreamError('unavailable', `upstream body failed (${errorCode(err)})`, undefined, { cause: err }));
    });
    pipeline(source, out, () => clearTimeout(timer));
    return out;
  }
}

/**
 * A short, safe description of a network error for the log: its code (ECONNREFUSED, ENOTFOUND,
 * UND_ERR_SOCKET, …) or name, never its message, which can quote a URL.
 */
function errorCode(err: unknown): string {
  for (let e = err as { code?: unknown; cause?: unknown; name?: unknown } | undefined, depth = 0; e && depth < 4; e = e.cause as typeof e, depth++) {
    if (typeof e.code === 'string' && /^[A-Z0-9_]{2,40}$/.test(e.code)) return e.code;
  }
  const name = (err as { name?: unknown } | undefined)?.name;
  return typeof name === 'string' && /^[A-Za-z]{1,40}$/.test(name) ? name : 'error';
}
