/**
 * Brute-force throttling of password attempts, kept in memory.
 *
 * Each failed attempt is counted against the pair (account, client address) and against the address alone. Once the
 * pair has `accountFailures` failures within `windowMs`, further attempts for that account from that address are
 * refused without checking the password, until the window has passed since the pair's latest failure; once the
 * address has `addressFailures`, every attempt from it is refused the same way (one address guessing many
 * accounts). An account is never locked for everyone: failures from one address do not stop the account's owner
 * logging in from another, so nobody can keep a user locked out on demand. A successful login clears the pair's
 * count (not the address's).
 *
 * IPv6 addresses are counted by their /64 prefix: a single client usually holds a whole /64, so counting each
 * address apart would give it billions of fresh starts.
 */

export interface ThrottleOptions {
  /** Failed attempts per (account, address) within the window before that pair is locked. Default 5. */
  accountFailures?: number;
  /** Failed attempts per client address within the window before it is locked. Default 20. */
  addressFailures?: number;
  /** The window, in milliseconds. Default 60 s. */
  windowMs?: number;
  now?: () => number;
  /** Most keys remembered; the oldest are dropped beyond it. Default 100000. */
  maxEntries?: number;
}

interface Entry {
  failures: number[];
}

/** The part of a client address that identifies one client: the address itself, or its /64 for IPv6. */
export function addressKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!address.includes(':')) return address;
  const [head = '', tail] = address.toLowerCase().split('%')[0]!.split('::') as [string, string?];
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? left : [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '')).join(':')}::/64`;
}

export class Throttle {
  private readonly entries = new Map<string, Entry>();
  private readonly accountFailures: number;
  private readonly addressFailures: number;
  private readonly windowMs: number;
  private readonly now: () => number;
  private readonly maxEntries: number;

  constructor(options: ThrottleOptions = {}) {
    this.accountFailures = options.accountFailures ?? 5;
    this.addressFailures = options.addressFailures ?? 20;
    this.windowMs = options.windowMs ?? 60_000;
    this.now = options.now ?? Date.now;
    this.maxEntries = options.maxEntries ?? 100_000;
  }

  private static pairKey(account: string, address: string): string {
    return `p:${addressKey(address)}\u0000${account}`;
  }

  private static addressOnlyKey(address: string): string {
    return `a:${addressKey(address)}`;
  }

  /** Whether attempts for this account from this address, or any from this address, are refused right now. */
  isLocked(account: string, address: string): boolean {
    return this.count(Throttle.pairKey(account, address)) >= this.accountFailures ||
      this.count(Throttle.addressOnlyKey(address)) >= this.addressFailures;
  }

  failure(account: string, address: string): void {
    for (const key of [Throttle.pairKey(account, address), Throttle.addressOnlyKey(address)]) {
      const entry = this.entries.get(key) ?? { failures: [] };
      this.entries.delete(key); // re-insert: Map order is then least recently failed first
      entry.failures.push(this.now());
      if (entry.failures.length > 64) entry.failures.splice(0, entry.failures.length - 64);
      this.entries.set(key, entry);
    }
    while (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
  }

  success(account: string, address: string): void {
    this.entries.delete(Throttle.pairKey(account, address));
  }

  private count(key: string): number {
    const entry = this.entries.get(key);
    if (!entry) return 0;
    const since = this.now() - this.windowMs;
    // Locked until the window has passed since the latest failure: count all failures while the newest is recent.
    const latest = entry.failures.at(-1)!;
    if (latest <= since) {
      this.entries.delete(key);
      return 0;
    }
    return entry.failures.filter((t) => t > latest - this.windowMs).length;
  }
}
