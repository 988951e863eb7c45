/**
 * The page's client of Wharf's UI JSON API (`/ui/api/`, see server/ui/api.ts). Same origin only; every mutating request
 * carries `X-Wharf-UI: 1`, which the server requires (with SameSite=Strict cookies) against cross-site requests.
 */

export type Kind = 'image' | 'index' | 'artifact';

export interface Session {
  title: string;
  user: string | null;
  authMode: 'none' | 'htpasswd' | 'token' | 'external';
  canLogin: boolean;
  deleteEnabled: boolean;
  registryHost: string;
}

export interface Page<T> {
  items: T[];
  next: string | null;
  total: number | null;
  /** Whether the user may delete in this repository, when the server says (tags answer); absent: unknown. */
  canDelete?: boolean;
}

export interface RepositoryItem {
  name: string;
  tags: number;
  lastPush: string | null;
  size: number;
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  'os.version'?: string;
}

export interface TagItem {
  tag: string;
  digest: string;
  mediaType: string;
  kind: Kind;
  artifactType: string | null;
  platforms: Platform[];
  size: number;
  created: string | null;
  lastPush: string | null;
  /** The immutable-tag rule covering the tag (it cannot be deleted), or null. */
  immutable?: string | null;
  /** Why the tag's manifest cannot be deleted (an immutable tag names it), or null. */
  manifestImmutable?: string | null;
}

export interface Descriptor {
  digest: string;
  mediaType?: string;
  size?: number;
  artifactType?: string | null;
}

export interface Child {
  digest: string;
  mediaType: string;
  size: number;
  platform: Platform | null;
  /** The repository does not hold this child (a sparse index). */
  missing?: boolean;
}

export interface ImageConfig {
  digest: string;
  mediaType?: string;
  size?: number;
  /** The config is over the size the server reads (then only its descriptor is known). */
  tooLarge?: boolean;
  os: string | null;
  architecture: string | null;
  variant?: string | null;
  created: string | null;
  entrypoint: string[] | null;
  cmd: string[] | null;
  env: string[] | null;
  labels: Record<string, string> | null;
  raw: unknown;
}

export interface Layer {
  digest: string;
  mediaType: string;
  size: number;
  createdBy: string | null;
}

export interface Referrer {
  digest: string;
  artifactType: string | null;
  mediaType: string;
  size: number;
  annotations: Record<string, string> | null;
}

export interface ManifestInfo {
  digest: string;
  mediaType: string;
  kind: Kind;
  artifactType: string | null;
  size: number;
  /** The bytes of everything the manifest references (config, layers, an index's manifests), counted once. */
  totalSize?: number;
  raw: unknown;
  subject: Descriptor | null;
  annotations: Record<string, string> | null;
  children?: Child[] | null;
  config: ImageConfig | null;
  layers?: Layer[] | null;
  referrers?: Referrer[] | null;
  /** Whether the user may delete this manifest, when the server says; absent: unknown. */
  canDelete?: boolean;
  /** Why a delete would be refused although the user may delete (immutable tags name the manifest), or null. */
  deleteRefusal?: string | null;
}

export interface GcStatus {
  lastRun?: string | null;
  durationSeconds?: number | null;
  success?: boolean | null;
  [key: string]: unknown;
}

export interface MirrorStatus {
  upstream: string;
  lastSuccess: string | null;
  lastFailure: string | null;
  lastError: string | null;
}

export interface Status {
  version: string;
  storageDriver: string;
  uptimeSeconds: number;
  startedAt: string;
  gc: GcStatus | null;
  mirror: MirrorStatus[] | null;
}

/** An error answer of the API: its HTTP status and the first entry of the registry's error envelope. */
export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

let unauthorized: (() => void) | undefined;
/** Called when an answer is 401: the session may have ended (expired, password changed), so the header can say so. */
export function onUnauthorized(fn: () => void): void {
  unauthorized = fn;
}

async function request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (method !== 'GET') headers['X-Wharf-UI'] = '1';
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      signal,
    });
  } catch (err) {
    if ((err as Error).name === 'AbortError') throw err;
    throw new ApiError(0, 'NETWORK', 'The registry could not be reached.');
  }
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  if (!res.ok) {
    const first = (parsed as { errors?: { code?: unknown; message?: unknown }[] } | undefined)?.errors?.[0];
    const code = typeof first?.code === 'string' ? first.code : 'UNKNOWN';
    const message = typeof first?.message === 'string' ? first.message : `${res.status} ${res.statusText}`;
    if (res.status === 401 && !path.startsWith('/ui/api/login') && !path.startsWith('/ui/api/session')) unauthorized?.();
    throw new ApiError(res.status, code, message);
  }
  return parsed as T;
}

/** A repository name in a path: each component encoded, the slashes kept. */
export function namePath(name: string): string {
  return name.split('/').map(encodeURIComponent).join('/');
}

function query(params: Record<string, string | number | null | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
}

export const api = {
  session: (signal?: AbortSignal) => request<Session>('GET', '/ui/api/session', undefined, signal),
  login: (username: string, password: string) => request<{ user: string }>('POST', '/ui/api/login', { username, password }),
  logout: () => request<void>('POST', '/ui/api/logout'),
  repositories: (p: { q?: string; next?: string | null; limit?: number }, signal?: AbortSignal) =>
    request<Page<RepositoryItem>>('GET', `/ui/api/repositories${query(p)}`, undefined, signal),
  tags: (name: string, p: { q?: string; sort?: string; next?: string | null; limit?: number }, signal?: AbortSignal) =>
    request<Page<TagItem>>('GET', `/ui/api/repositories/${namePath(name)}/tags${query(p)}`, undefined, signal),
  manifest: (name: string, reference: string, signal?: AbortSignal) =>
    request<ManifestInfo>('GET', `/ui/api/repositories/${namePath(name)}/manifests/${encodeURIComponent(reference)}`, undefined, signal),
  deleteTag: (name: string, tag: string) =>
    request<void>('DELETE', `/ui/api/repositories/${namePath(name)}/tags/${encodeURIComponent(tag)}`),
  deleteManifest: (name: string, digest: string) =>
    request<void>('DELETE', `/ui/api/repositories/${namePath(name)}/manifests/${encodeURIComponent(digest)}`),
  status: (signal?: AbortSignal) => request<Status>('GET', '/ui/api/status', undefined, signal),
};
