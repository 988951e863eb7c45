/**
 * Brute-force throttling of password attempts, per account and per client address, kept in memory.
 *
 * Each failed attempt is counted against the account name and against the address. Once either has `limit` failures
 * within `windowMs`, further attempts for it are refused without checking the password until the window has passed
 * since its latest failure. A successful login clears the account's count (not the address's).
 */

export interface ThrottleOptions {
  /** Failed attempts per account within the window before it is locked. Default 5. */
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

  /** Whether attempts for this account or from this address are refused right now. */
  isLocked(account: string, address: string): boolean {
    return this.count(`u:${account}`) >= this.accountFailures || this.count(`a:${address}`) >= this.addressFailures;
  }

  failure(account: string, address: string): void {
    for (const key of [`u:${account}`, `a:${address}`]) {
      const entry = this.entries.get(key) ?? { failures: [] };
      this.entries.delete(key); // re-insert: Map order is then least recently failed first
      entry.failures.push(this.now());
      if (entry.failures.length > 64) entry.failures.splice(0, entry.failures.length - 64);
      this.entries.set(key, entry);
    }
    while (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
  }

  success(account: string): void {
    this.entries.delete(`u:${account}`);
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
