/**
 * Which upstream serves a repository, shared by the mirror (server/proxy/mirror.ts), the HTTP dispatch (containerd's
 * `?ns=`, server/http/app.ts) and the garbage collector's TTL expiry (server/gc/proxy-expiry.ts).
 *
 * A repository's route depends on its name alone: a local namespace is never mirrored; otherwise the upstream with
 * the longest matching prefix (removed upstream), else the upstream without a prefix. Single names get `library/`
 * when the upstream maps them. So every local repository caches exactly one (upstream, remote name), and the cache
 * of one upstream can never be written or read through another.
 *
 * containerd's `?ns=<registry host>` only chooses which local repository a read works on (`namespacedName`): the
 * name itself when its route already is the upstream listing that namespace, else the same name under that
 * upstream's prefix; a request that cannot be represented that way is refused. With registry:2's `proxy.remoteurl`
 * alone (one upstream), `?ns=` is ignored, as registry:2 does.
 */
import type { ProxyConfig, ProxyUpstreamConfig } from '../config/index.js';
import { isValidRepositoryName } from '../registry/reference.js';

export interface UpstreamRoute {
  upstream: ProxyUpstreamConfig;
  /** The repository name upstream. */
  remote: string;
}

/** Whether `name` is in one of `proxy.localnamespaces`: pushed here, never mirrored (nor expired). */
export function isLocal(config: ProxyConfig, name: string): boolean {
  return config.localnamespaces.some((p) => name === p || name.startsWith(`${p}/`));
}

/** The upstream (and the name there) a repository is the cache of, or undefined for a local repository. */
export function routeOf(config: ProxyConfig, name: string): UpstreamRoute | undefined {
  if (isLocal(config, name)) return undefined;
  let upstream: ProxyUpstreamConfig | undefined;
  let remote = name;
  for (const u of config.upstreams) {
    const p = u.prefix;
    if (p !== undefined && name.startsWith(`${p}/`) && (!upstream || p.length > upstream.prefix!.length)) upstream = u;
  }
  if (upstream) remote = name.slice(upstream.prefix!.length + 1);
  else upstream = config.upstreams.find((u) => u.prefix === undefined);
  if (!upstream) return undefined;
  if (upstream.librarymapping && !remote.includes('/')) remote = `library/${remote}`;
  return { upstream, remote };
}

/**
 * The local repository a read of `name` with containerd's `?ns=` works on, or undefined when the request must be
 * refused (the namespace contradicts the name's own route and no local name represents it).
 *
 * - no `ns`, registry:2's single `remoteurl`, or a local namespace: `name`;
 * - a namespace no upstream lists: `name` when it is a local repository (nothing is mirrored), else refused (its
 *   cache belongs to another upstream than the one the client asked for);
 * - the upstream listing it (U): `name` when `name` already routes to U; else `<U's prefix>/<name>` when that name
 *   routes to U with `name` as the remote name (the same cache a client asking for the prefixed name uses);
 *   else refused.
 */
export function namespacedName(config: ProxyConfig, name: string, ns: string | undefined): string | undefined {
  if (ns === undefined || ns === '' || config.ignoresNamespace || isLocal(config, name)) return name;
  const byName = routeOf(config, name);
  const wanted = config.upstreams.find((u) => u.namespaces.includes(ns));
  if (!wanted) return byName ? undefined : name;
  if (byName?.upstream === wanted) return name;
  if (wanted.prefix === undefined) return undefined;
  const prefixed = `${wanted.prefix}/${name}`;
  if (!isValidRepositoryName(prefixed)) return undefined;
  const route = routeOf(config, prefixed);
  const remote = wanted.librarymapping && !name.includes('/') ? `library/${name}` : name;
  return route?.upstream === wanted && route.remote === remote ? prefixed : undefined;
}
