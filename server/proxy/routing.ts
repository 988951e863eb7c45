/**
 * Which upstream serves a repository, shared by the mirror (server/proxy/mirror.ts) and the garbage collector's
 * TTL expiry (server/gc/proxy-expiry.ts): a local namespace is never mirrored; with containerd's `?ns=`, the upstream
 * listing that namespace; otherwise the upstream with the longest matching prefix (removed upstream), else the
 * upstream without a prefix. Single names get `library/` when the upstream maps them.
 */
import type { ProxyConfig, ProxyUpstreamConfig } from '../config/types.js';

export interface UpstreamRoute {
  upstream: ProxyUpstreamConfig;
  /** The repository name upstream. */
  remote: string;
}

/** Whether `name` is in one of `proxy.localnamespaces`: pushed here, never mirrored (nor expired). */
export function isLocal(config: ProxyConfig, name: string): boolean {
  return config.localnamespaces.some((p) => name === p || name.startsWith(`${p}/`));
}

export function routeOf(config: ProxyConfig, name: string, ns?: string): UpstreamRoute | undefined {
  if (isLocal(config, name)) return undefined;
  let upstream: ProxyUpstreamConfig | undefined;
  let remote = name;
  if (ns !== undefined && ns !== '') {
    upstream = config.upstreams.find((u) => u.namespaces.includes(ns));
    if (!upstream) return undefined;
  } else {
    for (const u of config.upstreams) {
      const p = u.prefix;
      if (p !== undefined && name.startsWith(`${p}/`) && (!upstream || p.length > upstream.prefix!.length)) upstream = u;
    }
    if (upstream) remote = name.slice(upstream.prefix!.length + 1);
    else upstream = config.upstreams.find((u) => u.prefix === undefined);
    if (!upstream) return undefined;
  }
  if (upstream.librarymapping && !remote.includes('/')) remote = `library/${remote}`;
  return { upstream, remote };
}
