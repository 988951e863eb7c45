/**
 * Brute-force throttling of password attempts, kept in memory.
 *
 * Each failed attempt is counted against the pair (account, client address) and against the address alone. Once the
 * pair has `accountFailures` failures within `windowMs`, further attempts for that account from that address are
 * refused without checking the password, until the window has passed since the pair's latest failure; once the
 * address has `addressFailures`, every attempt from it is refused the same way (one address guessing many
 * accounts). Failures from one address do not stop the account's owner logging in from another, so nobody can
 * keep a user locked out on demand. A successful login clears the pair's
 * count (not the address's) and makes the address known for the account.
 *
 * Guessing from many addresses is bounded per account too: once an account has `accountTotalFailures` failures
 * from all addresses together within the window, attempts for it are refused from every address that has not
 * logged in to it successfully within `knownMs` (30 days). The account's owner, from an address they used before,
 * still gets in; only a new address has to wait until the attack stops.
 *
 * IPv6 addresses are counted by their /64 prefix: a single client usually holds a whole /64, so counting each
 * address apart would give it billions of fresh starts.
 */
import { LRUCache } from 'lru-cache';

export interface ThrottleOptions {
  /** Failed attempts per (account, address) within the window before that pair is locked. Default 5. */
  accountFailures?: number;
  /** Failed attempts per client address within the window before it is locked. Default 20. */
  addressFailures?: number;
  /** Failed attempts per account from all addresses within the window before unknown addresses are refused. Default 100. */
  accountTotalFailures?: number;
  /** How long a successful login keeps its address known for the account, in milliseconds. Default 30 days. */
  knownMs?: number;
  /** The window, in milliseconds. Default 60 s. */
  windowMs?: number;
  now?: () => number;
  /** Most keys remembered (failures and known addresses apart); the least recently used are dropped. Default 100000. */
  maxEntries?: number;
}

/** `::ffff:10.1.2.3` (an IPv4 peer on a dual-stack socket) as `10.1.2.3`; anything else unchanged. */
export function normalizeAddress(address: string): string {
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  return mapped ? mapped[1]! : address;
}

/** The part of a client address that identifies one client: the address itself, or its /64 for IPv6. */
export function addressKey(peer: string): string {
  const address = normalizeAddress(peer);
  if (!address.includes(':')) return address;
  const [head = '', tail] = address.toLowerCase().split('%')[0]!.split('::') as [string, string?];
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? left : [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '')).join(':')}::/64`;
}

export class Throttle {
  /** Key → failure times, oldest first; the least recently failed key is dropped first. */
  private readonly entries: LRUCache<string, number[]>;
  private readonly accountFailures: number;
  private readonly addressFailures: number;
  private readonly accountTotalFailures: number;
  /** (address, account) → time of the latest successful login; apart from failures, so failures cannot evict it. */
  private readonly known: LRUCache<string, number>;
  private readonly knownMs: number;
  private readonly windowMs: number;
  /** Failure times kept per key: enough to reach the highest limit. */
  private readonly keep: number;
  private readonly now: () => number;

  constructor(options: ThrottleOptions = {}) {
    this.accountFailures = options.accountFailures ?? 5;
    this.addressFailures = options.addressFailures ?? 20;
    this.accountTotalFailures = options.accountTotalFailures ?? 100;
    this.keep = Math.max(this.accountFailures, this.addressFailures, this.accountTotalFailures);
    this.windowMs = options.windowMs ?? 60_000;
    this.now = options.now ?? Date.now;
    this.knownMs = options.knownMs ?? 30 * 24 * 3600_000;
    // Times are kept in the values rather than as lru-cache TTLs: the windows are measured from the latest failure.
    // Counted by maxSize rather than max: with max, lru-cache allocates every slot up front (5.6 MB for the two
    // caches, in every process, before the first failed login).
    const maxEntries = options.maxEntries ?? 100_000;
    this.entries = new LRUCache({ maxSize: maxEntries, sizeCalculation: () => 1 });
    this.known = new LRUCache({ maxSize: maxEntries, sizeCalculation: () => 1 });
  }

  private static pairKey(account: string, address: string): string {
    return `p:${addressKey(address)}\u0000${account}`;
  }

  private static addressOnlyKey(address: string): string {
    return `a:${addressKey(address)}`;
  }

  private static accountKey(account: string): string {
    return `u:${account}`;
  }

  /** Whether attempts for this account from this address, or any from this address, are refused right now. */
  isLocked(account: string, address: string): boolean {
    return this.count(Throttle.pairKey(account, address)) >= this.accountFailures ||
      this.count(Throttle.addressOnlyKey(address)) >= this.addressFailures ||
      (this.count(Throttle.accountKey(account)) >= this.accountTotalFailures && !this.isKnown(account, address));
  }

  private isKnown(account: string, address: string): boolean {
    const key = Throttle.pairKey(account, address);
    const at = this.known.peek(key);
    if (at === undefined) return false;
    if (at + this.knownMs > this.now()) return true;
    this.known.delete(key);
    return false;
  }

  failure(account: string, address: string): void {
    for (const key of [Throttle.pairKey(account, address), Throttle.addressOnlyKey(address), Throttle.accountKey(account)]) {
      const failures = this.entries.peek(key) ?? [];
      failures.push(this.now());
      if (failures.length > this.keep) failures.splice(0, failures.length - this.keep);
      this.entries.set(key, failures); // now the most recently failed key
    }
  }

  success(account: string, address: string): void {
    const key = Throttle.pairKey(account, address);
    this.entries.delete(key);
    this.known.set(key, this.now()); // now the most recently successful pair
  }

  private count(key: string): number {
    // peek: checking does not make a key recent, only failing does.
    const failures = this.entries.peek(key);
    if (!failures) return 0;
    const since = this.now() - this.windowMs;
    // Locked until the window has passed since the latest failure: count all failures while the newest is recent.
    const latest = failures.at(-1)!;
    if (latest <= since) {
      this.entries.delete(key);
      return 0;
    }
    return failures.filter((t) => t > latest - this.windowMs).length;
  }
}
