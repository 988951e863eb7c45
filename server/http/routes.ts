/**
 * The OCI Distribution API routes, matched by hand: repository names contain '/', so each pattern anchors on the
 * fixed words at the right end of the path (`/blobs/uploads/<id>`, `/manifests/<ref>`, …) and takes everything
 * between `/v2/` and them as the name, which is then checked against the spec's grammar.
 */
import { RegistryError } from '../registry/errors.js';
import { isValidRepositoryName } from '../registry/reference.js';

/** Routes named after the spec's operations (end-1 … end-14). */
export type RouteName =
  | 'base'
  | 'catalog'
  | 'tags'
  | 'manifest'
  | 'blob'
  | 'uploadStart'
  | 'upload'
  | 'referrers';

export interface RouteMatch {
  route: RouteName;
  /** Repository name (validated). */
  name?: string;
  /** The last path parameter: tag-or-digest, digest or upload id, as sent. */
  param?: string;
}

const PATTERNS: { route: RouteName; re: RegExp }[] = [
  { route: 'tags', re: /^\/v2\/(.+)\/tags\/list$/ },
  { route: 'manifest', re: /^\/v2\/(.+)\/manifests\/([^/]+)$/ },
  { route: 'uploadStart', re: /^\/v2\/(.+)\/blobs\/uploads\/?$/ },
  { route: 'upload', re: /^\/v2\/(.+)\/blobs\/uploads\/([^/]+)$/ },
  { route: 'blob', re: /^\/v2\/(.+)\/blobs\/([^/]+)$/ },
  { route: 'referrers', re: /^\/v2\/(.+)\/referrers\/([^/]+)$/ },
];

export const ALLOWED_METHODS: Record<RouteName, readonly string[]> = {
  base: ['GET', 'HEAD'],
  catalog: ['GET', 'HEAD'],
  tags: ['GET', 'HEAD'],
  manifest: ['GET', 'HEAD', 'PUT', 'DELETE'],
  blob: ['GET', 'HEAD', 'DELETE'],
  uploadStart: ['POST'],
  upload: ['GET', 'PATCH', 'PUT', 'DELETE'],
  referrers: ['GET', 'HEAD'],
};

/**
 * Match a request path (with any configured prefix already removed). Returns undefined when the path is not part of
 * the API; throws NAME_INVALID when it is, but with a repository name outside the grammar.
 */
export function matchRoute(path: string): RouteMatch | undefined {
  if (path === '/v2' || path === '/v2/') return { route: 'base' };
  if (path === '/v2/_catalog') return { route: 'catalog' };
  for (const { route, re } of PATTERNS) {
    const m = re.exec(path);
    if (!m) continue;
    const name = m[1]!;
    if (!isValidRepositoryName(name)) {
      throw new RegistryError('NAME_INVALID', 'invalid repository name', { detail: { name } });
    }
    return { route, name, param: m[2] };
  }
  return undefined;
}

/** Whether a request with this method changes stored state (refused in read-only mode). */
export function isWrite(method: string): boolean {
  return method !== 'GET' && method !== 'HEAD' && method !== 'OPTIONS';
}
