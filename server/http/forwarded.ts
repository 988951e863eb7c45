/**
 * Who is calling, when reverse proxies may stand in between (`http.trustedproxies`).
 *
 * `X-Forwarded-For`, `X-Forwarded-Host` and `X-Forwarded-Proto` are believed only when the connection comes from a
 * configured proxy. Anyone can send them, so believing them from anyone would let a client choose the address the
 * login throttle counts, the address in logs and notification events, and the host of `Location` URLs.
 *
 * The client is the right-most address in `X-Forwarded-For` that is not itself a trusted proxy: each proxy appends
 * the address it received the request from, so everything to the left of that hop was written by the client.
 */
import { BlockList, isIP } from 'node:net';
import { normalizeAddress } from '../../auth/index.js';

/** An address as a proxy writes it in `X-Forwarded-For` (`1.2.3.4`, `1.2.3.4:5678`, `[::1]:80`, `::1`), or undefined. */
function forwardedAddress(entry: string): string | undefined {
  let value = entry.trim();
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(value);
  if (bracketed) value = bracketed[1]!;
  else if (/^\d{1,3}(?:\.\d{1,3}){3}:\d+$/.test(value)) value = value.slice(0, value.lastIndexOf(':'));
  value = normalizeAddress(value);
  return isIP(value) === 0 ? undefined : value;
}

/** The right-most value of a header that proxies append to (`a, b, c` → `c`), or undefined when absent or empty. */
function lastValue(header: string | string[] | undefined): string | undefined {
  const joined = Array.isArray(header) ? header.join(',') : header;
  const last = joined?.split(',').at(-1)?.trim();
  return last ? last : undefined;
}

/** What a request says about its origin once forwarded headers have been weighed. */
export interface RequestOrigin {
  /** The client's address. */
  ip: string;
  /** The host the client asked for, when a trusted proxy told us; otherwise the request's own Host header counts. */
  host?: string;
  /** The scheme the client used, when a trusted proxy told us. */
  protocol?: 'http' | 'https';
}

export class TrustedProxies {
  private readonly list = new BlockList();
  readonly empty: boolean;

  /** `entries`: IP addresses and CIDR ranges, already validated by the config loader. */
  constructor(entries: readonly string[]) {
    this.empty = entries.length === 0;
    for (const entry of entries) {
      const [address, prefix] = entry.trim().split('/') as [string, string | undefined];
      const family = isIP(address) === 6 ? 'ipv6' : 'ipv4';
      if (prefix === undefined) this.list.addAddress(normalizeAddress(address), family);
      else this.list.addSubnet(address, Number(prefix), family);
    }
  }

  /** Whether an address (as the socket reports it) is a trusted proxy. */
  has(address: string): boolean {
    if (this.empty) return false;
    const normal = normalizeAddress(address);
    const family = isIP(normal);
    if (family === 0) return false;
    return this.list.check(normal, family === 6 ? 'ipv6' : 'ipv4');
  }

  /**
   * The origin of a request that arrived from `peer` with these headers. From an untrusted peer, the peer is the
   * client and the forwarded headers are ignored. From a trusted one, the client is the right-most untrusted hop of
   * `X-Forwarded-For` (an entry that is not an address stops the walk at the proxy that passed it on), and the
   * right-most `X-Forwarded-Host` / `X-Forwarded-Proto` values, the ones the nearest proxy wrote, are taken when
   * they are well-formed.
   */
  origin(peer: string, headers: Record<string, string | string[] | undefined>): RequestOrigin {
    const ip = normalizeAddress(peer);
    if (!this.has(ip)) return { ip };
    let client = ip;
    const forwardedFor = headers['x-forwarded-for'];
    const hops = (Array.isArray(forwardedFor) ? forwardedFor.join(',') : forwardedFor ?? '').split(',').filter((h) => h.trim() !== '');
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = forwardedAddress(hops[i]!);
      if (hop === undefined) break;
      client = hop;
      if (!this.has(hop)) break;
    }
    const origin: RequestOrigin = { ip: client };
    const host = lastValue(headers['x-forwarded-host']);
    if (host !== undefined && /^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/.test(host)) origin.host = host;
    const proto = lastValue(headers['x-forwarded-proto'])?.toLowerCase();
    if (proto === 'http' || proto === 'https') origin.protocol = proto;
    return origin;
  }
}
